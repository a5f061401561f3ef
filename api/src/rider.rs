//! Rider calls: location and availability, offers, deliveries.

use crate::domain::LatLon;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, Body};
use crate::{AppState, action_json, update_error};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use baedal_activities::delivery;
use baedal_workflows::{OrderFulfillment, RiderAction, workflow_id};
use serde::Deserialize;
use serde_json::Value;
use temporalio_client::WorkflowExecuteUpdateOptions;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    lat: f64,
    lon: f64,
    available: bool,
}

pub async fn location(State(st): State<AppState>, user: AuthUser, Body(b): Body<LocationBody>) -> ApiResult<StatusCode> {
    let me = user.require("rider")?;
    let at = LatLon::parse(b.lat, b.lon)?;
    delivery::report_location(&st.dbs.delivery, &me.sub, at.lat, at.lon, b.available).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn offers(State(st): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<Value>>> {
    let me = user.require("rider")?;
    Ok(Json(delivery::offers_for(&st.dbs.delivery, &me.sub).await?))
}

pub async fn deliveries(State(st): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<Value>>> {
    let me = user.require("rider")?;
    Ok(Json(delivery::deliveries_for(&st.dbs.delivery, &me.sub).await?))
}

async fn live_offer(st: &AppState, user: &AuthUser, id: &str) -> ApiResult<String> {
    let me = user.require("rider")?.sub.clone();
    if !delivery::has_live_offer(&st.dbs.delivery, &me, id).await? {
        return Err(ApiError::Conflict("no live offer of this order for you (expired or taken)".into()));
    }
    Ok(me)
}

pub async fn accept(State(st): State<AppState>, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let me = live_offer(&st, &user, &id).await?;
    let r = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(&id))
        .execute_update(OrderFulfillment::rider_accept, RiderAction { rider_id: me }, WorkflowExecuteUpdateOptions::default())
        .await
        .map_err(update_error)?;
    Ok(Json(action_json(&r)))
}

pub async fn decline(State(st): State<AppState>, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let me = live_offer(&st, &user, &id).await?;
    let r = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(&id))
        .execute_update(OrderFulfillment::rider_decline, RiderAction { rider_id: me }, WorkflowExecuteUpdateOptions::default())
        .await
        .map_err(update_error)?;
    Ok(Json(action_json(&r)))
}

/// The delivery, if it is the caller's (404 otherwise).
async fn own_delivery(st: &AppState, user: &AuthUser, id: &str) -> ApiResult<String> {
    let me = user.require("rider")?.sub.clone();
    match delivery::find_delivery(&st.dbs.delivery, id).await? {
        Some((rider, _)) if rider == me => Ok(me),
        _ => Err(ApiError::not_found("delivery")),
    }
}

pub async fn pickup(State(st): State<AppState>, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let me = own_delivery(&st, &user, &id).await?;
    let r = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(&id))
        .execute_update(OrderFulfillment::pickup, RiderAction { rider_id: me }, WorkflowExecuteUpdateOptions::default())
        .await
        .map_err(update_error)?;
    Ok(Json(action_json(&r)))
}

pub async fn complete(State(st): State<AppState>, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let me = own_delivery(&st, &user, &id).await?;
    let r = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(&id))
        .execute_update(OrderFulfillment::complete, RiderAction { rider_id: me }, WorkflowExecuteUpdateOptions::default())
        .await
        .map_err(update_error)?;
    Ok(Json(action_json(&r)))
}
