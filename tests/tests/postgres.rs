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
