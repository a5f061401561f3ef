//! The HTTP contract's promises about callers (SPEC section 3): retries with an
//! `Idempotency-Key` charge once, tenants never see each other's data, a wrong
//! transition is 409, bad input is a 4xx problem that writes nothing, and the
//! event stream carries every status change.

use baedal_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

const PROBLEM_JSON: &str = "application/problem+json";

/// POSTs a raw body and returns (status, content type, parsed body).
async fn post_raw(
    s: &Stack,
    path: &str,
    token: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String, Value) {
    send_for_answer(
        s.http
            .post(s.url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

async fn place_with_key(s: &Stack, token: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = s
        .http
        .post(s.url("/api/orders"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_idempotency_key_places_one_order_charged_once_and_another_body_is_422() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let body = order_body("tok_ok");

    let (first, a) = place_with_key(&s, &customer, "retry-1", &body).await;
    assert_eq!(first, 201, "{a}");
    // The client retries (its answer got lost): same order, no second charge.
    let (again, b) = place_with_key(&s, &customer, "retry-1", &body).await;
    assert_eq!(again, 201, "{b}");
    assert_eq!(a["orderId"], b["orderId"]);
    let id = a["orderId"].as_str().unwrap();
    assert_eq!(s.sim.charges_of(id).len(), 1);
    assert_eq!(s.sim.payments().len(), 1);

    // Two retries racing each other still make one order.
    let (c, d) = tokio::join!(
        place_with_key(&s, &customer, "retry-2", &body),
        place_with_key(&s, &customer, "retry-2", &body)
    );
    assert_eq!((c.0, d.0), (201, 201), "{} {}", c.1, d.1);
    assert_eq!(c.1["orderId"], d.1["orderId"]);
    assert_eq!(s.sim.payments().len(), 2);

    // Same key, another body: refused, nothing new charged.
    let mut other = body.clone();
    other["items"][0]["quantity"] = json!(3);
    let (code, problem) = place_with_key(&s, &customer, "retry-1", &other).await;
    assert_eq!(code, 422, "{problem}");
    assert_eq!(problem["status"], 422);
    assert_eq!(s.sim.payments().len(), 2);
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine.as_array().unwrap().len(), 2);

    // A key is the customer's own: another customer's same key is a new order.
    let other_customer = s.login("customer2").await;
    let (code, e) = place_with_key(&s, &other_customer, "retry-1", &body).await;
    assert_eq!(code, 201, "{e}");
    assert_ne!(e["orderId"], a["orderId"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_tokens_are_required() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let intruder = s.login("customer2").await;
    let owner = s.login("owner1").await;
    let other_owner = s.login("owner2").await;
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;

    // No token, a forged token: 401, nothing else.
    let one = format!("/api/orders/{id}");
    for path in ["/api/orders", one.as_str(), "/api/shop/orders"] {
        let (code, body) = s.call(Method::GET, path, None, None).await;
        assert_eq!(code, 401, "{path}: {body}");
        let (code, _) = s.call(Method::GET, path, Some("not.a.jwt"), None).await;
        assert_eq!(code, 401, "{path} with a forged token");
    }
    // The public calls need no token.
    for path in ["/api/shops", "/api/shops/shop1/menu", "/api/health"] {
        assert_eq!(s.call(Method::GET, path, None, None).await.0, 200, "{path}");
    }

    // Another customer: the order does not exist for them, and they cannot touch it.
    let (code, body) = s.get(&format!("/api/orders/{id}"), &intruder).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.get("orderId").is_none());
    let (code, _) = s
        .post(&format!("/api/orders/{id}/cancel"), &intruder, json!({}))
        .await;
    assert_eq!(code, 404);
    let (_, theirs) = s.get("/api/orders", &intruder).await;
    assert_eq!(theirs, json!([]));

    // Another shop's owner neither sees nor answers it.
    let (_, list) = s.get("/api/shop/orders", &other_owner).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|o| o["orderId"] != id.as_str())
    );
    for (action, body) in [
        ("accept", json!({"cookMinutes": 5})),
        ("reject", json!({"reason": "closed"})),
        ("ready", json!({})),
    ] {
        let (code, _) = s
            .post(
                &format!("/api/shop/orders/{id}/{action}"),
                &other_owner,
                body,
            )
            .await;
        assert_eq!(code, 404, "{action} by another shop's owner");
    }

    // A role calling another role's API is refused.
    let (code, _) = s.get("/api/shop/orders", &customer).await;
    assert_eq!(code, 403);
    let (code, _) = s.get("/api/orders", &owner).await;
    assert_eq!(code, 403);
    let (code, _) = s.post("/api/orders", &owner, order_body("tok_ok")).await;
    assert_eq!(code, 403);

    // Accept it; a rider who was not assigned cannot act on the delivery.
    s.accept(&id, &owner, 5).await;
    let riders = s.riders(6).await;
    let (name, _) = s.rider_with_offer(&id, &riders).await;
    let (_, stranger) = riders.iter().find(|(n, _)| *n != name).unwrap();
    let (code, _) = s
        .post(
            &format!("/api/rider/offers/{id}/accept"),
            stranger,
            json!({}),
        )
        .await;
    assert_eq!(code, 409, "an offer made to another rider");
    let (code, _) = s
        .post(
            &format!("/api/rider/deliveries/{id}/pickup"),
            stranger,
            json!({}),
        )
        .await;
    assert_eq!(code, 404);
    let (_, theirs) = s.get("/api/rider/deliveries", stranger).await;
    assert_eq!(theirs, json!([]));
    assert_eq!(s.sim.charges_of(&id)[0].refunded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_transitions_are_409_and_change_nothing() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    let shop = |action: &str| format!("/api/shop/orders/{id}/{action}");

    // Not accepted yet: the food cannot be ready.
    assert_eq!(s.post(&shop("ready"), &owner, json!({})).await.0, 409);
    let (code, body) = s
        .post(&shop("accept"), &owner, json!({"cookMinutes": 20}))
        .await;
    assert_eq!(code, 200, "{body}");
    // Accepted: no second answer, no rejection, no cancel.
    let (code, problem) = s
        .post(&shop("accept"), &owner, json!({"cookMinutes": 20}))
        .await;
    assert_eq!(code, 409, "{problem}");
    assert_eq!(problem["status"], 409);
    assert_eq!(
        s.post(&shop("reject"), &owner, json!({"reason": "too late"}))
            .await
            .0,
        409
    );
    assert_eq!(
        s.post(&format!("/api/orders/{id}/cancel"), &customer, json!({}))
            .await
            .0,
        409
    );

    // The assigned rider cannot pick up before the delivery starts, nor complete
    // before pickup.
    let riders = s.riders(6).await;
    let (_, rider) = s.rider_with_offer(&id, &riders).await;
    let (code, body) = s
        .post(&format!("/api/rider/offers/{id}/accept"), &rider, json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = s
        .post(&format!("/api/rider/offers/{id}/accept"), &rider, json!({}))
        .await;
    assert_eq!(code, 409, "an offer is taken once");
    let delivery = |action: &str| format!("/api/rider/deliveries/{id}/{action}");
    assert_eq!(s.post(&delivery("pickup"), &rider, json!({})).await.0, 409);
    assert_eq!(
        s.post(&delivery("complete"), &rider, json!({})).await.0,
        409
    );
    assert_eq!(s.post(&shop("ready"), &owner, json!({})).await.0, 200);
    assert_eq!(s.post(&shop("ready"), &owner, json!({})).await.0, 409);
    assert_eq!(
        s.post(&delivery("complete"), &rider, json!({})).await.0,
        409
    );

    // None of the refusals left a trace in the order's history.
    let order = s.wait_status(&id, &customer, "DELIVERY_STARTED").await;
    let statuses: Vec<_> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["PAID", "ACCEPTED", "RIDER_ASSIGNED", "DELIVERY_STARTED"]
    );
    assert_eq!(s.sim.charges_of(&id)[0].refunded, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_problem_and_writes_nothing() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let rider = s.login("rider1").await;

    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = order_body("tok_ok");
        f(&mut b);
        b
    };
    let bad_orders = [
        ("unknown field", with(&|b| b["price"] = json!(1))),
        (
            "unknown item field",
            with(&|b| b["items"][0]["price"] = json!(1)),
        ),
        (
            "zero quantity",
            with(&|b| b["items"][0]["quantity"] = json!(0)),
        ),
        (
            "negative quantity",
            with(&|b| b["items"][0]["quantity"] = json!(-2)),
        ),
        (
            "fractional quantity",
            with(&|b| b["items"][0]["quantity"] = json!(1.5)),
        ),
        (
            "unknown menu id",
            with(&|b| b["items"][0]["menuId"] = json!("shop1-pizza")),
        ),
        (
            "another shop's item",
            with(&|b| b["items"][0]["menuId"] = json!("shop2-sundae")),
        ),
        ("unknown shop", with(&|b| b["shopId"] = json!("shop99"))),
        ("no items", with(&|b| b["items"] = json!([]))),
        (
            "lat out of range",
            with(&|b| b["address"]["lat"] = json!(91.0)),
        ),
        (
            "lon out of range",
            with(&|b| b["address"]["lon"] = json!(-180.5)),
        ),
        (
            "missing address",
            with(&|b| drop(b.as_object_mut().unwrap().remove("address"))),
        ),
        (
            "empty address",
            with(&|b| b["address"]["text"] = json!("  ")),
        ),
        ("bad phone", with(&|b| b["phone"] = json!("call me"))),
        (
            "empty payment token",
            with(&|b| b["paymentToken"] = json!("")),
        ),
        (
            "prices are the server's",
            with(&|b| b["total"] = json!(100)),
        ),
        ("not an object", json!([1, 2, 3])),
    ];
    for (what, body) in bad_orders {
        let (code, ct, problem) = post_raw(
            &s,
            "/api/orders",
            &customer,
            "application/json",
            body.to_string(),
        )
        .await;
        assert!((400..500).contains(&code), "{what}: {code} {problem}");
        assert_eq!(ct, PROBLEM_JSON, "{what}");
        assert_eq!(problem["status"], code, "{what}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
    }

    // Malformed JSON, the wrong media type, a body over 64 KiB.
    let (code, ct, _) = post_raw(
        &s,
        "/api/orders",
        &customer,
        "application/json",
        "{\"shopId\":",
    )
    .await;
    assert_eq!((code, ct.as_str()), (400, PROBLEM_JSON));
    let (code, ct, _) = post_raw(
        &s,
        "/api/orders",
        &customer,
        "text/plain",
        order_body("tok_ok").to_string(),
    )
    .await;
    assert_eq!((code, ct.as_str()), (415, PROBLEM_JSON));
    let mut huge = order_body("tok_ok");
    huge["address"]["text"] = json!("가".repeat(30_000));
    let (code, ct, _) = post_raw(
        &s,
        "/api/orders",
        &customer,
        "application/json",
        huge.to_string(),
    )
    .await;
    assert_eq!((code, ct.as_str()), (413, PROBLEM_JSON));

    // Owner and rider bodies.
    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    let accept = format!("/api/shop/orders/{id}/accept");
    for body in [
        json!({"cookMinutes": 0}),
        json!({"cookMinutes": 181}),
        json!({"cookMinutes": "ten"}),
        json!({"cookMinutes": 10, "extra": true}),
        json!({}),
    ] {
        let (code, problem) = s.post(&accept, &owner, body.clone()).await;
        assert!(
            (400..500).contains(&code) && code != 404,
            "{body}: {code} {problem}"
        );
    }
    let (code, _) = s
        .post(
            &format!("/api/shop/orders/{id}/reject"),
            &owner,
            json!({"reason": " "}),
        )
        .await;
    assert!((400..500).contains(&code), "an empty reason: {code}");
    for body in [
        json!({"lat": 95.0, "lon": 127.0, "available": true}),
        json!({"lat": 37.5, "lon": 200.0, "available": true}),
        json!({"lat": 37.5, "lon": 127.0}),
        json!({"lat": 37.5, "lon": 127.0, "available": true, "speed": 3}),
    ] {
        let (code, problem) = s
            .call(
                Method::PUT,
                "/api/rider/location",
                Some(&rider),
                Some(body.clone()),
            )
            .await;
        assert_eq!(code, 422, "{body}: {problem}");
    }

    // Nothing was written: one order (the good one), one charge, still PAID.
    let (_, mine) = s.get("/api/orders", &customer).await;
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["status"], "PAID");
    assert_eq!(s.sim.payments().len(), 1);
    let (_, shop_orders) = s.get("/api/shop/orders", &owner).await;
    assert_eq!(shop_orders.as_array().unwrap().len(), 1);
    assert_eq!(shop_orders[0]["status"], "PAID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_every_status_change_live_and_ends_with_the_order() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let path = format!("/api/orders/{id}/events");

    let mut events = follow(&s, &path, &customer).await;
    let first = next_event(&mut events).await.expect("the PAID event");
    assert_eq!(
        (first["orderId"].as_str(), first["status"].as_str()),
        (Some(id.as_str()), Some("PAID"))
    );

    // A change made while the stream is open arrives on it, and the stream ends.
    let (code, _) = s
        .post(&format!("/api/orders/{id}/cancel"), &customer, json!({}))
        .await;
    assert_eq!(code, 200);
    let second = next_event(&mut events).await.expect("the CANCELLED event");
    assert_eq!(second["status"], "CANCELLED");
    assert_eq!(second["reason"], "CUSTOMER_CANCELLED");
    assert_eq!(
        next_event(&mut events).await,
        None,
        "the stream ends after a final status"
    );

    // Following it again replays the whole history; resuming after the final
    // event answers 204, which tells an EventSource to stop reconnecting.
    let mut replay = follow(&s, &path, &customer).await;
    assert_eq!(next_event(&mut replay).await.unwrap()["status"], "PAID");
    assert_eq!(
        next_event(&mut replay).await.unwrap()["status"],
        "CANCELLED"
    );
    assert_eq!(next_event(&mut replay).await, None);
    let resumed = s
        .http
        .get(s.url(&path))
        .bearer_auth(&customer)
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 204);

    // Another customer cannot follow it.
    let intruder = s.login("customer2").await;
    let (code, _) = s.get(&path, &intruder).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_for_the_logs() {
    let s = spawn_stack().await;
    let fresh = s.http.get(s.url("/api/shops")).send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    let id = fresh.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    // A caller's own id is kept, also on a refusal.
    let refused = s
        .http
        .get(s.url("/api/orders"))
        .header("x-request-id", "support-ticket-42")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["x-request-id"], "support-ticket-42");
}
