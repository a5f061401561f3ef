//! Order context: the customer's read model (OrderInfo) and the callers'
//! idempotency keys ([`keys`]). Its activity runs as a local activity beside
//! the workflow it serves.

pub mod keys;
pub use keys::{ActionKey, KeyedAction, Placement};

pub mod reconcile;

use crate::db::Db;
use crate::page::{Page, PageRequest};
use crate::time::rfc3339;
use baedal_workflows::activities::def;
use baedal_workflows::{OrderChange, OrderSnapshot};
use serde_json::json;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/order");

/// The customer's view of one order.
pub fn order_info(o: &OrderSnapshot) -> serde_json::Value {
    json!({
        "orderId": o.order_id,
        "shopId": o.shop.id,
        "shopName": o.shop.name,
        "status": o.status,
        "items": o.items,
        "total": o.total,
        "address": o.address,
        "readyAt": o.ready_at.map(rfc3339),
        "rider": o.rider,
        "refund": o.refund,
        "reason": o.reason,
        "history": o.history.iter().map(|h| json!({"status": h.status, "at": rfc3339(h.at)})).collect::<Vec<_>>(),
    })
}

pub async fn list_for_customer(
    db: &Db,
    customer_id: &str,
    page: &PageRequest,
) -> anyhow::Result<Page<serde_json::Value>> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT doc, placed_at, order_id FROM order_info
         WHERE customer_id = $1 AND (placed_at, order_id) < ($2, $3)
         ORDER BY placed_at DESC, order_id DESC LIMIT $4",
    )
    .bind(customer_id)
    .bind(page.after.at)
    .bind(&page.after.id)
    .bind(page.fetch())
    .fetch_all(db)
    .await?;
    page.docs(rows)
}

/// One order with its owner (customer id), for the tenant check.
pub async fn find(db: &Db, order_id: &str) -> anyhow::Result<Option<(String, serde_json::Value)>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT customer_id, doc FROM order_info WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(db)
            .await?;
    row.map(|(c, d)| Ok((c, serde_json::from_str(&d)?)))
        .transpose()
}

pub struct OrderContext {
    pub db: Db,
    /// Woken after each recorded change, so the relay publishes it at once.
    pub recorded: Option<Arc<tokio::sync::Notify>>,
}

/// Writes the customer's view unless it already holds this version or a newer one.
async fn upsert_order_info<'c, E>(db: E, order: &OrderSnapshot) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let placed_at = order.history.first().map_or(0, |h| h.at);
    sqlx::query(
        "INSERT INTO order_info (order_id, customer_id, shop_id, status, doc, version, placed_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, doc = excluded.doc,
             version = excluded.version, updated_at = excluded.updated_at
         WHERE order_info.version < excluded.version",
    )
    .bind(&order.order_id)
    .bind(&order.customer_id)
    .bind(&order.shop.id)
    .bind(order.status.as_str())
    .bind(order_info(order).to_string())
    .bind(order.version as i64)
    .bind(placed_at)
    .bind(crate::time::now_ms())
    .execute(db)
    .await?;
    Ok(())
}

/// Orders whose view changed at or after `since` (ms), oldest change first:
/// (order id, version, changed at).
pub async fn changed_since(
    db: &Db,
    since: i64,
    limit: i64,
) -> anyhow::Result<Vec<(String, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT order_id, version, updated_at FROM order_info
         WHERE updated_at >= $1 ORDER BY updated_at LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Records one version of an order: the customer's view and the change's
/// outbox row, in one transaction; a repeat of the same version changes nothing.
pub async fn record(db: &Db, change: &OrderChange) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    upsert_order_info(&mut *tx, &change.order).await?;
    sqlx::query(
        "INSERT INTO order_changes (order_id, version, change, recorded_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (order_id, version) DO NOTHING",
    )
    .bind(&change.order.order_id)
    .bind(change.order.version as i64)
    .bind(serde_json::to_string(change)?)
    .bind(crate::time::now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The change feed's outbox, as the relay reads and clears it.
pub mod outbox {
    use crate::db::{Db, numbered};

    /// A recorded change not yet published: its dedupe id and its JSON.
    pub struct Pending {
        pub order_id: String,
        pub version: i64,
        pub change: String,
    }

    impl Pending {
        /// The broker drops a second publish of the same id (a relay that
        /// crashed before deleting the row, or two relays).
        pub fn message_id(&self) -> String {
            format!("{}:{}", self.order_id, self.version)
        }
    }

    /// The oldest unpublished changes, in the order they were recorded.
    pub async fn oldest(db: &Db, limit: i64) -> anyhow::Result<Vec<Pending>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT order_id, version, change FROM order_changes
             ORDER BY recorded_at, order_id, version LIMIT $1",
        )
        .bind(limit)
        .fetch_all(db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(order_id, version, change)| Pending {
                order_id,
                version,
                change,
            })
            .collect())
    }

    /// The broker has these: they leave the outbox. One statement per 200
    /// rows rather than one per row: every statement is a round trip to the
    /// store, and the relay runs once per recorded change.
    pub async fn published(db: &Db, done: &[Pending]) -> anyhow::Result<()> {
        for chunk in done.chunks(200) {
            let sql = format!(
                "DELETE FROM order_changes WHERE {}",
                numbered(1, chunk.len(), "(order_id = ? AND version = ?)", " OR ")
            );
            let mut q = sqlx::query(&sql);
            for p in chunk {
                q = q.bind(&p.order_id).bind(p.version);
            }
            q.execute(db).await?;
        }
        Ok(())
    }
}

#[activities]
impl OrderContext {
    #[activity(definition = def::OrderProject)]
    pub async fn project(
        self: Arc<Self>,
        _ctx: ActivityContext,
        order: OrderSnapshot,
    ) -> Result<(), ActivityError> {
        upsert_order_info(&self.db, &order).await?;
        Ok(())
    }

    /// The customer's view and the outbox row of the change, in one transaction
    /// (a repeat of the same version changes nothing); then wakes the relay.
    #[activity(definition = def::OrderRecord)]
    pub async fn record(
        self: Arc<Self>,
        _ctx: ActivityContext,
        change: OrderChange,
    ) -> Result<(), ActivityError> {
        record(&self.db, &change).await?;
        if let Some(r) = &self.recorded {
            r.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::outbox::{self, Pending};
    use crate::config::DatabaseUrl;

    /// The relay clears what it published in one statement per 200 rows:
    /// exactly the (order, version) pairs it names, in every chunk, and not
    /// another version of the same order nor the same version of another.
    #[tokio::test]
    async fn the_relay_clears_exactly_the_changes_it_published() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::SqliteDir(dir.path().display().to_string());
        let db = crate::db::open(&url, "order", &super::MIGRATOR)
            .await
            .unwrap();
        let mut all = Vec::new();
        for n in 0..150 {
            for version in 1..=3 {
                all.push((format!("o{n:03}"), version));
            }
        }
        for (i, (order_id, version)) in all.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_changes (order_id, version, change, recorded_at)
                 VALUES ($1, $2, '{}', $3)",
            )
            .bind(order_id)
            .bind(version)
            .bind(i as i64)
            .execute(&db)
            .await
            .unwrap();
        }
        // Every order's versions 1 and 3, and version 2 of every tenth: 315
        // rows, two statements.
        let done: Vec<Pending> = all
            .iter()
            .enumerate()
            .filter(|(i, (_, v))| *v != 2 || i % 30 == 1)
            .map(|(_, (order_id, version))| Pending {
                order_id: order_id.clone(),
                version: *version,
                change: String::new(),
            })
            .collect();
        assert_eq!(done.len(), 315);
        outbox::published(&db, &done).await.unwrap();
        let left: Vec<(String, i64)> =
            sqlx::query_as("SELECT order_id, version FROM order_changes ORDER BY recorded_at")
                .fetch_all(&db)
                .await
                .unwrap();
        let expected: Vec<(String, i64)> = all
            .iter()
            .enumerate()
            .filter(|(i, (_, v))| *v == 2 && i % 30 != 1)
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(expected.len(), 135);
        assert_eq!(left, expected);
        // What is left is what the relay reads next, oldest first.
        let next = outbox::oldest(&db, 500).await.unwrap();
        let ids: Vec<String> = next.iter().map(|p| p.message_id()).collect();
        let expected_ids: Vec<String> = expected
            .iter()
            .map(|(order_id, version)| format!("{order_id}:{version}"))
            .collect();
        assert_eq!(ids, expected_ids);
    }
}
