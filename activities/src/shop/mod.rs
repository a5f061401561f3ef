//! Shop context: the catalogue (shops, menus) and the owner's read model, OrderDtl.

use crate::db::Db;
use crate::page::{Page, PageRequest};
use crate::time::rfc3339;
use baedal_workflows::OrderSnapshot;
use baedal_workflows::activities::def;
use serde::Serialize;
use serde_json::json;
use sqlx::{AnyConnection, FromRow};
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/shop");

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Shop {
    pub id: String,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    #[serde(skip)]
    pub owner_id: String,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct MenuItem {
    pub id: String,
    pub name: String,
    pub price: i64,
}

/// Demo mode's shops and menus (`BAEDAL_DEMO=1`).
pub async fn seed_demo(db: &Db) -> anyhow::Result<()> {
    sqlx::raw_sql(include_str!("demo.sql")).execute(db).await?;
    Ok(())
}

pub async fn list_shops(db: &Db) -> anyhow::Result<Vec<Shop>> {
    Ok(
        sqlx::query_as("SELECT id, name, lat, lon, owner_id FROM shops ORDER BY position, id")
            .fetch_all(db)
            .await?,
    )
}

pub async fn find_shop(db: &Db, id: &str) -> anyhow::Result<Option<Shop>> {
    Ok(
        sqlx::query_as("SELECT id, name, lat, lon, owner_id FROM shops WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn menu(db: &Db, shop_id: &str) -> anyhow::Result<Vec<MenuItem>> {
    Ok(sqlx::query_as(
        "SELECT id, name, price FROM menu_items WHERE shop_id = $1 ORDER BY position, id",
    )
    .bind(shop_id)
    .fetch_all(db)
    .await?)
}

/// The owner's view of one order.
pub fn order_dtl(o: &OrderSnapshot) -> serde_json::Value {
    json!({
        "orderId": o.order_id,
        "shopId": o.shop.id,
        "status": o.status,
        "items": o.items,
        "total": o.total,
        "address": o.address,
        "phone": o.phone,
        "readyAt": o.ready_at.map(rfc3339),
        "ready": o.ready,
        "reason": o.reason,
        "rider": o.rider,
        "placedAt": o.history.first().map(|h| rfc3339(h.at)),
    })
}

/// The shop's orders, newest first, optionally of one status.
pub async fn list_orders(
    db: &Db,
    shop_id: &str,
    status: Option<&str>,
    page: &PageRequest,
) -> anyhow::Result<Page<serde_json::Value>> {
    let status = status.unwrap_or_default();
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT doc, placed_at, order_id FROM order_dtl
         WHERE shop_id = $1 AND ($2 = '' OR status = $3) AND (placed_at, order_id) < ($4, $5)
         ORDER BY placed_at DESC, order_id DESC LIMIT $6",
    )
    .bind(shop_id)
    .bind(status)
    .bind(status)
    .bind(page.after.at)
    .bind(&page.after.id)
    .bind(page.fetch())
    .fetch_all(db)
    .await?;
    page.docs(rows)
}

pub async fn find_order(
    db: &Db,
    order_id: &str,
) -> anyhow::Result<Option<(String, serde_json::Value)>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT shop_id, doc FROM order_dtl WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(db)
            .await?;
    row.map(|(shop, doc)| Ok((shop, serde_json::from_str(&doc)?)))
        .transpose()
}

pub struct ShopContext {
    pub db: Db,
}

#[activities]
impl ShopContext {
    /// Writes the newest OrderDtl; an older or repeated version changes nothing.
    #[activity(definition = def::ShopProject)]
    pub async fn project(
        self: Arc<Self>,
        _ctx: ActivityContext,
        order: OrderSnapshot,
    ) -> Result<(), ActivityError> {
        apply(&self.db, &order).await?;
        Ok(())
    }
}

/// Writes the newest OrderDtl; an older or repeated version changes nothing.
/// The shop context's activity (orders before the change feed) writes through
/// here, its feed consumer through [`apply_in`].
pub async fn apply(db: &Db, order: &OrderSnapshot) -> anyhow::Result<()> {
    apply_in(&mut *db.acquire().await?, order).await
}

/// [`apply`] on a connection the caller holds: the feed consumer applies the
/// changes that arrived together in one transaction.
pub async fn apply_in(conn: &mut AnyConnection, order: &OrderSnapshot) -> anyhow::Result<()> {
    let placed_at = order.history.first().map_or(0, |h| h.at);
    sqlx::query(
        "INSERT INTO order_dtl (order_id, shop_id, status, doc, version, placed_at, seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, doc = excluded.doc,
                 version = excluded.version
             WHERE order_dtl.version < excluded.version",
    )
    .bind(&order.order_id)
    .bind(&order.shop.id)
    .bind(order.status.as_str())
    .bind(order_dtl(order).to_string())
    .bind(order.version as i64)
    .bind(placed_at)
    .bind(crate::time::now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The version of the owner's view of this order, if it has one.
pub async fn view_version(db: &Db, order_id: &str) -> anyhow::Result<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT version FROM order_dtl WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| r.0))
}

/// Unanswered orders (`PAID`) the owner's view has held since before `seen_before`
/// (ms) whose orders have not been told yet: the shop acceptance timeout.
pub async fn unanswered_since(db: &Db, seen_before: i64) -> anyhow::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT order_id FROM order_dtl
         WHERE status = 'PAID' AND timeout_told = 0 AND seen_at > 0 AND seen_at <= $1
         ORDER BY seen_at LIMIT 100",
    )
    .bind(seen_before)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The order has been told its acceptance timed out (or no longer needs to be).
pub async fn timeout_told(db: &Db, order_id: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE order_dtl SET timeout_told = 1 WHERE order_id = $1")
        .bind(order_id)
        .execute(db)
        .await?;
    Ok(())
}
