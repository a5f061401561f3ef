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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;

    const COOLDOWN: Duration = Duration::from_millis(300);

    async fn breaker(threshold: u32) -> (Breaker, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::SqliteDir(dir.path().display().to_string());
        let db = crate::db::open(&url, "payment", &super::super::MIGRATOR)
            .await
            .unwrap();
        (Breaker::new(db, threshold, COOLDOWN), dir)
    }

    async fn fail(b: &Breaker, times: u32) {
        for _ in 0..times {
            b.record(false).await.unwrap();
        }
    }

    fn refused(a: Admission) -> bool {
        matches!(a, Admission::Refused { .. })
    }

    #[tokio::test]
    async fn closed_lets_calls_through_until_threshold_failures_in_a_row() {
        let (b, _dir) = breaker(3).await;
        assert_eq!(b.state().await.unwrap(), "closed");
        assert_eq!(b.admit().await.unwrap(), Admission::Allowed);
        fail(&b, 2).await;
        assert_eq!(b.state().await.unwrap(), "closed");
        assert_eq!(b.admit().await.unwrap(), Admission::Allowed);
        fail(&b, 1).await;
        assert_eq!(b.state().await.unwrap(), "open");
        assert_eq!(b.metrics.opened.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_healthy_answer_resets_the_count_of_failures_in_a_row() {
        let (b, _dir) = breaker(3).await;
        fail(&b, 2).await;
        b.record(true).await.unwrap();
        fail(&b, 2).await;
        assert_eq!(b.state().await.unwrap(), "closed");
        fail(&b, 1).await;
        assert_eq!(b.state().await.unwrap(), "open");
    }

    #[tokio::test]
    async fn open_refuses_at_once_with_the_rest_of_the_cool_down() {
        let (b, _dir) = breaker(1).await;
        fail(&b, 1).await;
        match b.admit().await.unwrap() {
            // Never less than a second: Retry-After is whole seconds.
            Admission::Refused { retry_after } => assert_eq!(retry_after, Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.metrics.refused.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn after_the_cool_down_exactly_one_caller_probes() {
        let (b, _dir) = breaker(1).await;
        fail(&b, 1).await;
        tokio::time::sleep(COOLDOWN).await;
        let (x, y) = tokio::join!(b.admit(), b.admit());
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(
            (x == Admission::Probe && refused(y)) || (refused(x) && y == Admission::Probe),
            "{x:?} {y:?}"
        );
        assert_eq!(b.state().await.unwrap(), "half_open");
        assert!(refused(b.admit().await.unwrap()));
    }

    #[tokio::test]
    async fn a_successful_probe_closes_the_breaker() {
        let (b, _dir) = breaker(1).await;
        fail(&b, 1).await;
        tokio::time::sleep(COOLDOWN).await;
        assert_eq!(b.admit().await.unwrap(), Admission::Probe);
        b.record(true).await.unwrap();
        assert_eq!(b.state().await.unwrap(), "closed");
        assert_eq!(b.admit().await.unwrap(), Admission::Allowed);
        assert_eq!(b.metrics.closed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_failed_probe_opens_it_again_for_another_cool_down() {
        let (b, _dir) = breaker(3).await;
        fail(&b, 3).await;
        tokio::time::sleep(COOLDOWN).await;
        assert_eq!(b.admit().await.unwrap(), Admission::Probe);
        // One failure is enough in half-open, whatever the threshold.
        fail(&b, 1).await;
        assert_eq!(b.state().await.unwrap(), "open");
        assert!(refused(b.admit().await.unwrap()));
        assert_eq!(b.metrics.opened.load(Ordering::Relaxed), 2);
        tokio::time::sleep(COOLDOWN).await;
        assert_eq!(b.admit().await.unwrap(), Admission::Probe);
    }

    #[tokio::test]
    async fn a_probe_that_never_reports_back_is_replaced_after_the_cool_down() {
        let (b, _dir) = breaker(1).await;
        fail(&b, 1).await;
        tokio::time::sleep(COOLDOWN).await;
        assert_eq!(b.admit().await.unwrap(), Admission::Probe);
        assert!(refused(b.admit().await.unwrap()));
        tokio::time::sleep(COOLDOWN).await;
        assert_eq!(b.admit().await.unwrap(), Admission::Probe);
    }
}
