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
    streams_open: IntGauge,
    breaker_state: IntGauge,
    breaker_refused: IntCounter,
    breaker_transitions: IntCounterVec,
    refunds_awaiting_operator: IntGauge,
    /// What the event streams cost the order store (see live.rs).
    pub live_polls: IntCounter,
    pub stream_reads: IntCounter,
    /// Held while the breaker's counters are copied in: two scrapes at once
    /// must not both add the same difference.
    mirroring: std::sync::Mutex<()>,
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
        let streams_open =
            IntGauge::new("baedal_event_streams_open", "Order event streams open now").unwrap();
        let breaker_state = IntGauge::new(
            "baedal_breaker_state",
            "The payment breaker: 0 closed, 1 half open, 2 open",
        )
        .unwrap();
        let breaker_refused = IntCounter::new(
            "baedal_breaker_refused_total",
            "Payments this process refused while the breaker was open",
        )
        .unwrap();
        let breaker_transitions = IntCounterVec::new(
            Opts::new(
                "baedal_breaker_transitions_total",
                "Times this process saw the payment breaker open or close",
            ),
            &["to"],
        )
        .unwrap();
        let refunds_awaiting_operator = IntGauge::new(
            "baedal_refunds_awaiting_operator",
            "Refunds the gateway refused for good, each waiting for an operator",
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
            Box::new(streams_open.clone()),
            Box::new(breaker_state.clone()),
            Box::new(breaker_refused.clone()),
            Box::new(breaker_transitions.clone()),
            Box::new(refunds_awaiting_operator.clone()),
        ] {
            registry.register(c).unwrap();
        }
        Metrics {
            registry,
            requests,
            durations,
            throttled,
            streams_open,
            breaker_state,
            breaker_refused,
            breaker_transitions,
            refunds_awaiting_operator,
            live_polls,
            stream_reads,
            mirroring: std::sync::Mutex::new(()),
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

/// `GET /metrics`: every series above, read now.
pub async fn serve(State(st): State<AppState>) -> Response {
    let m = &st.metrics;
    m.streams_open.set(st.streams.count() as i64);
    let b = &st.breaker.metrics;
    {
        let _one_at_a_time = m.mirroring.lock().unwrap();
        m.breaker_refused
            .inc_by(b.refused.load(Ordering::Relaxed) - m.breaker_refused.get());
        for (to, n) in [("open", &b.opened), ("closed", &b.closed)] {
            let c = m.breaker_transitions.with_label_values(&[to]);
            c.inc_by(n.load(Ordering::Relaxed) - c.get());
        }
    }
    // The stores may be down while the gateway still answers: the series keep
    // their last values, and the rest is still served.
    match st.breaker.state().await.as_deref() {
        Ok("closed") => m.breaker_state.set(0),
        Ok("half_open") => m.breaker_state.set(1),
        Ok(_) => m.breaker_state.set(2),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "metrics: the breaker's state"),
    }
    match baedal_activities::payment::refunds_awaiting_operator(&st.dbs.payment).await {
        Ok(n) => m.refunds_awaiting_operator.set(n),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "metrics: refunds awaiting an operator")
        }
    }
    let mut body = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut body) {
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
