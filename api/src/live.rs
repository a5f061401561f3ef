//! Live updates for the order event streams: one poller per gateway process
//! asks the order store what changed since its last look (one indexed query
//! every 100 ms, and none while no stream is open), and wakes only the streams
//! that follow a changed order; each woken stream then reads its order once.
//! Ten thousand idle streams cost the store nothing; a change costs one read
//! per stream that follows it.
//!
//! The query looks back `LOOKBACK` past its last look, so a change committed
//! late (a slow transaction, another host's clock a little behind) is still
//! seen; versions only grow, so a change seen twice wakes nobody twice.

use baedal_activities::db::Db;
use baedal_activities::order;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

const POLL: Duration = Duration::from_millis(100);
const LOOKBACK_MS: i64 = 2_000;
/// Rows per query; a busier window is read in several.
const BATCH: i64 = 1_000;

pub struct Live {
    db: Db,
    /// Per followed order: the newest version the poller has seen.
    followed: Mutex<HashMap<String, watch::Sender<i64>>>,
    /// Queries the poller made, and orders the streams read.
    pub polls: IntCounter,
    pub stream_reads: IntCounter,
}

/// A stream's hold on one order's changes; dropping it lets the order go.
pub struct Following {
    live: Arc<Live>,
    order_id: String,
    pub changes: watch::Receiver<i64>,
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut followed = self.live.followed.lock().unwrap();
        // This receiver is still alive here: it is the last when it is the only one.
        if followed
            .get(&self.order_id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            followed.remove(&self.order_id);
        }
    }
}

impl Live {
    /// Starts the poller; it ends when the last handle is dropped.
    pub fn start(db: Db, polls: IntCounter, stream_reads: IntCounter) -> Arc<Self> {
        let live = Arc::new(Live {
            db,
            followed: Mutex::new(HashMap::new()),
            polls,
            stream_reads,
        });
        tokio::spawn(poll(Arc::downgrade(&live)));
        live
    }

    /// Follows one order's changes.
    pub fn follow(self: &Arc<Self>, order_id: &str) -> Following {
        let mut followed = self.followed.lock().unwrap();
        let changes = followed
            .entry(order_id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Following {
            live: self.clone(),
            order_id: order_id.to_string(),
            changes,
        }
    }

    /// Reads the customer's view of an order for a stream (counted).
    pub async fn read(&self, order_id: &str) -> anyhow::Result<Option<serde_json::Value>> {
        self.stream_reads.inc();
        Ok(order::find(&self.db, order_id).await?.map(|(_, doc)| doc))
    }

    fn following_any(&self) -> bool {
        !self.followed.lock().unwrap().is_empty()
    }

    /// Wakes the streams of the orders that changed.
    fn changed(&self, rows: &[(String, i64, i64)]) {
        let followed = self.followed.lock().unwrap();
        for (order_id, version, _) in rows {
            if let Some(tx) = followed.get(order_id) {
                tx.send_if_modified(|seen| {
                    let newer = *version > *seen;
                    if newer {
                        *seen = *version;
                    }
                    newer
                });
            }
        }
    }
}

async fn poll(live: Weak<Live>) {
    let mut since = baedal_activities::time::now_ms() - LOOKBACK_MS;
    loop {
        tokio::time::sleep(POLL).await;
        let Some(live) = live.upgrade() else {
            return;
        };
        let started = baedal_activities::time::now_ms();
        if !live.following_any() {
            since = started - LOOKBACK_MS;
            continue;
        }
        live.polls.inc();
        match order::changed_since(&live.db, since, BATCH).await {
            Ok(rows) => {
                live.changed(&rows);
                since = match rows.last() {
                    // A full batch: the rest of the window comes next round.
                    Some((_, _, at)) if rows.len() as i64 == BATCH => *at,
                    _ => started - LOOKBACK_MS,
                };
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "live updates: reading what changed");
            }
        }
    }
}
