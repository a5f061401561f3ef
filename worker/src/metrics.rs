//! A worker's Prometheus metrics, served on `METRICS_ADDR` by the Temporal SDK's
//! own exporter: the SDK's worker metrics (`temporal_…`: task slots, poll and
//! schedule-to-start latencies, sticky cache, activity failures) and, through
//! the same meter, the product's:
//!
//! - `baedal_activity_total{context,activity,outcome}`: activity executions
//!   (local ones included) by outcome: `completed`, `failed`, `cancelled`;
//! - `baedal_feed_changes_total{consumer,outcome}`: changes of the change feed
//!   a context applied (`applied`), will take again (`retried`) or could not
//!   read (`dropped`);
//! - `baedal_reconciliation_findings_total{kind}`: what the reconciliation
//!   found of each charge it checked: `live`, `delivered`, `undelivered` (the
//!   last is refunded).

use baedal_workflows::OrderOutcome;
use std::net::SocketAddr;
use std::sync::Arc;
use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, MetricAttributes, MetricKeyValue, MetricParameters,
};
use temporalio_common::telemetry::{PrometheusExporterOptions, start_prometheus_metric_exporter};
use temporalio_sdk::activities::ActivityError;
use temporalio_sdk::interceptors::{
    ActivityInboundInterceptor, ExecuteActivityInput, ExecuteActivityOutput, Next,
};

/// The product's counters, on the meter the SDK exports.
pub struct Metrics {
    meter: Arc<dyn CoreMeter>,
    activities: Counter,
    feed: Counter,
    findings: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Starts the exporter on `addr`; its meter is the SDK runtime's too.
pub fn serve(addr: SocketAddr) -> anyhow::Result<(Arc<dyn CoreMeter>, SocketAddr)> {
    let started = start_prometheus_metric_exporter(
        PrometheusExporterOptions::builder()
            .socket_addr(addr)
            // The SDK's counters keep their own names (Temporal's dashboards
            // use them): `temporal_local_activity_total` would gain a second
            // `_total`. The product's counters carry it in their names.
            .counters_total_suffix(false)
            .use_seconds_for_durations(true)
            .unit_suffix(true)
            .build(),
    )
    .map_err(|e| anyhow::anyhow!("serving metrics on {addr}: {e:#}"))?;
    tracing::info!(addr = %started.bound_addr, "worker metrics at /metrics");
    Ok((started.meter, started.bound_addr))
}

impl Metrics {
    /// Counters that go nowhere: a worker without `METRICS_ADDR`.
    pub fn none() -> Self {
        Self::new(Arc::new(
            temporalio_common::telemetry::metrics::NoOpCoreMeter,
        ))
    }

    pub fn new(meter: Arc<dyn CoreMeter>) -> Self {
        let counter = |name: &'static str, description: &'static str| {
            meter.counter(
                MetricParameters::builder()
                    .name(name)
                    .description(description)
                    .build(),
            )
        };
        Metrics {
            activities: counter("baedal_activity_total", "Activity executions by outcome"),
            feed: counter(
                "baedal_feed_changes_total",
                "Change feed messages a context handled",
            ),
            findings: counter(
                "baedal_reconciliation_findings_total",
                "What the reconciliation found of each charge it checked",
            ),
            meter,
        }
    }

    fn attributes(&self, pairs: &[(&str, &str)]) -> MetricAttributes {
        self.meter.new_attributes(
            pairs
                .iter()
                .map(|(k, v)| MetricKeyValue::new(*k, v.to_string()))
                .collect::<Vec<_>>()
                .into(),
        )
    }

    pub fn activity(&self, context: &str, activity: &str, outcome: &str) {
        let a = self.attributes(&[
            ("context", context),
            ("activity", activity),
            ("outcome", outcome),
        ]);
        self.activities.add(1, &a);
    }

    pub fn feed_change(&self, consumer: &str, outcome: &str) {
        let a = self.attributes(&[("consumer", consumer), ("outcome", outcome)]);
        self.feed.add(1, &a);
    }

    fn findings(&self, outcomes: &[OrderOutcome]) {
        for (kind, of) in [
            ("live", OrderOutcome::Live),
            ("delivered", OrderOutcome::Delivered),
            ("undelivered", OrderOutcome::Undelivered),
        ] {
            let n = outcomes.iter().filter(|o| **o == of).count() as u64;
            if n > 0 {
                self.findings.add(n, &self.attributes(&[("kind", kind)]));
            }
        }
    }
}

/// Counts every activity a context's worker runs, by outcome; the
/// reconciliation's findings are read off its `order.outcomes` answer.
pub struct ActivityOutcomes {
    pub metrics: Arc<Metrics>,
    pub context: &'static str,
}

impl ActivityInboundInterceptor for ActivityOutcomes {
    fn execute_activity<'a>(
        &'a self,
        input: ExecuteActivityInput,
        next: Next<'a, ExecuteActivityInput, ExecuteActivityOutput<'a>>,
    ) -> ExecuteActivityOutput<'a> {
        let activity = input.activity_info().activity_type.clone();
        Box::pin(async move {
            let result = next.run(input).await;
            let outcome = match &result {
                Ok(value) => {
                    if let Some(outcomes) = value.downcast_ref::<Vec<OrderOutcome>>() {
                        self.metrics.findings(outcomes);
                    }
                    "completed"
                }
                Err(ActivityError::Cancelled { .. }) => "cancelled",
                Err(_) => "failed",
            };
            self.metrics.activity(self.context, &activity, outcome);
            result
        })
    }
}
