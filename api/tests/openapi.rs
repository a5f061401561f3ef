//! The OpenAPI document covers every route the router serves, and nothing else.
//!
//! Needs neither Temporal nor a database: the router gets an offline state (a
//! Temporal client whose every call fails, and lazy SQLite pools no probe below
//! reaches for the protected calls), and each route is probed without a token.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use baedal_activities::Config;
use baedal_activities::payment::breaker::Breaker;
use baedal_api::openapi::{self, BEARER, PROBLEM_JSON};
use baedal_api::{AppState, Dbs, auth::Keys};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use temporalio_client::callback_based::CallbackBasedGrpcService;
use temporalio_client::tonic::Status;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No token needed (SPEC section 3's exceptions, the docs, and the operator metrics).
    Public,
    /// `Authorization: Bearer <token>`.
    Bearer,
}
use Access::*;

/// Every operation the HTTP contract (SPEC section 3) names, plus the
/// operator's and the document's own. The router is built from the handlers'
/// `#[utoipa::path]` declarations; this table is what a reviewer checks them against.
const CONTRACT: &[(&str, &str, Access)] = &[
    ("GET", "/api/health", Public),
    ("GET", "/api/openapi.json", Public),
    ("POST", "/api/auth/login", Public),
    ("GET", "/api/shops", Public),
    ("GET", "/api/shops/{shopId}/menu", Public),
    ("POST", "/api/orders", Bearer),
    ("GET", "/api/orders", Bearer),
    ("GET", "/api/orders/{id}", Bearer),
    ("GET", "/api/orders/{id}/events", Bearer),
    ("POST", "/api/orders/{id}/events/ticket", Bearer),
    ("POST", "/api/orders/{id}/cancel", Bearer),
    ("GET", "/api/shop/orders", Bearer),
    ("POST", "/api/shop/orders/{id}/accept", Bearer),
    ("POST", "/api/shop/orders/{id}/reject", Bearer),
    ("POST", "/api/shop/orders/{id}/ready", Bearer),
    ("PUT", "/api/rider/location", Bearer),
    ("GET", "/api/rider/offers", Bearer),
    ("POST", "/api/rider/offers/{orderId}/accept", Bearer),
    ("POST", "/api/rider/offers/{orderId}/decline", Bearer),
    ("GET", "/api/rider/deliveries", Bearer),
    ("POST", "/api/rider/deliveries/{orderId}/pickup", Bearer),
    ("POST", "/api/rider/deliveries/{orderId}/complete", Bearer),
    ("GET", "/api/notifications", Bearer),
    // Operator views.
    ("GET", "/api/orders/{id}/live", Bearer),
    ("GET", "/api/orders/{id}/map", Bearer),
    // Operators' breaker counters, served without a token like health: they say
    // nothing about any customer, shop or rider.
    ("GET", "/api/metrics", Public),
    // The Web UI's codec endpoint: no token (the UI sends none), callers on
    // the same machine only (403 otherwise).
    ("POST", "/api/codec/decode", Public),
    ("POST", "/api/codec/encode", Public),
];

/// Paths under /api that must not be served (plausible mistakes).
const NOT_SERVED: &[&str] = &[
    "/api",
    "/api/",
    "/api/nope",
    "/api/order",
    "/api/orders/x/accept",
    "/api/orders/x/reject",
    "/api/shop/orders/x",
    "/api/shop/orders/x/cancel",
    "/api/shops/x",
    "/api/rider/offers/x",
    "/api/rider/deliveries/x",
    "/api/rider/deliveries/x/accept",
    "/api/auth/logout",
    "/api/health/x",
];

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const PUBLIC_PATHS: [&str; 4] = [
    "/api/shops",
    "/api/shops/{shopId}/menu",
    "/api/health",
    "/api/auth/login",
];

/// An `AppState` that reaches nothing outside the process: every Temporal call
/// fails at once, and the pools connect lazily to private in-memory SQLite.
async fn offline_state() -> AppState {
    let cfg = Config::from_lookup(|_| None).unwrap();
    let svc = CallbackBasedGrpcService {
        callback: Arc::new(|_| {
            Box::pin(async { Err(Status::unimplemented("unknown method: offline test")) })
        }),
    };
    let conn = Connection::connect(
        ConnectionOptions::new(Url::parse("http://127.0.0.1:1").unwrap())
            .identity("openapi-test".to_string())
            .service_override(svc)
            .dns_load_balancing(None)
            .build(),
    )
    .await
    .expect("an offline Temporal connection");
    let temporal = Client::new(conn, ClientOptions::new("default").build()).unwrap();
    sqlx::any::install_default_drivers();
    let db = || {
        sqlx::any::AnyPoolOptions::new()
            .connect_lazy("sqlite::memory:")
            .unwrap()
    };
    let dbs = Dbs {
        identity: db(),
        order: db(),
        shop: db(),
        payment: db(),
        delivery: db(),
        notification: db(),
    };
    AppState {
        breaker: Arc::new(Breaker::new(
            dbs.payment.clone(),
            3,
            std::time::Duration::from_secs(1),
        )),
        keys: Keys::new(b"offline test key", 60),
        throttles: Arc::new(baedal_api::throttle::Throttles::new(&cfg)),
        hashing: Arc::new(tokio::sync::Semaphore::new(1)),
        streams: baedal_api::streams::StreamSlots::new(1, 1),
        cipher: Arc::new(baedal_worker::codec::PayloadCipher::new(&[1u8; 32])),
        live: baedal_api::live::Live::start(
            dbs.order.clone(),
            prometheus::IntCounter::new("polls", "polls").unwrap(),
            prometheus::IntCounter::new("reads", "reads").unwrap(),
        ),
        metrics: Default::default(),
        cfg: Arc::new(cfg),
        temporal,
        dbs,
    }
}

async fn app() -> Router {
    baedal_api::router(offline_state().await)
}

struct Answer {
    status: StatusCode,
    content_type: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// The API's own "no such path" answer (its fallback), as opposed to a handler's 404.
    fn is_unrouted(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
            && self.content_type == PROBLEM_JSON
            && self.json()["detail"] == "no such API path"
    }
}

async fn call(app: &Router, method: &str, uri: &str) -> Answer {
    let req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}

/// A concrete URI for a templated path: `{x}` becomes `x-1`.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!("{name}-1"),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

fn doc() -> Value {
    serde_json::to_value(openapi::document()).unwrap()
}

/// (METHOD, path) of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if METHODS.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    &doc["paths"][path][method.to_lowercase()]
}

#[tokio::test]
async fn openapi_json_is_served_as_valid_openapi_3_1() {
    let app = app().await;
    let a = call(&app, "GET", "/api/openapi.json").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.content_type.starts_with("application/json"),
        "{}",
        a.content_type
    );
    let served = a.json();
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served["info"]["title"], "baedal API");
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
    let description = served["info"]["description"].as_str().unwrap();
    assert!(description.contains("Bearer") && description.contains("application/problem+json"));
    assert_eq!(served, doc(), "the served document is the generated one");
}

#[tokio::test]
async fn the_document_covers_every_route_the_router_serves() {
    let doc = doc();
    let app = app().await;

    // The document holds exactly the contract's operations.
    let contract: BTreeSet<(String, String)> = CONTRACT
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = contract.difference(&documented).collect();
    let unexpected: Vec<_> = documented.difference(&contract).collect();
    assert!(
        undocumented.is_empty(),
        "in the contract, not in the document: {undocumented:?}"
    );
    assert!(
        unexpected.is_empty(),
        "in the document, not in the contract: {unexpected:?}"
    );

    // The router serves every documented operation, on exactly the documented methods.
    let mut served = BTreeSet::new();
    let paths: BTreeSet<&str> = CONTRACT.iter().map(|(_, p, _)| *p).collect();
    for path in &paths {
        for method in METHODS {
            let a = call(&app, method, &concrete(path)).await;
            assert!(!a.is_unrouted(), "{method} {path}: the path is not routed");
            if a.status != StatusCode::METHOD_NOT_ALLOWED {
                served.insert((method.to_string(), path.to_string()));
            }
        }
    }
    assert_eq!(served, documented, "served (method, path) vs documented");

    // And nothing else under /api.
    for path in NOT_SERVED {
        for method in METHODS {
            let a = call(&app, method, path).await;
            assert!(
                a.is_unrouted(),
                "{method} {path} is served ({}) but not documented",
                a.status
            );
        }
    }
}

#[tokio::test]
async fn protected_routes_require_the_bearer_token_and_say_so() {
    let doc = doc();
    let app = app().await;
    let scheme = &doc["components"]["securitySchemes"][BEARER];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    assert!(
        doc.get("security").is_none(),
        "no document-wide requirement: public calls stay public"
    );

    for (method, path, access) in CONTRACT {
        let op = operation(&doc, method, path);
        let security = op.get("security").cloned().unwrap_or(Value::Null);
        let a = call(&app, method, &concrete(path)).await;
        match access {
            Bearer => {
                assert!(!PUBLIC_PATHS.contains(path));
                assert_eq!(
                    security,
                    serde_json::json!([{ BEARER: [] }]),
                    "{method} {path} security"
                );
                assert_eq!(
                    op["responses"]["401"]["$ref"], "#/components/responses/Unauthorized",
                    "{method} {path}"
                );
                // What the document says is what the router does.
                assert_eq!(
                    a.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} without a token"
                );
                assert_eq!(a.content_type, PROBLEM_JSON);
                assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer");
            }
            Public => {
                assert!(
                    security.is_null() || security == serde_json::json!([]),
                    "{method} {path} is public but documents {security}"
                );
                assert_ne!(
                    a.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} needs no token"
                );
            }
        }
    }
    for path in PUBLIC_PATHS {
        assert!(
            CONTRACT.iter().any(|(_, p, a)| *p == path && *a == Public),
            "{path} is public"
        );
    }
}

#[test]
fn every_operation_is_fully_described() {
    let doc = doc();
    let tags: BTreeSet<&str> = ["public", "auth", "customer", "owner", "rider", "operator"].into();
    let declared: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(declared, tags);
    let responses = &doc["components"]["responses"];
    let mut ids = BTreeSet::new();

    for (method, path, _) in CONTRACT {
        let op = operation(&doc, method, path);
        let what = format!("{method} {path}");
        assert!(
            ids.insert(op["operationId"].as_str().unwrap().to_string()),
            "{what}: duplicate operationId"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: summary"
        );
        let op_tags = op["tags"].as_array().unwrap();
        assert!(
            !op_tags.is_empty() && op_tags.iter().all(|t| tags.contains(t.as_str().unwrap())),
            "{what}: tags"
        );

        // Every path parameter is declared.
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, templated, "{what}: path parameters");

        // A success answer, and every refusal is a problem+json response.
        let rs = op["responses"].as_object().unwrap();
        assert!(
            rs.keys().any(|c| c.starts_with('2')),
            "{what}: a 2xx answer"
        );
        for (code, r) in rs {
            if code.starts_with('4') || code.starts_with('5') {
                let name = r["$ref"]
                    .as_str()
                    .and_then(|s| s.strip_prefix("#/components/responses/"));
                let name =
                    name.unwrap_or_else(|| panic!("{what} {code}: a shared problem response"));
                let content = &responses[name]["content"][PROBLEM_JSON];
                assert_eq!(
                    content["schema"]["$ref"], "#/components/schemas/Problem",
                    "{what} {code}"
                );
            }
        }
        if let Some(body) = op.get("requestBody") {
            let schema = &body["content"]["application/json"]["schema"]["$ref"];
            assert!(
                schema
                    .as_str()
                    .is_some_and(|s| s.starts_with("#/components/schemas/")),
                "{what}: body schema"
            );
            for code in ["400", "413", "415", "422"] {
                assert!(
                    rs.contains_key(code),
                    "{what}: a JSON body can be refused with {code}"
                );
            }
        }
    }
    assert_eq!(
        operation(&doc, "POST", "/api/orders")["responses"]["503"]["$ref"],
        "#/components/responses/PaymentUnavailable"
    );
    assert!(responses["PaymentUnavailable"]["headers"]["Retry-After"].is_object());

    // Every named schema is defined.
    let text = doc.to_string();
    for r in text.split("\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "schema {name} is referenced but not defined"
        );
    }
    for name in [
        "PlaceBody",
        "AcceptBody",
        "RejectBody",
        "LocationBody",
        "Login",
    ] {
        assert!(
            doc["components"]["schemas"][name]["properties"].is_object(),
            "request body {name}"
        );
    }
}

/// Placing an order and every action on one (SPEC section 3).
const KEYED: &[(&str, &str)] = &[
    ("POST", "/api/orders"),
    ("POST", "/api/orders/{id}/cancel"),
    ("POST", "/api/shop/orders/{id}/accept"),
    ("POST", "/api/shop/orders/{id}/reject"),
    ("POST", "/api/shop/orders/{id}/ready"),
    ("POST", "/api/rider/offers/{orderId}/accept"),
    ("POST", "/api/rider/offers/{orderId}/decline"),
    ("POST", "/api/rider/deliveries/{orderId}/pickup"),
    ("POST", "/api/rider/deliveries/{orderId}/complete"),
];

#[test]
fn placing_and_every_action_document_the_idempotency_key() {
    let doc = doc();
    for (method, path) in KEYED {
        let op = operation(&doc, method, path);
        let what = format!("{method} {path}");
        let key = op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "Idempotency-Key"))
            .unwrap_or_else(|| panic!("{what}: documents Idempotency-Key"));
        assert_eq!(key["in"], "header", "{what}");
        assert_eq!(key["required"], false, "{what}");
        assert_eq!(key["schema"]["minLength"], 1, "{what}");
        assert_eq!(key["schema"]["maxLength"], 200, "{what}");
        // A malformed key is 400; a key reused for another request is 422.
        for (code, name) in [("400", "BadRequest"), ("422", "Unprocessable")] {
            assert_eq!(
                op["responses"][code]["$ref"],
                format!("#/components/responses/{name}"),
                "{what} {code}"
            );
        }
    }
    let unprocessable = doc["components"]["responses"]["Unprocessable"]["description"]
        .as_str()
        .unwrap();
    assert!(unprocessable.contains("Idempotency-Key"), "{unprocessable}");
    // No other operation takes the header.
    let keyed = doc
        .to_string()
        .matches("\"name\":\"Idempotency-Key\"")
        .count();
    assert_eq!(keyed, KEYED.len());
}

#[tokio::test]
async fn docs_viewer_is_served_without_any_network() {
    let app = app().await;
    let a = call(&app, "GET", "/api/docs").await;
    assert!(a.status.is_redirection(), "{}", a.status);
    assert_eq!(a.headers[header::LOCATION], "/api/docs/");

    let page = call(&app, "GET", "/api/docs/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"));
    let html = String::from_utf8(page.body).unwrap();

    // Every asset the page names is served by us, and none is fetched from elsewhere.
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for rest in html.split(attr).skip(1) {
            assets.push(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    assert!(
        assets.iter().any(|a| a.contains("swagger-ui-bundle.js")),
        "{assets:?}"
    );
    for asset in &assets {
        assert!(
            !asset.contains("//"),
            "the docs page loads {asset} from another host"
        );
        let a = call(
            &app,
            "GET",
            &format!("/api/docs/{}", asset.trim_start_matches("./")),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{asset}");
    }
    let init = call(&app, "GET", "/api/docs/swagger-initializer.js").await;
    let init = String::from_utf8(init.body).unwrap();
    assert!(init.contains("/api/openapi.json"), "{init}");
    assert!(!init.contains("petstore"), "{init}");
    let compact: String = init.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        compact.contains("\"validatorUrl\":\"none\""),
        "the online validator is off: {init}"
    );
}
