//! `GET /api/orders/{id}/map`: the order's customer, its shop's owner and its
//! rider see where the shop, the address and (while carrying it) the rider
//! are; anyone else gets 404, as for an order that does not exist.

use baedal_tests::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_people_see_its_map_and_nobody_else() {
    let s = spawn_stack().await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let riders = s.riders(6).await;
    // rider2 reports from ~110 m north of shop1 (37.4979, 127.0276); rider1
    // goes off duty, so the offer goes to rider2.
    for (i, body) in [
        (
            0,
            json!({"lat": 37.4979, "lon": 127.0276, "available": false}),
        ),
        (
            1,
            json!({"lat": 37.4989, "lon": 127.0276, "available": true}),
        ),
    ] {
        let (code, _) = s
            .call(
                reqwest::Method::PUT,
                "/api/rider/location",
                Some(&riders[i].1),
                Some(body),
            )
            .await;
        assert_eq!(code, 204);
    }
    let id = s.place(&customer).await;
    let path = format!("/api/orders/{id}/map");
    let map = |token: String| {
        let s = &s;
        let path = path.clone();
        async move { s.get(&path, &token).await }
    };
    // Paid: shop and address; no rider yet.
    let (code, m) = map(customer.clone()).await;
    assert_eq!(code, 200, "{m}");
    assert_eq!(
        (m["shop"]["lat"].as_f64(), m["shop"]["lon"].as_f64()),
        (Some(37.4979), Some(127.0276))
    );
    assert_eq!(m["customer"]["lat"], 37.5012);
    assert_eq!(m["rider"], Value::Null);
    // 서울 강남구 테헤란로 1 is ~1.2 km from shop1.
    let d = m["shopToCustomerM"].as_i64().unwrap();
    assert!((1000..1500).contains(&d), "{m}");

    s.accept(&id, &owner, 10).await;
    let (name, rider) = s.rider_with_offer(&id, &riders).await;
    assert_eq!(name, "rider2");
    let (code, body) = s
        .post(&format!("/api/rider/offers/{id}/accept"), &rider, json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    for token in [&customer, &owner, &rider] {
        let (code, m) = map(token.clone()).await;
        assert_eq!(code, 200, "{m}");
        assert_eq!(m["rider"]["lat"], 37.4989, "{m}");
        let to_shop = m["riderToShopM"].as_i64().unwrap();
        assert!((100..125).contains(&to_shop), "{m}");
        assert!(m["riderToCustomerM"].as_i64().is_some());
    }
    // Another customer, another shop's owner, a rider who does not carry it.
    for who in ["customer2", "owner2", "rider3"] {
        let t = s.login(who).await;
        let (code, body) = map(t).await;
        assert_eq!(code, 404, "{who}: {body}");
    }
    let (code, _) = s.get("/api/orders/nosuchorder/map", &customer).await;
    assert_eq!(code, 404);
}
