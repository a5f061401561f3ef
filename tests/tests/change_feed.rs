//! The change feed on its own, over a real NATS JetStream server: the order
//! context's outbox, the relay, and the contexts' consumers (shop and
//! notification here; delivery applies the same way).

use baedal_activities::config::Config;
use baedal_activities::db::{self, Db};
use baedal_activities::{notification, order, shop};
use baedal_tests::nats_url;
use baedal_worker::codec::PayloadCipher;
use baedal_worker::feed::{Feed, Follower};
use baedal_workflows::{
    Address, HistoryEntry, LineItem, OrderChange, OrderSnapshot, OrderStatus, ShopRef,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

fn config(dir: &std::path::Path) -> Config {
    let prefix = format!("f{}-", uuid::Uuid::new_v4().simple());
    let db = format!("sqlite:{}", dir.display());
    let nats = nats_url();
    Config::from_lookup(|k| match k {
        "NATS_URL" => Some(nats.clone()),
        "BAEDAL_TASK_QUEUE_PREFIX" => Some(prefix.clone()),
        "DATABASE_URL" => Some(db.clone()),
        _ => None,
    })
    .unwrap()
}

/// Version `statuses.len()` of one order, its history the given statuses.
fn change(order_id: &str, statuses: &[OrderStatus], since: usize) -> OrderChange {
    let history: Vec<_> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| HistoryEntry {
            status: *s,
            at: 1_000 + i as i64,
        })
        .collect();
    OrderChange {
        order: OrderSnapshot {
            order_id: order_id.into(),
            customer_id: "customer1".into(),
            owner_id: "owner1".into(),
            shop: ShopRef {
                id: "shop-1".into(),
                name: "Shop".into(),
                lat: 37.5,
                lon: 127.0,
            },
            items: vec![LineItem {
                menu_id: "m1".into(),
                name: "Bibimbap".into(),
                price: 9_000,
                quantity: 1,
            }],
            total: 9_000,
            address: Address {
                text: "1 Road".into(),
                lat: 37.5,
                lon: 127.0,
            },
            phone: "010-0000-0000".into(),
            status: *statuses.last().unwrap(),
            ready_at: None,
            ready: false,
            rider: None,
            refund: None,
            reason: None,
            history,
            version: statuses.len() as u64,
        },
        since,
    }
}

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shop_status(db: &Db, id: &str) -> Option<String> {
    shop::find_order(db, id)
        .await
        .unwrap()
        .map(|(_, doc)| doc["status"].as_str().unwrap().to_string())
}

async fn notified(db: &Db, recipient: &str, id: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT status FROM notifications WHERE recipient = $1 AND order_id = $2 ORDER BY seq",
    )
    .bind(recipient)
    .bind(id)
    .fetch_all(db)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.0).collect()
}

/// The order context's store and the relay that publishes its outbox, on a
/// stream of the test's own; the contexts' consumers are started by each test.
struct Relayed {
    orders: Db,
    feed: Feed,
    recorded: Arc<Notify>,
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
}

impl Relayed {
    async fn start(cfg: &Config, key: u8) -> Self {
        let orders = db::open(&cfg.database, "order", &order::MIGRATOR)
            .await
            .unwrap();
        let feed = Feed::new(
            cfg,
            Arc::new(PayloadCipher::new(&[key; 32])),
            Arc::new(baedal_worker::metrics::Metrics::none()),
        );
        let (stop, stopped) = watch::channel(false);
        let recorded = Arc::new(Notify::new());
        tokio::spawn(
            feed.clone()
                .relay(orders.clone(), recorded.clone(), stopped.clone()),
        );
        Relayed {
            orders,
            feed,
            recorded,
            stop,
            stopped,
        }
    }

    async fn record(&self, change: &OrderChange) {
        order::record(&self.orders, change).await.unwrap();
    }

    /// Wakes the relay and waits until it has published and cleared every row.
    async fn publish(&self) {
        self.recorded.notify_one();
        eventually("the relay empties the outbox", || async {
            order::outbox::oldest(&self.orders, 10)
                .await
                .unwrap()
                .is_empty()
        })
        .await;
    }

    fn follow(&self, follower: Follower) {
        tokio::spawn(self.feed.clone().follow(follower, self.stopped.clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_that_was_away_catches_up_in_order_and_each_change_applies_once() {
    use OrderStatus::*;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let feed = Relayed::start(&cfg, 7).await;
    let shops = db::open(&cfg.database, "shop", &shop::MIGRATOR)
        .await
        .unwrap();
    let notes = db::open(&cfg.database, "notification", &notification::MIGRATOR)
        .await
        .unwrap();

    // Changes recorded while no context follows: the relay publishes and
    // clears them; a version recorded twice leaves one outbox row.
    let id = "order-feed-1";
    feed.record(&change(id, &[Paid], 0)).await;
    feed.record(&change(id, &[Paid, Accepted], 1)).await;
    feed.record(&change(id, &[Paid, Accepted], 1)).await;
    feed.publish().await;
    assert_eq!(shop_status(&shops, id).await, None, "no shop consumer yet");

    // The contexts come: each catches up from the stream, at its own pace.
    feed.follow(Follower::Shop(shops.clone()));
    feed.follow(Follower::Notification {
        db: notes.clone(),
        webhook: false,
    });
    eventually("the owner's view catches up", || async {
        shop_status(&shops, id).await.as_deref() == Some("ACCEPTED")
    })
    .await;
    eventually("the notifications catch up", || async {
        notified(&notes, "owner1", id).await.len() == 2
    })
    .await;

    // A version published again (a relay that crashed before clearing its
    // row) is stored once by the broker; applying it again changes nothing.
    feed.record(&change(id, &[Paid], 0)).await;
    feed.record(&change(id, &[Paid, Accepted, Rejected], 2))
        .await;
    feed.recorded.notify_one();
    eventually("the newest version wins", || async {
        shop_status(&shops, id).await.as_deref() == Some("REJECTED")
    })
    .await;
    eventually("the last change is announced", || async {
        notified(&notes, "customer1", id).await.len() == 3
    })
    .await;
    assert_eq!(
        notified(&notes, "customer1", id).await,
        ["PAID", "ACCEPTED", "REJECTED"],
        "each status once per recipient, in order"
    );
    assert_eq!(notified(&notes, "owner1", id).await.len(), 3);
    assert!(
        order::outbox::oldest(&feed.orders, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let _ = feed.stop.send(true);
}

/// A change the context's store refuses is asked for again until the store
/// takes it, and holds up none of the changes that reach the consumer with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_store_refuses_holds_up_none_of_those_that_arrived_with_it() {
    use OrderStatus::*;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let feed = Relayed::start(&cfg, 9).await;
    let shops = db::open(&cfg.database, "shop", &shop::MIGRATOR)
        .await
        .unwrap();
    // The owner's store refuses this one order, as a store can refuse a row
    // (a constraint, a full disk) while taking others.
    sqlx::query(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON order_dtl
         WHEN NEW.order_id = 'order-poison'
         BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(&shops)
    .await
    .unwrap();

    // Recorded while the shop context is away, so they reach it together:
    // the refused order among them, then two versions of each other order.
    let ids: Vec<String> = (0..20).map(|i| format!("order-batch-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        feed.record(&change(id, &[Paid], 0)).await;
        if i == 5 {
            feed.record(&change("order-poison", &[Paid], 0)).await;
        }
    }
    for id in &ids {
        feed.record(&change(id, &[Paid, Accepted], 1)).await;
    }
    feed.publish().await;

    feed.follow(Follower::Shop(shops.clone()));
    for id in &ids {
        eventually("every other order reaches the owner's view", || async {
            shop_status(&shops, id).await.as_deref() == Some("ACCEPTED")
        })
        .await;
    }
    assert_eq!(shop_status(&shops, "order-poison").await, None);

    // The store takes it now: the change that came back is applied.
    sqlx::query("DROP TRIGGER refuse_poison")
        .execute(&shops)
        .await
        .unwrap();
    eventually(
        "the refused change is applied once the store takes it",
        || async { shop_status(&shops, "order-poison").await.as_deref() == Some("PAID") },
    )
    .await;
    let _ = feed.stop.send(true);
}
