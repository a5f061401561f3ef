//! A payment gateway simulator speaking the protocol of SPEC section 4 over real
//! HTTP. Charges and refunds are idempotent by `idempotencyKey`, as a real
//! gateway's are. Tests steer it (latency, failures) through [`Sim`]; a tool in
//! another process reads the ledger at `GET /v1/payments` and steers the faults
//! at `PUT /sim/faults`.

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
    /// Answer every refund with this status, charging and refunding nothing,
    /// while charges work (kept apart from [`Faults`], which tests build whole).
    refund_fail_with: Option<u16>,
    calls: u64,
}

/// Shared handle on the simulator's state.
#[derive(Clone, Default)]
pub struct Sim(Arc<Mutex<Inner>>);

impl Sim {
    pub fn set_faults(&self, faults: Faults) {
        self.0.lock().unwrap().faults = faults;
    }
    /// Refunds are answered with this status (e.g. 404, 422, 500) until set back
    /// to `None`; charges are not affected. `set_faults` leaves this alone.
    pub fn fail_refunds_with(&self, status: Option<u16>) {
        self.0.lock().unwrap().refund_fail_with = status;
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
        .route("/v1/payments/{payment_id}", get(one))
        .route("/v1/payments/{payment_id}/refund", post(refund))
        .route("/sim/faults", get(get_faults).put(put_faults))
        .with_state(sim)
}

/// Serves the simulator on an ephemeral port of 127.0.0.1 (for tests) and
/// returns the address it listens on.
pub async fn spawn(sim: Sim) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(sim)).await;
    });
    Ok(addr)
}

#[derive(Clone, Copy)]
enum Call {
    Charge,
    Refund,
}

/// Counts the call; answers with the injected failure, if any.
fn faults(sim: &Sim, call: Call) -> (Duration, Option<Response>) {
    let (f, refund_fail_with) = {
        let mut inner = sim.0.lock().unwrap();
        inner.calls += 1;
        (inner.faults, inner.refund_fail_with)
    };
    let fail_with = match call {
        Call::Refund => f.fail_with.or(refund_fail_with),
        Call::Charge => f.fail_with,
    };
    (
        f.latency,
        fail_with.map(|code| {
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
    let (latency, failed) = faults(&sim, Call::Charge);
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
    let (latency, failed) = faults(&sim, Call::Refund);
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
    // A new key for a payment already refunded in full moves no money: a real
    // gateway refuses it too rather than paying the customer twice.
    if p.refunded >= p.amount {
        return (
            StatusCode::CONFLICT,
            Json(json!({"status": "ERROR", "message": "payment already refunded"})),
        )
            .into_response();
    }
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

/// Operator view of every charge the simulator holds (its ledger).
async fn list(State(sim): State<Sim>) -> Json<Vec<Payment>> {
    Json(sim.payments())
}

async fn one(State(sim): State<Sim>, Path(payment_id): Path<String>) -> Response {
    match sim
        .payments()
        .into_iter()
        .find(|p| p.payment_id == payment_id)
    {
        Some(p) => Json(p).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"status": "ERROR", "message": "no such payment"})),
        )
            .into_response(),
    }
}

/// The faults over HTTP, for a tool driving a simulator in another process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultsBody {
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub fail_with: Option<u16>,
    #[serde(default)]
    pub refund_fail_with: Option<u16>,
}

fn faults_body(sim: &Sim) -> FaultsBody {
    let inner = sim.0.lock().unwrap();
    FaultsBody {
        latency_ms: inner.faults.latency.as_millis() as u64,
        fail_with: inner.faults.fail_with,
        refund_fail_with: inner.refund_fail_with,
    }
}

async fn get_faults(State(sim): State<Sim>) -> Json<FaultsBody> {
    Json(faults_body(&sim))
}

/// Replaces every fault at once; `{}` heals the simulator.
async fn put_faults(State(sim): State<Sim>, Json(b): Json<FaultsBody>) -> Response {
    let valid = |c: Option<u16>| c.is_none_or(|c| (200..=599).contains(&c));
    if !valid(b.fail_with) || !valid(b.refund_fail_with) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"status": "ERROR", "message": "not an HTTP status"})),
        )
            .into_response();
    }
    sim.set_faults(Faults {
        latency: Duration::from_millis(b.latency_ms),
        fail_with: b.fail_with,
    });
    sim.fail_refunds_with(b.refund_fail_with);
    Json(faults_body(&sim)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    struct Client {
        http: reqwest::Client,
        base: String,
    }

    impl Client {
        async fn start(sim: &Sim) -> Client {
            let addr = spawn(sim.clone()).await.unwrap();
            Client {
                http: reqwest::Client::new(),
                base: format!("http://{addr}"),
            }
        }
        async fn post(&self, path: &str, body: Value) -> (u16, Value) {
            let r = self
                .http
                .post(format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        }
        async fn get(&self, path: &str) -> (u16, Value) {
            let r = self
                .http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        }
        async fn charge(&self, order: &str) -> String {
            let (status, b) = self
                .post(
                    "/v1/payments",
                    json!({"orderId": order, "amount": 1000, "token": "tok_ok",
                           "idempotencyKey": format!("{order}:charge")}),
                )
                .await;
            assert_eq!(status, 200, "{b}");
            b["paymentId"].as_str().unwrap().to_string()
        }
        async fn refund(&self, payment: &str, amount: i64, key: &str) -> (u16, Value) {
            self.post(
                &format!("/v1/payments/{payment}/refund"),
                json!({"amount": amount, "idempotencyKey": key}),
            )
            .await
        }
    }

    #[tokio::test]
    async fn a_repeated_refund_key_moves_money_once() {
        let sim = Sim::default();
        let c = Client::start(&sim).await;
        let pay = c.charge("o1").await;
        for _ in 0..3 {
            let (status, b) = c.refund(&pay, 1000, "o1:cancel").await;
            assert_eq!((status, b["status"].as_str()), (200, Some("REFUNDED")));
        }
        let p = &sim.charges_of("o1")[0];
        assert_eq!((p.refunded, p.refund_count), (1000, 1));
    }

    #[tokio::test]
    async fn a_new_key_for_a_fully_refunded_payment_is_refused_and_moves_nothing() {
        let sim = Sim::default();
        let c = Client::start(&sim).await;
        let pay = c.charge("o1").await;
        assert_eq!(c.refund(&pay, 1000, "o1:cancel").await.0, 200);
        assert_eq!(c.refund(&pay, 1000, "o1:reconcile").await.0, 409);
        let p = &sim.charges_of("o1")[0];
        assert_eq!((p.refunded, p.refund_count), (1000, 1));
    }

    #[tokio::test]
    async fn refunds_over_the_charge_or_of_unknown_payments_are_refused() {
        let sim = Sim::default();
        let c = Client::start(&sim).await;
        let pay = c.charge("o1").await;
        assert_eq!(c.refund(&pay, 1001, "o1:a").await.0, 422);
        assert_eq!(c.refund(&pay, 0, "o1:b").await.0, 422);
        assert_eq!(c.refund("pay_nope", 10, "o1:c").await.0, 404);
        assert_eq!(sim.charges_of("o1")[0].refunded, 0);
    }

    #[tokio::test]
    async fn failing_refunds_leave_charges_working() {
        let sim = Sim::default();
        let c = Client::start(&sim).await;
        let pay = c.charge("o1").await;
        sim.fail_refunds_with(Some(404));
        assert_eq!(c.refund(&pay, 1000, "o1:cancel").await.0, 404);
        c.charge("o2").await;
        assert_eq!(sim.charges_of("o1")[0].refunded, 0);
        // Healing the other faults leaves the refund fault in place.
        sim.set_faults(Faults::default());
        assert_eq!(c.refund(&pay, 1000, "o1:cancel").await.0, 404);
        sim.fail_refunds_with(None);
        assert_eq!(c.refund(&pay, 1000, "o1:cancel").await.0, 200);
        assert_eq!(sim.calls(), 5);
    }

    #[tokio::test]
    async fn the_ledger_and_the_faults_are_reachable_over_http() {
        let sim = Sim::default();
        let c = Client::start(&sim).await;
        let pay = c.charge("o1").await;
        c.refund(&pay, 400, "o1:part").await;
        let (status, all) = c.get("/v1/payments").await;
        assert_eq!(status, 200);
        assert_eq!(all[0]["paymentId"], pay.as_str());
        assert_eq!(all[0]["refunded"], 400);
        let (status, one) = c.get(&format!("/v1/payments/{pay}")).await;
        assert_eq!((status, &one["orderId"]), (200, &json!("o1")));
        assert_eq!(c.get("/v1/payments/pay_nope").await.0, 404);

        let put = |body: Value| {
            let http = c.http.clone();
            let url = format!("{}/sim/faults", c.base);
            async move {
                let r = http.put(url).json(&body).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        let (status, f) = put(json!({"refundFailWith": 422, "latencyMs": 5})).await;
        assert_eq!(status, 200);
        assert_eq!(
            f,
            json!({"latencyMs": 5, "failWith": null, "refundFailWith": 422})
        );
        assert_eq!(c.refund(&pay, 100, "o1:more").await.0, 422);
        assert_eq!(put(json!({"failWith": 42})).await.0, 422);
        assert_eq!(put(json!({})).await.0, 200);
        assert_eq!(c.get("/sim/faults").await.1["refundFailWith"], Value::Null);
        assert_eq!(c.refund(&pay, 100, "o1:more").await.0, 200);
    }
}
