//! Payment context: charges and refunds through the payment gateway (SPEC
//! section 4), the ledger of what was asked and answered, and the circuit
//! breaker shared by every process that talks to the gateway.

pub mod breaker;

use crate::db::Db;
use crate::time::now_ms;
use baedal_workflows::activities::def;
use baedal_workflows::{ChargeOutcome, ChargeRequest, RefundRequest, SettleOutcome};
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
    Declined(String),
    Failed(String),
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

    pub async fn charge(&self, req: &ChargeRequest) -> GatewayAnswer {
        let sent = self
            .http
            .post(format!("{}/v1/payments", self.base))
            .timeout(self.timeout)
            .json(&json!({
                "orderId": req.order_id,
                "amount": req.amount,
                "token": req.token,
                "idempotencyKey": req.idempotency_key,
            }))
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return GatewayAnswer::Failed(format!("no answer within {:?}", self.timeout));
            }
            Err(e) => return GatewayAnswer::Failed(format!("gateway unreachable: {e}")),
        };
        let status = resp.status();
        let body: Option<PaymentBody> = resp.json().await.ok();
        match (status.as_u16(), body) {
            (200, Some(b)) if b.status.as_deref() == Some("APPROVED") && b.payment_id.is_some() => {
                GatewayAnswer::Approved(b.payment_id.unwrap_or_default())
            }
            (402, b) => GatewayAnswer::Declined(
                b.and_then(|b| b.message)
                    .unwrap_or_else(|| "payment declined".into()),
            ),
            (code, _) => GatewayAnswer::Failed(format!("gateway answered {code}")),
        }
    }

    pub async fn refund(&self, req: &RefundRequest) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!(
                "{}/v1/payments/{}/refund",
                self.base, req.payment_id
            ))
            .timeout(self.timeout)
            .json(&json!({"amount": req.amount, "idempotencyKey": req.idempotency_key}))
            .send()
            .await?;
        let status = resp.status();
        let body: Option<PaymentBody> = resp.json().await.ok();
        if status.as_u16() == 200 && body.and_then(|b| b.status).as_deref() == Some("REFUNDED") {
            Ok(())
        } else {
            anyhow::bail!("refund of {} answered {status}", req.payment_id)
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

    async fn refund_once(&self, req: &RefundRequest) -> anyhow::Result<()> {
        let done: Option<(String,)> =
            sqlx::query_as("SELECT payment_id FROM refunds WHERE idempotency_key = $1")
                .bind(&req.idempotency_key)
                .fetch_optional(&self.db)
                .await?;
        if done.is_some() {
            return Ok(());
        }
        // The gateway dedupes by the same key, so a retry after a crash here is safe.
        self.admitted().await?;
        let refunded = self.gateway.refund(req).await;
        self.breaker.record(refunded.is_ok()).await?;
        refunded?;
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
        tracing::info!(order_id = %req.order_id, payment_id = %req.payment_id, "refunded");
        Ok(())
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
        let answer = self.gateway.charge(&req).await;
        self.breaker
            .record(!matches!(answer, GatewayAnswer::Failed(_)))
            .await?;
        Ok(match answer {
            GatewayAnswer::Approved(id) => {
                self.record_charge(&req, "APPROVED", Some(&id)).await?;
                ChargeOutcome::Approved { payment_id: id }
            }
            GatewayAnswer::Declined(message) => {
                self.record_charge(&req, "DECLINED", None).await?;
                ChargeOutcome::Declined { message }
            }
            GatewayAnswer::Failed(message) => {
                tracing::warn!(order_id = %req.order_id, %message, "charge outcome unknown");
                self.record_charge(&req, "UNAVAILABLE", None).await?;
                ChargeOutcome::Unavailable { message }
            }
        })
    }

    #[activity(definition = def::PaymentRefund)]
    pub async fn refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: RefundRequest,
    ) -> Result<(), ActivityError> {
        self.refund_once(&req).await?;
        Ok(())
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
        self.admitted().await?;
        let answer = self.gateway.charge(&req).await;
        self.breaker
            .record(!matches!(answer, GatewayAnswer::Failed(_)))
            .await?;
        match answer {
            GatewayAnswer::Approved(payment_id) => {
                self.record_charge(&req, "APPROVED", Some(&payment_id))
                    .await?;
                self.refund_once(&RefundRequest {
                    order_id: req.order_id.clone(),
                    payment_id: payment_id.clone(),
                    amount: req.amount,
                    idempotency_key: format!("{}:refund-late", req.order_id),
                })
                .await?;
                Ok(SettleOutcome::Refunded { payment_id })
            }
            GatewayAnswer::Declined(_) => {
                self.record_charge(&req, "DECLINED", None).await?;
                Ok(SettleOutcome::NothingCharged)
            }
            GatewayAnswer::Failed(message) => Err(anyhow::anyhow!(message).into()),
        }
    }
}
