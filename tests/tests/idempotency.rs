//! `Idempotency-Key` (SPEC section 3): a repeat with the same key answers the
//! first answer. Placing an order: the same order, charged once, even while
//! the payment breaker refuses new orders; an attempt that was not established
//! (402, 503) is really tried again. Actions: the same status and body, even
//! once the order's workflow has finished. A key serves one request: reusing
//! it for another is 422, and a malformed key is 400 that changes nothing.

use baedal_paysim::Faults;
use baedal_tests::*;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PROBLEM_JSON: &str = "application/problem+json";

/// POSTs `body` with these `Idempotency-Key` header values (none, one, or
/// several); returns (status, content type, parsed body).
async fn post_keyed(
    s: &Stack,
    path: &str,
    token: &str,
    keys: &[HeaderValue],
    body: &Value,
) -> (u16, String, Value) {
    let mut req = s.http.post(s.url(path)).bearer_auth(token).json(body);
    for k in keys {
        req = req.header("Idempotency-Key", k.clone());
    }
    send_for_answer(req).await
}

/// POSTs with one well-formed key; returns (status, body).
async fn post_with_key(
    s: &Stack,
    path: &str,
    token: &str,
    key: &str,
    body: &Value,
) -> (u16, Value) {
    let (code, _, body) =
        post_keyed(s, path, token, &[HeaderValue::from_str(key).unwrap()], body).await;
    (code, body)
}

async fn place_with_key(s: &Stack, token: &str, key: &str, body: &Value) -> (u16, Value) {
    post_with_key(s, "/api/orders", token, key, body).await
}

/// The gateway fails every call until told otherwise.
fn gateway_down(s: &Stack) {
    s.sim.set_faults(Faults {
        latency: Duration::ZERO,
        fail_with: Some(500),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_while_the_breaker_is_open_returns_the_paid_order_charged_once() {
    let s = spawn_stack_with(with_env(&[
        ("PAYMENT_TIMEOUT_MS", "300"),
        ("PAYMENT_BREAKER_FAILURES", "3"),
        // Long enough to stay open for the rest of the test.
        ("PAYMENT_BREAKER_COOLDOWN", "5m"),
    ]))
    .await;
    let customer = s.login("customer1").await;
    let body = order_body("tok_ok");
    let (code, first) = place_with_key(&s, &customer, "paid-once", &body).await;
    assert_eq!(code, 201, "{first}");
    let id = first["orderId"].as_str().unwrap().to_string();

    // The gateway fails; three orders in a row open the breaker.
    gateway_down(&s);
    for _ in 0..3 {
        let (code, problem) = s.post("/api/orders", &customer, body.clone()).await;
        assert_eq!(code, 503, "{problem}");
    }
    let (_, m) = s.get("/api/metrics", &customer).await;
    assert_eq!(m["paymentBreaker"]["state"], "open");
    let (code, _) = place_with_key(&s, &customer, "a-new-order", &body).await;
    assert_eq!(
        code, 503,
        "a new order is refused while the breaker is open"
    );

    // The client retries the paid order (its 201 got lost): it gets it.
    let calls = s.sim.calls();
    let (code, again) = place_with_key(&s, &customer, "paid-once", &body).await;
    assert_eq!(code, 201, "{again}");
    assert_eq!(again["orderId"], id.as_str());
    assert_eq!(again["status"], "PAID");
    assert_eq!(again["total"], ORDER_TOTAL);
    assert_eq!(s.sim.calls(), calls, "the retry did not call the gateway");
    assert_eq!(s.sim.charges_of(&id).len(), 1, "charged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_after_payment_unavailable_pays_for_real_once_the_gateway_recovers() {
    // The breaker stays closed: this is about one attempt's outcome.
    let s = spawn_stack_with(with_env(&[("PAYMENT_BREAKER_FAILURES", "50")])).await;
    let customer = s.login("customer1").await;
    let body = order_body("tok_ok");

    gateway_down(&s);
    let (code, problem) = place_with_key(&s, &customer, "try-again", &body).await;
    assert_eq!(code, 503, "{problem}");
    assert!(s.sim.payments().is_empty());

    // The gateway is back; the client retries, twice at once: one new order.
    s.sim.set_faults(Faults::default());
    let ((code, placed), (code2, placed2)) = tokio::join!(
        place_with_key(&s, &customer, "try-again", &body),
        place_with_key(&s, &customer, "try-again", &body)
    );
    assert_eq!(
        (code, code2),
        (201, 201),
        "the retry pays for real: {placed} {placed2}"
    );
    assert_eq!(placed["orderId"], placed2["orderId"]);
    let id = placed["orderId"].as_str().unwrap().to_string();
    let charges = s.sim.charges_of(&id);
    assert_eq!((charges.len(), charges[0].refunded), (1, 0));

    // From now on the key names that paid order.
    let (code, again) = place_with_key(&s, &customer, "try-again", &body).await;
    assert_eq!(
        (code, &again["orderId"]),
        (201, &placed["orderId"]),
        "{again}"
    );
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");

    // The failed attempt settles its unknown outcome on its own; whatever it
    // charged is refunded, once: the customer pays exactly one order.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let late: Vec<_> = s
            .sim
            .payments()
            .into_iter()
            .filter(|p| p.order_id != id)
            .collect();
        if late
            .iter()
            .all(|p| p.refunded == p.amount && p.refund_count == 1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "not refunded: {late:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.sim.charges_of(&id).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_after_a_decline_asks_the_gateway_again() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let body = order_body("tok_declined");

    let (code, problem) = place_with_key(&s, &customer, "declined", &body).await;
    assert_eq!(code, 402, "{problem}");
    let calls = s.sim.calls();
    let (code, problem) = place_with_key(&s, &customer, "declined", &body).await;
    assert_eq!(code, 402, "the same card declines again: {problem}");
    assert!(
        s.sim.calls() > calls,
        "the retry asked the gateway again instead of repeating the decline"
    );
    assert!(s.sim.payments().is_empty());
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine, json!([]), "nothing was established");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_accept_with_the_same_key_answers_the_first_answer() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    let accept = format!("/api/shop/orders/{id}/accept");
    let cook = json!({"cookMinutes": 10});

    // Two sends of one accept at once (a client retrying on a timeout), then a late repeat.
    let (a, b) = tokio::join!(
        post_with_key(&s, &accept, &owner, "accept-1", &cook),
        post_with_key(&s, &accept, &owner, "accept-1", &cook)
    );
    assert_eq!((a.0, b.0), (200, 200), "{} {}", a.1, b.1);
    assert_eq!(a.1, b.1, "identical bodies");
    assert_eq!(a.1["status"], "ACCEPTED");
    let late = post_with_key(&s, &accept, &owner, "accept-1", &cook).await;
    assert_eq!(late, a);
    // A new accept (no key, or another key) is a second action: refused.
    assert_eq!(s.post(&accept, &owner, cook.clone()).await.0, 409);
    assert_eq!(
        post_with_key(&s, &accept, &owner, "accept-2", &cook)
            .await
            .0,
        409
    );

    // The rider's accept, repeated after the offer is gone, answers the same too.
    let (_, rider) = s.rider_with_offer(&id, &riders).await;
    let take = format!("/api/rider/offers/{id}/accept");
    let first = post_with_key(&s, &take, &rider, "take-1", &json!({})).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let again = post_with_key(&s, &take, &rider, "take-1", &json!({})).await;
    assert_eq!(again, first);

    let order = s.wait_status(&id, &customer, "RIDER_ASSIGNED").await;
    assert_eq!(statuses(&order), ["PAID", "ACCEPTED", "RIDER_ASSIGNED"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_cancel_after_the_order_finished_answers_its_first_answer() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let cancel = format!("/api/orders/{id}/cancel");

    let first = post_with_key(&s, &cancel, &customer, "cancel-1", &json!({})).await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["status"], "CANCELLED");
    assert_eq!(first.1["refund"]["status"], "REFUNDED");
    s.wait_workflow_closed(&id).await;

    // The workflow takes no more updates; the repeat still gets the first answer.
    let again = post_with_key(&s, &cancel, &customer, "cancel-1", &json!({})).await;
    assert_eq!(again, first, "not 409");
    // Another cancel is another action, on a finished order.
    let (code, problem) = post_with_key(&s, &cancel, &customer, "cancel-2", &json!({})).await;
    assert_eq!(code, 409, "{problem}");
    assert_eq!(s.post(&cancel, &customer, json!({})).await.0, 409);

    let charge = &s.sim.charges_of(&id)[0];
    assert_eq!((charge.refunded, charge.refund_count), (ORDER_TOTAL, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_whose_answer_was_not_kept_gets_it_from_the_finished_workflow() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let cancel = format!("/api/orders/{id}/cancel");
    let first = post_with_key(&s, &cancel, &customer, "cancel-1", &json!({})).await;
    assert_eq!(first.0, 200, "{}", first.1);
    s.wait_workflow_closed(&id).await;

    // As if the API had stopped between Temporal's answer and keeping it.
    let baedal_activities::config::DatabaseUrl::SqliteDir(dir) = &s.cfg.database else {
        panic!("this test runs on SQLite");
    };
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&format!("sqlite://{dir}/order.db"))
        .await
        .unwrap();
    let forgotten = sqlx::query("DELETE FROM action_answers WHERE idempotency_key = 'cancel-1'")
        .execute(&db)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(forgotten, 1);

    let again = post_with_key(&s, &cancel, &customer, "cancel-1", &json!({})).await;
    assert_eq!(
        again, first,
        "recovered from the workflow's update, not 409"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_another_order_or_action_is_422_and_changes_nothing() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let a = s.place(&customer).await;
    let b = s.place(&customer).await;

    let (code, body) = post_with_key(
        &s,
        &format!("/api/orders/{a}/cancel"),
        &customer,
        "k1",
        &json!({}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // The same key on another order.
    let (code, problem) = post_with_key(
        &s,
        &format!("/api/orders/{b}/cancel"),
        &customer,
        "k1",
        &json!({}),
    )
    .await;
    assert_eq!(code, 422, "{problem}");
    assert_eq!(problem["status"], 422);

    // The same key for another action on the same order.
    s.owner_sees(&b, &owner).await;
    let shop = |action: &str| format!("/api/shop/orders/{b}/{action}");
    let (code, body) = post_with_key(
        &s,
        &shop("accept"),
        &owner,
        "k2",
        &json!({"cookMinutes": 10}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, problem) = post_with_key(
        &s,
        &shop("reject"),
        &owner,
        "k2",
        &json!({"reason": "sold out"}),
    )
    .await;
    assert_eq!(code, 422, "{problem}");

    // A placement's key is not an action's.
    let (code, placed) = place_with_key(&s, &customer, "k3", &order_body("tok_ok")).await;
    assert_eq!(code, 201, "{placed}");
    let c = placed["orderId"].as_str().unwrap();
    let (code, problem) = post_with_key(
        &s,
        &format!("/api/orders/{c}/cancel"),
        &customer,
        "k3",
        &json!({}),
    )
    .await;
    assert_eq!(code, 422, "{problem}");
    // Nor is an action's key a placement's.
    let (code, problem) = place_with_key(&s, &customer, "k1", &order_body("tok_ok")).await;
    assert_eq!(code, 422, "{problem}");

    // Only the two keyed actions that were first with their key took effect.
    assert_eq!(
        s.wait_status(&a, &customer, "CANCELLED").await["status"],
        "CANCELLED"
    );
    let b_now = s.wait_status(&b, &customer, "ACCEPTED").await;
    assert_eq!(statuses(&b_now), ["PAID", "ACCEPTED"]);
    let c_now = s.wait_status(c, &customer, "PAID").await;
    assert_eq!(statuses(&c_now), ["PAID"]);
    assert_eq!(s.sim.payments().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_idempotency_key_is_a_400_problem_and_changes_nothing() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let cancel = format!("/api/orders/{id}/cancel");

    let long = "k".repeat(201);
    let bad: Vec<(&str, Vec<HeaderValue>)> = vec![
        ("empty", vec![HeaderValue::from_static("")]),
        (
            "over 200 characters",
            vec![HeaderValue::from_str(&long).unwrap()],
        ),
        (
            "not ASCII",
            vec![HeaderValue::from_bytes("주문-1".as_bytes()).unwrap()],
        ),
        (
            "a space inside",
            vec![HeaderValue::from_static("two words")],
        ),
        (
            "two keys",
            vec![HeaderValue::from_static("a"), HeaderValue::from_static("b")],
        ),
    ];
    for (what, keys) in &bad {
        let (code, ct, problem) = post_keyed(&s, &cancel, &customer, keys, &json!({})).await;
        assert_eq!(
            (code, ct.as_str()),
            (400, PROBLEM_JSON),
            "cancel, {what}: {problem}"
        );
        assert_eq!(problem["status"], 400, "{what}");
        let (code, ct, problem) =
            post_keyed(&s, "/api/orders", &customer, keys, &order_body("tok_ok")).await;
        assert_eq!(
            (code, ct.as_str()),
            (400, PROBLEM_JSON),
            "place, {what}: {problem}"
        );
    }
    // 200 characters is still a key.
    let longest = "k".repeat(200);
    let (code, body) = place_with_key(&s, &customer, &longest, &order_body("tok_ok")).await;
    assert_eq!(code, 201, "{body}");

    // Nothing changed: the first order is still PAID and charged once, the only
    // other order is the one with the longest key.
    let (_, order) = s.get(&format!("/api/orders/{id}"), &customer).await;
    assert_eq!(statuses(&order), ["PAID"]);
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine.as_array().unwrap().len(), 2);
    assert_eq!(s.sim.payments().len(), 2);
    assert_eq!(s.sim.charges_of(&id)[0].refunded, 0);
}
