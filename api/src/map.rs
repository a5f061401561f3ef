//! `GET /api/orders/{id}/map`: where the shop, the customer and (while it
//! carries the order) the rider are, and the distances between them, for the
//! small map each role's page draws itself (no map tiles, no outside network).
//! The customer of the order, the owner of its shop and its rider may ask;
//! anyone else gets 404, as for an order that does not exist.

use crate::AppState;
use crate::domain::Id;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, Path};
use axum::Json;
use axum::extract::State;
use baedal_activities::geo::distance_m;
use baedal_activities::time::rfc3339;
use baedal_activities::{delivery, order, shop};
use serde::Serialize;
use utoipa::ToSchema;

/// A place on the map.
#[derive(Serialize, ToSchema)]
pub struct Spot {
    pub lat: f64,
    pub lon: f64,
}

/// The rider's last reported position.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiderSpot {
    pub lat: f64,
    pub lon: f64,
    /// When the rider reported it (RFC 3339).
    pub reported_at: String,
}

/// The order's places and distances (metres, great-circle).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderMap {
    pub shop: Spot,
    pub customer: Spot,
    /// While a rider carries the order (`RIDER_ASSIGNED` to `PICKED_UP`).
    pub rider: Option<RiderSpot>,
    pub shop_to_customer_m: i64,
    pub rider_to_shop_m: Option<i64>,
    pub rider_to_customer_m: Option<i64>,
}

/// Where the order's places are
#[utoipa::path(
    get,
    path = "/orders/{id}/map",
    tag = "customer",
    operation_id = "orderMap",
    description = "The shop, the delivery address and, while a rider carries the order, the \
                   rider's last reported position, with the distances between them. For the \
                   order's customer, its shop's owner and its rider.",
    params(("id" = String, Path, description = "The order's id")),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The places", body = OrderMap),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 404, response = crate::openapi::NotFound),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn order_map(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<OrderMap>> {
    let id = Id::parse("order", id)?;
    let not_found = || ApiError::not_found("order");
    let (customer, doc) = order::find(&st.dbs.order, &id)
        .await?
        .ok_or_else(not_found)?;
    let rider_id = doc["rider"]["id"].as_str();
    let status = doc["status"].as_str().unwrap_or_default();
    let me = &user.0;
    let allowed = match me.role.as_str() {
        "customer" => me.sub == customer,
        "owner" => me.shop_id.as_deref() == doc["shopId"].as_str(),
        "rider" => rider_id == Some(me.sub.as_str()),
        _ => false,
    };
    if !allowed {
        return Err(not_found());
    }
    let shop = shop::find_shop(&st.dbs.shop, doc["shopId"].as_str().unwrap_or_default())
        .await?
        .ok_or_else(not_found)?;
    let address = &doc["address"];
    let (Some(lat), Some(lon)) = (address["lat"].as_f64(), address["lon"].as_f64()) else {
        return Err(not_found());
    };
    let carrying = matches!(status, "RIDER_ASSIGNED" | "DELIVERY_STARTED" | "PICKED_UP");
    let rider = match rider_id {
        Some(r) if carrying => delivery::rider_position(&st.dbs.delivery, r).await?,
        _ => None,
    };
    let m = |a: (f64, f64), b: (f64, f64)| distance_m(a.0, a.1, b.0, b.1).round() as i64;
    let (s, c) = ((shop.lat, shop.lon), (lat, lon));
    Ok(Json(OrderMap {
        shop: Spot {
            lat: shop.lat,
            lon: shop.lon,
        },
        customer: Spot { lat, lon },
        rider_to_shop_m: rider.map(|(la, lo, _)| m((la, lo), s)),
        rider_to_customer_m: rider.map(|(la, lo, _)| m((la, lo), c)),
        rider: rider.map(|(lat, lon, at)| RiderSpot {
            lat,
            lon,
            reported_at: rfc3339(at),
        }),
        shop_to_customer_m: m(s, c),
    }))
}
