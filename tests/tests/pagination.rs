//! Every list is read a page at a time, newest first (SPEC §3): `limit`
//! (default 50, at most 200) and an opaque `cursor`; the body stays a JSON
//! array and `Link: <…>; rel="next"` names the next page. Walking the pages
//! meets every item exactly once, filters included; bad paging is a 4xx problem.

use baedal_tests::*;
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

/// Every page of `path`, following `Link: rel="next"`; each page's items.
async fn walk(s: &Stack, path: &str, token: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_string());
    while let Some(p) = next.take() {
        assert!(pages.len() < 500, "the pages never end");
        let r = s
            .http
            .get(s.url(&p))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{p}");
        next = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string())
            .map(|l| {
                assert!(l.ends_with("; rel=\"next\""), "{l}");
                l[1..l.find('>').unwrap()].to_string()
            });
        let items: Vec<Value> = r.json().await.unwrap();
        pages.push(items);
    }
    pages
}

/// Places `n` orders for customer1, a few at a time; their ids.
async fn place_many(s: &Stack, customer: &str, n: usize) -> HashSet<String> {
    futures::stream::iter(0..n)
        .map(|_| s.place(customer))
        .buffer_unordered(6)
        .collect()
        .await
}

/// Nobody answers the orders during the test, and none may time out meanwhile.
fn patient_shops(postgres: bool) -> StackOptions {
    let mut opts = StackOptions {
        postgres,
        ..Default::default()
    };
    opts.env.push(("SHOP_ACCEPT_TIMEOUT", "30m".into()));
    opts
}

async fn walks_every_list_exactly_once(s: Stack, n: usize) {
    assert!(n <= 200);
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let placed = place_many(&s, &customer, n).await;
    assert_eq!(placed.len(), n);

    // The customer's orders, 7 at a time, newest first.
    let pages = walk(&s, "/api/orders?limit=7", &customer).await;
    assert_eq!(pages.len(), n.div_ceil(7));
    assert!(pages.iter().all(|p| p.len() <= 7));
    let all: Vec<&Value> = pages.iter().flatten().collect();
    let ids: Vec<&str> = all.iter().map(|o| o["orderId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), n, "every order once");
    assert_eq!(ids.iter().copied().collect::<HashSet<_>>().len(), n);
    assert!(ids.iter().all(|id| placed.contains(*id)));
    let times: Vec<&str> = all
        .iter()
        .map(|o| o["history"][0]["at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    // The first page with no cursor is the same as the walk's first page.
    let (_, first) = s.get("/api/orders?limit=7", &customer).await;
    assert_eq!(first.as_array().unwrap(), &pages[0]);

    // The owner's list keeps its filter across pages (default page size: 50).
    let owner_sees_all = |l: &Value| l.as_array().unwrap().len() >= n;
    s.eventually(
        "/api/shop/orders?limit=200",
        &owner,
        Duration::from_secs(30),
        owner_sees_all,
    )
    .await;
    let pages = walk(&s, "/api/shop/orders?status=PAID&limit=50", &owner).await;
    let ids: HashSet<&str> = pages
        .iter()
        .flatten()
        .inspect(|o| assert_eq!(o["status"], "PAID"))
        .map(|o| o["orderId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), n);
    assert_eq!(pages.iter().map(Vec::len).sum::<usize>(), n);

    // The notification feed: one PAID message per order to the customer.
    s.eventually(
        "/api/notifications?limit=200",
        &customer,
        Duration::from_secs(30),
        |f| f.as_array().unwrap().len() >= n.min(200),
    )
    .await;
    let pages = walk(&s, "/api/notifications", &customer).await;
    assert_eq!(pages.len(), n.div_ceil(50), "50 a page by default");
    let orders: Vec<&str> = pages
        .iter()
        .flatten()
        .map(|m| m["orderId"].as_str().unwrap())
        .collect();
    assert_eq!(orders.len(), n);
    assert_eq!(orders.into_iter().collect::<HashSet<_>>().len(), n);

    // More than 200 gets 200; what the list did not hand out is refused.
    let (code, all) = s.get("/api/orders?limit=100000", &customer).await;
    assert_eq!(code, 200);
    assert_eq!(all.as_array().unwrap().len(), n.min(200));
    for (path, status) in [
        ("/api/orders?limit=0", 422),
        ("/api/orders?limit=-1", 400),
        ("/api/orders?limit=ten", 400),
        ("/api/orders?cursor=not-a-cursor", 400),
        ("/api/orders?cursor=7b7d", 400),
        ("/api/notifications?cursor=%00", 400),
        ("/api/shop/orders?cursor=zz", 400),
        ("/api/rider/deliveries?limit=0", 422),
    ] {
        let token = match path {
            p if p.starts_with("/api/shop") => &owner,
            p if p.starts_with("/api/rider") => &s.login("rider1").await,
            _ => &customer,
        };
        let r = s
            .http
            .get(s.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(ct, "application/problem+json", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_120_orders_exactly_once_on_sqlite() {
    walks_every_list_exactly_once(spawn_stack_with(patient_shops(false)).await, 120).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_order_exactly_once_on_postgres() {
    walks_every_list_exactly_once(spawn_stack_with(patient_shops(true)).await, 60).await;
}
