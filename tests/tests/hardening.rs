//! The gateway on the open internet: every refusal is a problem+json (axum's
//! own 405 and extractor rejections included), every answer carries the
//! security headers, the pages keep working under their Content-Security-Policy,
//! and answers with personal data are never stored by a cache.

use baedal_tests::*;
use reqwest::Method;
use reqwest::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderMap, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use serde_json::Value;

const PROBLEM_JSON: &str = "application/problem+json";

/// Sends a request; answers its status, headers and body text.
async fn send(
    s: &Stack,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (u16, HeaderMap, String) {
    let mut req = s.http.request(method, s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn header<'a>(h: &'a HeaderMap, name: &reqwest::header::HeaderName) -> &'a str {
    h.get(name).map(|v| v.to_str().unwrap()).unwrap_or_default()
}

/// A problem body of this status, served as problem+json.
#[track_caller]
fn assert_problem(what: &str, status: u16, h: &HeaderMap, body: &str) {
    assert_eq!(header(h, &CONTENT_TYPE), PROBLEM_JSON, "{what}: {body}");
    let p: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    assert_eq!(p["status"], status, "{what}: {p}");
    assert!(
        p["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://baedal.dev/problems/")),
        "{what}: {p}"
    );
    assert!(p["title"].is_string(), "{what}: {p}");
    assert!(p["detail"].is_string(), "{what}: {p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_a_problem_even_axums_own() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;

    // A known path, a wrong method: 405 with Allow, as a problem.
    for (method, path, allowed) in [
        (Method::DELETE, "/api/shops", &["GET"][..]),
        (Method::PUT, "/api/orders", &["GET", "POST"][..]),
        (Method::GET, "/api/auth/login", &["POST"][..]),
        (Method::POST, "/", &["GET"][..]),
    ] {
        let (status, h, body) = send(&s, method.clone(), path, Some(&customer)).await;
        let what = format!("{method} {path}");
        assert_eq!(status, 405, "{what}: {body}");
        assert_problem(&what, 405, &h, &body);
        let allow: Vec<&str> = header(&h, &ALLOW).split(',').map(str::trim).collect();
        for m in allowed {
            assert!(allow.contains(m), "{what}: Allow {allow:?}");
        }
    }

    // A query string that does not fit the call's parameters: 400 problem.
    let (status, h, body) = send(
        &s,
        Method::GET,
        "/api/shop/orders?status=PAID&status=ACCEPTED",
        Some(&owner),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_problem("repeated status", 400, &h, &body);
    // One that parses but names no status: 422 problem.
    let (status, h, body) = send(
        &s,
        Method::GET,
        "/api/shop/orders?status=NOPE",
        Some(&owner),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_problem("unknown status", 422, &h, &body);

    // A path segment that does not decode: a 4xx problem, never plain text.
    for (path, token) in [
        ("/api/shops/%FF/menu", None),
        ("/api/orders/%FF", Some(customer.as_str())),
        ("/api/orders/%C3%28/cancel", Some(customer.as_str())),
        ("/api/shop/orders/%FF/ready", Some(owner.as_str())),
    ] {
        let method = if path.ends_with("/menu") || path == "/api/orders/%FF" {
            Method::GET
        } else {
            Method::POST
        };
        let (status, h, body) = send(&s, method, path, token).await;
        assert!(status == 400 || status == 404, "{path}: {status} {body}");
        assert_problem(path, status, &h, &body);
    }

    // Unknown paths, API and page alike.
    for path in ["/api/nope", "/nope"] {
        let (status, h, body) = send(&s, Method::GET, path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_problem(path, 404, &h, &body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers_and_the_pages_still_load() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;

    let answers = [
        (Method::GET, "/", None),
        (Method::GET, "/app.js", None),
        (Method::GET, "/app.css", None),
        (Method::GET, "/api/docs/", None),
        (Method::GET, "/api/openapi.json", None),
        (Method::GET, "/api/health", None),
        (Method::GET, "/api/shops", None),
        (Method::GET, "/api/shops/shop1/menu", None),
        (Method::GET, "/api/orders", Some(customer.as_str())),
        (Method::GET, "/api/orders", None),
        (Method::GET, "/api/notifications", Some(customer.as_str())),
        (Method::GET, "/api/nope", None),
        (Method::DELETE, "/api/shops", None),
    ];
    for (method, path, token) in answers {
        let (status, h, _) = send(&s, method.clone(), path, token).await;
        let what = format!("{method} {path} ({status})");
        assert_eq!(header(&h, &X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
        assert_eq!(header(&h, &X_FRAME_OPTIONS), "DENY", "{what}");
        assert_eq!(header(&h, &REFERRER_POLICY), "no-referrer", "{what}");
        let csp = header(&h, &CONTENT_SECURITY_POLICY);
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(csp.starts_with("default-src 'none'"), "{what}: {csp}");
    }

    // The pages: served, and their policy lets their own script and styles
    // run, but no inline script anywhere.
    let (status, h, html) = send(&s, Method::GET, "/", None).await;
    assert_eq!(status, 200);
    assert!(header(&h, &CONTENT_TYPE).starts_with("text/html"));
    assert!(html.contains(r#"<script type="module" src="/app.js">"#));
    let csp = header(&h, &CONTENT_SECURITY_POLICY);
    for directive in [
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");

    let (status, h, html) = send(&s, Method::GET, "/api/docs/", None).await;
    assert_eq!(status, 200);
    assert!(header(&h, &CONTENT_TYPE).starts_with("text/html"));
    assert!(html.contains("swagger-ui"));
    let csp = header(&h, &CONTENT_SECURITY_POLICY);
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let (status, _, js) = send(&s, Method::GET, "/api/docs/swagger-initializer.js", None).await;
    assert_eq!(status, 200);
    assert!(js.contains("/api/openapi.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_answers_are_never_stored_public_ones_may_be() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let rider = s.login("rider1").await;
    let order = s.place(&customer).await;

    // The token itself.
    let r = s
        .http
        .post(s.url("/api/auth/login"))
        .json(&serde_json::json!({"username": "customer2", "password": "demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), &CACHE_CONTROL), "no-store", "login");

    let personal = [
        (Method::GET, "/api/orders".to_string(), Some(&customer)),
        (Method::GET, format!("/api/orders/{order}"), Some(&customer)),
        (Method::GET, "/api/shop/orders".to_string(), Some(&owner)),
        (Method::GET, "/api/rider/offers".to_string(), Some(&rider)),
        (
            Method::GET,
            "/api/rider/deliveries".to_string(),
            Some(&rider),
        ),
        (
            Method::GET,
            "/api/notifications".to_string(),
            Some(&customer),
        ),
        // Refusals of these calls too: a 401, a 404 of another tenant's order.
        (Method::GET, "/api/orders".to_string(), None),
        (Method::GET, format!("/api/orders/{order}"), Some(&owner)),
    ];
    for (method, path, token) in personal {
        let (status, h, body) = send(&s, method.clone(), &path, token.map(String::as_str)).await;
        let what = format!("{method} {path} ({status})");
        assert!(status < 500, "{what}: {body}");
        assert_eq!(header(&h, &CACHE_CONTROL), "no-store", "{what}");
    }

    for path in [
        "/api/shops",
        "/api/shops/shop1/menu",
        "/api/health",
        "/api/openapi.json",
        "/",
    ] {
        let (status, h, _) = send(&s, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !header(&h, &CACHE_CONTROL).contains("no-store"),
            "{path} may be cached"
        );
    }
}
