//! Owner calls: the shop's orders, accept with a cooking time, reject, ready.

use crate::AppState;
use crate::act::{Action, Answer, act};
use crate::domain::{CookMinutes, Id, text};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, Body, IdempotencyKey, Path, Query};
use crate::paging::Paging;
use axum::extract::State;
use axum::response::Response;
use baedal_activities::shop;
use baedal_workflows::{AcceptOrder, OrderFulfillment, OrderStatus, RejectOrder};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
}

fn my_shop(user: &AuthUser) -> ApiResult<String> {
    user.require("owner")?
        .shop_id
        .clone()
        .ok_or_else(|| ApiError::Forbidden("this owner has no shop".into()))
}

/// The shop's orders
#[utoipa::path(
    get,
    path = "/shop/orders",
    tag = "owner",
    operation_id = "listShopOrders",
    description = "The paid orders of the caller's own shop (owner read model), newest first, \
                   a page at a time, optionally only those in one status.",
    params(
        ("status" = Option<crate::openapi::OrderStatus>, Query, description = "Only orders in this status"),
        crate::paging::PageParams,
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The shop's orders", body = Vec<crate::openapi::OrderDtl>, headers(("Link" = String, description = "`<…>; rel=\"next\"`: the next page, when more items follow"))),
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
    Query(q): Query<ListQuery>,
    paging: Paging,
) -> ApiResult<Response> {
    let shop_id = my_shop(&user)?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            OrderStatus::parse(s)
                .ok_or_else(|| ApiError::unprocessable(format!("unknown status {s}")))?
                .as_str(),
        ),
    };
    let page = shop::list_orders(&st.dbs.shop, &shop_id, status, &paging.request).await?;
    Ok(paging.respond(page))
}

/// The order, if it belongs to the caller's shop (404 otherwise: never another's data).
async fn own_order(st: &AppState, shop_id: &str, id: &str) -> ApiResult<()> {
    match shop::find_order(&st.dbs.shop, id).await? {
        Some((s, _)) if s == shop_id => Ok(()),
        _ => Err(ApiError::not_found("order")),
    }
}

/// How long the food takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AcceptBody {
    /// Cooking time in minutes; the food is ready at `readyAt` = now + this.
    #[schema(minimum = 1, maximum = 180, example = 15)]
    cook_minutes: i64,
}

/// Accept an order
#[utoipa::path(
    post,
    path = "/shop/orders/{id}/accept",
    tag = "owner",
    operation_id = "acceptOrder",
    description = "Accepts a `PAID` order of the caller's shop with a cooking time; a rider is then \
                   sought. Any other state is `409`.",
    params(("id" = String, Path, description = "The order's id"), IdempotencyKey),
    request_body = AcceptBody,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Accepted (`status: ACCEPTED`, with `readyAt`)", body = crate::openapi::ActionResult),
        crate::openapi::ActionRefusals,
        crate::openapi::BodyRefusals,
    ),
)]
pub async fn accept(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
    Body(b): Body<AcceptBody>,
) -> ApiResult<Answer> {
    let shop_id = my_shop(&user)?;
    let id = Id::parse("order", id)?;
    let minutes = CookMinutes::parse(b.cook_minutes)?;
    let action = Action {
        order_id: &id,
        caller: &user.0.sub,
        name: "accept",
        key,
    };
    let input = AcceptOrder {
        cook_minutes: minutes.get(),
    };
    act(
        &st,
        action,
        own_order(&st, &shop_id, &id),
        OrderFulfillment::accept,
        input,
    )
    .await
}

/// Why the shop refuses the order.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Shown to the customer as the order's `reason`.
    #[schema(min_length = 1, max_length = 500, example = "Sold out")]
    reason: String,
}

/// Reject an order
#[utoipa::path(
    post,
    path = "/shop/orders/{id}/reject",
    tag = "owner",
    operation_id = "rejectOrder",
    description = "Rejects a `PAID` order of the caller's shop; the customer is refunded. Any other \
                   state is `409`.",
    params(("id" = String, Path, description = "The order's id"), IdempotencyKey),
    request_body = RejectBody,
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Rejected (`status: REJECTED`, with the refund)", body = crate::openapi::ActionResult),
        crate::openapi::ActionRefusals,
        crate::openapi::BodyRefusals,
    ),
)]
pub async fn reject(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
    Body(b): Body<RejectBody>,
) -> ApiResult<Answer> {
    let shop_id = my_shop(&user)?;
    let id = Id::parse("order", id)?;
    let reason = text("reason", &b.reason, 500)?;
    let action = Action {
        order_id: &id,
        caller: &user.0.sub,
        name: "reject",
        key,
    };
    act(
        &st,
        action,
        own_order(&st, &shop_id, &id),
        OrderFulfillment::reject,
        RejectOrder { reason },
    )
    .await
}

/// Mark the food ready
#[utoipa::path(
    post,
    path = "/shop/orders/{id}/ready",
    tag = "owner",
    operation_id = "markOrderReady",
    description = "Marks an accepted order's food ready before `readyAt`; delivery can then start \
                   as soon as a rider is assigned. `409` when the order's state does not allow it.",
    params(("id" = String, Path, description = "The order's id"), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Marked ready; the order's status afterwards", body = crate::openapi::ActionResult),
        crate::openapi::ActionRefusals,
    ),
)]
pub async fn ready(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
) -> ApiResult<Answer> {
    let shop_id = my_shop(&user)?;
    let id = Id::parse("order", id)?;
    let action = Action {
        order_id: &id,
        caller: &user.0.sub,
        name: "ready",
        key,
    };
    act(
        &st,
        action,
        own_order(&st, &shop_id, &id),
        OrderFulfillment::mark_ready,
        (),
    )
    .await
}
