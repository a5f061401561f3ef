//! The same product on Postgres (one schema per context): a `postgres://`
//! DATABASE_URL switches every context's store.

use baedal_tests::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_delivered_and_another_refunded_on_postgres() {
    let s = spawn_stack_with(StackOptions {
        postgres: true,
        ..Default::default()
    })
    .await;
    assert!(matches!(
        s.cfg.database,
        baedal_activities::config::DatabaseUrl::Postgres(_)
    ));
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;

    let id = s.place(&customer).await;
    s.accept(&id, &owner, 5).await;
    let (_, t) = s.rider_with_offer(&id, &riders).await;
    s.deliver(&id, &owner, &t).await;
    let order = s.wait_status(&id, &customer, "DELIVERED").await;
    assert_eq!(order["history"].as_array().unwrap().len(), 6);

    let other = s.place(&customer).await;
    let (code, body) = s
        .post(&format!("/api/orders/{other}/cancel"), &customer, json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["refund"]["status"], "REFUNDED");
    let (_, mine) = s.get("/api/orders", &customer).await;
    assert_eq!(mine.as_array().unwrap().len(), 2);
    s.eventually(
        "/api/notifications",
        &customer,
        Duration::from_secs(20),
        |f| f.as_array().unwrap().len() == 8,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_is_never_assigned_twice_under_concurrent_offers_on_postgres() {
    let s = spawn_stack_with(StackOptions {
        postgres: true,
        ..Default::default()
    })
    .await;
    let riders = s.riders(6).await;
    s.race_riders_for(12, &riders).await;
}

/// The keys, the refusals and the reconciliation's ledger query, on Postgres:
/// a repeated action answers its first answer, a refund refused for good is
/// recorded and shown, and a terminated paid order is refunded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_refused_refunds_and_the_reconciliation_work_on_postgres() {
    let mut opts = StackOptions {
        postgres: true,
        ..Default::default()
    };
    opts.env.push(("RECONCILE_MIN_AGE", "0s".into()));
    let s = spawn_stack_with(opts).await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;

    let id = s.place(&customer).await;
    s.owner_sees(&id, &owner).await;
    let accept = || {
        s.http
            .post(s.url(&format!("/api/shop/orders/{id}/accept")))
            .bearer_auth(&owner)
            .header("Idempotency-Key", "accept-once")
            .json(&json!({"cookMinutes": 20}))
            .send()
    };
    let first = accept().await.unwrap();
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = accept().await.unwrap();
    assert_eq!(again.status(), 200, "a repeat answers the first answer");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);

    let refused = s.place(&customer).await;
    s.owner_sees(&refused, &owner).await;
    s.sim.fail_refunds_with(Some(422));
    let (code, body) = s
        .post(
            &format!("/api/orders/{refused}/cancel"),
            &customer,
            json!({}),
        )
        .await;
    assert_eq!(
        (code, &body["refund"]["status"]),
        (200, &json!("FAILED")),
        "{body}"
    );
    let (_, m) = s.get("/api/metrics", &customer).await;
    assert_eq!(m["refunds"]["failed"], 1, "{m}");
    s.sim.fail_refunds_with(None);

    let terminated = s.place(&customer).await;
    s.temporal
        .get_workflow_handle::<baedal_workflows::OrderFulfillment>(baedal_workflows::workflow_id(
            &terminated,
        ))
        .terminate(Default::default())
        .await
        .unwrap();
    let report = s.reconcile_now().await;
    // The refused refund is an operator's now, not the reconciliation's.
    assert_eq!(report.refunded, vec![terminated.clone()], "{report:?}");
    assert_eq!(s.sim.charges_of(&terminated)[0].refund_count, 1);
    assert_eq!(s.sim.charges_of(&refused)[0].refund_count, 0);
}
