//! What became of charged orders, for the payment reconciliation. The order
//! context owns the order's workflow and its customer view, so it is the one to
//! say whether an order is still live, was delivered, or is over without delivery.

use crate::db::Db;
use baedal_workflows::activities::def;
use baedal_workflows::{OrderFulfillment, OrderOutcome, OrderStatus, workflow_id};
use std::sync::Arc;
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::{Client, WorkflowExecutionStatus};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct OutcomeContext {
    pub db: Db,
    pub temporal: Client,
}

impl OutcomeContext {
    async fn outcome(&self, order_id: &str) -> anyhow::Result<OrderOutcome> {
        let described = self
            .temporal
            .get_workflow_handle::<OrderFulfillment>(workflow_id(order_id))
            .describe(Default::default())
            .await;
        match described {
            Ok(d) if d.status() == WorkflowExecutionStatus::Running => {
                return Ok(OrderOutcome::Live);
            }
            // Closed (completed, terminated, failed, timed out), or gone from
            // Temporal altogether: the customer's view says whether it was delivered.
            Ok(_) | Err(WorkflowInteractionError::NotFound(_)) => {}
            Err(e) => anyhow::bail!("describing the workflow of order {order_id}: {e}"),
        }
        let status: Option<(String,)> =
            sqlx::query_as("SELECT status FROM order_info WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(&self.db)
                .await?;
        Ok(match status {
            Some((s,)) if s == OrderStatus::Delivered.as_str() => OrderOutcome::Delivered,
            _ => OrderOutcome::Undelivered,
        })
    }
}

#[activities]
impl OutcomeContext {
    #[activity(definition = def::OrderOutcomes)]
    pub async fn outcomes(
        self: Arc<Self>,
        _ctx: ActivityContext,
        order_ids: Vec<String>,
    ) -> Result<Vec<OrderOutcome>, ActivityError> {
        let mut out = Vec::with_capacity(order_ids.len());
        for id in &order_ids {
            out.push(self.outcome(id).await?);
        }
        Ok(out)
    }
}
