//! The HTTP gateway of baedal (SPEC section 3). Commands go to the order's
//! workflow (update-with-start, updates); reads come from each role's read
//! model and never wait on a workflow.

pub mod auth;
pub mod domain;
pub mod error;
pub mod extract;
mod orders;
mod rider;
mod shop_orders;
mod web;

use anyhow::Context as _;
use auth::Keys;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post, put};
use baedal_activities::db::{self, Db};
use baedal_activities::payment::breaker::Breaker;
use baedal_activities::{Config, delivery, identity, notification, order, payment, shop};
use error::{ApiError, ApiResult};
use extract::AuthUser;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use temporalio_client::Client;
use tower_http::trace::TraceLayer;

/// Requests larger than this are refused (413) before they are read.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct Dbs {
    pub identity: Db,
    pub order: Db,
    pub shop: Db,
    pub payment: Db,
    pub delivery: Db,
    pub notification: Db,
}

#[derive(Clone)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub temporal: Client,
    pub dbs: Dbs,
    pub breaker: Arc<Breaker>,
    pub keys: Keys,
}

impl AppState {
    /// Opens every context's store (the gateway serves all read models), seeds the
    /// demo data, and connects to Temporal.
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let d = &cfg.database;
        let dbs = Dbs {
            identity: db::open(d, "identity", &identity::MIGRATOR).await?,
            order: db::open(d, "order", &order::MIGRATOR).await?,
            shop: db::open(d, "shop", &shop::MIGRATOR).await?,
            payment: db::open(d, "payment", &payment::MIGRATOR).await?,
            delivery: db::open(d, "delivery", &delivery::MIGRATOR).await?,
            notification: db::open(d, "notification", &notification::MIGRATOR).await?,
        };
        identity::seed_demo(&dbs.identity, cfg.demo_riders).await?;
        delivery::seed_demo(&dbs.delivery, cfg.demo_riders).await?;
        let keys = Keys::new(&identity::signing_key(&dbs.identity).await?, cfg.token_ttl.as_secs());
        let breaker = Arc::new(Breaker::new(dbs.payment.clone(), cfg.breaker_failures, cfg.breaker_cooldown));
        let temporal = baedal_worker::connect(&cfg).await?;
        Ok(AppState {
            cfg: Arc::new(cfg),
            temporal,
            dbs,
            breaker,
            keys,
        })
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/auth/login", post(auth::login))
        .route("/shops", get(shops))
        .route("/shops/{shop_id}/menu", get(menu))
        .route("/orders", post(orders::place).get(orders::list))
        .route("/orders/{id}", get(orders::get_one))
        .route("/orders/{id}/events", get(orders::events))
        .route("/orders/{id}/live", get(orders::live))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/shop/orders", get(shop_orders::list))
        .route("/shop/orders/{id}/accept", post(shop_orders::accept))
        .route("/shop/orders/{id}/reject", post(shop_orders::reject))
        .route("/shop/orders/{id}/ready", post(shop_orders::ready))
        .route("/rider/location", put(rider::location))
        .route("/rider/offers", get(rider::offers))
        .route("/rider/offers/{id}/accept", post(rider::accept))
        .route("/rider/offers/{id}/decline", post(rider::decline))
        .route("/rider/deliveries", get(rider::deliveries))
        .route("/rider/deliveries/{id}/pickup", post(rider::pickup))
        .route("/rider/deliveries/{id}/complete", post(rider::complete))
        .route("/notifications", get(notifications))
        .fallback(|| async { ApiError::NotFound("no such API path".into()) });
    Router::new()
        .nest("/api", api)
        .merge(web::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

async fn health(State(st): State<AppState>) -> ApiResult<axum::Json<Value>> {
    sqlx::query("SELECT 1").execute(&st.dbs.order).await?;
    Ok(axum::Json(json!({"status": "ok"})))
}

/// Counters an operator watches: the payment breaker's state and refusals.
async fn metrics(State(st): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let m = &st.breaker.metrics;
    Ok(axum::Json(json!({
        "paymentBreaker": {
            "state": st.breaker.state().await?,
            "refused": m.refused.load(Ordering::Relaxed),
            "opened": m.opened.load(Ordering::Relaxed),
            "closed": m.closed.load(Ordering::Relaxed),
        }
    })))
}

async fn shops(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<shop::Shop>>> {
    Ok(axum::Json(shop::list_shops(&st.dbs.shop).await?))
}

async fn menu(State(st): State<AppState>, Path(shop_id): Path<String>) -> ApiResult<axum::Json<Vec<shop::MenuItem>>> {
    if shop::find_shop(&st.dbs.shop, &shop_id).await?.is_none() {
        return Err(ApiError::not_found("shop"));
    }
    Ok(axum::Json(shop::menu(&st.dbs.shop, &shop_id).await?))
}

async fn notifications(State(st): State<AppState>, user: AuthUser) -> ApiResult<axum::Json<Vec<Value>>> {
    Ok(axum::Json(notification::feed(&st.dbs.notification, &user.0.sub).await?))
}

/// Maps a refused or failed workflow update to the HTTP answer.
pub(crate) fn update_error(e: temporalio_client::errors::WorkflowUpdateError) -> ApiError {
    use temporalio_client::errors::WorkflowUpdateError as E;
    match e {
        E::Failed(f) => ApiError::Conflict(f.message.clone()),
        // The read model knew the order, so its workflow has finished.
        E::NotFound(_) => ApiError::Conflict("the order is already finished".into()),
        other => ApiError::Internal(anyhow::anyhow!("workflow update failed: {other}")),
    }
}

/// An action's answer in wire form.
pub(crate) fn action_json(r: &baedal_workflows::ActionResult) -> Value {
    json!({
        "status": r.status,
        "readyAt": r.ready_at.map(baedal_activities::time::rfc3339),
        "refund": r.refund,
    })
}
