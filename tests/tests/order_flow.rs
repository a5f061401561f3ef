//! The order saga end to end: SPEC section 1 through the HTTP API, on a real
//! Temporal dev server.

use baedal_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_reaches_delivered_with_the_exact_history() {
    let s = spawn_stack_with(StackOptions {
        webhook: true,
        ..Default::default()
    })
    .await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;

    let (code, placed) = s.post("/api/orders", &customer, order_body("tok_ok")).await;
    assert_eq!(code, 201, "{placed}");
    assert_eq!(placed["status"], "PAID");
    assert_eq!(placed["total"], ORDER_TOTAL);
    let id = placed["orderId"].as_str().unwrap().to_string();
    assert_eq!(s.sim.charges_of(&id).len(), 1);

    // The owner sees the paid order, accepts it and marks the food ready.
    s.eventually("/api/shop/orders", &owner, Duration::from_secs(20), |l| {
        l.as_array()
            .unwrap()
            .iter()
            .any(|o| o["orderId"] == id.as_str() && o["status"] == "PAID")
    })
    .await;
    let (code, accepted) = s
        .post(
            &format!("/api/shop/orders/{id}/accept"),
            &owner,
            json!({"cookMinutes": 15}),
        )
        .await;
    assert_eq!(code, 200, "{accepted}");
    assert_eq!(accepted["status"], "ACCEPTED");
    assert!(accepted["readyAt"].is_string());

    // The nearest rider (rider1, ~300 m from the shop) gets the offer.
    let riders = s.riders(6).await;
    let (rider, rider_token) = s.rider_with_offer(&id, &riders).await;
    assert_eq!(rider, "rider1");
    let (code, offers) = s.get("/api/rider/offers", &rider_token).await;
    assert_eq!(code, 200);
    let offer = offers
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["orderId"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(offer["shop"]["id"], "shop1");
    assert!(offer["distanceM"].as_i64().unwrap() > 0);
    let (code, body) = s
        .post(
            &format!("/api/rider/offers/{id}/accept"),
            &rider_token,
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "RIDER_ASSIGNED");

    let (code, body) = s
        .post(&format!("/api/shop/orders/{id}/ready"), &owner, json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "DELIVERY_STARTED");

    let deliveries = s
        .eventually(
            "/api/rider/deliveries",
            &rider_token,
            Duration::from_secs(20),
            |l| {
                l.as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["orderId"] == id.as_str() && d["status"] == "DELIVERY_STARTED")
            },
        )
        .await;
    let d = deliveries
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["orderId"] == id.as_str())
        .unwrap();
    assert_eq!(d["shop"]["id"], "shop1");
    assert!(!d["shop"]["name"].as_str().unwrap().is_empty());
    assert_eq!(d["address"]["text"], "서울 강남구 테헤란로 1");

    let (code, body) = s
        .post(
            &format!("/api/rider/deliveries/{id}/pickup"),
            &rider_token,
            json!({}),
        )
        .await;
    assert_eq!((code, body["status"].clone()), (200, json!("PICKED_UP")));
    let (code, body) = s
        .post(
            &format!("/api/rider/deliveries/{id}/complete"),
            &rider_token,
            json!({}),
        )
        .await;
    assert_eq!((code, body["status"].clone()), (200, json!("DELIVERED")));

    // DELIVERED for customer, shop and rider alike, with every status in order.
    let order = s.wait_status(&id, &customer, "DELIVERED").await;
    assert_eq!(
        statuses(&order),
        [
            "PAID",
            "ACCEPTED",
            "RIDER_ASSIGNED",
            "DELIVERY_STARTED",
            "PICKED_UP",
            "DELIVERED"
        ]
    );
    assert_eq!(order["rider"]["id"], "rider1");
    assert_eq!(order["refund"], Value::Null);
    s.eventually(
        "/api/shop/orders?status=DELIVERED",
        &owner,
        Duration::from_secs(20),
        |l| {
            l.as_array()
                .unwrap()
                .iter()
                .any(|o| o["orderId"] == id.as_str())
        },
    )
    .await;
    s.eventually(
        "/api/rider/deliveries",
        &rider_token,
        Duration::from_secs(20),
        |l| {
            l.as_array()
                .unwrap()
                .iter()
                .any(|d| d["orderId"] == id.as_str() && d["status"] == "DELIVERED")
        },
    )
    .await;

    // One notification per status per recipient, in the feed and at the webhook.
    let feed = s
        .eventually(
            "/api/notifications",
            &customer,
            Duration::from_secs(20),
            |f| {
                f.as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| n["orderId"] == id.as_str())
                    .count()
                    == 6
            },
        )
        .await;
    // The feed is newest first: the history read backwards.
    let mut mine: Vec<_> = feed
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["orderId"] == id.as_str())
        .map(|n| n["status"].as_str().unwrap().to_string())
        .collect();
    mine.reverse();
    assert_eq!(mine, statuses(&order));
    s.eventually("/api/notifications", &owner, Duration::from_secs(20), |f| {
        f.as_array()
            .unwrap()
            .iter()
            .filter(|n| n["orderId"] == id.as_str())
            .count()
            == 6
    })
    .await;
    s.eventually(
        "/api/notifications",
        &rider_token,
        Duration::from_secs(20),
        |f| {
            f.as_array()
                .unwrap()
                .iter()
                .filter(|n| n["orderId"] == id.as_str())
                .count()
                == 4
        },
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<Value> = s.webhook.received.lock().unwrap().clone();
        let keys: std::collections::HashSet<_> = got
            .iter()
            .map(|m| m["dedupeKey"].as_str().unwrap().to_string())
            .collect();
        if keys.len() == 16 {
            assert!(keys.contains(&format!("{id}:DELIVERED:customer1")));
            assert!(keys.contains(&format!("{id}:PAID:owner1")));
            assert!(keys.contains(&format!("{id}:PICKED_UP:rider1")));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "webhook got {} distinct messages",
            keys.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Nobody was charged twice and nothing was refunded.
    let charges = s.sim.charges_of(&id);
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].amount, ORDER_TOTAL);
    assert_eq!(charges[0].refunded, 0);

    s.wait_workflow_closed(&id).await;
    // Every timer lost its race (the owner accepted, the rider took the offer,
    // the food was marked ready) and was cancelled, so none fires later. The
    // readyAt timer is always started (the food is marked ready only after the
    // rider took the offer); the shop's and the offer's are not when the answer
    // came in the very workflow task that would have started them.
    let history = String::from_utf8(s.history_json(&id).await.unwrap()).unwrap();
    let started = history.matches("TimerStartedEventAttributes").count();
    assert!(
        (1..=3).contains(&started),
        "shop acceptance, readyAt, rider offer: {started}"
    );
    assert_eq!(
        history.matches("TimerCanceledEventAttributes").count(),
        started
    );
    assert_eq!(history.matches("TimerFiredEventAttributes").count(), 0);
    record_history(&s, &id, "happy_path").await;
}
