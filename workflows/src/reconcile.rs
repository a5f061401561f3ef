//! `PaymentReconciliation`: settles what no order workflow will. A Temporal
//! Schedule starts it every `RECONCILE_INTERVAL`. It lists the payment context's
//! approved charges that carry no refund, asks the order context what became of
//! each order, and refunds, once, every charge whose order is over without a
//! delivery (a terminated workflow, an outcome that was lost). Its result is the
//! report of what it did.

use crate::activities::{OrderActivities, PaymentActivities};
use crate::model::*;
use std::time::{Duration, UNIX_EPOCH};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, LocalActivityOptions, WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// What the schedule passes to every run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileInput {
    pub queues: Queues,
    /// Charges younger than this are left to their own order's saga.
    pub min_age_ms: u64,
}

#[workflow]
pub struct PaymentReconciliation {
    input: ReconcileInput,
}

#[workflow_methods]
impl PaymentReconciliation {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: ReconcileInput) -> Self {
        Self { input }
    }

    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<ReconcileReport> {
        let (queues, min_age_ms) = ctx.state(|s| (s.input.queues.clone(), s.input.min_age_ms));
        let now = ctx
            .workflow_time()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        let charges = ctx
            .execute_activity(
                PaymentActivities::unsettled_charges,
                UnsettledQuery {
                    charged_before: now - min_age_ms as i64,
                },
                options(&queues.payment, "approved charges without a refund"),
            )
            .await?;
        let mut report = ReconcileReport {
            checked: charges.len() as u32,
            ..Default::default()
        };
        if charges.is_empty() {
            return Ok(report);
        }
        let outcomes = ctx
            .execute_local_activity(
                OrderActivities::outcomes,
                charges
                    .iter()
                    .map(|c| c.order_id.clone())
                    .collect::<Vec<_>>(),
                LocalActivityOptions::builder()
                    .start_to_close_timeout(Duration::from_secs(30))
                    .summary("what became of each charged order".to_string())
                    .build(),
            )
            .await?;
        for (charge, outcome) in charges.into_iter().zip(outcomes) {
            match outcome {
                OrderOutcome::Live => report.live += 1,
                OrderOutcome::Delivered => report.delivered += 1,
                OrderOutcome::Undelivered => {
                    // The saga's own refund key: if the order did refund after all,
                    // the gateway answers that refund instead of paying twice.
                    let refunded = ctx
                        .execute_activity(
                            PaymentActivities::refund_order,
                            RefundRequest {
                                idempotency_key: format!("{}:refund", charge.order_id),
                                order_id: charge.order_id.clone(),
                                payment_id: charge.payment_id,
                                amount: charge.amount,
                            },
                            // Short: a gateway that is down now is tried on the next run.
                            options_within(
                                &queues.payment,
                                "refund a charge no order settles",
                                Duration::from_secs(15),
                            ),
                        )
                        .await;
                    match refunded {
                        Ok(RefundOutcome::Refunded) => report.refunded.push(charge.order_id),
                        Ok(RefundOutcome::Refused { .. }) => report.failed.push(charge.order_id),
                        // One unreachable refund does not stop the others.
                        Err(_) => report.retry_later.push(charge.order_id),
                    }
                }
            }
        }
        Ok(report)
    }
}

/// Bounded, so a run ends; the next run retries what this one could not reach.
fn options(queue: &str, summary: &str) -> ActivityOptions {
    options_within(queue, summary, Duration::from_secs(120))
}

fn options_within(queue: &str, summary: &str, within: Duration) -> ActivityOptions {
    ActivityOptions::with_schedule_to_close_timeout(within)
        .task_queue(queue.to_string())
        .summary(summary.to_string())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_interval(Duration::from_secs(20))
                .build(),
        )
        .build()
}
