//! Acting on an order: the one path every action takes (cancel, accept,
//! reject, ready, the rider's offer accept/decline, pickup, complete). The
//! handler parses its input and names who may act; [`act`] checks that,
//! sends the workflow update within a deadline, turns a refusal into 409 and
//! answers with the order's status afterwards.
//!
//! An `Idempotency-Key` makes a repeat answer the first answer. The key names
//! the Temporal update (`{action}:{caller}:{key}`), so a repeat that reaches
//! the workflow joins the first update instead of acting twice; and the first
//! final answer (200 or 409) is kept in the order context's store, so a later
//! repeat is answered from there without Temporal, even once the workflow has
//! finished. Retryable answers (503, 500) are not kept.

use crate::AppState;
use crate::error::{ApiError, ApiResult, problem_response};
use crate::extract::IdempotencyKey;
use crate::temporal_unreachable;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use baedal_activities::order::keys::{self, ActionKey, KeyedAction};
use baedal_workflows::{ActionResult, OrderFulfillment, workflow_id};
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;
use temporalio_client::WorkflowStartUpdateOptions;
use temporalio_client::errors::WorkflowUpdateError;
use temporalio_common::{HasWorkflowDefinition, UpdateDefinition};
use tokio::time::{Instant, timeout_at};

/// How long an action may take: enough for one that waits on a refund or on
/// the read models, short of the 30 s at which clients and proxies commonly
/// give up. Past it the answer is 503; a repeat with the same key joins the
/// same update and gets its answer.
const DEADLINE: Duration = Duration::from_secs(15);

/// An update of the order workflow that answers an action: every one of them
/// answers with the order's status afterwards.
pub(crate) trait OrderUpdate:
    UpdateDefinition<
        Workflow = <OrderFulfillment as HasWorkflowDefinition>::Run,
        Output = ActionResult,
        Input: Send,
    >
{
}

impl<U> OrderUpdate for U where
    U: UpdateDefinition<
            Workflow = <OrderFulfillment as HasWorkflowDefinition>::Run,
            Output = ActionResult,
            Input: Send,
        >
{
}

/// One caller's action on one order, as the request asked for it.
pub(crate) struct Action<'a> {
    pub order_id: &'a str,
    /// The acting user's id: keys are each caller's own.
    pub caller: &'a str,
    /// What is done (`cancel`, `offer.accept`, ...): a key serves one action on one order.
    pub name: &'static str,
    pub key: Option<IdempotencyKey>,
}

impl Action<'_> {
    fn keyed(&self) -> Option<KeyedAction<'_>> {
        self.key.as_ref().map(|k| KeyedAction {
            caller: self.caller,
            key: k.as_str(),
            order_id: self.order_id,
            action: self.name,
        })
    }

    /// Temporal deduplicates updates by id within a run: a repeat joins the first.
    fn update_id(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| format!("{}:{}:{}", self.name, self.caller, k.as_str()))
    }
}

/// Sends `update` to the order's workflow once `allowed` (the caller's right to
/// act on this order) holds, and answers 200 with the order's status
/// afterwards, or 409 when the order's state refuses it.
///
/// With a key, a repeat is answered before `allowed` is checked again: acting
/// may have ended the right itself (an answered offer is no longer live), and
/// the key shows the caller had it. `allowed` is only awaited when needed.
pub(crate) async fn act<U, T>(
    st: &AppState,
    action: Action<'_>,
    allowed: impl Future<Output = ApiResult<T>>,
    update: U,
    input: U::Input,
) -> ApiResult<Answer>
where
    U: OrderUpdate,
{
    let db = &st.dbs.order;
    let Some(keyed) = action.keyed() else {
        allowed.await?;
        let r = send(st, &action, update, input).await?;
        caller_view_holds(st, &action, &r).await;
        return Ok(Answer::ok(r));
    };
    let first = match keys::find_action(db, keyed).await? {
        ActionKey::Unused => {
            allowed.await?;
            keys::claim_action(db, keyed).await?
        }
        // An earlier attempt passed the check and may have acted already.
        seen => seen,
    };
    match first {
        ActionKey::Answered { status, body } => return Answer::kept(status, body),
        ActionKey::Conflict => {
            return Err(ApiError::unprocessable(format!(
                "this {} was already used for another request",
                IdempotencyKey::HEADER
            )));
        }
        ActionKey::Open | ActionKey::Unused => {}
    }
    let answer = match send(st, &action, update, input).await {
        Ok(r) => {
            caller_view_holds(st, &action, &r).await;
            Answer::ok(r)
        }
        Err(e @ ApiError::Conflict(_)) => Answer::refused(&e),
        // Retryable: not kept, the claim stays open for the retry.
        Err(e) => return Err(e),
    };
    let (status, body) =
        keys::answer_action(db, keyed, answer.status.as_u16(), &answer.body).await?;
    Answer::kept(status, body)
}

/// How long an answer waits for the caller's read model to hold the change.
/// The context that writes it follows the change feed within milliseconds; one
/// that is down must not hold the answer (the action is done): past this the
/// answer goes out and the view catches up when the context is back.
const VIEW_WAIT: Duration = Duration::from_secs(3);

/// Read-your-writes for the caller of an action on an order that is on the
/// change feed (the answer carries a `version`): the owner's actions answer once
/// the owner's view (OrderDtl) holds the change, the rider's once the rider's
/// view (DeliveryInfo) does. The customer's view is written by the workflow
/// itself before it answers.
async fn caller_view_holds(st: &AppState, action: &Action<'_>, r: &ActionResult) {
    let Some(version) = r.version else { return };
    let which = match action.name {
        "accept" | "reject" | "ready" => CallerView::Owner,
        "offer.accept" | "pickup" | "complete" => CallerView::Rider,
        _ => return,
    };
    let deadline = Instant::now() + VIEW_WAIT;
    // Looking sooner than the feed's usual lag finds nothing (and each look is
    // a query); after it, a look every 10 ms, then less often.
    let mut pause = Duration::from_millis(10);
    tokio::time::sleep(baedal_worker::feed::USUAL_LAG).await;
    loop {
        let held = match which {
            CallerView::Owner => {
                baedal_activities::shop::view_version(&st.dbs.shop, action.order_id).await
            }
            CallerView::Rider => {
                baedal_activities::delivery::view_version(&st.dbs.delivery, action.order_id).await
            }
        };
        if matches!(held, Ok(Some(v)) if v >= version as i64) {
            return;
        }
        if Instant::now() + pause > deadline {
            tracing::warn!(
                order_id = action.order_id,
                action = action.name,
                version,
                "answering before the caller's view holds the change"
            );
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

enum CallerView {
    Owner,
    Rider,
}

/// The update, sent and awaited within [`DEADLINE`].
async fn send<U>(
    st: &AppState,
    action: &Action<'_>,
    update: U,
    input: U::Input,
) -> ApiResult<ActionResult>
where
    U: OrderUpdate,
{
    let deadline = Instant::now() + DEADLINE;
    let handle = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(action.order_id));
    let update_id = action.update_id();
    let options = WorkflowStartUpdateOptions::builder()
        .maybe_update_id(update_id.clone())
        .build();
    let started = timeout_at(deadline, handle.start_update(update, input, options))
        .await
        .map_err(|_| {
            ApiError::Unavailable(
                "the order service did not take the action in time; try again (with the same \
                 Idempotency-Key it is applied at most once)"
                    .into(),
            )
        })?;
    let result = match started {
        Ok(running) => timeout_at(deadline, running.get_result(Default::default()))
            .await
            .map_err(|_| {
                ApiError::Unavailable(
                    "the action was taken and is still being carried out; repeat it with the \
                     same Idempotency-Key for its answer"
                        .into(),
                )
            })?,
        // The workflow has finished. Servers that remember a finished run's
        // updates answer a repeat above; for the others, ask for the update's
        // outcome by id. The handle's type only says how to read the result:
        // every action answers an ActionResult.
        Err(WorkflowUpdateError::NotFound(_)) if update_id.is_some() => {
            let id = update_id.unwrap_or_default();
            let earlier = handle.get_update_handle(OrderFulfillment::mark_ready, id);
            match timeout_at(deadline, earlier.get_result(Default::default())).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e @ WorkflowUpdateError::Failed(_))) => Err(e),
                _ => return Err(finished()),
            }
        }
        Err(e) => Err(e),
    };
    result.map_err(update_error)
}

fn finished() -> ApiError {
    ApiError::Conflict("the order is already finished".into())
}

/// Maps a refused or failed workflow update to the HTTP answer.
fn update_error(e: WorkflowUpdateError) -> ApiError {
    use WorkflowUpdateError as E;
    match e {
        E::Failed(f) => ApiError::Conflict(f.message.clone()),
        // The caller's view knew the order, so its workflow has finished.
        E::NotFound(_) => finished(),
        E::Rpc(s) if temporal_unreachable(&s) => ApiError::Unavailable(
            "the order service is unreachable; nothing was changed, please try again shortly"
                .into(),
        ),
        other => ApiError::Internal(anyhow::anyhow!("workflow update failed: {other}")),
    }
}

/// An action's answer in wire form.
pub(crate) fn action_json(r: &ActionResult) -> Value {
    json!({
        "status": r.status,
        "readyAt": r.ready_at.map(baedal_activities::time::rfc3339),
        "refund": r.refund,
    })
}

/// An action's final answer: 200 with the order's status afterwards, or the
/// 409 problem. Kept as sent, so a repeat of its key answers the same bytes.
#[derive(Debug)]
pub struct Answer {
    status: StatusCode,
    body: String,
}

impl Answer {
    fn ok(r: ActionResult) -> Self {
        Answer {
            status: StatusCode::OK,
            body: action_json(&r).to_string(),
        }
    }

    fn refused(e: &ApiError) -> Self {
        let (status, body) = e.problem();
        Answer {
            status,
            body: body.to_string(),
        }
    }

    fn kept(status: u16, body: String) -> ApiResult<Self> {
        let status = StatusCode::from_u16(status)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("kept answer: {e}")))?;
        Ok(Answer { status, body })
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        if self.status.is_success() {
            let mut resp = (self.status, self.body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        } else {
            problem_response(self.status, self.body)
        }
    }
}
