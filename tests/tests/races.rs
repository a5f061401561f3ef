//! Two people acting on one order at once. Each test makes the interleaving
//! happen instead of hoping for it: the order worker is stopped, both actions
//! are sent (the first a moment before the second, so both are waiting in
//! Temporal in that order), and the worker is started again, so both reach the
//! workflow in one workflow task. The first applied wins with 200; the other
//! answers 409; no call is left waiting; the order's history holds only the
//! winner; the customer is charged once and refunded iff the order ended
//! undelivered.

use baedal_tests::{ORDER_TOTAL, Stack, StackOptions, record_history, spawn_stack_with, statuses};
use baedal_workflows::Context;
use serde_json::{Value, json};
use std::time::Duration;

/// One HTTP action: path, caller's token, body, and the name of its update
/// (`cancel`, `accept`, `offer.accept`, ...; the gateway's action names).
struct Act(String, String, Value, &'static str);

fn act(path: String, token: &str, body: Value) -> Act {
    let name = match path.rsplit('/').next().unwrap() {
        "cancel" => "cancel",
        "reject" => "reject",
        "ready" => "ready",
        "pickup" => "pickup",
        "complete" => "complete",
        "decline" => "offer.decline",
        "accept" if path.contains("/rider/") => "offer.accept",
        "accept" => "accept",
        other => panic!("no action {other}"),
    };
    Act(path, token.to_string(), body, name)
}

/// The user a login token is for (its `sub`).
fn caller(token: &str) -> String {
    use base64::Engine as _;
    let claims = token.split('.').nth(1).unwrap();
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .unwrap();
    serde_json::from_slice::<Value>(&claims).unwrap()["sub"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Sends one action in the background (with `key` as its `Idempotency-Key`, if
/// given); its answer must come (a hung call fails the test).
fn send_keyed(s: &Stack, a: &Act, key: Option<&str>) -> tokio::task::JoinHandle<(u16, Value)> {
    let mut req = s
        .http
        .post(s.url(&a.0))
        .bearer_auth(&a.1)
        .json(&a.2)
        .timeout(Duration::from_secs(120));
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    tokio::spawn(async move {
        let r = req.send().await.expect("the action was answered");
        let code = r.status().as_u16();
        (code, r.json::<Value>().await.unwrap_or(Value::Null))
    })
}

fn send(s: &Stack, a: Act) -> tokio::task::JoinHandle<(u16, Value)> {
    send_keyed(s, &a, None)
}

/// Sends `first`, then `second`, while the order worker is down, then starts
/// the worker; returns both answers. The second is sent only once Temporal has
/// admitted the first (the first carries a key, so its update id is known):
/// admission order is the order the workflow sees them in.
async fn race(s: &Stack, order_id: &str, first: Act, second: Act) -> [(u16, Value); 2] {
    s.stop_worker_and_wait(Context::Order).await;
    // A key serves one action: each race's first action gets its own.
    let key = uuid::Uuid::new_v4().simple().to_string();
    let key = key.as_str();
    let a = send_keyed(s, &first, Some(key));
    let update_id = format!("{}:{}:{key}", first.3, caller(&first.1));
    s.wait_update_admitted(order_id, &update_id).await;
    let b = send(s, second);
    // The second is sent; give it the moment it needs to reach Temporal too
    // (if it comes later still, it reaches the workflow later: the same order).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.start_worker(Context::Order);
    [a.await.unwrap(), b.await.unwrap()]
}

/// Charged once; refunded (once, in full) exactly when `refunded`.
fn assert_money(s: &Stack, order_id: &str, refunded: bool) {
    let charges = s.sim.charges_of(order_id);
    assert_eq!(charges.len(), 1, "charged exactly once: {charges:?}");
    let c = &charges[0];
    assert_eq!(c.amount, ORDER_TOTAL);
    if refunded {
        assert_eq!((c.refunded, c.refund_count), (ORDER_TOTAL, 1), "{c:?}");
    } else {
        assert_eq!((c.refunded, c.refund_count), (0, 0), "{c:?}");
    }
}

async fn stack() -> Stack {
    spawn_stack_with(StackOptions::default()).await
}

/// A paid order the owner can see; returns (stack, order id, customer, owner).
async fn paid_order() -> (Stack, String, String, String) {
    let s = stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    (s, id, customer, owner)
}

fn cancel(id: &str, customer: &str) -> Act {
    act(format!("/api/orders/{id}/cancel"), customer, json!({}))
}

fn accept(id: &str, owner: &str) -> Act {
    act(
        format!("/api/shop/orders/{id}/accept"),
        owner,
        json!({"cookMinutes": 20}),
    )
}

fn reject(id: &str, owner: &str) -> Act {
    act(
        format!("/api/shop/orders/{id}/reject"),
        owner,
        json!({"reason": "Sold out"}),
    )
}

#[tokio::test]
async fn cancel_then_accept_at_once_cancels_and_refuses_the_accept() {
    let (s, id, customer, owner) = paid_order().await;
    let [(c1, b1), (c2, b2)] = race(&s, &id, cancel(&id, &customer), accept(&id, &owner)).await;
    assert_eq!((c1, c2), (200, 409), "cancel: {b1}; accept: {b2}");
    assert_eq!(b1["status"], "CANCELLED");
    assert_eq!(b1["refund"]["status"], "REFUNDED");
    assert_eq!(
        b2["type"].as_str().map(|t| t.contains("conflict")),
        Some(true),
        "{b2}"
    );
    let o = s.wait_status(&id, &customer, "CANCELLED").await;
    assert_eq!(statuses(&o), ["PAID", "CANCELLED"]);
    assert_eq!(o["reason"], "CUSTOMER_CANCELLED");
    s.wait_workflow_closed(&id).await;
    assert_money(&s, &id, true);
    record_history(&s, &id, "race_cancel_accept").await;
}

#[tokio::test]
async fn reject_then_accept_at_once_rejects_and_refuses_the_accept() {
    let (s, id, customer, owner) = paid_order().await;
    let [(c1, b1), (c2, b2)] = race(&s, &id, reject(&id, &owner), accept(&id, &owner)).await;
    assert_eq!((c1, c2), (200, 409), "reject: {b1}; accept: {b2}");
    assert_eq!(b1["status"], "REJECTED");
    let o = s.wait_status(&id, &customer, "REJECTED").await;
    assert_eq!(statuses(&o), ["PAID", "REJECTED"]);
    assert_eq!(o["reason"], "Sold out");
    assert_eq!(o["refund"]["status"], "REFUNDED");
    s.wait_workflow_closed(&id).await;
    assert_money(&s, &id, true);
}

#[tokio::test]
async fn accept_then_cancel_at_once_accepts_and_refuses_the_cancel() {
    let (s, id, customer, owner) = paid_order().await;
    let [(c1, b1), (c2, b2)] = race(&s, &id, accept(&id, &owner), cancel(&id, &customer)).await;
    assert_eq!((c1, c2), (200, 409), "accept: {b1}; cancel: {b2}");
    assert_eq!(b1["status"], "ACCEPTED");
    let o = s.wait_status(&id, &customer, "ACCEPTED").await;
    assert_eq!(statuses(&o), ["PAID", "ACCEPTED"]);
    assert_eq!(o["refund"], Value::Null);
    assert_eq!(o["reason"], Value::Null);
    assert_money(&s, &id, false);
}

#[tokio::test]
async fn accept_then_reject_at_once_accepts_and_refuses_the_reject() {
    let (s, id, customer, owner) = paid_order().await;
    let [(c1, b1), (c2, b2)] = race(&s, &id, accept(&id, &owner), reject(&id, &owner)).await;
    assert_eq!((c1, c2), (200, 409), "accept: {b1}; reject: {b2}");
    let o = s.wait_status(&id, &customer, "ACCEPTED").await;
    assert_eq!(statuses(&o), ["PAID", "ACCEPTED"]);
    assert_eq!(o["refund"], Value::Null);
    assert_money(&s, &id, false);
}

#[tokio::test]
async fn a_rider_accepting_and_declining_at_once_gets_what_came_first() {
    let (s, id, customer, owner) = paid_order().await;
    s.accept(&id, &owner, 20).await;
    let riders = s.riders(6).await;
    let (name, rider) = s.rider_with_offer(&id, &riders).await;
    let take = act(format!("/api/rider/offers/{id}/accept"), &rider, json!({}));
    let decline = act(format!("/api/rider/offers/{id}/decline"), &rider, json!({}));
    let [(c1, b1), (c2, b2)] = race(&s, &id, take, decline).await;
    assert_eq!((c1, c2), (200, 409), "accept: {b1}; decline: {b2}");
    let o = s.wait_status(&id, &customer, "RIDER_ASSIGNED").await;
    assert_eq!(statuses(&o), ["PAID", "ACCEPTED", "RIDER_ASSIGNED"]);
    assert_eq!(o["rider"]["id"], name.as_str());
    let (_, mine) = s.get("/api/rider/deliveries", &rider).await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_money(&s, &id, false);
}

#[tokio::test]
async fn a_rider_declining_and_accepting_at_once_declines_and_the_offer_moves_on() {
    let (s, id, customer, owner) = paid_order().await;
    s.accept(&id, &owner, 20).await;
    let riders = s.riders(6).await;
    let (name, rider) = s.rider_with_offer(&id, &riders).await;
    let decline = act(format!("/api/rider/offers/{id}/decline"), &rider, json!({}));
    let take = act(format!("/api/rider/offers/{id}/accept"), &rider, json!({}));
    let [(c1, b1), (c2, b2)] = race(&s, &id, decline, take).await;
    assert_eq!((c1, c2), (200, 409), "decline: {b1}; accept: {b2}");
    // The next nearest rider gets it; the one who declined never does.
    let others: Vec<_> = riders.iter().filter(|(n, _)| *n != name).cloned().collect();
    let (next, _) = s.rider_with_offer(&id, &others).await;
    assert_ne!(next, name);
    let (_, mine) = s.get("/api/rider/deliveries", &rider).await;
    assert_eq!(mine, json!([]));
    let o = s.wait_status(&id, &customer, "ACCEPTED").await;
    assert_eq!(statuses(&o), ["PAID", "ACCEPTED"]);
    record_history(&s, &id, "race_offer_decline").await;
}

/// The delivery context puts an offer on the rider's screen before the order's
/// workflow hears which rider it went to. Made to happen: the delivery worker is
/// down while the owner accepts, the order worker is stopped, the delivery worker
/// comes back and writes the offer, the rider takes it (and, in the second round,
/// another rider's decline is in the same task), then the order worker starts
/// and gets the offer's outcome and the answers in one workflow task.
#[tokio::test]
async fn a_rider_taking_an_offer_the_workflow_has_not_heard_of_yet_gets_it() {
    let (s, id, customer, owner) = paid_order().await;
    let riders = s.riders(6).await;
    s.stop_worker_and_wait(Context::Delivery).await;
    s.accept(&id, &owner, 20).await;
    s.stop_worker_and_wait(Context::Order).await;
    s.start_worker(Context::Delivery);
    let (name, rider) = s.rider_with_offer(&id, &riders).await;
    let (_, other) = riders.iter().find(|(n, _)| *n != name).unwrap();
    let take = send(
        &s,
        act(format!("/api/rider/offers/{id}/accept"), &rider, json!({})),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Not this rider's offer: refused whatever the workflow knew when it came.
    let stranger = send(
        &s,
        act(format!("/api/rider/offers/{id}/decline"), other, json!({})),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.start_worker(Context::Order);
    let (code, body) = take.await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "RIDER_ASSIGNED");
    let (code, body) = stranger.await.unwrap();
    assert_eq!(code, 409, "{body}");
    let o = s.wait_status(&id, &customer, "RIDER_ASSIGNED").await;
    assert_eq!(o["rider"]["id"], name.as_str());
    assert_eq!(statuses(&o), ["PAID", "ACCEPTED", "RIDER_ASSIGNED"]);
    assert_money(&s, &id, false);
    let riders = s.get("/api/rider/deliveries", &rider).await.1;
    assert_eq!(riders.as_array().map(Vec::len), Some(1), "{riders}");
    for (path, token) in [
        (format!("/api/shop/orders/{id}/ready"), &owner),
        (format!("/api/rider/deliveries/{id}/pickup"), &rider),
        (format!("/api/rider/deliveries/{id}/complete"), &rider),
    ] {
        let (code, body) = s.post(&path, token, json!({})).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    s.wait_workflow_closed(&id).await;
    record_history(&s, &id, "race_offer_accept").await;
}

#[tokio::test]
async fn pickup_sent_twice_and_complete_sent_twice_each_apply_once() {
    let (s, id, customer, owner) = paid_order().await;
    s.accept(&id, &owner, 20).await;
    let riders = s.riders(6).await;
    let (_, rider) = s.rider_with_offer(&id, &riders).await;
    for path in [
        format!("/api/rider/offers/{id}/accept"),
        format!("/api/shop/orders/{id}/ready"),
    ] {
        let token = if path.contains("rider") {
            &rider
        } else {
            &owner
        };
        let (code, body) = s.post(&path, token, json!({})).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    s.wait_status(&id, &customer, "DELIVERY_STARTED").await;
    let pickup = || {
        act(
            format!("/api/rider/deliveries/{id}/pickup"),
            &rider,
            json!({}),
        )
    };
    let [(c1, b1), (c2, b2)] = race(&s, &id, pickup(), pickup()).await;
    assert_eq!((c1, c2), (200, 409), "pickup: {b1}; again: {b2}");
    assert_eq!(b1["status"], "PICKED_UP");
    let complete = || {
        act(
            format!("/api/rider/deliveries/{id}/complete"),
            &rider,
            json!({}),
        )
    };
    let [(c1, b1), (c2, b2)] = race(&s, &id, complete(), complete()).await;
    assert_eq!((c1, c2), (200, 409), "complete: {b1}; again: {b2}");
    assert_eq!(b1["status"], "DELIVERED");
    let o = s.wait_status(&id, &customer, "DELIVERED").await;
    assert_eq!(
        statuses(&o),
        [
            "PAID",
            "ACCEPTED",
            "RIDER_ASSIGNED",
            "DELIVERY_STARTED",
            "PICKED_UP",
            "DELIVERED"
        ]
    );
    s.wait_workflow_closed(&id).await;
    assert_money(&s, &id, false);
    // The rider is free again: nothing left assigned.
    let (_, d) = s.get("/api/rider/deliveries", &rider).await;
    assert!(
        d.as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "DELIVERED"),
        "{d}"
    );
}
