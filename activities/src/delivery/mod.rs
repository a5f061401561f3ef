//! Delivery context: riders' positions and availability, offers, the atomic
//! assignment (a rider carries one delivery at a time), and the rider's read
//! model, DeliveryInfo.

use crate::db::Db;
use crate::page::{Page, PageRequest};
use crate::time::{now_ms, rfc3339};
use baedal_workflows::activities::def;
use baedal_workflows::{OfferMade, OfferRequest, OrderSnapshot, OrderStatus, RiderOrder, ShopRef};
use serde_json::json;
use sqlx::{AnyConnection, FromRow};
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub mod nearest;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/delivery");

/// Demo riders stand north of the first shop, each ~300 m further than the last.
pub async fn seed_demo(db: &Db, riders: u32) -> anyhow::Result<()> {
    let now = now_ms();
    for i in 1..=riders {
        let lat = 37.4979 + 0.0027 * f64::from(i);
        sqlx::query(
            "INSERT INTO riders (id, lat, lon, available, current_order, updated_at, cell, located_at)
             VALUES ($1, $2, $3, 1, NULL, $4, $5, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(format!("rider{i}"))
        .bind(lat)
        .bind(127.0276)
        .bind(now)
        .bind(nearest::cell_of(lat, 127.0276))
        .execute(db)
        .await?;
    }
    Ok(())
}

pub async fn report_location(
    db: &Db,
    rider: &str,
    lat: f64,
    lon: f64,
    available: bool,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO riders (id, lat, lon, available, current_order, updated_at, cell, located_at)
         VALUES ($1, $2, $3, $4, NULL, $5, $6, $5)
         ON CONFLICT (id) DO UPDATE SET lat = excluded.lat, lon = excluded.lon,
             available = excluded.available, updated_at = excluded.updated_at,
             cell = excluded.cell, located_at = excluded.located_at",
    )
    .bind(rider)
    .bind(lat)
    .bind(lon)
    .bind(i64::from(available))
    .bind(now_ms())
    .bind(nearest::cell_of(lat, lon))
    .execute(db)
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct OfferRow {
    order_id: String,
    shop: String,
    distance_m: i64,
    expires_at: i64,
}

/// Live offers made to a rider.
pub async fn offers_for(db: &Db, rider: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let rows: Vec<OfferRow> = sqlx::query_as(
        "SELECT order_id, shop, distance_m, expires_at FROM offers WHERE rider_id = $1 AND expires_at > $2",
    )
    .bind(rider)
    .bind(now_ms())
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            let shop: serde_json::Value = serde_json::from_str(&r.shop)?;
            Ok(json!({"orderId": r.order_id, "shop": shop, "distanceM": r.distance_m, "expiresAt": rfc3339(r.expires_at)}))
        })
        .collect()
}

/// Whether this rider holds a live offer for this order right now.
pub async fn has_live_offer(db: &Db, rider: &str, order_id: &str) -> anyhow::Result<bool> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT order_id FROM offers WHERE rider_id = $1 AND order_id = $2 AND expires_at > $3",
    )
    .bind(rider)
    .bind(order_id)
    .bind(now_ms())
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// The rider's deliveries, newest order first.
pub async fn deliveries_for(
    db: &Db,
    rider: &str,
    page: &PageRequest,
) -> anyhow::Result<Page<serde_json::Value>> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT doc, placed_at, order_id FROM delivery_info
         WHERE rider_id = $1 AND (placed_at, order_id) < ($2, $3)
         ORDER BY placed_at DESC, order_id DESC LIMIT $4",
    )
    .bind(rider)
    .bind(page.after.at)
    .bind(&page.after.id)
    .bind(page.fetch())
    .fetch_all(db)
    .await?;
    page.docs(rows)
}

/// The rider's view of a delivery.
pub fn delivery_info(o: &OrderSnapshot) -> serde_json::Value {
    json!({
        "orderId": o.order_id,
        "status": o.status,
        "shop": o.shop,
        "address": o.address,
        "phone": o.phone,
        "items": o.items,
        "readyAt": o.ready_at.map(rfc3339),
        "ready": o.ready,
    })
}

/// How long past its expiry an offer nobody withdrew still holds its rider.
/// Workflows withdraw a lapsed offer within moments; only a workflow that is
/// gone (terminated by an operator) leaves one behind.
pub const ABANDONED_OFFER_MS: i64 = 10 * 60 * 1000;

pub struct DeliveryContext {
    pub db: Db,
    /// Riders who have not reported a position for this long get no offers
    /// (`RIDER_STALE_AFTER`).
    pub stale_after: std::time::Duration,
}

#[activities]
impl DeliveryContext {
    /// Offers the order to the nearest free rider not excluded. One live offer per
    /// rider and per order (unique keys), so concurrent dispatchers never double-book.
    #[activity(definition = def::DeliveryOfferNearest)]
    pub async fn offer_nearest(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: OfferRequest,
    ) -> Result<Option<OfferMade>, ActivityError> {
        // A retry of this activity finds the offer its first attempt made.
        let existing: Option<(String, i64)> =
            sqlx::query_as("SELECT rider_id, distance_m FROM offers WHERE order_id = $1")
                .bind(&req.order_id)
                .fetch_optional(&self.db)
                .await?;
        if let Some((rider_id, distance_m)) = existing {
            return Ok(Some(OfferMade {
                rider_id,
                distance_m,
            }));
        }
        // An offer holds its rider until the order's workflow withdraws it or
        // the rider's assignment arrives (see `apply`); one whose workflow is
        // gone (terminated) lets the rider go after `ABANDONED_OFFER_MS`.
        let abandoned_before = now_ms() - ABANDONED_OFFER_MS;
        let mut nearest = nearest::Nearest::new(
            req.shop.lat,
            req.shop.lon,
            nearest::Rules {
                exclude: &req.exclude,
                fresh_after: now_ms() - self.stale_after.as_millis() as i64,
                abandoned_before,
            },
        );
        let shop = shop_json(&req.shop);
        while let Some(c) = nearest.next(&self.db).await? {
            let dist = c.distance_m;
            // An abandoned offer of this rider makes room first.
            sqlx::query("DELETE FROM offers WHERE rider_id = $1 AND expires_at <= $2")
                .bind(&c.id)
                .bind(abandoned_before)
                .execute(&self.db)
                .await?;
            let taken = sqlx::query(
                "INSERT INTO offers (order_id, rider_id, shop, distance_m, expires_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&req.order_id)
            .bind(&c.id)
            .bind(&shop)
            .bind(dist.round() as i64)
            .bind(req.expires_at)
            .execute(&self.db)
            .await?
            .rows_affected();
            if taken == 1 {
                tracing::info!(order_id = %req.order_id, rider = %c.id, distance_m = dist.round(), "offered");
                return Ok(Some(OfferMade {
                    rider_id: c.id,
                    distance_m: dist.round() as i64,
                }));
            }
        }
        Ok(None)
    }

    #[activity(definition = def::DeliveryWithdrawOffer)]
    pub async fn withdraw_offer(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: RiderOrder,
    ) -> Result<(), ActivityError> {
        sqlx::query("DELETE FROM offers WHERE order_id = $1 AND rider_id = $2")
            .bind(&req.order_id)
            .bind(&req.rider_id)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// The one statement that gives a rider a delivery: only if they carry none.
    #[activity(definition = def::DeliveryAssign)]
    pub async fn assign(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: RiderOrder,
    ) -> Result<bool, ActivityError> {
        let mut tx = self.db.begin().await?;
        let won = sqlx::query(
            "UPDATE riders SET current_order = $1, updated_at = $2
             WHERE id = $3 AND (current_order IS NULL OR current_order = $1)",
        )
        .bind(&req.order_id)
        .bind(now_ms())
        .bind(&req.rider_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        sqlx::query("DELETE FROM offers WHERE order_id = $1 AND rider_id = $2")
            .bind(&req.order_id)
            .bind(&req.rider_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(won)
    }

    /// Writes the newest DeliveryInfo; a delivered order frees its rider.
    #[activity(definition = def::DeliveryProject)]
    pub async fn project(
        self: Arc<Self>,
        _ctx: ActivityContext,
        order: OrderSnapshot,
    ) -> Result<(), ActivityError> {
        apply(&self.db, &order).await?;
        Ok(())
    }
}

/// Writes the newest DeliveryInfo, in one transaction with the rider's state:
/// an assigned order becomes the rider's delivery and its offer is gone (the
/// offer held the rider until now); a finished one frees the rider. Only a
/// version newer than the view's touches the rider, so a change that arrives
/// late or twice never undoes a newer one. The delivery context's activity
/// (orders before the change feed) writes here, its feed consumer through
/// [`apply_in`].
pub async fn apply(db: &Db, order: &OrderSnapshot) -> anyhow::Result<()> {
    if !in_view(order) {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    let freed = apply_in(&mut tx, order).await?;
    tx.commit().await?;
    if freed {
        delivered(order);
    }
    Ok(())
}

/// Whether the delivery view shows this state of the order: only once a rider
/// holds it. Changes before that are skipped without touching the store.
pub fn in_view(order: &OrderSnapshot) -> bool {
    order.rider.is_some()
}

/// [`apply`] inside a transaction the caller holds and commits (the feed
/// consumer applies the changes that arrived together in one). True when it
/// delivered the order and freed its rider: [`delivered`] says so once the
/// transaction is committed.
pub async fn apply_in(tx: &mut AnyConnection, order: &OrderSnapshot) -> anyhow::Result<bool> {
    let Some(rider) = order.rider.as_ref() else {
        return Ok(false);
    };
    let newer = sqlx::query(
        "INSERT INTO delivery_info (order_id, rider_id, status, doc, version, updated_at, placed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, doc = excluded.doc,
             version = excluded.version, updated_at = excluded.updated_at
         WHERE delivery_info.version < excluded.version",
    )
    .bind(&order.order_id)
    .bind(&rider.id)
    .bind(order.status.as_str())
    .bind(delivery_info(order).to_string())
    .bind(order.version as i64)
    .bind(now_ms())
    .bind(order.history.first().map_or(0, |h| h.at))
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if newer {
        if order.status.is_terminal() {
            sqlx::query(
                "UPDATE riders SET current_order = NULL WHERE id = $1 AND current_order = $2",
            )
            .bind(&rider.id)
            .bind(&order.order_id)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE riders SET current_order = $1, updated_at = $2
                 WHERE id = $3 AND current_order IS NULL",
            )
            .bind(&order.order_id)
            .bind(now_ms())
            .bind(&rider.id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM offers WHERE order_id = $1 AND rider_id = $2")
            .bind(&order.order_id)
            .bind(&rider.id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(newer && order.status == OrderStatus::Delivered)
}

/// Logs a delivery whose rider [`apply_in`] freed, once that is committed.
pub fn delivered(order: &OrderSnapshot) {
    if let Some(rider) = &order.rider {
        tracing::info!(order_id = %order.order_id, rider = %rider.id, "delivered; rider free");
    }
}

/// Offers past their expiry whose orders have not been told yet, with the expiry.
pub async fn lapsed_offers(db: &Db) -> anyhow::Result<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT order_id, rider_id, expires_at FROM offers
         WHERE lapse_told = 0 AND expires_at <= $1 ORDER BY expires_at LIMIT 100",
    )
    .bind(now_ms())
    .fetch_all(db)
    .await?)
}

/// The order has been told this offer lapsed (or no longer needs to be).
pub async fn lapse_told(db: &Db, order_id: &str, rider_id: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE offers SET lapse_told = 1 WHERE order_id = $1 AND rider_id = $2")
        .bind(order_id)
        .bind(rider_id)
        .execute(db)
        .await?;
    Ok(())
}

/// The version of the rider's view of this order, if it has one.
pub async fn view_version(db: &Db, order_id: &str) -> anyhow::Result<Option<i64>> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT version FROM delivery_info WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|r| r.0))
}

fn shop_json(s: &ShopRef) -> String {
    json!({"id": s.id, "name": s.name, "lat": s.lat, "lon": s.lon}).to_string()
}

/// Where a rider last reported being: (lat, lon, when in ms).
pub async fn rider_position(db: &Db, rider: &str) -> anyhow::Result<Option<(f64, f64, i64)>> {
    Ok(
        sqlx::query_as("SELECT lat, lon, located_at FROM riders WHERE id = $1")
            .bind(rider)
            .fetch_optional(db)
            .await?,
    )
}
