//! Notification context: one KakaoTalk-style message per status change and
//! recipient, kept in the feed and, when `NOTIFY_WEBHOOK_URL` is set, posted
//! there by a relay that retries until accepted (at least once, with a dedupe key).

use crate::db::{Db, numbered};
use crate::page::{Cursor, Page, PageRequest};
use crate::time::{now_ms, rfc3339};
use baedal_workflows::activities::def;
use baedal_workflows::{Announcement, HistoryEntry, OrderChange, OrderSnapshot, OrderStatus};
use serde_json::json;
use sqlx::{AnyConnection, FromRow};
use std::sync::Arc;
use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/notification");

/// Who hears of a status: the customer and the shop always, the rider once assigned.
pub fn recipients(o: &OrderSnapshot, status: OrderStatus) -> Vec<String> {
    let mut to = vec![o.customer_id.clone(), o.owner_id.clone()];
    let rider_involved = matches!(
        status,
        OrderStatus::RiderAssigned
            | OrderStatus::DeliveryStarted
            | OrderStatus::PickedUp
            | OrderStatus::Delivered
    );
    if let (true, Some(r)) = (rider_involved, o.rider.as_ref()) {
        to.push(r.id.clone());
    }
    to
}

pub fn message(o: &OrderSnapshot, status: OrderStatus) -> String {
    let shop = &o.shop.name;
    let total = format_krw(o.total);
    let what = match status {
        OrderStatus::Paid => format!("주문이 결제되었습니다 ({total}). Order paid."),
        OrderStatus::Accepted => match o.ready_at {
            Some(t) => format!(
                "가게가 주문을 수락했습니다. 조리 완료 예정 {}. Accepted, ready at {}.",
                korean_clock(t),
                english_clock(t)
            ),
            None => "가게가 주문을 수락했습니다. Accepted.".to_string(),
        },
        OrderStatus::RiderAssigned => "라이더가 배정되었습니다. Rider assigned.".to_string(),
        OrderStatus::DeliveryStarted => "배달이 시작되었습니다. Delivery started.".to_string(),
        OrderStatus::PickedUp => "라이더가 음식을 픽업했습니다. Picked up.".to_string(),
        OrderStatus::Delivered => "배달이 완료되었습니다. Delivered.".to_string(),
        OrderStatus::Rejected => format!(
            "주문이 거절되었습니다 ({}). {total} 환불. Rejected, refunded.",
            o.reason.as_deref().unwrap_or("-")
        ),
        OrderStatus::Cancelled => format!(
            "주문이 취소되었습니다 ({}). {total} 환불. Cancelled, refunded.",
            o.reason.as_deref().unwrap_or("-")
        ),
    };
    format!(
        "[배달 baedal] {shop} {}: {what}",
        baedal_workflows::order_no(&o.order_id)
    )
}

/// Hours and minutes of `ms` in Korea's time (UTC+9 all year: no daylight
/// saving), where every customer, owner and rider of the service is.
fn kst_hm(ms: i64) -> (i64, i64) {
    let minutes = (ms.div_euclid(60_000) + 9 * 60).rem_euclid(24 * 60);
    (minutes / 60, minutes % 60)
}

/// `오후 7:05` — as a Korean reader says the time.
fn korean_clock(ms: i64) -> String {
    let (h, m) = kst_hm(ms);
    let half = if h < 12 { "오전" } else { "오후" };
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    format!("{half} {h12}:{m:02}")
}

/// `7:05 PM KST` — as an English reader says it.
fn english_clock(ms: i64) -> String {
    let (h, m) = kst_hm(ms);
    let half = if h < 12 { "AM" } else { "PM" };
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    format!("{h12}:{m:02} {half} KST")
}

fn format_krw(v: i64) -> String {
    let digits = v.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{}{out}원", if v < 0 { "-" } else { "" })
}

#[derive(FromRow)]
struct FeedRow {
    dedupe_key: String,
    order_id: String,
    status: String,
    text: String,
    at: i64,
    seq: i64,
}

pub async fn feed(
    db: &Db,
    recipient: &str,
    page: &PageRequest,
) -> anyhow::Result<Page<serde_json::Value>> {
    let rows: Vec<FeedRow> = sqlx::query_as(
        "SELECT dedupe_key, order_id, status, text, at, seq FROM notifications
         WHERE recipient = $1 AND (at, seq, dedupe_key) < ($2, $3, $4)
         ORDER BY at DESC, seq DESC, dedupe_key DESC LIMIT $5",
    )
    .bind(recipient)
    .bind(page.after.at)
    .bind(page.after.seq)
    .bind(&page.after.id)
    .bind(page.fetch())
    .fetch_all(db)
    .await?;
    let page = page.page(rows, |r| Cursor {
        at: r.at,
        seq: r.seq,
        id: r.dedupe_key.clone(),
    });
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(|r| json!({"orderId": r.order_id, "status": r.status, "text": r.text, "at": rfc3339(r.at)}))
            .collect(),
        next: page.next,
    })
}

pub struct NotificationContext {
    pub db: Db,
    pub webhook: Option<String>,
}

#[activities]
impl NotificationContext {
    /// Feed rows and outbox rows in one transaction; repeats are ignored by key.
    #[activity(definition = def::NotificationAnnounce)]
    pub async fn announce(
        self: Arc<Self>,
        _ctx: ActivityContext,
        batch: Announcement,
    ) -> Result<(), ActivityError> {
        announce(
            &self.db,
            self.webhook.is_some(),
            &batch.order,
            &batch.changes,
        )
        .await?;
        Ok(())
    }
}

/// One recorded change from the change feed, its new statuses announced, on a
/// connection the caller holds: the feed consumer applies the changes that
/// arrived together in one transaction.
pub async fn apply_in(
    conn: &mut AnyConnection,
    webhook: bool,
    change: &OrderChange,
) -> anyhow::Result<()> {
    let new = change.order.history.get(change.since..).unwrap_or_default();
    if new.is_empty() {
        return Ok(());
    }
    announce_in(conn, webhook, &change.order, new).await
}

/// [`announce_in`]; with the webhook, its two statements share a transaction.
async fn announce(
    db: &Db,
    webhook: bool,
    o: &OrderSnapshot,
    changes: &[HistoryEntry],
) -> anyhow::Result<()> {
    if !webhook {
        return announce_in(&mut *db.acquire().await?, webhook, o, changes).await;
    }
    let mut tx = db.begin().await?;
    announce_in(&mut tx, webhook, o, changes).await?;
    tx.commit().await?;
    Ok(())
}

/// Feed rows (and outbox rows for the webhook) of these status changes, one per
/// recipient; repeats are ignored by key. Each table takes its rows in one
/// statement (a change has a few recipients, and every statement is a round
/// trip to the store).
async fn announce_in(
    conn: &mut AnyConnection,
    webhook: bool,
    o: &OrderSnapshot,
    changes: &[HistoryEntry],
) -> anyhow::Result<()> {
    struct Row {
        key: String,
        to: String,
        status: &'static str,
        text: String,
        at: i64,
        seq: i64,
    }
    let mut rows = Vec::new();
    for change in changes {
        let seq = o.history.iter().position(|h| h == change).unwrap_or(0) as i64;
        let text = message(o, change.status);
        for to in recipients(o, change.status) {
            rows.push(Row {
                key: format!("{}:{}:{}", o.order_id, change.status, to),
                to,
                status: change.status.as_str(),
                text: text.clone(),
                at: change.at,
                seq,
            });
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let feed = format!(
        "INSERT INTO notifications (dedupe_key, recipient, order_id, status, text, at, seq) VALUES {}
         ON CONFLICT (dedupe_key) DO NOTHING",
        numbered(1, rows.len(), "(?, ?, ?, ?, ?, ?, ?)", ", ")
    );
    let mut feed_rows = sqlx::query(&feed);
    for r in &rows {
        feed_rows = feed_rows
            .bind(&r.key)
            .bind(&r.to)
            .bind(&o.order_id)
            .bind(r.status)
            .bind(&r.text)
            .bind(r.at)
            .bind(r.seq);
    }
    feed_rows.execute(&mut *conn).await?;
    if !webhook {
        return Ok(());
    }
    let outbox = format!(
        "INSERT INTO outbox (dedupe_key, payload, attempts, next_attempt_at, delivered_at) VALUES {}
         ON CONFLICT (dedupe_key) DO NOTHING",
        numbered(1, rows.len(), "(?, ?, 0, 0, NULL)", ", ")
    );
    let mut outbox_rows = sqlx::query(&outbox);
    for r in &rows {
        let payload = json!({"to": r.to, "orderId": o.order_id, "status": r.status, "text": r.text, "dedupeKey": r.key});
        outbox_rows = outbox_rows.bind(&r.key).bind(payload.to_string());
    }
    outbox_rows.execute(&mut *conn).await?;
    Ok(())
}

#[derive(FromRow)]
struct OutboxRow {
    dedupe_key: String,
    payload: String,
    attempts: i64,
}

/// Posts due outbox rows to the webhook until each is accepted (2xx); backs off
/// per row on failure. Runs in every notification worker; the receiver dedupes.
pub async fn run_relay(db: Db, url: String, stop: tokio::sync::watch::Receiver<bool>) {
    let http = reqwest::Client::new();
    loop {
        if *stop.borrow() {
            return;
        }
        let due: Result<Vec<OutboxRow>, _> = sqlx::query_as(
            "SELECT dedupe_key, payload, attempts FROM outbox
             WHERE delivered_at IS NULL AND next_attempt_at <= $1 ORDER BY next_attempt_at, dedupe_key LIMIT 100",
        )
        .bind(now_ms())
        .fetch_all(&db)
        .await;
        let due = due.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the outbox");
            Vec::new()
        });
        let idle = due.is_empty();
        for row in due {
            let sent = http
                .post(&url)
                .header("content-type", "application/json")
                .timeout(Duration::from_secs(5))
                .body(row.payload.clone())
                .send()
                .await;
            let ok = matches!(&sent, Ok(r) if r.status().is_success());
            let result = if ok {
                sqlx::query("UPDATE outbox SET delivered_at = $1 WHERE dedupe_key = $2")
                    .bind(now_ms())
                    .bind(&row.dedupe_key)
                    .execute(&db)
                    .await
            } else {
                let backoff = (200i64 << row.attempts.min(8)).min(30_000);
                sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1 WHERE dedupe_key = $2")
                    .bind(now_ms() + backoff)
                    .bind(&row.dedupe_key)
                    .execute(&db)
                    .await
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "updating the outbox");
            }
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{english_clock, format_krw, korean_clock};

    #[test]
    fn times_read_as_people_in_korea_say_them() {
        // 2025-11-25T19:00:52Z is 04:00 the next morning in Seoul.
        let t = 1_764_097_252_076;
        assert_eq!(korean_clock(t), "오전 4:00");
        assert_eq!(english_clock(t), "4:00 AM KST");
        // 03:05Z is 12:05 in Seoul: noon is PM, and 12, not 0.
        let noon = 1_764_039_900_000;
        assert_eq!(korean_clock(noon), "오후 12:05");
        assert_eq!(english_clock(noon), "12:05 PM KST");
        // 15:30Z is 00:30 in Seoul: midnight reads 12 AM.
        assert_eq!(english_clock(1_764_084_600_000), "12:30 AM KST");
    }

    #[test]
    fn won_amounts_group_thousands() {
        assert_eq!(format_krw(39000), "39,000원");
        assert_eq!(format_krw(500), "500원");
        assert_eq!(format_krw(1234567), "1,234,567원");
    }
}
