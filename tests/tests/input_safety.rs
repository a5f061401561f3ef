//! Input from the open internet, on SQLite and on Postgres alike: text with
//! control or bidi characters is refused (422) before anything is written or
//! charged, ids in paths that no record can have are 404 without a store being
//! asked (Postgres refuses NUL in text, which used to answer 500), and a login
//! with such a name is refused like wrong credentials.

use baedal_tests::*;
use serde_json::{Value, json};

const PROBLEM_JSON: &str = "application/problem+json";

/// Characters no text field accepts: NUL, ESC (a terminal escape), RLO (shows
/// text reversed), and a line break (every field is one line).
const UNPRINTABLE: [(&str, &str); 4] = [
    ("NUL", "\u{0}"),
    ("ESC", "\u{1b}[2J"),
    ("RLO", "\u{202E}"),
    ("newline", "\n"),
];

/// The same characters, percent-encoded for a path segment, plus an id longer
/// than any id.
fn impossible_ids() -> Vec<(&'static str, String)> {
    vec![
        ("NUL", "abc%00".into()),
        ("NUL alone", "%00".into()),
        ("ESC", "abc%1B".into()),
        ("RLO", "abc%E2%80%AE".into()),
        ("newline", "abc%0A".into()),
        ("overlong", "a".repeat(201)),
    ]
}

async fn send(s: &Stack, method: reqwest::Method, path: &str, token: &str) -> (u16, String, Value) {
    send_for_answer(
        s.http
            .request(method, s.url(path))
            .bearer_auth(token)
            .json(&json!({})),
    )
    .await
}

fn assert_problem(what: &str, answer: &(u16, String, Value), status: u16) {
    let (code, ct, problem) = answer;
    assert_eq!(*code, status, "{what}: {problem}");
    assert_eq!(ct, PROBLEM_JSON, "{what}");
    assert_eq!(problem["status"], status, "{what}");
}

async fn refuses_unsafe_input(s: Stack) {
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let rider = s.login("rider1").await;

    // Text fields of an order: refused, nothing placed, nothing charged.
    for (what, bad) in UNPRINTABLE {
        let mut bodies = Vec::new();
        for (field, place) in [
            ("address.text", &["address", "text"][..]),
            ("paymentToken", &["paymentToken"][..]),
        ] {
            let mut b = order_body("tok_ok");
            let slot = place.iter().fold(&mut b, |v, k| &mut v[*k]);
            *slot = json!(format!("{}{bad}{}", slot.as_str().unwrap(), "x"));
            bodies.push((format!("{what} in {field}"), b));
        }
        let mut b = order_body("tok_ok");
        b["shopId"] = json!(format!("shop1{bad}"));
        bodies.push((format!("{what} in shopId"), b));
        let mut b = order_body("tok_ok");
        b["items"][0]["menuId"] = json!(format!("shop1-fried{bad}"));
        bodies.push((format!("{what} in menuId"), b));
        for (what, body) in bodies {
            let answer = send_for_answer(
                s.http
                    .post(s.url("/api/orders"))
                    .bearer_auth(&customer)
                    .json(&body),
            )
            .await;
            assert_problem(&what, &answer, 422);
        }
    }
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine, json!([]), "nothing was placed");
    assert!(s.sim.payments().is_empty(), "nothing was charged");

    // A reject reason: refused, the order stays PAID.
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    for (what, bad) in UNPRINTABLE {
        let answer = send_for_answer(
            s.http
                .post(s.url(&format!("/api/shop/orders/{id}/reject")))
                .bearer_auth(&owner)
                .header("Idempotency-Key", format!("reject-{what}"))
                .json(&json!({ "reason": format!("Sold{bad}out") })),
        )
        .await;
        assert_problem(&format!("{what} in a reject reason"), &answer, 422);
    }
    let (code, order) = s.get(&format!("/api/orders/{id}"), &customer).await;
    assert_eq!((code, &order["status"]), (200, &json!("PAID")), "{order}");
    let paid = s.sim.payments();
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].refunded, 0, "nothing was refunded");

    // Ids no record can have, in every path that names one: 404, with and
    // without an Idempotency-Key (a keyed action looks its key up first).
    use reqwest::Method;
    for (what, bad) in impossible_ids() {
        let calls = [
            (Method::GET, format!("/api/orders/{bad}"), &customer),
            (Method::GET, format!("/api/orders/{bad}/live"), &customer),
            (Method::GET, format!("/api/orders/{bad}/events"), &customer),
            (Method::POST, format!("/api/orders/{bad}/cancel"), &customer),
            (
                Method::POST,
                format!("/api/shop/orders/{bad}/ready"),
                &owner,
            ),
            (
                Method::POST,
                format!("/api/rider/offers/{bad}/accept"),
                &rider,
            ),
            (
                Method::POST,
                format!("/api/rider/offers/{bad}/decline"),
                &rider,
            ),
            (
                Method::POST,
                format!("/api/rider/deliveries/{bad}/pickup"),
                &rider,
            ),
            (
                Method::POST,
                format!("/api/rider/deliveries/{bad}/complete"),
                &rider,
            ),
        ];
        for (method, path, token) in calls {
            let answer = send(&s, method.clone(), &path, token).await;
            assert_problem(&format!("{what}: {method} {path}"), &answer, 404);
            let keyed = send_for_answer(
                s.http
                    .request(method.clone(), s.url(&path))
                    .bearer_auth(token)
                    .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({})),
            )
            .await;
            assert_problem(&format!("{what}: keyed {method} {path}"), &keyed, 404);
        }
        for (path, body) in [
            (
                format!("/api/shop/orders/{bad}/accept"),
                json!({"cookMinutes": 10}),
            ),
            (
                format!("/api/shop/orders/{bad}/reject"),
                json!({"reason": "Sold out"}),
            ),
        ] {
            let answer =
                send_for_answer(s.http.post(s.url(&path)).bearer_auth(&owner).json(&body)).await;
            assert_problem(&format!("{what}: POST {path}"), &answer, 404);
        }
    }

    // A login name or password no account can have: the answer to wrong
    // credentials, not a 500.
    for (what, bad) in UNPRINTABLE {
        for body in [
            json!({"username": format!("customer1{bad}"), "password": "demo"}),
            json!({"username": format!("{bad}"), "password": "demo"}),
            json!({"username": "customer1", "password": format!("demo{bad}")}),
        ] {
            let answer = send_for_answer(s.http.post(s.url("/api/auth/login")).json(&body)).await;
            assert_problem(&format!("{what} in login {body}"), &answer, 401);
        }
    }

    // The order was untouched by all of it and still acts normally.
    let (code, order) = s.get(&format!("/api/orders/{id}"), &customer).await;
    assert_eq!((code, &order["status"]), (200, &json!("PAID")), "{order}");
    let (code, body) = s
        .act(
            &format!("/api/shop/orders/{id}/reject"),
            &owner,
            json!({"reason": "Sold out"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    s.wait_status(&id, &customer, "REJECTED").await;
}

/// A shop's menu under an id no shop can have.
async fn menu_of_impossible_shop_is_not_found(s: Stack) {
    for (what, bad) in impossible_ids() {
        let answer = send_for_answer(s.http.get(s.url(&format!("/api/shops/{bad}/menu")))).await;
        assert_problem(&format!("{what}: menu"), &answer, 404);
    }
}

/// Every bad login below is a failure the login throttle counts; this test is
/// about each one's answer, so the throttle is set wide (abuse_limits.rs tests it).
fn wide_throttle(postgres: bool) -> StackOptions {
    let mut opts = StackOptions {
        postgres,
        ..Default::default()
    };
    opts.env.push(("LOGIN_FAILURES_PER_ACCOUNT", "1000".into()));
    opts.env.push(("LOGIN_FAILURES_PER_ADDRESS", "1000".into()));
    opts
}

fn on_postgres() -> StackOptions {
    wide_throttle(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_input_is_refused_on_sqlite() {
    refuses_unsafe_input(spawn_stack_with(wide_throttle(false)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_input_is_refused_on_postgres() {
    refuses_unsafe_input(spawn_stack_with(on_postgres()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn menu_of_impossible_shop_is_not_found_on_sqlite() {
    menu_of_impossible_shop_is_not_found(spawn_stack().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn menu_of_impossible_shop_is_not_found_on_postgres() {
    menu_of_impossible_shop_is_not_found(spawn_stack_with(on_postgres()).await).await;
}
