//! Customer calls: place (update-with-start), read, follow (SSE), cancel.

use crate::act::{Action, Answer, act};
use crate::domain::{Id, PlaceOrder};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, Body, IdempotencyKey, Path};
use crate::metrics::Limit;
use crate::paging::Paging;
use crate::{AppState, temporal_unreachable};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use baedal_activities::order::keys::{self, Placement};
use baedal_activities::payment::breaker::Admission;
use baedal_activities::{order, shop};
use baedal_workflows::{
    OrderFulfillment, OrderRequest, OrderStatus, PlaceOutcome, search, workflow_id,
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::convert::Infallible;
use std::time::Duration;
use temporalio_client::errors::{WorkflowUpdateError, WorkflowUpdateWithStartError};
use temporalio_client::{
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions,
    WorkflowUpdateWithStartOptions,
};
use temporalio_common::search_attributes::SearchAttributes;
use tokio::time::timeout;
use utoipa::ToSchema;

/// An order to place and pay. Prices are never sent: the server prices the
/// items from the shop's menu.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlaceBody {
    #[schema(example = "shop-1")]
    pub(crate) shop_id: String,
    /// Distinct menu items of that shop.
    #[schema(min_items = 1, max_items = 50)]
    pub(crate) items: Vec<ItemBody>,
    pub(crate) address: AddressBody,
    #[schema(
        example = "010-1234-5678",
        min_length = 7,
        max_length = 20,
        pattern = r"^[0-9+\- ]+$"
    )]
    pub(crate) phone: String,
    /// The payment method's token (simulator: `tok_ok` approves, `tok_declined` declines).
    #[schema(example = "tok_ok", min_length = 1, max_length = 200)]
    pub(crate) payment_token: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ItemBody {
    pub(crate) menu_id: String,
    #[schema(minimum = 1, maximum = 99)]
    pub(crate) quantity: i64,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddressBody {
    #[schema(min_length = 1, max_length = 500, example = "서울시 강남구 테헤란로 1")]
    pub(crate) text: String,
    #[schema(minimum = -90, maximum = 90, example = 37.5)]
    pub(crate) lat: f64,
    #[schema(minimum = -180, maximum = 180, example = 127.03)]
    pub(crate) lon: f64,
}

/// Place and pay for an order
#[utoipa::path(
    post,
    path = "/orders",
    tag = "customer",
    operation_id = "placeOrder",
    description = "Validates the order, prices it from the shop's menu and pays for it in the same \
                   request: the order exists (`201`, status `PAID`) only once the payment is approved. \
                   A repeat with the same `Idempotency-Key` and body answers the same order, charged once, \
                   even while the payment breaker refuses new orders; a repeat of an attempt that was not \
                   established (`402`, `503`) pays again. The same key with another body is `422`. `503` \
                   (with `Retry-After`) also answers while the order service itself is unreachable.",
    request_body = PlaceBody,
    params(IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 201, description = "Paid and placed", body = crate::openapi::OrderInfo,
            headers(("Location" = String, description = "`/api/orders/{orderId}`"))),
        crate::openapi::BodyRefusals,
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 402, response = crate::openapi::PaymentDeclined),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::PaymentUnavailable),
    ),
)]
pub async fn place(
    State(st): State<AppState>,
    user: AuthUser,
    key: Option<IdempotencyKey>,
    Body(body): Body<PlaceBody>,
) -> ApiResult<Placed> {
    let customer = user.require("customer")?.sub.clone();
    // Parse everything before anything is written or charged.
    // An id no shop can have is not looked up (Postgres refuses NUL in text).
    if !Id::possible(&body.shop_id) {
        return Err(ApiError::unprocessable("unknown shop"));
    }
    let shop = shop::find_shop(&st.dbs.shop, &body.shop_id)
        .await?
        .ok_or_else(|| ApiError::unprocessable(format!("unknown shop {}", body.shop_id)))?;
    let menu = shop::menu(&st.dbs.shop, &shop.id).await?;
    let order = PlaceOrder::parse(&body, shop, &menu)?;

    let order_id = match &key {
        None => {
            admit(&st).await?;
            new_order_id()
        }
        Some(key) => match order_for_key(&st, &customer, key, &order).await? {
            Keyed::Placed(order_id, outcome) => return Ok(Placed { order_id, outcome }),
            Keyed::Place(order_id) => order_id,
        },
    };
    // Every new try costs a workflow and a gateway call: a customer makes at
    // most so many in ten minutes (a repeat of an established order, above,
    // costs neither and is never refused).
    if let Err(wait) = st.throttles.orders_per_customer.try_take(&customer) {
        st.metrics.throttled(Limit::OrdersPerCustomer);
        return Err(ApiError::TooManyRequests(
            "too many orders in a short time; wait before ordering again".into(),
            wait,
        ));
    }
    // A card declined again and again is not tried any more for a while: each
    // try starts an order's workflow and asks the gateway.
    let declines = &st.throttles.declines_per_card;
    let card = order.card().to_string();
    if let Some(wait) = declines.closed_for(&card) {
        st.metrics.throttled(Limit::DeclinedCard);
        return Err(ApiError::TooManyRequests(
            "this card was declined too often; wait before paying with it again".into(),
            wait,
        ));
    }
    let outcome = start_order(&st, order.request(&order_id, &customer, &st.cfg)).await?;
    if matches!(outcome, PlaceOutcome::Declined { .. }) {
        declines.failed(&card);
    }
    Ok(Placed { order_id, outcome })
}

/// Placing is the workflow's `place` update, under this id in every attempt
/// on one order id: a retry joins the first instead of paying again.
const PLACE_UPDATE_ID: &str = "place";

/// How long to wait on an earlier attempt: far beyond a payment (bounded by
/// `PAYMENT_TIMEOUT_MS`); only a Temporal that hangs reaches it.
const PLACE_DEADLINE: Duration = Duration::from_secs(15);

fn new_order_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A struggling gateway is not called at all while the breaker is open.
async fn admit(st: &AppState) -> ApiResult<()> {
    match st.breaker.admit().await? {
        Admission::Refused { retry_after } => Err(ApiError::PaymentUnavailable(
            "the payment gateway is struggling; nothing was charged, please pay again shortly"
                .into(),
            retry_after,
        )),
        _ => Ok(()),
    }
}

/// Where a placement with an `Idempotency-Key` goes.
enum Keyed {
    /// The key's order is established: its answer, whatever the breaker says.
    Placed(String, PlaceOutcome),
    /// Place (or join) the order under this id; the breaker has let it through.
    Place(String),
}

/// The key is looked up before the breaker is asked: a retry of a paid order
/// gets its order even while new orders are refused.
async fn order_for_key(
    st: &AppState,
    customer: &str,
    key: &IdempotencyKey,
    order: &PlaceOrder,
) -> ApiResult<Keyed> {
    let db = &st.dbs.order;
    let key = key.as_str();
    let reused = || {
        ApiError::unprocessable(format!(
            "this {} was already used for a different order",
            IdempotencyKey::HEADER
        ))
    };
    match keys::find_placement(db, customer, key, order.body_hash()).await? {
        Placement::Conflict => Err(reused()),
        Placement::Existing(id) => match earlier_outcome(st, &id).await? {
            Some(outcome @ PlaceOutcome::Paid { .. }) => Ok(Keyed::Placed(id, outcome)),
            // Declined or unavailable: not established, so the retry really
            // retries, as a new order (the attempt's workflow keeps its own end).
            // Of two retries racing, one moves the key and both place that order.
            Some(_) => {
                admit(st).await?;
                let moved = keys::move_placement(db, customer, key, &id, &new_order_id()).await?;
                Ok(Keyed::Place(moved))
            }
            // The attempt never reached Temporal: place it now, under its id.
            None => {
                admit(st).await?;
                Ok(Keyed::Place(id))
            }
        },
        Placement::New => {
            admit(st).await?;
            let fresh = new_order_id();
            match keys::claim_key(db, customer, key, order.body_hash(), &fresh).await? {
                Placement::New => Ok(Keyed::Place(fresh)),
                // A retry racing the first attempt joins its order.
                Placement::Existing(id) => Ok(Keyed::Place(id)),
                Placement::Conflict => Err(reused()),
            }
        }
    }
}

/// How an earlier attempt under this order id ended, waiting for it if it is
/// still paying; `None` if it never reached Temporal.
async fn earlier_outcome(st: &AppState, order_id: &str) -> ApiResult<Option<PlaceOutcome>> {
    let handle = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(order_id));
    let place = handle.get_update_handle(OrderFulfillment::place, PLACE_UPDATE_ID);
    // Paying takes at most the payment timeout; this bounds a Temporal that hangs.
    match timeout(PLACE_DEADLINE, place.get_result(Default::default())).await {
        Ok(Ok(outcome)) => Ok(Some(outcome)),
        Ok(Err(WorkflowUpdateError::NotFound(_))) => Ok(None),
        Ok(Err(WorkflowUpdateError::Rpc(s))) if temporal_unreachable(&s) => {
            Err(order_unreachable())
        }
        Err(_) => Err(order_unreachable()),
        Ok(Err(e)) => Err(ApiError::Internal(anyhow::anyhow!(
            "reading how order {order_id} was placed: {e}"
        ))),
    }
}

fn order_unreachable() -> ApiError {
    ApiError::Unavailable(
        "the order service did not answer; retry with the same Idempotency-Key to get \
         the same order, charged at most once"
            .into(),
    )
}

/// Shown with every order in the Temporal Web UI: what an order waits for at
/// each `OrderStatus` (its search attribute), since the owner's and the rider's
/// deadlines are kept by their contexts, not by timers in the order's history.
const WAITING_FOR: &str = "What this order waits for, by its OrderStatus search attribute:\n\
- (none yet): the payment (pending activity \"charge the customer\").\n\
- PAID: the shop owner's answer. The shop context rejects it (SHOP_TIMEOUT) once \
the owner has held it SHOP_ACCEPT_TIMEOUT, counted from when the owner's view got it.\n\
- ACCEPTED: a rider (pending activity \"offer the nearest free rider\", then that \
rider's answer; the delivery context lapses an offer after RIDER_OFFER_TIMEOUT) and \
the food (timer \"food ready (readyAt)\").\n\
- RIDER_ASSIGNED: the food. DELIVERY_STARTED: the rider's pickup. PICKED_UP: the \
rider's completion.\n\
The snapshot query shows the whole order.";

/// Starts the order's workflow and pays (update-with-start), or joins the
/// attempt already under this id; answers once the payment outcome is known.
async fn start_order(st: &AppState, req: OrderRequest) -> ApiResult<PlaceOutcome> {
    let order_id = req.order_id.clone();
    let options = WorkflowUpdateWithStartOptions::new(
        st.cfg.workflow_queue(),
        workflow_id(&order_id),
        // A retry with the same key joins the running order instead of starting another.
        WorkflowIdConflictPolicy::UseExisting,
    )
    .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
    .update_id(PLACE_UPDATE_ID.to_string())
    .static_summary(format!("order {order_id}"))
    .static_details(WAITING_FOR.to_string())
    // Set once here, so the workflow upserts only what changes (its status).
    .search_attributes(SearchAttributes::new([
        search::SHOP_ID.value_set(req.shop.id.clone()),
        search::CUSTOMER_ID.value_set(req.customer_id.clone()),
    ]))
    .build();
    let outcome = st
        .temporal
        .execute_update_with_start_workflow(
            OrderFulfillment::run,
            req,
            OrderFulfillment::place,
            (),
            options,
        )
        .await;
    match outcome {
        Ok(o) => Ok(o),
        Err(e) if unreachable_during_place(&e) => Err(order_unreachable()),
        Err(e) => {
            // The order's workflow already finished (a late retry of a key):
            // answer with what it decided.
            match earlier_outcome(st, &order_id).await {
                Ok(Some(o)) => Ok(o),
                _ => Err(ApiError::Internal(anyhow::anyhow!(
                    "placing order {order_id}: {e}"
                ))),
            }
        }
    }
}

/// Whether update-with-start failed because Temporal did not answer.
fn unreachable_during_place(e: &WorkflowUpdateWithStartError) -> bool {
    use temporalio_client::errors::WorkflowStartError;
    match e {
        WorkflowUpdateWithStartError::Rpc(s)
        | WorkflowUpdateWithStartError::Start(WorkflowStartError::Rpc(s))
        | WorkflowUpdateWithStartError::Update(WorkflowUpdateError::Rpc(s)) => {
            temporal_unreachable(s)
        }
        _ => false,
    }
}

/// A placement's answer: 201 with the order once paid; 402 declined; 503
/// when the payment did not go through in time (nothing established).
pub struct Placed {
    order_id: String,
    outcome: PlaceOutcome,
}

impl IntoResponse for Placed {
    fn into_response(self) -> Response {
        let Placed { order_id, outcome } = self;
        match outcome {
            PlaceOutcome::Paid { order } => (
                StatusCode::CREATED,
                [(header::LOCATION, format!("/api/orders/{order_id}"))],
                Json(order::order_info(&order)),
            )
                .into_response(),
            PlaceOutcome::Declined { message } => {
                ApiError::PaymentDeclined(format!("{message}; nothing was charged")).into_response()
            }
            PlaceOutcome::Unavailable { message } => {
                tracing::warn!(%order_id, %message, "payment unavailable");
                ApiError::PaymentUnavailable(
                    "the payment did not go through in time; the order was not placed, please \
                     pay again shortly"
                        .into(),
                    Duration::from_secs(2),
                )
                .into_response()
            }
        }
    }
}

/// The caller's orders
#[utoipa::path(
    get,
    path = "/orders",
    tag = "customer",
    operation_id = "listOrders",
    description = "The caller's orders (customer read model), newest first, a page at a time.",
    params(crate::paging::PageParams),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The caller's orders", body = Vec<crate::openapi::OrderInfo>, headers(("Link" = String, description = "`<…>; rel=\"next\"`: the next page, when more items follow"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 422, response = crate::openapi::Unprocessable),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn list(
    State(st): State<AppState>,
    user: AuthUser,
    paging: Paging,
) -> ApiResult<Response> {
    let me = user.require("customer")?;
    let page = order::list_for_customer(&st.dbs.order, &me.sub, &paging.request).await?;
    Ok(paging.respond(page))
}

/// The caller's order, or 404 (another tenant's order is indistinguishable from none).
async fn own_order(st: &AppState, user: &AuthUser, id: &str) -> ApiResult<Value> {
    let me = user.require("customer")?;
    match order::find(&st.dbs.order, id).await? {
        Some((customer, doc)) if customer == me.sub => Ok(doc),
        _ => Err(ApiError::not_found("order")),
    }
}

/// One of the caller's orders
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "customer",
    operation_id = "getOrder",
    description = "The order's customer read model; never waits on the workflow.",
    params(("id" = String, Path, description = "The order's id")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The order", body = crate::openapi::OrderInfo),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn get_one(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = Id::parse("order", id)?;
    Ok(Json(own_order(&st, &user, &id).await?))
}

/// The live view straight from the workflow (a Temporal query). Operators and
/// the benchmark use it; customers read the read model above, which never waits
/// on the workflow.
#[utoipa::path(
    get,
    path = "/orders/{id}/live",
    tag = "operator",
    operation_id = "getOrderLive",
    summary = "An order's live state from its workflow",
    description = "The order as its workflow holds it right now (a Temporal query), in OrderInfo form. \
                   Operators and the benchmark use it to compare with the read model; it needs the \
                   ordering customer's token.",
    params(("id" = String, Path, description = "The order's id")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The workflow's current view of the order", body = crate::openapi::OrderInfo),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn live(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = Id::parse("order", id)?;
    own_order(&st, &user, &id).await?;
    let snapshot = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(&id))
        .query(
            OrderFulfillment::snapshot,
            (),
            WorkflowQueryOptions::default(),
        )
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("querying order {id}: {e}")))?
        .ok_or_else(|| ApiError::not_found("order"))?;
    Ok(Json(order::order_info(&snapshot)))
}

/// Cancel an order
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = "customer",
    operation_id = "cancelOrder",
    description = "Cancels an order the shop has not accepted yet and refunds it. After acceptance \
                   (or once finished) it is `409`.",
    params(("id" = String, Path, description = "The order's id"), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Cancelled (`status: CANCELLED`, with the refund)", body = crate::openapi::ActionResult),
        crate::openapi::ActionRefusals,
    ),
)]
pub async fn cancel(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
) -> ApiResult<Answer> {
    let me = user.require("customer")?;
    let id = Id::parse("order", id)?;
    let action = Action {
        order_id: &id,
        caller: &me.sub,
        name: "cancel",
        key,
    };
    act(
        &st,
        action,
        own_order(&st, &user, &id),
        OrderFulfillment::cancel,
        (),
    )
    .await
}

/// A stream ticket
#[utoipa::path(
    post,
    path = "/orders/{id}/events/ticket",
    tag = "customer",
    operation_id = "streamTicket",
    description = "A short-lived token (5 minutes) that opens this order's event stream, and only \
                   that, as `GET /api/orders/{id}/events?ticket=…`: for EventSource, which cannot \
                   send `Authorization`, so the login token never appears in a URL.",
    params(("id" = String, Path, description = "The order's id")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The ticket", body = crate::openapi::StreamTicket),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn ticket(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = Id::parse("order", id)?;
    own_order(&st, &user, &id).await?;
    let ticket = crate::auth::stream_ticket(&st.keys, &user.0, &id)?;
    Ok(Json(serde_json::json!({
        "ticket": ticket,
        "expiresIn": crate::auth::TICKET_TTL_SECS,
    })))
}

/// One event per status change, each carrying the OrderInfo (with that event's
/// status and time); the stream ends after a final status.
#[utoipa::path(
    get,
    path = "/orders/{id}/events",
    tag = "customer",
    operation_id = "followOrder",
    summary = "Follow an order (server-sent events)",
    description = "A `text/event-stream` with one event per status change, from the first: each \
                   event's `id` is its index in `history` and its `data` is the OrderInfo JSON with \
                   that change's `status` and an `at` time. The stream ends after `DELIVERED`, \
                   `REJECTED` or `CANCELLED`, and after `SSE_MAX_LIFETIME` (resume by `Last-Event-ID`). \
                   `Last-Event-ID` resumes after that event (an id past the history resumes at its end). \
                   Each user may hold `SSE_STREAMS_PER_USER` streams at once and the gateway \
                   `SSE_STREAMS_MAX`; past that, 429. Browsers' \
                   EventSource cannot send headers, so this call also takes `?ticket=` from \
                   `POST /api/orders/{id}/events/ticket` (never the login token).",
    params(
        ("id" = String, Path, description = "The order's id"),
        ("ticket" = Option<String>, Query, description = "A stream ticket (`POST /api/orders/{id}/events/ticket`), for clients that cannot send `Authorization`"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The event stream; each `data` is an OrderInfo plus `at`",
            content_type = "text/event-stream", body = String),
        (status = 204, description = "The order is finished and `Last-Event-ID` was its final event: nothing more will come, do not reconnect"),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn events(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = Id::parse("order", id)?;
    let doc = own_order(&st, &user, &id).await?;
    let seen = doc["history"].as_array().map_or(0, Vec::len);
    // Resume after the named event; an id past the history (or too large to
    // count) resumes at its end, never wraps round to the start.
    let mut next: usize = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |n| {
            usize::try_from(n.saturating_add(1)).unwrap_or(usize::MAX)
        })
        .min(seen);
    let terminal = |status: &Value| {
        status
            .as_str()
            .and_then(OrderStatus::parse)
            .is_some_and(OrderStatus::is_terminal)
    };
    // A client resuming after the final event has seen everything: 204 tells an
    // EventSource to stop reconnecting instead of holding a stream open for nothing.
    if terminal(&doc["status"]) && next >= seen {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let slot = st.streams.open(&user.0.sub).map_err(|wait| {
        st.metrics.throttled(Limit::EventStreams);
        ApiError::TooManyRequests(
            "too many event streams open; close one or wait".into(),
            wait,
        )
    })?;
    let lifetime = st.cfg.sse_max_lifetime;
    // Woken by the process's one poller when this order changes (live.rs): an
    // idle stream reads nothing. Following starts before the first send, and the
    // poller looks back, so a change made since the read above still wakes it.
    let mut following = st.live.follow(&id);
    let live = st.live.clone();
    let stream = async_stream(move |tx| async move {
        // Held while the stream lives: the caps count it.
        let _slot = slot;
        let ends_at = tokio::time::Instant::now() + lifetime;
        // The first round sends from the document already read for the tenant check.
        let mut first = Some(doc);
        loop {
            let doc = match first.take() {
                Some(d) => d,
                None => match live.read(&id).await {
                    Ok(Some(d)) => d,
                    _ => return,
                },
            };
            let history = doc["history"].as_array().cloned().unwrap_or_default();
            while next < history.len() {
                let mut data = doc.clone();
                data["status"] = history[next]["status"].clone();
                data["at"] = history[next]["at"].clone();
                let ev = Event::default().id(next.to_string()).data(data.to_string());
                if tx.send(ev).await.is_err() {
                    return;
                }
                next += 1;
                if terminal(&data["status"]) {
                    return;
                }
            }
            // A final order has nothing more to send, whatever the client resumed from;
            // a stream that reached its lifetime ends (the client resumes by its id).
            if terminal(&doc["status"]) {
                return;
            }
            tokio::select! {
                changed = following.changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
                _ = tokio::time::sleep_until(ends_at) => return,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// A stream fed by a task; the task ends when the client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}
