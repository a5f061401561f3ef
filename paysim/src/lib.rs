//! A payment gateway simulator speaking the protocol of SPEC section 4 over real
//! HTTP. Charges and refunds are idempotent by `idempotencyKey`, as a real
//! gateway's are. Tests steer it (latency, failures) through [`Sim`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub payment_id: String,
    pub order_id: String,
    pub amount: i64,
    pub idempotency_key: String,
    pub refunded: i64,
    /// Refund calls that moved money (repeats of a refund key do not count).
    pub refund_count: u32,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    /// Every call is handled at once but answered this late: a charge lands even
    /// when the caller has given up waiting, as with a real slow gateway.
    pub latency: Duration,
    /// Answer every call with this status instead (e.g. 500), charging nothing.
    pub fail_with: Option<u16>,
}

#[derive(Default)]
struct Inner {
    by_key: HashMap<String, Payment>,
    refund_keys: HashMap<String, String>,
    faults: Faults,
    calls: u64,
}

/// Shared handle on the simulator's state.
#[derive(Clone, Default)]
pub struct Sim(Arc<Mutex<Inner>>);

impl Sim {
    pub fn set_faults(&self, faults: Faults) {
        self.0.lock().unwrap().faults = faults;
    }
    /// Calls received so far (charges and refunds).
    pub fn calls(&self) -> u64 {
        self.0.lock().unwrap().calls
    }
    pub fn payments(&self) -> Vec<Payment> {
        let mut v: Vec<_> = self.0.lock().unwrap().by_key.values().cloned().collect();
        v.sort_by(|a, b| a.payment_id.cmp(&b.payment_id));
        v
    }
    /// Approved charges of one order.
    pub fn charges_of(&self, order_id: &str) -> Vec<Payment> {
        self.payments()
            .into_iter()
            .filter(|p| p.order_id == order_id)
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChargeBody {
    order_id: String,
    amount: i64,
    token: String,
    idempotency_key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundBody {
    amount: i64,
    idempotency_key: String,
}

pub fn router(sim: Sim) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/payments", post(charge).get(list))
        .route("/v1/payments/{payment_id}/refund", post(refund))
        .with_state(sim)
}

/// Counts the call; answers with the injected failure, if any.
fn faults(sim: &Sim) -> (Duration, Option<Response>) {
    let f = {
        let mut inner = sim.0.lock().unwrap();
        inner.calls += 1;
        inner.faults
    };
    (
        f.latency,
        f.fail_with.map(|code| {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                code,
                Json(json!({"status": "ERROR", "message": "gateway failure"})),
            )
                .into_response()
        }),
    )
}

/// Sends the answer after the injected latency. The work is already done, so a
/// caller that gives up earlier does not undo it.
async fn answer(latency: Duration, r: Response) -> Response {
    if !latency.is_zero() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            let _ = tx.send(r);
        });
        return rx
            .await
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    r
}

async fn charge(State(sim): State<Sim>, Json(b): Json<ChargeBody>) -> Response {
    let (latency, failed) = faults(&sim);
    let r = match failed {
        Some(r) => r,
        None => charge_now(&sim, b),
    };
    answer(latency, r).await
}

fn charge_now(sim: &Sim, b: ChargeBody) -> Response {
    if b.token != "tok_ok" {
        let message = if b.token == "tok_declined" {
            "card declined"
        } else {
            "unknown payment token"
        };
        return (
            StatusCode::PAYMENT_REQUIRED,
            Json(json!({"status": "DECLINED", "message": message})),
        )
            .into_response();
    }
    let mut inner = sim.0.lock().unwrap();
    let p = inner
        .by_key
        .entry(b.idempotency_key.clone())
        .or_insert_with(|| Payment {
            payment_id: format!("pay_{}", uuid::Uuid::new_v4().simple()),
            order_id: b.order_id,
            amount: b.amount,
            idempotency_key: b.idempotency_key,
            refunded: 0,
            refund_count: 0,
        });
    Json(json!({"paymentId": p.payment_id, "status": "APPROVED"})).into_response()
}

async fn refund(
    State(sim): State<Sim>,
    Path(payment_id): Path<String>,
    Json(b): Json<RefundBody>,
) -> Response {
    let (latency, failed) = faults(&sim);
    let r = match failed {
        Some(r) => r,
        None => refund_now(&sim, payment_id, b),
    };
    answer(latency, r).await
}

fn refund_now(sim: &Sim, payment_id: String, b: RefundBody) -> Response {
    let mut inner = sim.0.lock().unwrap();
    if inner.refund_keys.contains_key(&b.idempotency_key) {
        return Json(json!({"status": "REFUNDED"})).into_response();
    }
    let Some(p) = inner
        .by_key
        .values_mut()
        .find(|p| p.payment_id == payment_id)
    else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"status": "ERROR", "message": "no such payment"})),
        )
            .into_response();
    };
    if b.amount <= 0 || p.refunded + b.amount > p.amount {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"status": "ERROR", "message": "refund exceeds the charge"})),
        )
            .into_response();
    }
    p.refunded += b.amount;
    p.refund_count += 1;
    inner.refund_keys.insert(b.idempotency_key, payment_id);
    Json(json!({"status": "REFUNDED"})).into_response()
}

/// Operator view of every charge the simulator holds.
async fn list(State(sim): State<Sim>) -> Json<Vec<Payment>> {
    Json(sim.payments())
}
