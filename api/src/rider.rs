//! Rider calls: location and availability, offers, deliveries.

use crate::AppState;
use crate::act::{Action, Answer, act};
use crate::domain::{Id, LatLon};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, Body, IdempotencyKey, Path};
use crate::paging::Paging;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use baedal_activities::delivery;
use baedal_workflows::{OrderFulfillment, RiderAction};
use serde::Deserialize;
use serde_json::Value;

/// Where the rider is and whether they take offers.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    #[schema(minimum = -90, maximum = 90, example = 37.5)]
    lat: f64,
    #[schema(minimum = -180, maximum = 180, example = 127.03)]
    lon: f64,
    /// Whether the rider takes new offers.
    available: bool,
}

/// Report location and availability
#[utoipa::path(
    put,
    path = "/rider/location",
    tag = "rider",
    operation_id = "reportLocation",
    request_body = LocationBody,
    security(("bearerAuth" = [])),
    responses(
        (status = 204, description = "Recorded"),
        crate::openapi::BodyRefusals,
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn location(
    State(st): State<AppState>,
    user: AuthUser,
    Body(b): Body<LocationBody>,
) -> ApiResult<StatusCode> {
    let me = user.require("rider")?;
    let at = LatLon::parse(b.lat, b.lon)?;
    delivery::report_location(&st.dbs.delivery, &me.sub, at.lat, at.lon, b.available).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's live offers
#[utoipa::path(
    get,
    path = "/rider/offers",
    tag = "rider",
    operation_id = "listOffers",
    description = "Delivery offers made to the caller that have not expired.",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Live offers", body = Vec<crate::openapi::Offer>),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn offers(State(st): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<Value>>> {
    let me = user.require("rider")?;
    Ok(Json(delivery::offers_for(&st.dbs.delivery, &me.sub).await?))
}

/// The caller's deliveries
#[utoipa::path(
    get,
    path = "/rider/deliveries",
    tag = "rider",
    operation_id = "listDeliveries",
    description = "Deliveries assigned to the caller (rider read model), newest order first, a page at a time.",
    params(crate::paging::PageParams),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The caller's deliveries", body = Vec<crate::openapi::DeliveryInfo>, headers(("Link" = String, description = "`<…>; rel=\"next\"`: the next page, when more items follow"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 422, response = crate::openapi::Unprocessable),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn deliveries(
    State(st): State<AppState>,
    user: AuthUser,
    paging: Paging,
) -> ApiResult<Response> {
    let me = user.require("rider")?;
    let page = delivery::deliveries_for(&st.dbs.delivery, &me.sub, &paging.request).await?;
    Ok(paging.respond(page))
}

/// The caller holds a live offer of this order (409 otherwise: expired or taken).
async fn live_offer(st: &AppState, rider: &str, id: &str) -> ApiResult<()> {
    if !delivery::has_live_offer(&st.dbs.delivery, rider, id).await? {
        return Err(ApiError::Conflict(
            "no live offer of this order for you (expired or taken)".into(),
        ));
    }
    Ok(())
}

/// The delivery is the caller's (404 otherwise), as the order itself says: its
/// customer's view is written before any action answers, so it names the rider
/// from the moment their accept is answered. The rider's own view follows the
/// change feed and may lag behind that accept (a busy or restarted delivery
/// context; the accept answers after a few seconds whether or not it caught
/// up). The workflow checks the rider again on every action.
async fn own_delivery(st: &AppState, rider: &str, id: &str) -> ApiResult<()> {
    match baedal_activities::order::find(&st.dbs.order, id).await? {
        Some((_, doc)) if doc["rider"]["id"].as_str() == Some(rider) => Ok(()),
        _ => Err(ApiError::not_found("delivery")),
    }
}

/// Accept an offer
#[utoipa::path(
    post,
    path = "/rider/offers/{orderId}/accept",
    tag = "rider",
    operation_id = "acceptOffer",
    description = "Takes the delivery: the caller is assigned and sees it in their deliveries. `409` when the offer expired or was taken.",
    params(("orderId" = String, Path, description = "The offered order's id"), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Assigned (`status: RIDER_ASSIGNED` or later)", body = crate::openapi::ActionResult),
        crate::openapi::ActionRefusals,
    ),
)]
pub async fn accept(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
) -> ApiResult<Answer> {
    let me = user.require("rider")?.sub.clone();
    let id = Id::parse("order", id)?;
    let action = Action {
        order_id: &id,
        caller: &me,
        name: "offer.accept",
        key,
    };
    act(
        &st,
        action,
        live_offer(&st, &me, &id),
        OrderFulfillment::rider_accept,
        RiderAction {
            rider_id: me.clone(),
        },
    )
    .await
}

/// Decline an offer
#[utoipa::path(
    post,
    path = "/rider/offers/{orderId}/decline",
    tag = "rider",
    operation_id = "declineOffer",
    description = "Passes on the offer; it goes to the next nearest rider who has not declined it. `409` when the offer expired or was taken.",
    params(("orderId" = String, Path, description = "The offered order's id"), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Declined; the order's status afterwards", body = crate::openapi::ActionResult),
        crate::openapi::ActionRefusals,
    ),
)]
pub async fn decline(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
) -> ApiResult<Answer> {
    let me = user.require("rider")?.sub.clone();
    let id = Id::parse("order", id)?;
    let action = Action {
        order_id: &id,
        caller: &me,
        name: "offer.decline",
        key,
    };
    act(
        &st,
        action,
        live_offer(&st, &me, &id),
        OrderFulfillment::rider_decline,
        RiderAction {
            rider_id: me.clone(),
        },
    )
    .await
}

/// Report pickup
#[utoipa::path(
    post,
    path = "/rider/deliveries/{orderId}/pickup",
    tag = "rider",
    operation_id = "pickUpDelivery",
    description = "The caller picked the food up (`DELIVERY_STARTED` to `PICKED_UP`). `409` in any other state.",
    params(("orderId" = String, Path, description = "The delivered order's id"), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Picked up (`status: PICKED_UP`)", body = crate::openapi::ActionResult),
        crate::openapi::ActionRefusals,
    ),
)]
pub async fn pickup(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
) -> ApiResult<Answer> {
    let me = user.require("rider")?.sub.clone();
    let id = Id::parse("order", id)?;
    let action = Action {
        order_id: &id,
        caller: &me,
        name: "pickup",
        key,
    };
    act(
        &st,
        action,
        own_delivery(&st, &me, &id),
        OrderFulfillment::pickup,
        RiderAction {
            rider_id: me.clone(),
        },
    )
    .await
}

/// Report delivery
#[utoipa::path(
    post,
    path = "/rider/deliveries/{orderId}/complete",
    tag = "rider",
    operation_id = "completeDelivery",
    description = "The caller delivered the order (`PICKED_UP` to `DELIVERED`). `409` in any other state.",
    params(("orderId" = String, Path, description = "The delivered order's id"), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Delivered (`status: DELIVERED`)", body = crate::openapi::ActionResult),
        crate::openapi::ActionRefusals,
    ),
)]
pub async fn complete(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    key: Option<IdempotencyKey>,
) -> ApiResult<Answer> {
    let me = user.require("rider")?.sub.clone();
    let id = Id::parse("order", id)?;
    let action = Action {
        order_id: &id,
        caller: &me,
        name: "complete",
        key,
    };
    act(
        &st,
        action,
        own_delivery(&st, &me, &id),
        OrderFulfillment::complete,
        RiderAction {
            rider_id: me.clone(),
        },
    )
    .await
}
