//! What operators rely on: orders findable in Temporal visibility by the search
//! attributes the workflow keeps current, and the live query path.

use baedal_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_order_is_listed_by_shop_and_status_in_temporal_visibility() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    let wid = baedal_workflows::workflow_id(&id);
    s.eventually_listed("ShopId = 'shop1' AND OrderStatus = 'PAID'", &wid)
        .await;
    s.eventually_listed("CustomerId = 'customer1'", &wid).await;
    assert!(!s.find_workflows("ShopId = 'shop2'").await.contains(&wid));

    s.accept(&id, &owner, 5).await;
    // "Every order stuck in ACCEPTED for one shop".
    s.eventually_listed(
        "ShopId = 'shop1' AND OrderStatus = 'ACCEPTED' AND ExecutionStatus = 'Running'",
        &wid,
    )
    .await;
    assert!(
        !s.find_workflows("ShopId = 'shop1' AND OrderStatus = 'PAID'")
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
