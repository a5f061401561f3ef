//! Every way an order can end besides delivery, and the rider dispatch rules.

use baedal_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

fn statuses(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_payment_is_402_and_nothing_is_established() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let (code, body) = s
        .post("/api/orders", &customer, order_body("tok_declined"))
        .await;
    assert_eq!(code, 402, "{body}");
    assert_eq!(body["status"], 402);
    assert!(s.sim.payments().is_empty(), "nothing charged");
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine, json!([]));
    let (_, shop) = s.get("/api/shop/orders", &owner).await;
    assert_eq!(shop, json!([]), "the shop never sees an unpaid order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_acceptance_refunds_the_payment() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    let (code, body) = s
        .post(&format!("/api/orders/{id}/cancel"), &customer, json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(body["refund"]["amount"], ORDER_TOTAL);
    assert_eq!(body["refund"]["status"], "REFUNDED");
    let order = s.wait_status(&id, &customer, "CANCELLED").await;
    assert_eq!(order["reason"], "CUSTOMER_CANCELLED");
    assert_eq!(order["refund"]["status"], "REFUNDED");
    assert_eq!(statuses(&order), ["PAID", "CANCELLED"]);
    let charges = s.sim.charges_of(&id);
    assert_eq!((charges.len(), charges[0].refunded), (1, ORDER_TOTAL));
    s.eventually(
        "/api/shop/orders?status=CANCELLED",
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
    s.wait_workflow_closed(&id).await;
    record_history(&s, &id, "cancelled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_accept_is_refused() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.accept(&id, &owner, 10).await;
    let (code, body) = s
        .post(&format!("/api/orders/{id}/cancel"), &customer, json!({}))
        .await;
    assert_eq!(code, 409, "{body}");
    let (_, order) = s.get(&format!("/api/orders/{id}"), &customer).await;
    assert_eq!(order["status"], "ACCEPTED");
    assert_eq!(s.sim.charges_of(&id)[0].refunded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_refunds_with_the_owners_reason() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.eventually("/api/shop/orders", &owner, Duration::from_secs(20), |l| {
        !l.as_array().unwrap().is_empty()
    })
    .await;
    let (code, body) = s
        .post(
            &format!("/api/shop/orders/{id}/reject"),
            &owner,
            json!({"reason": "재료 소진 out of chicken"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "REJECTED");
    assert_eq!(body["refund"]["amount"], ORDER_TOTAL);
    let order = s.wait_status(&id, &customer, "REJECTED").await;
    assert_eq!(order["reason"], "재료 소진 out of chicken");
    assert_eq!(s.sim.charges_of(&id)[0].refunded, ORDER_TOTAL);
    s.wait_workflow_closed(&id).await;
    record_history(&s, &id, "rejected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_order_is_rejected_with_shop_timeout_and_refunded() {
    let s = spawn_stack_with(with_env(&[("SHOP_ACCEPT_TIMEOUT", "2s")])).await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let order = s
        .eventually(
            &format!("/api/orders/{id}"),
            &customer,
            Duration::from_secs(30),
            |o| o["status"] == "REJECTED" && o["refund"]["status"] == "REFUNDED",
        )
        .await;
    assert_eq!(order["reason"], "SHOP_TIMEOUT");
    assert_eq!(order["refund"]["amount"], ORDER_TOTAL);
    assert_eq!(s.sim.charges_of(&id)[0].refunded, ORDER_TOTAL);
    s.wait_workflow_closed(&id).await;
    record_history(&s, &id, "shop_timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_offer_goes_to_the_next_nearest_rider() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;
    let id = s.place(&customer).await;
    s.accept(&id, &owner, 10).await;
    let (first, t1) = s.rider_with_offer(&id, &riders).await;
    assert_eq!(first, "rider1");
    let (code, b) = s
        .post(&format!("/api/rider/offers/{id}/decline"), &t1, json!({}))
        .await;
    assert_eq!(code, 200, "{b}");
    let others: Vec<_> = riders
        .iter()
        .filter(|(n, _)| n != "rider1")
        .cloned()
        .collect();
    let (second, t2) = s.rider_with_offer(&id, &others).await;
    assert_eq!(second, "rider2");
    let (code, b) = s
        .post(&format!("/api/rider/offers/{id}/accept"), &t2, json!({}))
        .await;
    assert_eq!(code, 200, "{b}");
    let order = s.wait_status(&id, &customer, "RIDER_ASSIGNED").await;
    assert_eq!(order["rider"]["id"], "rider2");
    // The rider who declined cannot take it after all.
    let (code, _) = s
        .post(&format!("/api/rider/offers/{id}/accept"), &t1, json!({}))
        .await;
    assert_eq!(code, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_offer_times_out_to_the_next_nearest_rider() {
    let s = spawn_stack_with(with_env(&[("RIDER_OFFER_TIMEOUT", "2s")])).await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;
    let id = s.place(&customer).await;
    s.accept(&id, &owner, 10).await;
    let (first, t1) = s.rider_with_offer(&id, &riders).await;
    assert_eq!(first, "rider1");
    let others: Vec<_> = riders
        .iter()
        .filter(|(n, _)| n != "rider1")
        .cloned()
        .collect();
    let (second, t2) = s.rider_with_offer(&id, &others).await;
    assert_eq!(second, "rider2");
    // The lapsed offer is gone for rider1.
    let (code, _) = s
        .post(&format!("/api/rider/offers/{id}/accept"), &t1, json!({}))
        .await;
    assert_eq!(code, 409);
    let (code, b) = s
        .post(&format!("/api/rider/offers/{id}/accept"), &t2, json!({}))
        .await;
    assert_eq!(code, 200, "{b}");
    s.wait_status(&id, &customer, "RIDER_ASSIGNED").await;
    record_history(&s, &id, "offer_lapsed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rider_within_the_search_timeout_cancels_and_refunds() {
    let s = spawn_stack_with(with_env(&[("RIDER_SEARCH_TIMEOUT", "3s")])).await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    // Every rider goes off duty.
    for (_, t) in s.riders(6).await {
        let (code, _) = s
            .call(
                reqwest::Method::PUT,
                "/api/rider/location",
                Some(&t),
                Some(json!({"lat": 37.5, "lon": 127.0, "available": false})),
            )
            .await;
        assert_eq!(code, 204);
    }
    let id = s.place(&customer).await;
    s.accept(&id, &owner, 10).await;
    let order = s
        .eventually(
            &format!("/api/orders/{id}"),
            &customer,
            Duration::from_secs(30),
            |o| o["status"] == "CANCELLED" && o["refund"]["status"] == "REFUNDED",
        )
        .await;
    assert_eq!(order["reason"], "NO_RIDER");
    assert_eq!(statuses(&order), ["PAID", "ACCEPTED", "CANCELLED"]);
    assert_eq!(s.sim.charges_of(&id)[0].refunded, ORDER_TOTAL);
    s.wait_workflow_closed(&id).await;
    record_history(&s, &id, "no_rider").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_rider_never_gets_a_second_delivery_under_twenty_concurrent_orders() {
    let s = spawn_stack().await;
    let riders = s.riders(6).await;
    s.race_riders_for(20, &riders).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_starts_at_ready_at_when_the_owner_does_not_mark_it_ready() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;
    let id = s.place(&customer).await;
    // One minute is the shortest cooking time the contract allows.
    let accepted = s.accept(&id, &owner, 1).await;
    let (_, rider) = s.rider_with_offer(&id, &riders).await;
    let (code, _) = s
        .post(&format!("/api/rider/offers/{id}/accept"), &rider, json!({}))
        .await;
    assert_eq!(code, 200);
    let order = s
        .eventually(
            &format!("/api/orders/{id}"),
            &customer,
            Duration::from_secs(120),
            |o| o["status"] == "DELIVERY_STARTED",
        )
        .await;
    assert_eq!(
        statuses(&order),
        ["PAID", "ACCEPTED", "RIDER_ASSIGNED", "DELIVERY_STARTED"]
    );
    // It started because readyAt came, not before.
    let ready_at = order["readyAt"].as_str().unwrap();
    let started_at = order["history"][3]["at"].as_str().unwrap();
    assert_eq!(ready_at, accepted["readyAt"].as_str().unwrap());
    assert!(
        started_at >= ready_at,
        "started {started_at}, ready {ready_at}"
    );
    // The owner may no longer mark it ready; the rider picks it up.
    let (code, _) = s
        .post(&format!("/api/shop/orders/{id}/ready"), &owner, json!({}))
        .await;
    assert_eq!(code, 409);
    let (code, body) = s
        .post(
            &format!("/api/rider/deliveries/{id}/pickup"),
            &rider,
            json!({}),
        )
        .await;
    assert_eq!((code, body["status"].clone()), (200, json!("PICKED_UP")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offer_goes_to_the_nearest_available_rider_by_reported_location() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;
    // rider1, the nearest of the seeded riders, goes off duty; rider5 rides up to
    // the shop's door (shop1 is at 37.4979, 127.0276).
    for (rider, body) in [
        (
            &riders[0].1,
            json!({"lat": 37.4979, "lon": 127.0276, "available": false}),
        ),
        (
            &riders[4].1,
            json!({"lat": 37.4980, "lon": 127.0277, "available": true}),
        ),
    ] {
        let (code, _) = s
            .call(
                reqwest::Method::PUT,
                "/api/rider/location",
                Some(rider),
                Some(body),
            )
            .await;
        assert_eq!(code, 204);
    }
    let id = s.place(&customer).await;
    s.accept(&id, &owner, 10).await;
    let (name, token) = s.rider_with_offer(&id, &riders).await;
    assert_eq!(name, "rider5");
    let (_, offers) = s.get("/api/rider/offers", &token).await;
    assert!(offers[0]["distanceM"].as_i64().unwrap() < 50, "{offers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_silent_longer_than_rider_stale_after_gets_no_offer() {
    let s = spawn_stack_with(StackOptions {
        env: vec![("RIDER_STALE_AFTER", "2s".into())],
        ..StackOptions::default()
    })
    .await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;
    // The seeded riders were last heard of when the delivery context seeded
    // them; once that is longer ago than RIDER_STALE_AFTER, only rider6, who
    // keeps reporting (as the rider's page does) from 2 km north of the shop,
    // can be offered the order, though rider1's last known position is next to
    // the shop.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let heartbeat = {
        let (http, url, token) = (
            s.http.clone(),
            s.url("/api/rider/location"),
            riders[5].1.clone(),
        );
        tokio::spawn(async move {
            loop {
                let r = http
                    .put(&url)
                    .bearer_auth(&token)
                    .json(&json!({"lat": 37.5159, "lon": 127.0276, "available": true}))
                    .send()
                    .await
                    .expect("location reported");
                assert_eq!(r.status(), 204);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let id = s.place(&customer).await;
    s.accept(&id, &owner, 10).await;
    let (name, token) = s.rider_with_offer(&id, &riders).await;
    assert_eq!(name, "rider6");
    let (_, offers) = s.get("/api/rider/offers", &token).await;
    let d = offers[0]["distanceM"].as_i64().unwrap();
    assert!((1900..2100).contains(&d), "{offers}");
    heartbeat.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_who_delivered_takes_the_next_order() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;
    for round in 0..2 {
        let id = s.place(&customer).await;
        s.accept(&id, &owner, 10).await;
        let (name, t) = s.rider_with_offer(&id, &riders).await;
        assert_eq!(
            name, "rider1",
            "round {round}: the nearest rider, free again"
        );
        s.deliver(&id, &owner, &t).await;
        s.wait_status(&id, &customer, "DELIVERED").await;
    }
    let (_, done) = s.get("/api/rider/deliveries", &riders[0].1).await;
    assert_eq!(done.as_array().unwrap().len(), 2);
}
