//! Deadlines the contexts keep for orders on the change feed, instead of timers
//! in every order's history (each timer is two history events and a billable
//! action, and on the happy path it is always cancelled):
//!
//! - the shop context rejects an order its owner has held unanswered for
//!   `SHOP_ACCEPT_TIMEOUT`, counted from when the owner's view got it (only the
//!   shop context knows when that was): update `shop_timeout`;
//! - the delivery context tells an order that its rider let the offer lapse
//!   (`RIDER_OFFER_TIMEOUT`, the offer's `expires_at`): update `offer_lapsed`.
//!
//! Each worker of the context runs the sweep; the update ids make a second
//! sender join the first. A refusal (the owner or the rider answered first, or
//! an older order that keeps its own timers) is an answer too: the row is marked
//! told either way. When Temporal cannot be reached the row stays and the next
//! round tries again. A context that is down keeps its deadlines until it is
//! back, which only gives its owner or rider longer.

use baedal_activities::db::Db;
use baedal_activities::time::now_ms;
use baedal_activities::{delivery, shop};
use baedal_workflows::{OrderFulfillment, RiderAction, workflow_id};
use std::time::Duration;
use temporalio_client::errors::WorkflowUpdateError;
use temporalio_client::{Client, WorkflowExecuteUpdateOptions};
use temporalio_common::{HasWorkflowDefinition, UpdateDefinition};
use tokio::sync::watch;

/// How often each sweep looks.
const EVERY: Duration = Duration::from_millis(500);
/// How long one update may take before the sweep moves on (and retries later).
const UPDATE_DEADLINE: Duration = Duration::from_secs(10);

/// Sends one update to the order (the id makes a second sender join the
/// first); true once the order has had it: done, refused (it had answered
/// already, or keeps its own timers), or gone.
async fn tell<U>(client: &Client, order_id: &str, update: U, input: U::Input, id: String) -> bool
where
    U: UpdateDefinition<Workflow = <OrderFulfillment as HasWorkflowDefinition>::Run>,
    U::Input: Send,
    U::Output: 'static,
{
    let handle = client.get_workflow_handle::<OrderFulfillment>(workflow_id(order_id));
    let options = WorkflowExecuteUpdateOptions::builder()
        .update_id(id)
        .build();
    let sent = tokio::time::timeout(
        UPDATE_DEADLINE,
        handle.execute_update(update, input, options),
    )
    .await;
    matches!(
        sent,
        Ok(Ok(_))
            | Ok(Err(WorkflowUpdateError::Failed(_)))
            | Ok(Err(WorkflowUpdateError::NotFound(_)))
    )
}

/// The shop context's sweep: unanswered orders past `SHOP_ACCEPT_TIMEOUT`.
pub async fn shop_acceptance(
    db: Db,
    client: Client,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let due = shop::unanswered_since(&db, now_ms() - timeout.as_millis() as i64).await;
        match due {
            Ok(orders) => {
                for order_id in orders {
                    let sent = tell(
                        &client,
                        &order_id,
                        OrderFulfillment::shop_timeout,
                        (),
                        "shop-timeout".to_string(),
                    )
                    .await;
                    if sent {
                        if let Err(e) = shop::timeout_told(&db, &order_id).await {
                            tracing::warn!(error = %e, "noting a shop timeout");
                        }
                    } else {
                        tracing::warn!(
                            order_id,
                            "could not tell the order its acceptance timed out; retrying"
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading unanswered orders"),
        }
        if pause(&mut stop).await {
            return;
        }
    }
}

/// The delivery context's sweep: offers past their expiry.
pub async fn offer_expiry(db: Db, client: Client, mut stop: watch::Receiver<bool>) {
    loop {
        match delivery::lapsed_offers(&db).await {
            Ok(offers) => {
                for (order_id, rider_id, expires_at) in offers {
                    let sent = tell(
                        &client,
                        &order_id,
                        OrderFulfillment::offer_lapsed,
                        RiderAction {
                            rider_id: rider_id.clone(),
                        },
                        format!("offer-lapsed:{rider_id}:{expires_at}"),
                    )
                    .await;
                    if sent {
                        if let Err(e) = delivery::lapse_told(&db, &order_id, &rider_id).await {
                            tracing::warn!(error = %e, "noting a lapsed offer");
                        }
                    } else {
                        tracing::warn!(
                            order_id,
                            rider_id,
                            "could not tell the order its offer lapsed; retrying"
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading lapsed offers"),
        }
        if pause(&mut stop).await {
            return;
        }
    }
}

/// Waits for the next round; true when asked to stop.
async fn pause(stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(EVERY) => false,
        _ = stop.changed() => true,
    }
}
