//! What operators rely on: orders findable in Temporal visibility by the search
//! attributes the workflow keeps current, and the live query path.

use baedal_tests::*;
use futures::TryStreamExt;
use std::time::{Duration, Instant};
use temporalio_client::WorkflowListOptions;

async fn find(s: &Stack, query: &str) -> Vec<String> {
    let stream = s
        .temporal
        .list_workflows(query.to_string(), WorkflowListOptions::default());
    let found: Vec<_> = stream.try_collect().await.unwrap();
    found.iter().map(|w| w.id().to_string()).collect()
}

async fn eventually_found(s: &Stack, query: &str, wid: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if find(s, query).await.iter().any(|w| w == wid) {
            return;
        }
        assert!(Instant::now() < deadline, "{wid} never listed by {query}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_order_is_listed_by_shop_and_status_in_temporal_visibility() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    let wid = baedal_workflows::workflow_id(&id);
    eventually_found(&s, "ShopId = 'shop1' AND OrderStatus = 'PAID'", &wid).await;
    eventually_found(&s, "CustomerId = 'customer1'", &wid).await;
    assert!(!find(&s, "ShopId = 'shop2'").await.contains(&wid));

    s.accept(&id, &owner, 5).await;
    // "Every order stuck in ACCEPTED for one shop".
    eventually_found(
        &s,
        "ShopId = 'shop1' AND OrderStatus = 'ACCEPTED' AND ExecutionStatus = 'Running'",
        &wid,
    )
    .await;
    assert!(
        !find(&s, "ShopId = 'shop1' AND OrderStatus = 'PAID'")
            .await
            .contains(&wid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_query_path_agrees_with_the_read_model() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let id = s.place(&customer).await;
    let (code, live) = s.get(&format!("/api/orders/{id}/live"), &customer).await;
    assert_eq!(code, 200, "{live}");
    let (_, read) = s.get(&format!("/api/orders/{id}"), &customer).await;
    assert_eq!(live, read);
    let other = s.login("customer2").await;
    let (code, _) = s.get(&format!("/api/orders/{id}/live"), &other).await;
    assert_eq!(code, 404);
}
