//! Owner calls: the shop's orders, accept with a cooking time, reject, ready.

use crate::domain::{CookMinutes, text};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, Body};
use crate::{AppState, action_json, update_error};
use axum::Json;
use axum::extract::{Path, Query, State};
use baedal_activities::shop;
use baedal_workflows::{AcceptOrder, OrderFulfillment, OrderStatus, RejectOrder, workflow_id};
use serde::Deserialize;
use serde_json::Value;
use temporalio_client::WorkflowExecuteUpdateOptions;

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

pub async fn list(State(st): State<AppState>, user: AuthUser, Query(q): Query<ListQuery>) -> ApiResult<Json<Vec<Value>>> {
    let shop_id = my_shop(&user)?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            OrderStatus::parse(s)
                .ok_or_else(|| ApiError::unprocessable(format!("unknown status {s}")))?
                .as_str(),
        ),
    };
    Ok(Json(shop::list_orders(&st.dbs.shop, &shop_id, status).await?))
}

/// The order, if it belongs to the caller's shop (404 otherwise: never another's data).
async fn own_order(st: &AppState, user: &AuthUser, id: &str) -> ApiResult<()> {
    let shop_id = my_shop(user)?;
    match shop::find_order(&st.dbs.shop, id).await? {
        Some((s, _)) if s == shop_id => Ok(()),
        _ => Err(ApiError::not_found("order")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AcceptBody {
    cook_minutes: i64,
}

pub async fn accept(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Body(b): Body<AcceptBody>,
) -> ApiResult<Json<Value>> {
    let minutes = CookMinutes::parse(b.cook_minutes)?;
    own_order(&st, &user, &id).await?;
    let r = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(&id))
        .execute_update(
            OrderFulfillment::accept,
            AcceptOrder { cook_minutes: minutes.get() },
            WorkflowExecuteUpdateOptions::default(),
        )
        .await
        .map_err(update_error)?;
    Ok(Json(action_json(&r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    reason: String,
}

pub async fn reject(
    State(st): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Body(b): Body<RejectBody>,
) -> ApiResult<Json<Value>> {
    let reason = text("reason", &b.reason, 500)?;
    own_order(&st, &user, &id).await?;
    let r = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(&id))
        .execute_update(OrderFulfillment::reject, RejectOrder { reason }, WorkflowExecuteUpdateOptions::default())
        .await
        .map_err(update_error)?;
    Ok(Json(action_json(&r)))
}

pub async fn ready(State(st): State<AppState>, user: AuthUser, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    own_order(&st, &user, &id).await?;
    let r = st
        .temporal
        .get_workflow_handle::<OrderFulfillment>(workflow_id(&id))
        .execute_update(OrderFulfillment::mark_ready, (), WorkflowExecuteUpdateOptions::default())
        .await
        .map_err(update_error)?;
    Ok(Json(action_json(&r)))
}
