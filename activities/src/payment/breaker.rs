//! Circuit breaker in front of the payment gateway. Its state is one row in the
//! payment database, so every API and worker process sees the same breaker: N
//! processes cannot hammer a struggling gateway N times over.
//!
//! closed --(`threshold` failures in a row)--> open --(cool-down)--> half_open
//! half_open: exactly one caller (the probe) is let through; its success closes
//! the breaker, its failure opens it again.

use crate::db::Db;
use crate::time::now_ms;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: call the gateway.
    Allowed,
    /// Cool-down over: this caller is the one probe.
    Probe,
    /// Open: refuse at once; try again after this long.
    Refused { retry_after: Duration },
}

/// Counts for the metrics endpoint.
#[derive(Debug, Default)]
pub struct BreakerMetrics {
    pub refused: AtomicU64,
    pub opened: AtomicU64,
    pub closed: AtomicU64,
}

pub struct Breaker {
    db: Db,
    threshold: u32,
    cooldown: Duration,
    pub metrics: BreakerMetrics,
}

#[derive(sqlx::FromRow)]
struct Row {
    state: String,
    failures: i64,
    opened_at: i64,
    probe_started: i64,
}

impl Breaker {
    pub fn new(db: Db, threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            db,
            threshold,
            cooldown,
            metrics: BreakerMetrics::default(),
        }
    }

    async fn row(&self) -> anyhow::Result<Row> {
        Ok(sqlx::query_as(
            "SELECT state, failures, opened_at, probe_started FROM breaker WHERE name = 'gateway'",
        )
        .fetch_one(&self.db)
        .await?)
    }

    pub async fn state(&self) -> anyhow::Result<String> {
        Ok(self.row().await?.state)
    }

    pub async fn admit(&self) -> anyhow::Result<Admission> {
        let row = self.row().await?;
        let now = now_ms();
        let cooldown = self.cooldown.as_millis() as i64;
        let refused = |ms: i64| {
            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            Ok(Admission::Refused {
                retry_after: Duration::from_millis(ms.max(1000) as u64),
            })
        };
        match row.state.as_str() {
            "closed" => Ok(Admission::Allowed),
            "open" if now < row.opened_at + cooldown => refused(row.opened_at + cooldown - now),
            // A probe that never reported back (its process died) is replaced.
            "half_open" if now < row.probe_started + cooldown => refused(1000),
            _ => {
                // Exactly one caller wins the probe.
                let won = sqlx::query(
                    "UPDATE breaker SET state = 'half_open', probe_started = $1
                     WHERE name = 'gateway' AND state = $2 AND probe_started = $3 AND opened_at = $4",
                )
                .bind(now)
                .bind(&row.state)
                .bind(row.probe_started)
                .bind(row.opened_at)
                .execute(&self.db)
                .await?
                .rows_affected()
                    == 1;
                if won {
                    tracing::info!("payment breaker half-open: probing the gateway");
                    Ok(Admission::Probe)
                } else {
                    refused(1000)
                }
            }
        }
    }

    /// Records a gateway call's health (a decline is a healthy answer).
    pub async fn record(&self, healthy: bool) -> anyhow::Result<()> {
        let before = self.row().await?;
        if healthy {
            if before.state != "closed" || before.failures != 0 {
                sqlx::query(
                    "UPDATE breaker SET state = 'closed', failures = 0 WHERE name = 'gateway'",
                )
                .execute(&self.db)
                .await?;
                if before.state != "closed" {
                    self.metrics.closed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("payment breaker closed: the gateway answered");
                }
            }
            return Ok(());
        }
        sqlx::query(
            "UPDATE breaker SET
                 state = CASE WHEN state = 'half_open' OR failures + 1 >= $1 THEN 'open' ELSE state END,
                 opened_at = CASE WHEN state = 'half_open' OR failures + 1 >= $1 THEN $2 ELSE opened_at END,
                 failures = failures + 1
             WHERE name = 'gateway'",
        )
        .bind(self.threshold as i64)
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        let after = self.row().await?;
        if before.state != "open" && after.state == "open" {
            self.metrics.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                failures = after.failures,
                "payment breaker opened: gateway failing"
            );
        }
        Ok(())
    }
}
