//! The HTTP gateway of baedal (SPEC section 3). Commands go to the order's
//! workflow (update-with-start, updates); reads come from each role's read
//! model and never wait on a workflow.

mod act;
pub mod auth;
pub mod codec;
pub mod domain;
pub mod error;
pub mod extract;
pub mod live;
mod map;
pub mod metrics;
pub mod openapi;
mod orders;
pub mod paging;
mod rider;
mod shop_orders;
pub mod streams;
pub mod throttle;
mod web;

use auth::Keys;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use baedal_activities::db::{self, Db};
use baedal_activities::payment::breaker::Breaker;
use baedal_activities::{Config, delivery, identity, notification, order, payment, shop};
use error::{ApiError, ApiResult};
use extract::{AuthUser, Path};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use temporalio_client::Client;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

/// Requests larger than this are refused (413) before they are read.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The Content-Security-Policy of every answer but the pages: nothing in an
/// API answer may load or run anything, nor be framed.
const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The web pages (`web/`): one external script and stylesheet from this origin,
/// no inline script or style, calls and the SSE stream to this origin only.
/// `img-src data:` is for the page's empty `data:,` icon.
const PAGES_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; manifest-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The Swagger UI at `/api/docs`: its scripts are files of this origin (no inline
/// script), but its components set inline styles and its stylesheet carries
/// `data:` images, so this page alone allows `'unsafe-inline'` styles.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

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
    pub throttles: Arc<throttle::Throttles>,
    /// Password hashes checked at once (argon2 takes a core and ~19 MiB each).
    pub hashing: Arc<tokio::sync::Semaphore>,
    pub streams: Arc<streams::StreamSlots>,
    /// Seals and opens Temporal payloads (the codec endpoint's).
    pub cipher: Arc<baedal_worker::codec::PayloadCipher>,
    /// The counters `GET /metrics` serves.
    pub metrics: Arc<metrics::Metrics>,
    /// Wakes the event streams of orders that changed (one poller per process).
    pub live: Arc<live::Live>,
}

impl AppState {
    /// Opens every context's store (the gateway serves all read models), seeds the
    /// demo data in demo mode (`BAEDAL_DEMO=1`), and connects to Temporal.
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
        cfg.check_demo_exposure()?;
        if cfg.demo {
            identity::seed_demo(&dbs.identity, cfg.demo_riders).await?;
            shop::seed_demo(&dbs.shop).await?;
            delivery::seed_demo(&dbs.delivery, cfg.demo_riders).await?;
        }
        let keys = Keys::from_files(
            &cfg.auth_signing_key_file,
            cfg.auth_previous_signing_key_file.as_deref(),
            cfg.token_ttl.as_secs(),
        )?;
        let breaker = Arc::new(Breaker::new(
            dbs.payment.clone(),
            cfg.breaker_failures,
            cfg.breaker_cooldown,
        ));
        let cipher = Arc::new(baedal_worker::codec::PayloadCipher::from_file(
            &cfg.payload_key_file,
        )?);
        let temporal = baedal_worker::connect_sealing(&cfg, cipher.clone()).await?;
        // Made now, so the first login of an unknown name takes no longer than any.
        tokio::task::spawn_blocking(identity::stand_in_hash).await?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let metrics = Arc::new(metrics::Metrics::new());
        let live = live::Live::start(
            dbs.order.clone(),
            metrics.live_polls.clone(),
            metrics.stream_reads.clone(),
        );
        Ok(AppState {
            throttles: Arc::new(throttle::Throttles::new(&cfg)),
            hashing: Arc::new(tokio::sync::Semaphore::new(cores)),
            streams: streams::StreamSlots::new(cfg.sse_streams_per_user, cfg.sse_streams_max),
            cipher,
            cfg: Arc::new(cfg),
            temporal,
            dbs,
            breaker,
            keys,
            metrics,
            live,
        })
    }
}

/// Every route under `/api`, each registered from its handler's
/// `#[utoipa::path]`: the router and the OpenAPI document come from these same
/// declarations (see [`openapi::document`]).
pub fn api_routes() -> OpenApiRouter<AppState> {
    // Shops, menus, health and the document are the same for everyone and may
    // be cached; every other answer is the caller's own (or live counters) and
    // is marked `no-store`, refusals included.
    let api = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(no_store(routes!(metrics)))
        .routes(routes!(openapi::openapi_json))
        .routes(no_store(routes!(auth::login)))
        .routes(routes!(shops))
        .routes(routes!(menu))
        .routes(no_store(routes!(orders::place, orders::list)))
        .routes(no_store(routes!(orders::get_one)))
        .routes(no_store(routes!(orders::events)))
        .routes(no_store(routes!(orders::ticket)))
        .routes(no_store(routes!(orders::live)))
        .routes(no_store(routes!(map::order_map)))
        .routes(no_store(routes!(orders::cancel)))
        .routes(no_store(routes!(shop_orders::list)))
        .routes(no_store(routes!(shop_orders::accept)))
        .routes(no_store(routes!(shop_orders::reject)))
        .routes(no_store(routes!(shop_orders::ready)))
        .routes(no_store(routes!(rider::location)))
        .routes(no_store(routes!(rider::offers)))
        .routes(no_store(routes!(rider::accept)))
        .routes(no_store(routes!(rider::decline)))
        .routes(no_store(routes!(rider::deliveries)))
        .routes(no_store(routes!(rider::pickup)))
        .routes(no_store(routes!(rider::complete)))
        .routes(no_store(routes!(notifications)))
        .routes(codec_routes(routes!(codec::decode)))
        .routes(codec_routes(routes!(codec::encode)));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).nest("/api", api)
}

/// The codec endpoint answers the Web UI's page (another origin: the UI's port
/// on this machine) and carries personal data.
fn codec_routes(r: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(|origin, _| {
            // The Web UI on this machine, whatever its port.
            let o = origin.as_bytes();
            o.starts_with(b"http://127.0.0.1:") || o.starts_with(b"http://localhost:")
        }))
        .allow_methods([axum::http::Method::POST])
        .allow_headers([header::CONTENT_TYPE, HeaderName::from_static("x-namespace")])
        .allow_credentials(true);
    let (schemas, paths, methods) = no_store(r);
    (schemas, paths, methods.layer(cors))
}

/// Marks every answer of these routes (any method, refusals included)
/// `Cache-Control: no-store`: they carry the caller's personal data.
fn no_store(r: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, paths, methods) = r;
    let layer = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    (schemas, paths, methods.layer(layer))
}

/// Any refusal answered without a problem body (axum's own 405 for a known
/// path and a wrong method, a rejection of an extractor we do not wrap) gets
/// one, with the same status and headers (axum adds `Allow` to a 405 after
/// this layer). Problem answers and successes pass untouched.
async fn problem_for_every_refusal(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let detail = if status == StatusCode::METHOD_NOT_ALLOWED {
        // The router adds `Allow` to this answer after this layer has run.
        "this path does not answer this method; the Allow header lists those it answers".to_string()
    } else {
        let is_text = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
        // axum's rejections say what was wrong in plain text; a server
        // error's text stays out of the answer.
        let text = match axum::body::to_bytes(body, 4096).await {
            Ok(b) if is_text && status.is_client_error() => {
                String::from_utf8_lossy(&b).trim().to_string()
            }
            _ => String::new(),
        };
        if text.is_empty() {
            status.canonical_reason().unwrap_or("refused").to_string()
        } else {
            text
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = error::status_problem(status, &detail).to_string();
    let mut resp = error::problem_response(status, body);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE {
            resp.headers_mut().append(name, value.clone());
        }
    }
    resp
}

/// A header set on every answer unless a route set it already.
fn default_header(
    name: header::HeaderName,
    value: &'static str,
) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// The whole app before its state is attached: the API, its docs viewer and
/// the web pages, each route with its own layers; [`router`] adds the layers
/// every answer passes through.
pub fn app() -> Router<AppState> {
    let (api, _) = api_routes().split_for_parts();
    let csp = |policy: &'static str| {
        SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(policy),
        )
    };
    api.merge(openapi::docs_ui().layer(csp(DOCS_CSP)))
        .merge(web::routes().layer(csp(PAGES_CSP)))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::NotFound(if uri.path().starts_with("/api") {
                "no such API path".into()
            } else {
                "no such page".into()
            })
        })
}

/// The app with its state and the layers every answer passes through.
///
/// Only what needs the matched route (the metrics, labelled by it) and what
/// the metrics must see the outcome of (the timeout's 408, made a problem)
/// are layered onto the routes; the rest wraps the router once. A layer added
/// with `Router::layer` wraps every route in a boxed service of its own, and
/// each request clones the matched route's boxes: with a dozen such layers that
/// cloning was about a twentieth of the API's CPU.
pub fn router(state: AppState) -> Router {
    // A request, its body read included, is answered within `REQUEST_TIMEOUT` or
    // gets a 408 problem: above every deadline a handler has of its own
    // (Temporal calls: 15 s). An event stream's answer starts at once, so its
    // body is not bound by it.
    let timeout = tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        state.cfg.request_timeout,
    );
    let routed = app()
        .route("/metrics", axum::routing::get(metrics::serve))
        .layer(timeout)
        .layer(axum::middleware::map_response(problem_for_every_refusal))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state);
    // Outermost first: the id is set first, so the span and the answer carry
    // it. Failures are not logged here: a handler logs its own errors where it
    // handles them, once, and expected refusals (503 while the payment breaker
    // is open) are counted, not logged per request.
    let around = tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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
        .layer(PropagateRequestIdLayer::x_request_id())
        // Pages and API answers alike: never sniffed, never framed, no referrer
        // sent on; the pages' and the docs' own policies were set on their routes.
        .layer(default_header(header::CONTENT_SECURITY_POLICY, API_CSP))
        .layer(default_header(header::REFERRER_POLICY, "no-referrer"))
        .layer(default_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(default_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .service(routed);
    Router::new().fallback_service(around)
}

/// Serves the API on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish (event streams for at most a few seconds).
///
/// The connection loop is hyper's own rather than `axum::serve`, which gives
/// hyper no timer and so no header-read timeout: here a client that never
/// finishes its headers is dropped after `HEADER_READ_TIMEOUT`. Each request
/// carries its peer's address (`ConnectInfo`), which the login throttle counts.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let header_read_timeout = state.cfg.header_read_timeout;
    let app = router(state);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let svc = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        );
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(svc),
            );
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("stopped with event streams still open");
    }
    Ok(())
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
    let shop_id = domain::Id::parse("shop", shop_id)?;
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
    description = "The KakaoTalk-style messages sent to the caller (any role), newest first, \
                   a page at a time: one per status change of each order the caller takes part in.",
    params(paging::PageParams),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Messages sent to the caller", body = Vec<openapi::Notification>, headers(("Link" = String, description = "`<…>; rel=\"next\"`: the next page, when more items follow"))),
        (status = 400, response = openapi::BadRequest),
        (status = 422, response = openapi::Unprocessable),
        (status = 401, response = openapi::Unauthorized),
        (status = 500, response = openapi::Internal),
    ),
)]
async fn notifications(
    State(st): State<AppState>,
    user: AuthUser,
    paging: paging::Paging,
) -> ApiResult<Response> {
    let page = notification::feed(&st.dbs.notification, &user.0.sub, &paging.request).await?;
    Ok(paging.respond(page))
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
