//! The HTTP gateway of baedal (SPEC section 3). Commands go to the order's
//! workflow (update-with-start, updates); reads come from each role's read
//! model and never wait on a workflow.

mod act;
pub mod auth;
pub mod domain;
pub mod error;
pub mod extract;
pub mod openapi;
mod orders;
mod rider;
mod shop_orders;
mod web;

use anyhow::Context as _;
use auth::Keys;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
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
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
        let keys = Keys::new(
            &identity::signing_key(&dbs.identity).await?,
            cfg.token_ttl.as_secs(),
        );
        let breaker = Arc::new(Breaker::new(
            dbs.payment.clone(),
            cfg.breaker_failures,
            cfg.breaker_cooldown,
        ));
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

/// Every route under `/api`, each registered from its handler's
/// `#[utoipa::path]`: the router and the OpenAPI document come from these same
/// declarations (see [`openapi::document`]).
pub fn api_routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(auth::login))
        .routes(routes!(shops))
        .routes(routes!(menu))
        .routes(routes!(orders::place, orders::list))
        .routes(routes!(orders::get_one))
        .routes(routes!(orders::events))
        .routes(routes!(orders::live))
        .routes(routes!(orders::cancel))
        .routes(routes!(shop_orders::list))
        .routes(routes!(shop_orders::accept))
        .routes(routes!(shop_orders::reject))
        .routes(routes!(shop_orders::ready))
        .routes(routes!(rider::location))
        .routes(routes!(rider::offers))
        .routes(routes!(rider::accept))
        .routes(routes!(rider::decline))
        .routes(routes!(rider::deliveries))
        .routes(routes!(rider::pickup))
        .routes(routes!(rider::complete))
        .routes(routes!(notifications));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).nest("/api", api)
}

/// The whole app before its state is attached: the API, its docs viewer and the web pages.
pub fn app() -> Router<AppState> {
    let (api, _) = api_routes().split_for_parts();
    api.merge(openapi::docs_ui())
        .merge(web::routes())
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::NotFound(if uri.path().starts_with("/api") {
                "no such API path".into()
            } else {
                "no such page".into()
            })
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Layers run bottom-up: the id is set first, so the span and the answer
        // carry it. Failures are not logged here: a handler logs its own errors
        // where it handles them, once, and expected refusals (503 while the
        // payment breaker is open) are counted, not logged per request.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

pub fn router(state: AppState) -> Router {
    app().with_state(state)
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

/// Liveness and store check
#[utoipa::path(
    get,
    path = "/health",
    tag = "public",
    operation_id = "health",
    responses(
        (status = 200, description = "The gateway and its stores answer", body = openapi::Health),
        (status = 500, response = openapi::Internal),
    ),
)]
async fn health(State(st): State<AppState>) -> ApiResult<axum::Json<Value>> {
    sqlx::query("SELECT 1").execute(&st.dbs.order).await?;
    Ok(axum::Json(json!({"status": "ok"})))
}

/// Payment breaker metrics
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operator",
    operation_id = "metrics",
    description = "Counters an operator watches: the payment breaker's state and refusals, and \
                   the refunds the gateway refused for good (each needs an operator). \
                   Served without a token.",
    responses(
        (status = 200, description = "The breaker's state and counters", body = openapi::Metrics),
        (status = 500, response = openapi::Internal),
    ),
)]
async fn metrics(State(st): State<AppState>) -> ApiResult<axum::Json<Value>> {
    let m = &st.breaker.metrics;
    Ok(axum::Json(json!({
        "paymentBreaker": {
            "state": st.breaker.state().await?,
            "refused": m.refused.load(Ordering::Relaxed),
            "opened": m.opened.load(Ordering::Relaxed),
            "closed": m.closed.load(Ordering::Relaxed),
        },
        "refunds": {
            "failed": payment::refunds_awaiting_operator(&st.dbs.payment).await?,
        },
    })))
}

/// List shops
#[utoipa::path(
    get,
    path = "/shops",
    tag = "public",
    operation_id = "listShops",
    responses(
        (status = 200, description = "Every shop", body = Vec<openapi::Shop>),
        (status = 500, response = openapi::Internal),
    ),
)]
async fn shops(State(st): State<AppState>) -> ApiResult<axum::Json<Vec<shop::Shop>>> {
    Ok(axum::Json(shop::list_shops(&st.dbs.shop).await?))
}

/// A shop's menu
#[utoipa::path(
    get,
    path = "/shops/{shopId}/menu",
    tag = "public",
    operation_id = "getMenu",
    params(("shopId" = String, Path, description = "The shop's id")),
    responses(
        (status = 200, description = "The shop's menu; prices are integer KRW", body = Vec<openapi::MenuItem>),
        (status = 404, response = openapi::NotFound),
        (status = 500, response = openapi::Internal),
    ),
)]
async fn menu(
    State(st): State<AppState>,
    Path(shop_id): Path<String>,
) -> ApiResult<axum::Json<Vec<shop::MenuItem>>> {
    if shop::find_shop(&st.dbs.shop, &shop_id).await?.is_none() {
        return Err(ApiError::not_found("shop"));
    }
    Ok(axum::Json(shop::menu(&st.dbs.shop, &shop_id).await?))
}

/// The caller's notifications
#[utoipa::path(
    get,
    path = "/notifications",
    tags = ["customer", "owner", "rider"],
    operation_id = "listNotifications",
    description = "The KakaoTalk-style messages sent to the caller (any role), oldest first: \
                   one per status change of each order the caller takes part in.",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Messages sent to the caller", body = Vec<openapi::Notification>),
        (status = 401, response = openapi::Unauthorized),
        (status = 500, response = openapi::Internal),
    ),
)]
async fn notifications(
    State(st): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<Vec<Value>>> {
    Ok(axum::Json(
        notification::feed(&st.dbs.notification, &user.0.sub).await?,
    ))
}

/// Temporal did not answer (down, restarting, overloaded): the caller may retry,
/// so this is a 503, not a 500. Logged here, once, for every call path.
pub(crate) fn temporal_unreachable(status: &temporalio_client::tonic::Status) -> bool {
    use temporalio_client::tonic::Code;
    let unreachable = matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded);
    if unreachable {
        tracing::warn!(%status, "Temporal unreachable");
    }
    unreachable
}
