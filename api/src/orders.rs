//! Customer calls: place (update-with-start), read, follow (SSE), cancel.

use crate::domain::{LatLon, Quantity, phone, text};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, Body};
use crate::{AppState, action_json, temporal_unreachable, update_error};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use baedal_activities::payment::breaker::Admission;
use baedal_activities::{order, shop};
use baedal_workflows::{
    Address, LineItem, OrderFulfillment, OrderRequest, OrderStatus, PlaceOutcome, ShopRef,
    workflow_id,
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;
use temporalio_client::errors::WorkflowUpdateWithStartError;
use temporalio_client::{
    WorkflowExecuteUpdateOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowQueryOptions, WorkflowUpdateWithStartOptions,
};
use utoipa::ToSchema;

/// An order to place and pay. Prices are never sent: the server prices the
/// items from the shop's menu.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlaceBody {
    #[schema(example = "shop-1")]
    shop_id: String,
    /// Distinct menu items of that shop.
    #[schema(min_items = 1, max_items = 50)]
    items: Vec<ItemBody>,
    address: AddressBody,
    #[schema(
        example = "010-1234-5678",
        min_length = 7,
        max_length = 20,
        pattern = r"^[0-9+\- ]+$"
    )]
    phone: String,
    /// The payment method's token (simulator: `tok_ok` approves, `tok_declined` declines).
    #[schema(example = "tok_ok", min_length = 1, max_length = 200)]
    payment_token: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ItemBody {
    menu_id: String,
    #[schema(minimum = 1, maximum = 99)]
    quantity: i64,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddressBody {
    #[schema(min_length = 1, max_length = 500, example = "서울시 강남구 테헤란로 1")]
    text: String,
    #[schema(minimum = -90, maximum = 90, example = 37.5)]
    lat: f64,
    #[schema(minimum = -180, maximum = 180, example = 127.03)]
    lon: f64,
}

/// Place and pay for an order
#[utoipa::path(
    post,
    path = "/orders",
    tag = "customer",
    operation_id = "placeOrder",
    description = "Validates the order, prices it from the shop's menu and pays for it in the same \
                   request: the order exists (`201`, status `PAID`) only once the payment is approved. \
                   A repeat with the same `Idempotency-Key` and body answers the same order, charged once; \
                   the same key with another body is `422`. `503` (with `Retry-After`) also answers \
                   while the order service itself is unreachable.",
    request_body = PlaceBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "1..200 visible ASCII characters; makes retries safe")),
    security(("bearerAuth" = [])),
    responses(
        (status = 201, description = "Paid and placed", body = crate::openapi::OrderInfo,
            headers(("Location" = String, description = "`/api/orders/{orderId}`"))),
        crate::openapi::BodyRefusals,
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 402, response = crate::openapi::PaymentDeclined),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
        (status = 503, response = crate::openapi::PaymentUnavailable),
    ),
)]
pub async fn place(
    State(st): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    Body(body): Body<PlaceBody>,
) -> ApiResult<Response> {
    let customer = user.require("customer")?.sub.clone();
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(|s| s.trim().to_string()))
        .transpose()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(ApiError::BadRequest(
            "Idempotency-Key must be 1..200 characters".into(),
        ));
    }

    // Parse everything before anything is written or charged.
    let shop = shop::find_shop(&st.dbs.shop, &body.shop_id)
        .await?
        .ok_or_else(|| ApiError::unprocessable(format!("unknown shop {}", body.shop_id)))?;
    if body.items.is_empty() {
        return Err(ApiError::unprocessable("an order needs at least one item"));
    }
    if body.items.len() > 50 {
        return Err(ApiError::unprocessable(
            "at most 50 different items per order",
        ));
    }
    let menu = shop::menu(&st.dbs.shop, &shop.id).await?;
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(body.items.len());
    for it in &body.items {
        let q = Quantity::parse(it.quantity)?;
        let m = menu.iter().find(|m| m.id == it.menu_id).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "menu item {} is not on {}'s menu",
                it.menu_id, shop.id
            ))
        })?;
        if !seen.insert(&it.menu_id) {
            return Err(ApiError::unprocessable(format!(
                "menu item {} is listed twice",
                it.menu_id
            )));
        }
        items.push(LineItem {
            menu_id: m.id.clone(),
            name: m.name.clone(),
            price: m.price,
            quantity: q.get(),
        });
    }
    let total: i64 = items.iter().map(|i| i.price * i64::from(i.quantity)).sum();
    let at = LatLon::parse(body.address.lat, body.address.lon)?;
    let address = Address {
        text: text("address.text", &body.address.text, 500)?,
        lat: at.lat,
        lon: at.lon,
    };
    let phone = phone(&body.phone)?;
    let token = text("paymentToken", &body.payment_token, 200)?;

    // A struggling gateway is not called at all while the breaker is open.
    if let Admission::Refused { retry_after } = st.breaker.admit().await? {
        return Err(ApiError::PaymentUnavailable(
            "the payment gateway is struggling; nothing was charged, please pay again shortly"
                .into(),
            retry_after,
        ));
    }

    let fresh_id = uuid::Uuid::new_v4().simple().to_string();
    let order_id = match &key {
        None => fresh_id,
        Some(k) => {
            let canonical = serde_json::to_vec(&body).map_err(anyhow::Error::from)?;
            let hash = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &canonical)
                .simple()
                .to_string();
            match order::claim_key(&st.dbs.order, &customer, k, &hash, &fresh_id).await? {
                order::Placement::New => fresh_id,
                order::Placement::Existing(id) => id,
                order::Placement::Conflict => {
                    return Err(ApiError::unprocessable(
                        "this Idempotency-Key was already used for a different order",
                    ));
                }
            }
        }
    };

    let req = OrderRequest {
        order_id: order_id.clone(),
        customer_id: customer,
        owner_id: shop.owner_id.clone(),
        shop: ShopRef {
            id: shop.id.clone(),
            name: shop.name.clone(),
            lat: shop.lat,
            lon: shop.lon,
        },
        items,
        total,
        address,
        phone,
        payment_token: token,
        timeouts: st.cfg.timeouts(),
        queues: st.cfg.queues(),
    };
    let options = WorkflowUpdateWithStartOptions::new(
        st.cfg.workflow_queue(),
        workflow_id(&order_id),
        // A retry with the same key joins the running order instead of starting another.
        WorkflowIdConflictPolicy::UseExisting,
    )
    .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
    .update_id("place".to_string())
    .static_summary(format!("order {order_id}"))
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
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) if unreachable_during_place(&e) => {
            return Err(ApiError::Unavailable(
                "the order service did not answer; retry with the same Idempotency-Key to get \
                 the same order, charged at most once"
                    .into(),
            ));
        }
        Err(e) => {
            // The order's workflow already finished (a late retry of a key): answer
            // with what it decided.
            let handle = st
                .temporal
                .get_workflow_handle::<OrderFulfillment>(workflow_id(&order_id));
            match handle
                .get_update_handle(OrderFulfillment::place, "place")
                .get_result(Default::default())
                .await
            {
                Ok(o) => o,
                Err(_) => {
                    return Err(ApiError::Internal(anyhow::anyhow!(
                        "placing order {order_id}: {e}"
                    )));
                }
            }
        }
    };
    match outcome {
        PlaceOutcome::Paid { order } => {
            let body = order::order_info(&order);
            Ok((
                StatusCode::CREATED,
                [(header::LOCATION, format!("/api/orders/{order_id}"))],
                Json(body),
            )
                .into_response())
        }
        PlaceOutcome::Declined { message } => Err(ApiError::PaymentDeclined(format!(
            "{message}; nothing was charged"
        ))),
        PlaceOutcome::Unavailable { message } => {
            tracing::warn!(%order_id, %message, "payment unavailable");
            Err(ApiError::PaymentUnavailable(
                "the payment did not go through in time; the order was not placed, please pay again shortly".into(),
                Duration::from_secs(2),
            ))
        }
    }
}

/// Whether update-with-start failed because Temporal did not answer.
fn unreachable_during_place(e: &WorkflowUpdateWithStartError) -> bool {
    use temporalio_client::errors::{WorkflowStartError, WorkflowUpdateError};
    match e {
        WorkflowUpdateWithStartError::Rpc(s)
        | WorkflowUpdateWithStartError::Start(WorkflowStartError::Rpc(s))
        | WorkflowUpdateWithStartError::Update(WorkflowUpdateError::Rpc(s)) => {
            temporal_unreachable(s)
        }
        _ => false,
    }
}

/// The caller's orders
#[utoipa::path(
    get,
    path = "/orders",
    tag = "customer",
    operation_id = "listOrders",
    description = "The caller's orders (customer read model), newest first.",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The caller's orders", body = Vec<crate::openapi::OrderInfo>),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn list(State(st): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<Value>>> {
    let me = user.require("customer")?;
    Ok(Json(
        order::list_for_customer(&st.dbs.order, &me.sub).await?,
    ))
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
    params(("id" = String, Path, description = "The order's id")),
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
) -> ApiResult<Json<Value>> {
    own_order(&st, &user, &id).await?;
    let handle = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(&id));
    let r = handle
        .execute_update(
            OrderFulfillment::cancel,
            (),
            WorkflowExecuteUpdateOptions::default(),
        )
        .await
        .map_err(update_error)?;
    Ok(Json(action_json(&r)))
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
                   `REJECTED` or `CANCELLED`. `Last-Event-ID` resumes after that event. Browsers' \
                   EventSource cannot send headers, so this call also takes the token as `?token=`.",
    params(
        ("id" = String, Path, description = "The order's id"),
        ("token" = Option<String>, Query, description = "The bearer token, for clients that cannot send `Authorization`"),
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
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn events(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let doc = own_order(&st, &user, &id).await?;
    let mut next: usize = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(0, |n| n + 1);
    let terminal = |status: &Value| {
        status
            .as_str()
            .and_then(OrderStatus::parse)
            .is_some_and(OrderStatus::is_terminal)
    };
    // A client resuming after the final event has seen everything: 204 tells an
    // EventSource to stop reconnecting instead of holding a stream open for nothing.
    let seen = doc["history"].as_array().map_or(0, Vec::len);
    if terminal(&doc["status"]) && next >= seen {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let db = st.dbs.order.clone();
    let stream = async_stream(move |tx| async move {
        // The first round sends from the document already read for the tenant check.
        let mut first = Some(doc);
        loop {
            let doc = match first.take() {
                Some(d) => d,
                None => match order::find(&db, &id).await {
                    Ok(Some((_, d))) => d,
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
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
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
