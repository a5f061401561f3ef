//! Faults lose nothing and charge no one twice: a slow or failing payment gateway
//! (circuit breaker, late approvals), contexts that are down, a killed worker.

use baedal_paysim::Faults;
use baedal_tests::*;
use baedal_workflows::Context;
use serde_json::json;
use std::time::{Duration, Instant};

fn options(env: &[(&'static str, &str)], contexts: Vec<Context>) -> StackOptions {
    let mut o = StackOptions {
        contexts,
        ..Default::default()
    };
    for (k, v) in env {
        o.env.retain(|(kk, _)| kk != k);
        o.env.push((k, v.to_string()));
    }
    o
}

const BREAKER: [(&str, &str); 3] = [
    ("PAYMENT_TIMEOUT_MS", "300"),
    ("PAYMENT_BREAKER_FAILURES", "3"),
    ("PAYMENT_BREAKER_COOLDOWN", "2s"),
];

async fn place_raw(s: &Stack, base: &str, token: &str) -> reqwest::Response {
    s.http
        .post(format!("{base}/api/orders"))
        .bearer_auth(token)
        .json(&order_body("tok_ok"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_gateway_trips_the_breaker_and_recovery_closes_it() {
    let s = spawn_stack_with(options(&BREAKER, Context::ALL.to_vec())).await;
    let customer = s.login("customer1").await;
    s.sim.set_faults(Faults {
        latency: Duration::from_secs(2),
        fail_with: None,
    });

    // Three slow calls in a row trip the breaker; each is refused 503 with Retry-After.
    for _ in 0..3 {
        let r = place_raw(&s, &s.base, &customer).await;
        assert_eq!(r.status(), 503);
        assert!(r.headers().get("retry-after").is_some());
    }
    let calls_when_open = s.sim.calls();
    let started = Instant::now();
    let r = place_raw(&s, &s.base, &customer).await;
    let refused_in = started.elapsed();
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("shortly"),
        "{body}"
    );
    assert_eq!(s.sim.calls(), calls_when_open, "no gateway call while open");
    eprintln!("refused while open in {refused_in:?}");
    let (_, m) = s.get("/api/metrics", &customer).await;
    assert_eq!(m["paymentBreaker"]["state"], "open");

    // The gateway recovers; after the cool-down a probe goes through and closes it.
    s.sim.set_faults(Faults::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let r = place_raw(&s, &s.base, &customer).await;
        if r.status() == 201 {
            break r.json::<serde_json::Value>().await.unwrap()["orderId"]
                .as_str()
                .unwrap()
                .to_string();
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "the breaker never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(s.sim.charges_of(&id).len(), 1);
    let again = s.place(&customer).await;
    assert_eq!(s.sim.charges_of(&again).len(), 1);
    // None of the refused orders was established, and any charge that landed late
    // is refunded exactly once.
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine.as_array().unwrap().len(), 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let late: Vec<_> = s
            .sim
            .payments()
            .into_iter()
            .filter(|p| p.order_id != id && p.order_id != again)
            .collect();
        if late
            .iter()
            .all(|p| p.refunded == p.amount && p.refund_count == 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "late charges not refunded: {late:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_after_the_deadline_is_refunded_once_and_no_order_is_established() {
    let s = spawn_stack_with(options(
        &[
            ("PAYMENT_TIMEOUT_MS", "300"),
            ("PAYMENT_BREAKER_FAILURES", "50"),
        ],
        Context::ALL.to_vec(),
    ))
    .await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    s.sim.set_faults(Faults {
        latency: Duration::from_millis(1500),
        fail_with: None,
    });
    let r = place_raw(&s, &s.base, &customer).await;
    assert_eq!(r.status(), 503);
    // The gateway did charge, after we stopped waiting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.sim.payments().is_empty() {
        assert!(Instant::now() < deadline, "the slow charge never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.sim.set_faults(Faults::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = s.sim.payments();
        assert_eq!(p.len(), 1, "one charge only: {p:?}");
        if p[0].refunded == p[0].amount {
            assert_eq!(p[0].refund_count, 1);
            break;
        }
        assert!(Instant::now() < deadline, "late charge not refunded: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine, json!([]));
    let (_, shop) = s.get("/api/shop/orders", &owner).await;
    assert_eq!(shop, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_processes_share_the_breaker() {
    let s = spawn_stack_with(options(&BREAKER, Context::ALL.to_vec())).await;
    let other = s.spawn_api().await;
    let customer = s.login("customer1").await;
    s.sim.set_faults(Faults {
        latency: Duration::ZERO,
        fail_with: Some(500),
    });
    for _ in 0..3 {
        assert_eq!(place_raw(&s, &s.base, &customer).await.status(), 503);
    }
    let calls = s.sim.calls();
    let r = place_raw(&s, &other, &customer).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        s.sim.calls(),
        calls,
        "the second API did not call the gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_taken_while_the_shop_context_is_down_and_owners_see_them_all_later() {
    let without_shop = vec![
        Context::Order,
        Context::Payment,
        Context::Delivery,
        Context::Notification,
    ];
    let s = spawn_stack_with(options(&[("SHOP_ACCEPT_TIMEOUT", "3s")], without_shop)).await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(s.place(&customer).await);
    }
    let (_, shop) = s.get("/api/shop/orders", &owner).await;
    assert_eq!(shop, json!([]), "the shop context is down");
    // Longer than the accept timeout: the clock runs only once the shop has the order.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    s.start_worker(Context::Shop);
    let listed = s
        .eventually("/api/shop/orders", &owner, Duration::from_secs(30), |l| {
            l.as_array().unwrap().len() == 3
        })
        .await;
    let listed_ids: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["orderId"].as_str().unwrap().to_string())
        .collect();
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(listed_ids, newest_first, "every order, newest first");
    let (code, b) = s
        .post(
            &format!("/api/shop/orders/{}/accept", ids[0]),
            &owner,
            json!({"cookMinutes": 5}),
        )
        .await;
    assert_eq!(code, 200, "{b}");
}

/// One order as the owner's list shows it.
async fn owner_view(s: &Stack, owner: &str, id: &str) -> serde_json::Value {
    let (_, list) = s.get("/api/shop/orders", owner).await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|o| o["orderId"] == id)
        .cloned()
        .unwrap_or_default()
}

/// The change feed: the shop context down for a while still ends with the
/// owner's view complete and in order, while customers go on ordering and
/// cancelling, and the orders' histories carry none of the shop's work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_context_down_for_a_while_catches_up_from_the_change_feed() {
    let without_shop = vec![
        Context::Order,
        Context::Payment,
        Context::Delivery,
        Context::Notification,
    ];
    let s = spawn_stack_with(options(&[], without_shop)).await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(s.place(&customer).await);
    }
    // Changes go on while the shop is away: one order is cancelled.
    let (code, b) = s
        .post(
            &format!("/api/orders/{}/cancel", ids[1]),
            &customer,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["status"], "CANCELLED");
    // Every other reader is served meanwhile: the customer's notifications.
    s.eventually(
        "/api/notifications",
        &customer,
        Duration::from_secs(30),
        |f| f.as_array().unwrap().len() == 5,
    )
    .await;
    let (_, shop) = s.get("/api/shop/orders", &owner).await;
    assert_eq!(shop, json!([]), "the shop context is down");

    s.start_worker(Context::Shop);
    let listed = s
        .eventually("/api/shop/orders", &owner, Duration::from_secs(30), |l| {
            let l = l.as_array().unwrap();
            l.len() == 4 && l.iter().any(|o| o["status"] == "CANCELLED")
        })
        .await;
    let listed: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["orderId"].as_str().unwrap().to_string(),
                o["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .rev()
        .map(|(i, id)| {
            let status = if i == 1 { "CANCELLED" } else { "PAID" };
            (id.clone(), status.to_string())
        })
        .collect();
    assert_eq!(
        listed, expected,
        "every order at its newest status, newest first"
    );
    let dtl = owner_view(&s, &owner, &ids[1]).await;
    assert_eq!(dtl["reason"], "CUSTOMER_CANCELLED", "{dtl}");
    // The owner acts on what they see, and reads their own write at once.
    let accepted = s.accept(&ids[3], &owner, 5).await;
    assert_eq!(accepted["status"], "ACCEPTED");
    let dtl = owner_view(&s, &owner, &ids[3]).await;
    assert_eq!(dtl["status"], "ACCEPTED", "{dtl}");
    // The owner's notifications came through too, each once and in order.
    let owner_feed = s
        .eventually("/api/notifications", &owner, Duration::from_secs(30), |f| {
            f.as_array().unwrap().len() == 6
        })
        .await;
    let of_cancelled: Vec<_> = owner_feed
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["orderId"] == ids[1].as_str())
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    assert_eq!(of_cancelled, ["CANCELLED", "PAID"], "newest first");
    // Under the change feed the shop's view and the notifications cost the
    // order's history nothing: no activity of theirs is in it.
    let history = String::from_utf8(s.history_json(&ids[3]).await.unwrap()).unwrap();
    // Activity types are in clear in a history (payloads are sealed): the
    // charge is there, the contexts' projections are not.
    assert!(history.contains("payment.charge"), "{history}");
    for absent in ["shop.project", "delivery.project", "notification.announce"] {
        assert!(!history.contains(absent), "{absent} in the history");
    }
    // No timer tells an operator that the order waits for its owner: the
    // details the Web UI shows with every order do (what each status waits for).
    use base64::Engine as _;
    let details =
        base64::engine::general_purpose::STANDARD.encode(br#""What this order waits for, by"#);
    assert_eq!(details.len() % 4, 0);
    assert!(
        history.contains(&details),
        "the order's details in the Web UI"
    );
}

/// The rider's view follows the change feed; a rider who accepted while the
/// delivery context was away (or far behind) got the accept's answer before
/// the view held the delivery, and must still be able to pick it up and
/// deliver it: the benchmark once lost orders to a `404` here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_carries_an_order_the_delivery_context_has_not_caught_up_with() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(3).await;
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    s.accept(&id, &owner, 10).await;
    let (name, token) = s.rider_with_offer(&id, &riders).await;
    // The offer is made; the delivery context goes away before the accept.
    s.stop_worker_and_wait(Context::Delivery).await;
    let (code, b) = s
        .act(&format!("/api/rider/offers/{id}/accept"), &token, json!({}))
        .await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["status"], "RIDER_ASSIGNED");
    let (_, mine) = s.get("/api/rider/deliveries", &token).await;
    assert!(
        !mine.to_string().contains(&id),
        "the rider's view already holds the delivery, so this test shows nothing: {mine}"
    );
    // Nobody else may act on it meanwhile.
    let (_, other) = riders.iter().find(|(n, _)| *n != name).unwrap();
    let (code, b) = s
        .act(
            &format!("/api/rider/deliveries/{id}/pickup"),
            other,
            json!({}),
        )
        .await;
    assert_eq!(code, 404, "another rider picked it up: {b}");
    for (path, token, status) in [
        (format!("/api/shop/orders/{id}/ready"), &owner, None),
        (
            format!("/api/rider/deliveries/{id}/pickup"),
            &token,
            Some("PICKED_UP"),
        ),
        (
            format!("/api/rider/deliveries/{id}/complete"),
            &token,
            Some("DELIVERED"),
        ),
    ] {
        let (code, b) = s.act(&path, token, json!({})).await;
        assert_eq!(code, 200, "{path}: {b}");
        if let Some(status) = status {
            assert_eq!(b["status"], status, "{path}");
        }
    }
    // Back, the delivery context catches up: the rider's view shows it delivered.
    s.start_worker(Context::Delivery);
    s.eventually(
        "/api/rider/deliveries",
        &token,
        Duration::from_secs(30),
        |l| {
            l.as_array()
                .unwrap()
                .iter()
                .any(|d| d["orderId"] == id.as_str() && d["status"] == "DELIVERED")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_catch_up_when_their_context_returns() {
    let without = vec![
        Context::Order,
        Context::Payment,
        Context::Shop,
        Context::Delivery,
    ];
    let s = spawn_stack_with(StackOptions {
        webhook: true,
        ..options(&[], without)
    })
    .await;
    *s.webhook.refuse_first.lock().unwrap() = 2;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.accept(&id, &owner, 5).await;
    let (_, feed) = s.get("/api/notifications", &customer).await;
    assert_eq!(feed, json!([]));
    s.start_worker(Context::Notification);
    let feed = s
        .eventually(
            "/api/notifications",
            &customer,
            Duration::from_secs(30),
            |f| f.as_array().unwrap().len() == 2,
        )
        .await;
    let st: Vec<_> = feed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    // Newest first.
    assert_eq!(st, ["ACCEPTED", "PAID"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = s.webhook.received.lock().unwrap().clone();
        if got.len() >= 4 {
            let keys: std::collections::HashSet<_> = got
                .iter()
                .map(|m| m["dedupeKey"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(keys.len(), 4, "customer and owner, PAID and ACCEPTED");
            assert!(keys.contains(&format!("{id}:ACCEPTED:owner1")));
            break;
        }
        assert!(Instant::now() < deadline, "webhook got {}", got.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workflow_worker_loses_nothing() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.eventually("/api/shop/orders", &owner, Duration::from_secs(20), |l| {
        !l.as_array().unwrap().is_empty()
    })
    .await;
    s.stop_worker(Context::Order);
    // The owner accepts while the workflow's host is down; the call completes once
    // a new worker picks the workflow up from its history.
    let accept = {
        let url = s.url(&format!("/api/shop/orders/{id}/accept"));
        let req = s
            .http
            .post(url)
            .bearer_auth(&owner)
            .json(&json!({"cookMinutes": 5}));
        tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.start_worker(Context::Order);
    assert_eq!(accept.await.unwrap(), 200);
    let order = s.wait_status(&id, &customer, "ACCEPTED").await;
    assert_eq!(order["history"].as_array().unwrap().len(), 2);
    assert_eq!(s.sim.charges_of(&id).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporal_server_restart_loses_nothing_and_charges_once() {
    let mut server = OwnDevServer::start();
    let s = spawn_stack_with(StackOptions {
        temporal_address: Some(server.address.clone()),
        ..Default::default()
    })
    .await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;
    let id = s.place(&customer).await;
    s.eventually("/api/shop/orders", &owner, Duration::from_secs(20), |l| {
        !l.as_array().unwrap().is_empty()
    })
    .await;

    // The server crashes and comes back on its state file; the API and workers
    // reconnect on their own and the order carries on where it was.
    server.kill();
    let (code, _) = s
        .post(
            &format!("/api/shop/orders/{id}/accept"),
            &owner,
            json!({"cookMinutes": 5}),
        )
        .await;
    assert_eq!(code, 503, "no Temporal, no accept (yet)");
    let r = s
        .http
        .post(s.url("/api/orders"))
        .bearer_auth(&customer)
        .json(&order_body("tok_ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "no Temporal, no new order (yet)");
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let (code, order) = s.get(&format!("/api/orders/{id}"), &customer).await;
    assert_eq!(
        (code, order["status"].as_str()),
        (200, Some("PAID")),
        "reads need no Temporal"
    );
    server.restart();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = s
            .post(
                &format!("/api/shop/orders/{id}/accept"),
                &owner,
                json!({"cookMinutes": 5}),
            )
            .await;
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "accept after the restart: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, t) = s.rider_with_offer(&id, &riders).await;
    s.deliver(&id, &owner, &t).await;
    let order = s.wait_status(&id, &customer, "DELIVERED").await;
    assert_eq!(order["history"].as_array().unwrap().len(), 6);
    let charges = s.sim.charges_of(&id);
    assert_eq!((charges.len(), charges[0].refunded), (1, 0));
    // The order refused during the outage was never established nor charged.
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(s.sim.payments().len(), 1);
}
