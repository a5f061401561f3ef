//! Payment context: charges and refunds through the payment gateway (SPEC
//! section 4), the ledger of what was asked and answered, and the circuit
//! breaker shared by every process that talks to the gateway.

pub mod breaker;

use crate::db::Db;
use crate::time::now_ms;
use baedal_workflows::activities::def;
use baedal_workflows::{
    ChargeOutcome, ChargeRequest, RefundOutcome, RefundRequest, SettleOutcome, UnsettledCharge,
    UnsettledQuery,
};
use breaker::Breaker;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/payment");

/// The gateway's answer to a charge.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayAnswer {
    Approved(String),
    /// 402, or any other answer that refuses this request for good (400, 404,
    /// 422...): the customer is told the payment was declined.
    Declined(String),
    /// No answer in time, the connection failed, 5xx, 408 or 429: the outcome is
    /// unknown, and the gateway is unwell (counts against the breaker).
    Failed(String),
}

impl GatewayAnswer {
    /// Whether the gateway answered as a healthy gateway does (a decline is healthy).
    pub fn healthy(&self) -> bool {
        !matches!(self, GatewayAnswer::Failed(_))
    }
}

/// The gateway's answer to a refund.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundAnswer {
    Refunded,
    /// An answer that can never turn into a refund however often it is asked
    /// (404 unknown payment, 409/422 already refunded or wrong amount, 400...).
    /// The gateway itself is fine.
    Refused {
        status: u16,
        message: String,
    },
    /// No answer in time, the connection failed, 5xx, 408 or 429: ask again later.
    Failed(String),
}

impl RefundAnswer {
    pub fn healthy(&self) -> bool {
        !matches!(self, RefundAnswer::Failed(_))
    }
}

/// Answers that say "not now" rather than "no": the gateway is down, overloaded
/// or slow. Only these (and timeouts, connection errors) open the breaker.
fn transient(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    payment_id: Option<String>,
    status: Option<String>,
    message: Option<String>,
}

/// HTTP client of the payment gateway; every call has the configured deadline.
#[derive(Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl Gateway {
    pub fn new(base: &str, timeout: Duration) -> Self {
        Gateway {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            timeout,
        }
    }

    /// Sends one request within the deadline: the status and the body (if it is
    /// one of ours), or why there was no answer.
    async fn send(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<(u16, Option<PaymentBody>), String> {
        let sent = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(self.timeout)
            .json(&body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(format!("no answer within {:?}", self.timeout));
            }
            Err(e) => return Err(format!("gateway unreachable: {e}")),
        };
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.ok()))
    }

    pub async fn charge(&self, req: &ChargeRequest) -> GatewayAnswer {
        let sent = self
            .send(
                "/v1/payments",
                json!({
                    "orderId": req.order_id,
                    "amount": req.amount,
                    "token": req.token,
                    "idempotencyKey": req.idempotency_key,
                }),
            )
            .await;
        let (status, body) = match sent {
            Ok(answer) => answer,
            Err(why) => return GatewayAnswer::Failed(why),
        };
        let message =
            |b: Option<PaymentBody>, default: String| b.and_then(|b| b.message).unwrap_or(default);
        match (status, body) {
            (
                200,
                Some(PaymentBody {
                    payment_id: Some(id),
                    status: Some(s),
                    ..
                }),
            ) if s == "APPROVED" => GatewayAnswer::Approved(id),
            (402, b) => GatewayAnswer::Declined(message(b, "payment declined".into())),
            (code, _) if transient(code) => {
                GatewayAnswer::Failed(format!("gateway answered {code}"))
            }
            // The request or its token was refused: asking again will not help.
            (code @ 400..=499, b) => {
                GatewayAnswer::Declined(message(b, format!("payment refused ({code})")))
            }
            // 2xx without an approval, 3xx: the outcome is unknown.
            (code, _) => {
                GatewayAnswer::Failed(format!("gateway answered {code} without an outcome"))
            }
        }
    }

    pub async fn refund(&self, req: &RefundRequest) -> RefundAnswer {
        let sent = self
            .send(
                &format!("/v1/payments/{}/refund", req.payment_id),
                json!({"amount": req.amount, "idempotencyKey": req.idempotency_key}),
            )
            .await;
        let (status, body) = match sent {
            Ok(answer) => answer,
            Err(why) => return RefundAnswer::Failed(why),
        };
        match (status, body) {
            (
                200,
                Some(PaymentBody {
                    status: Some(s), ..
                }),
            ) if s == "REFUNDED" => RefundAnswer::Refunded,
            (code, _) if transient(code) => {
                RefundAnswer::Failed(format!("gateway answered {code}"))
            }
            (code @ 400..=499, b) => RefundAnswer::Refused {
                status: code,
                message: b
                    .and_then(|b| b.message)
                    .unwrap_or_else(|| "refund refused".into()),
            },
            (code, _) => {
                RefundAnswer::Failed(format!("gateway answered {code} without an outcome"))
            }
        }
    }
}

pub struct PaymentContext {
    pub db: Db,
    pub gateway: Gateway,
    pub breaker: Breaker,
}

impl PaymentContext {
    async fn record_charge(
        &self,
        req: &ChargeRequest,
        outcome: &str,
        payment_id: Option<&str>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO charges (idempotency_key, order_id, amount, outcome, payment_id, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (idempotency_key) DO UPDATE SET outcome = excluded.outcome,
                 payment_id = excluded.payment_id, updated_at = excluded.updated_at",
        )
        .bind(&req.idempotency_key)
        .bind(&req.order_id)
        .bind(req.amount)
        .bind(outcome)
        .bind(payment_id.map(str::to_string))
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Compensation calls respect the breaker too: while it is open they wait
    /// (the activity retries with backoff) instead of adding to the gateway's load.
    async fn admitted(&self) -> anyhow::Result<()> {
        match self.breaker.admit().await? {
            breaker::Admission::Refused { retry_after } => {
                anyhow::bail!("payment breaker open; retrying after {retry_after:?}")
            }
            _ => Ok(()),
        }
    }

    /// One charge attempt: the gateway's answer, recorded in the ledger.
    async fn charge_once(&self, req: &ChargeRequest) -> anyhow::Result<ChargeOutcome> {
        let answer = self.gateway.charge(req).await;
        self.breaker.record(answer.healthy()).await?;
        Ok(match answer {
            GatewayAnswer::Approved(id) => {
                self.record_charge(req, "APPROVED", Some(&id)).await?;
                ChargeOutcome::Approved { payment_id: id }
            }
            GatewayAnswer::Declined(message) => {
                self.record_charge(req, "DECLINED", None).await?;
                ChargeOutcome::Declined { message }
            }
            GatewayAnswer::Failed(message) => {
                tracing::warn!(order_id = %req.order_id, %message, "charge outcome unknown");
                self.record_charge(req, "UNAVAILABLE", None).await?;
                ChargeOutcome::Unavailable { message }
            }
        })
    }

    /// The one path every refund takes. `Ok` is an answer that stands: refunded
    /// (now or by an earlier call with this key), or refused for good. `Err` is
    /// "not now" (breaker open, gateway down or slow): the activity retries, and
    /// the same idempotency key makes that safe even if the first call landed.
    async fn refund_once(&self, req: &RefundRequest) -> anyhow::Result<RefundOutcome> {
        let done: Option<(String,)> =
            sqlx::query_as("SELECT payment_id FROM refunds WHERE idempotency_key = $1")
                .bind(&req.idempotency_key)
                .fetch_optional(&self.db)
                .await?;
        if done.is_some() {
            return Ok(RefundOutcome::Refunded);
        }
        self.admitted().await?;
        let answer = self.gateway.refund(req).await;
        // A refusal is the gateway answering normally: it must not open the
        // breaker and turn every customer away over one bad refund.
        self.breaker.record(answer.healthy()).await?;
        match answer {
            RefundAnswer::Refunded => {
                self.record_refund(req).await?;
                tracing::info!(order_id = %req.order_id, payment_id = %req.payment_id, "refunded");
                Ok(RefundOutcome::Refunded)
            }
            RefundAnswer::Refused { status, message } => {
                self.record_refund_failure(req, status, &message).await?;
                tracing::error!(
                    order_id = %req.order_id,
                    payment_id = %req.payment_id,
                    amount = req.amount,
                    status,
                    %message,
                    "the gateway refused the refund for good: an operator must settle this order"
                );
                Ok(RefundOutcome::Refused {
                    message: format!("gateway answered {status}: {message}"),
                })
            }
            RefundAnswer::Failed(why) => {
                anyhow::bail!("refund of order {} not done: {why}", req.order_id)
            }
        }
    }

    /// For callers that have no way to report a refusal (the legacy `refund`
    /// activity, a late charge's refund): keep retrying, so the refusal stays
    /// visible in the activity's failures, in the log and in `refund_failures`.
    async fn refund_retrying(&self, req: &RefundRequest) -> anyhow::Result<()> {
        match self.refund_once(req).await? {
            RefundOutcome::Refunded => Ok(()),
            RefundOutcome::Refused { message } => {
                anyhow::bail!("refund of order {} refused: {message}", req.order_id)
            }
        }
    }

    async fn record_refund(&self, req: &RefundRequest) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO refunds (idempotency_key, order_id, payment_id, amount, refunded_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&req.idempotency_key)
        .bind(&req.order_id)
        .bind(&req.payment_id)
        .bind(req.amount)
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    async fn record_refund_failure(
        &self,
        req: &RefundRequest,
        status: u16,
        message: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO refund_failures
                 (idempotency_key, order_id, payment_id, amount, http_status, message, failed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (idempotency_key) DO UPDATE SET http_status = excluded.http_status,
                 message = excluded.message, failed_at = excluded.failed_at",
        )
        .bind(&req.idempotency_key)
        .bind(&req.order_id)
        .bind(&req.payment_id)
        .bind(req.amount)
        .bind(i64::from(status))
        .bind(message)
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Approved charges whose order has neither a refund nor a refused refund on
    /// record, charged before the cut-off, oldest first.
    async fn unsettled(&self, q: &UnsettledQuery) -> anyhow::Result<Vec<UnsettledCharge>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT c.order_id, c.payment_id, c.amount FROM charges c
             WHERE c.outcome = 'APPROVED' AND c.payment_id IS NOT NULL AND c.updated_at < $1
               AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.order_id = c.order_id)
               AND NOT EXISTS (SELECT 1 FROM refund_failures f WHERE f.order_id = c.order_id)
             ORDER BY c.updated_at, c.order_id",
        )
        .bind(q.charged_before)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(order_id, payment_id, amount)| UnsettledCharge {
                order_id,
                payment_id,
                amount,
            })
            .collect())
    }

    /// See [`PaymentContext::settle_unknown`].
    async fn settle(&self, req: &ChargeRequest) -> anyhow::Result<SettleOutcome> {
        self.admitted().await?;
        let answer = self.gateway.charge(req).await;
        self.breaker.record(answer.healthy()).await?;
        match answer {
            GatewayAnswer::Approved(payment_id) => {
                self.record_charge(req, "APPROVED", Some(&payment_id))
                    .await?;
                // A refusal here has no outcome to go to: it keeps retrying
                // (logged, recorded) until an operator settles it.
                self.refund_retrying(&RefundRequest {
                    order_id: req.order_id.clone(),
                    payment_id: payment_id.clone(),
                    amount: req.amount,
                    idempotency_key: format!("{}:refund-late", req.order_id),
                })
                .await?;
                Ok(SettleOutcome::Refunded { payment_id })
            }
            GatewayAnswer::Declined(_) => {
                self.record_charge(req, "DECLINED", None).await?;
                Ok(SettleOutcome::NothingCharged)
            }
            GatewayAnswer::Failed(message) => Err(anyhow::anyhow!(message)),
        }
    }
}

#[activities]
impl PaymentContext {
    /// One attempt, bounded by the gateway deadline: the customer is waiting.
    #[activity(definition = def::PaymentCharge)]
    pub async fn charge(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: ChargeRequest,
    ) -> Result<ChargeOutcome, ActivityError> {
        Ok(self.charge_once(&req).await?)
    }

    /// Kept for orders placed before `refund_order`: retried until it succeeds.
    #[activity(definition = def::PaymentRefund)]
    pub async fn refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: RefundRequest,
    ) -> Result<(), ActivityError> {
        self.refund_retrying(&req).await?;
        Ok(())
    }

    /// Refunds once per idempotency key; safe to call again for the same order.
    #[activity(definition = def::PaymentRefundOrder)]
    pub async fn refund_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: RefundRequest,
    ) -> Result<RefundOutcome, ActivityError> {
        Ok(self.refund_once(&req).await?)
    }

    /// For the reconciliation: charges that may belong to no order any more.
    #[activity(definition = def::PaymentUnsettledCharges)]
    pub async fn unsettled_charges(
        self: Arc<Self>,
        _ctx: ActivityContext,
        q: UnsettledQuery,
    ) -> Result<Vec<UnsettledCharge>, ActivityError> {
        Ok(self.unsettled(&q).await?)
    }

    /// Learns the outcome of a charge that timed out by repeating it with the same
    /// idempotency key (the gateway answers with the original result), and refunds
    /// it if it had gone through: the order was never established.
    #[activity(definition = def::PaymentSettleUnknown)]
    pub async fn settle_unknown(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: ChargeRequest,
    ) -> Result<SettleOutcome, ActivityError> {
        Ok(self.settle(&req).await?)
    }
}

#[cfg(test)]
mod tests;

/// Refunds the gateway refused for good, each waiting for an operator (the
/// metrics endpoint shows it; shared by every process, unlike the counters).
pub async fn refunds_awaiting_operator(db: &Db) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM refund_failures")
        .fetch_one(db)
        .await?;
    Ok(n)
}
