//! `GET /metrics`: the gateway's counters in Prometheus text format, for a
//! Prometheus server to scrape (the compose file's does). Counted with the
//! `prometheus` crate; every series is this process's own, so a scaled-out
//! deployment sums them over its API processes.
//!
//! - `baedal_http_requests_total{route,method,status}` and
//!   `baedal_http_request_duration_seconds{route}`: every answer, by the route
//!   pattern it matched (`/api/orders/{id}`; `unmatched` for any other path, so
//!   probing random paths adds no series);
//! - `baedal_event_streams_open`: event streams open now;
//! - `baedal_throttled_total{limit}`: requests refused by an abuse limit;
//! - `baedal_breaker_state` (0 closed, 1 half open, 2 open),
//!   `baedal_breaker_refused_total`, `baedal_breaker_transitions_total{to}`:
//!   the payment breaker as this process sees it;
//! - `baedal_refunds_awaiting_operator`: refunds the gateway refused for good;
//! - `baedal_live_polls_total`, `baedal_event_stream_reads_total`: what the
//!   event streams cost the order store (one poller per process, one read per
//!   stream per change of its order).

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The limits a request can be throttled by (`baedal_throttled_total{limit}`).
#[derive(Clone, Copy)]
pub enum Limit {
    LoginFailures,
    OrdersPerCustomer,
    DeclinedCard,
    EventStreams,
}

impl Limit {
    fn label(self) -> &'static str {
        match self {
            Limit::LoginFailures => "login_failures",
            Limit::OrdersPerCustomer => "orders_per_customer",
            Limit::DeclinedCard => "declined_card",
            Limit::EventStreams => "event_streams",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    throttled: IntCounterVec,
    /// What the event streams cost the order store (see live.rs).
    pub live_polls: IntCounter,
    pub stream_reads: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "baedal_http_requests_total",
                "HTTP answers by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .unwrap();
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "baedal_http_request_duration_seconds",
                "Time to answer (to the first byte of an event stream), by route",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route"],
        )
        .unwrap();
        let throttled = IntCounterVec::new(
            Opts::new(
                "baedal_throttled_total",
                "Requests refused (429) by an abuse limit",
            ),
            &["limit"],
        )
        .unwrap();
        let live_polls = IntCounter::new(
            "baedal_live_polls_total",
            "Queries of the one poller that wakes this process's event streams",
        )
        .unwrap();
        let stream_reads = IntCounter::new(
            "baedal_event_stream_reads_total",
            "Orders read by event streams, each after a change of its order",
        )
        .unwrap();
        for c in [
            Box::new(live_polls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(stream_reads.clone()),
            Box::new(requests.clone()),
            Box::new(durations.clone()),
            Box::new(throttled.clone()),
        ] {
            registry.register(c).unwrap();
        }
        Metrics {
            registry,
            requests,
            durations,
            throttled,
            live_polls,
            stream_reads,
        }
    }

    pub fn throttled(&self, limit: Limit) {
        self.throttled.with_label_values(&[limit.label()]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts every answer and its time, by the route it matched.
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "other",
    };
    let started = Instant::now();
    let res = next.run(req).await;
    let m = &st.metrics;
    m.durations
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[route.as_str(), method, res.status().as_str()])
        .inc();
    res
}

/// `GET /metrics`: every series above. The gauges and the breaker's counters
/// are read now, from where they live (the stream slots, the breaker, the
/// payment store), into a registry of this scrape's own.
pub async fn serve(State(st): State<AppState>) -> Response {
    let now = Registry::new();
    let gauge = |name: &str, help: &str, v: i64| {
        let g = IntGauge::new(name, help).unwrap();
        g.set(v);
        now.register(Box::new(g)).unwrap();
    };
    gauge(
        "baedal_event_streams_open",
        "Order event streams open now",
        st.streams.count() as i64,
    );
    let b = &st.breaker.metrics;
    let refused = IntCounter::new(
        "baedal_breaker_refused_total",
        "Payments this process refused while the breaker was open",
    )
    .unwrap();
    refused.inc_by(b.refused.load(Ordering::Relaxed));
    now.register(Box::new(refused)).unwrap();
    let transitions = IntCounterVec::new(
        Opts::new(
            "baedal_breaker_transitions_total",
            "Times this process saw the payment breaker open or close",
        ),
        &["to"],
    )
    .unwrap();
    for (to, n) in [("open", &b.opened), ("closed", &b.closed)] {
        transitions
            .with_label_values(&[to])
            .inc_by(n.load(Ordering::Relaxed));
    }
    now.register(Box::new(transitions)).unwrap();
    // The stores may be down while the gateway still answers: then these two
    // are left out, and the rest is still served.
    match st.breaker.state().await.as_deref() {
        Ok(state) => gauge(
            "baedal_breaker_state",
            "The payment breaker: 0 closed, 1 half open, 2 open",
            match state {
                "closed" => 0,
                "half_open" => 1,
                _ => 2,
            },
        ),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "metrics: the breaker's state"),
    }
    match baedal_activities::payment::refunds_awaiting_operator(&st.dbs.payment).await {
        Ok(n) => gauge(
            "baedal_refunds_awaiting_operator",
            "Refunds the gateway refused for good, each waiting for an operator",
            n,
        ),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "metrics: refunds awaiting an operator")
        }
    }
    let mut families = st.metrics.registry.gather();
    families.extend(now.gather());
    let mut body = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut body) {
        tracing::error!(error = %e, "encoding metrics");
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
