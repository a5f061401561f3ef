//! Abuse limits over real HTTP: failed logins per account and per client
//! address, declined payments per card, orders per customer. Past the limit the next try answers
//! 429 with `Retry-After`, as a problem, before any work is done; others are
//! not held up.

use baedal_tests::*;
use serde_json::{Value, json};

/// A login attempt's status, `Retry-After` and body.
async fn login(s: &Stack, user: &str, password: &str) -> (u16, Option<u64>, Value) {
    let r = s
        .http
        .post(s.url("/api/auth/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    if status == 429 {
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

async fn wrong_passwords_for_one_account_close_it_for_a_while_and_only_it(postgres: bool) {
    let s = spawn_stack_with(on_store(
        postgres,
        with_env(&[
            ("LOGIN_FAILURES_PER_ACCOUNT", "3"),
            ("LOGIN_FAILURES_PER_ADDRESS", "100"),
        ]),
    ))
    .await;
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(login(&s, "customer1", "guess").await);
    }
    let codes: Vec<u16> = answers.iter().map(|a| a.0).collect();
    // The three the quota allows, the one that finds it spent, then 429s.
    assert_eq!(codes[..4], [401; 4], "{codes:?}");
    assert!(codes[4..].iter().all(|c| *c == 429), "{codes:?}");
    let (_, retry, problem) = &answers[9];
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
    assert_eq!(problem["status"], 429);
    // Closed means closed: even the right password waits.
    assert_eq!(login(&s, "customer1", "demo").await.0, 429);
    // Nobody else is held up, from the same address.
    assert_eq!(login(&s, "customer2", "demo").await.0, 200);
    assert_eq!(login(&s, "owner1", "demo").await.0, 200);
}

async fn guesses_across_accounts_from_one_address_close_that_address(postgres: bool) {
    let s = spawn_stack_with(on_store(
        postgres,
        with_env(&[
            ("LOGIN_FAILURES_PER_ACCOUNT", "100"),
            ("LOGIN_FAILURES_PER_ADDRESS", "4"),
        ]),
    ))
    .await;
    // Logins that succeed never count.
    for _ in 0..6 {
        assert_eq!(login(&s, "customer2", "demo").await.0, 200);
    }
    let mut codes = Vec::new();
    for i in 0..8 {
        // Known and unknown names alike.
        let user = if i % 2 == 0 {
            "customer1".to_string()
        } else {
            format!("nobody{i}")
        };
        codes.push(login(&s, &user, "guess").await.0);
    }
    assert_eq!(codes[..5], [401; 5], "{codes:?}");
    assert!(codes[5..].iter().all(|c| *c == 429), "{codes:?}");
    let (code, retry, _) = login(&s, "customer2", "demo").await;
    assert_eq!(code, 429, "the address is closed, whoever logs in from it");
    assert!(retry.is_some());
}

async fn a_card_declined_again_and_again_is_not_tried_for_a_while(postgres: bool) {
    let s = spawn_stack_with(on_store(
        postgres,
        with_env(&[("PAYMENT_DECLINES_PER_CARD", "2")]),
    ))
    .await;
    let customer = s.login("customer1").await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (code, _) = s
            .post("/api/orders", &customer, order_body("tok_declined"))
            .await;
        codes.push(code);
    }
    assert_eq!(codes, [402, 402, 402]);
    let calls = s.sim.calls();
    let r = s
        .http
        .post(s.url("/api/orders"))
        .bearer_auth(&customer)
        .json(&order_body("tok_declined"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(s.sim.calls(), calls, "the refused try asked no gateway");
    // Another card is not held up.
    let id = s.place(&customer).await;
    assert_eq!(s.sim.charges_of(&id).len(), 1);
}

async fn a_customer_ordering_too_often_waits_and_a_repeat_of_a_placed_order_never_does(
    postgres: bool,
) {
    let s = spawn_stack_with(on_store(
        postgres,
        with_env(&[("ORDERS_PER_CUSTOMER", "3")]),
    ))
    .await;
    let customer = s.login("customer1").await;
    let place = |key: &'static str| {
        s.http
            .post(s.url("/api/orders"))
            .bearer_auth(&customer)
            .header("Idempotency-Key", key)
            .json(&order_body("tok_ok"))
            .send()
    };
    let mut first = None;
    for key in ["o1", "o2", "o3"] {
        let r = place(key).await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        first.get_or_insert(body["orderId"].as_str().unwrap().to_string());
    }
    let calls = s.sim.calls();
    let r = place("o4").await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(s.sim.calls(), calls, "the refused try asked no gateway");
    // A client retrying an order it placed gets it, limit or not.
    let r = place("o1").await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["orderId"].as_str(), first.as_deref());
    // Another customer is not held up.
    let other = s.login("customer2").await;
    s.place(&other).await;
}

on_both_stores!(
    wrong_passwords_for_one_account_close_it_for_a_while_and_only_it,
    guesses_across_accounts_from_one_address_close_that_address,
    a_card_declined_again_and_again_is_not_tried_for_a_while,
    a_customer_ordering_too_often_waits_and_a_repeat_of_a_placed_order_never_does,
);
