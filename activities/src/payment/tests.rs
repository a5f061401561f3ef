//! The payment context against a real gateway simulator on a random port: how
//! each answer is classified, what the breaker counts, what the ledger keeps.

use super::*;
use crate::config::DatabaseUrl;
use baedal_paysim::{Faults, Sim};
use sqlx::Executor;

const THRESHOLD: u32 = 3;

struct Fixture {
    ctx: PaymentContext,
    sim: Sim,
    _dir: tempfile::TempDir,
}

/// A fresh payment database (SQLite) and simulator; gateway deadline 200 ms,
/// breaker opening after three failures in a row, with a long cool-down.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::SqliteDir(dir.path().display().to_string());
    let db = crate::db::open(&url, "payment", &MIGRATOR).await.unwrap();
    let sim = Sim::default();
    let addr = baedal_paysim::spawn(sim.clone()).await.unwrap();
    let ctx = PaymentContext {
        breaker: Breaker::new(db.clone(), THRESHOLD, Duration::from_secs(60)),
        gateway: Gateway::new(&format!("http://{addr}"), Duration::from_millis(200)),
        db,
    };
    Fixture {
        ctx,
        sim,
        _dir: dir,
    }
}

fn charge_req(order: &str, token: &str) -> ChargeRequest {
    ChargeRequest {
        order_id: order.into(),
        amount: 12_000,
        token: token.into(),
        idempotency_key: format!("{order}:charge"),
    }
}

fn refund_req(order: &str, payment_id: &str, step: &str) -> RefundRequest {
    RefundRequest {
        order_id: order.into(),
        payment_id: payment_id.into(),
        amount: 12_000,
        idempotency_key: format!("{order}:{step}"),
    }
}

/// The ways a gateway is slow: the answer comes after the 200 ms deadline.
fn slow() -> Faults {
    Faults {
        latency: Duration::from_millis(600),
        fail_with: None,
    }
}

fn failing(code: u16) -> Faults {
    Faults {
        latency: Duration::ZERO,
        fail_with: Some(code),
    }
}

impl Fixture {
    async fn charged(&self, order: &str) -> String {
        match self.ctx.charge_once(&charge_req(order, "tok_ok")).await {
            Ok(ChargeOutcome::Approved { payment_id }) => payment_id,
            other => panic!("charge of {order}: {other:?}"),
        }
    }

    async fn breaker(&self) -> String {
        self.ctx.breaker.state().await.unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&self.ctx.db).await.unwrap();
        n
    }
}

#[tokio::test]
async fn refund_answers_are_classified() {
    let f = fixture().await;
    let pay = f.charged("o1").await;
    let req = refund_req("o1", &pay, "cancel");
    for code in [400, 404, 409, 422] {
        f.sim.fail_refunds_with(Some(code));
        match f.ctx.gateway.refund(&req).await {
            RefundAnswer::Refused { status, .. } => assert_eq!(status, code),
            other => panic!("{code}: {other:?}"),
        }
    }
    for code in [408, 429, 500, 502, 503] {
        f.sim.fail_refunds_with(Some(code));
        let answer = f.ctx.gateway.refund(&req).await;
        assert!(
            matches!(answer, RefundAnswer::Failed(_)),
            "{code}: {answer:?}"
        );
    }
    f.sim.fail_refunds_with(None);
    f.sim.set_faults(slow());
    let answer = f.ctx.gateway.refund(&req).await;
    assert!(
        matches!(&answer, RefundAnswer::Failed(m) if m.contains("no answer")),
        "{answer:?}"
    );
    f.sim.set_faults(Faults::default());
    assert_eq!(f.ctx.gateway.refund(&req).await, RefundAnswer::Refunded);
    // The late answer above had refunded already: the key's repeat moved nothing.
    assert_eq!(f.sim.charges_of("o1")[0].refund_count, 1);

    let nowhere = Gateway::new("http://127.0.0.1:9", Duration::from_millis(200));
    let answer = nowhere.refund(&req).await;
    assert!(matches!(answer, RefundAnswer::Failed(_)), "{answer:?}");
}

#[tokio::test]
async fn charge_answers_are_classified() {
    let f = fixture().await;
    let gw = &f.ctx.gateway;
    assert!(matches!(
        gw.charge(&charge_req("o1", "tok_ok")).await,
        GatewayAnswer::Approved(_)
    ));
    assert_eq!(
        gw.charge(&charge_req("o2", "tok_declined")).await,
        GatewayAnswer::Declined("card declined".into())
    );
    for code in [400, 404, 409, 422] {
        f.sim.set_faults(failing(code));
        let answer = gw.charge(&charge_req("o3", "tok_ok")).await;
        assert!(
            matches!(answer, GatewayAnswer::Declined(_)),
            "{code}: {answer:?}"
        );
    }
    for code in [408, 429, 500, 503] {
        f.sim.set_faults(failing(code));
        let answer = gw.charge(&charge_req("o3", "tok_ok")).await;
        assert!(
            matches!(answer, GatewayAnswer::Failed(_)),
            "{code}: {answer:?}"
        );
    }
    f.sim.set_faults(slow());
    let answer = gw.charge(&charge_req("o4", "tok_ok")).await;
    assert!(matches!(answer, GatewayAnswer::Failed(_)), "{answer:?}");
}

#[tokio::test]
async fn a_refund_the_gateway_refuses_is_refused_once_recorded_and_not_held_against_the_breaker() {
    let f = fixture().await;
    f.sim.fail_refunds_with(Some(404));
    for i in 0..(THRESHOLD + 2) {
        let order = format!("o{i}");
        let pay = f.charged(&order).await;
        let outcome = f
            .ctx
            .refund_once(&refund_req(&order, &pay, "cancel"))
            .await
            .unwrap();
        assert!(
            matches!(&outcome, RefundOutcome::Refused { message } if message.contains("404")),
            "{outcome:?}"
        );
    }
    assert_eq!(f.breaker().await, "closed");
    assert_eq!(f.count("SELECT COUNT(*) FROM refund_failures").await, 5);
    assert_eq!(f.count("SELECT COUNT(*) FROM refunds").await, 0);
    // Customers still pay.
    f.charged("after").await;

    // 422 the same.
    f.sim.fail_refunds_with(Some(422));
    let pay = f.charged("o422").await;
    let outcome = f
        .ctx
        .refund_once(&refund_req("o422", &pay, "cancel"))
        .await
        .unwrap();
    assert!(matches!(outcome, RefundOutcome::Refused { .. }));
    assert_eq!(f.breaker().await, "closed");
}

async fn transient_refund_failures_open_the_breaker(faults: Faults, refund_fail_with: Option<u16>) {
    let f = fixture().await;
    let pay = f.charged("o1").await;
    f.sim.set_faults(faults);
    f.sim.fail_refunds_with(refund_fail_with);
    let req = refund_req("o1", &pay, "cancel");
    for _ in 0..THRESHOLD {
        assert_eq!(f.breaker().await, "closed");
        let err = f.ctx.refund_once(&req).await.unwrap_err();
        assert!(err.to_string().contains("o1"), "{err}");
    }
    assert_eq!(f.breaker().await, "open");
    // Open: the next attempt fails without calling the gateway.
    let calls = f.sim.calls();
    assert!(f.ctx.refund_once(&req).await.is_err());
    assert_eq!(f.sim.calls(), calls);
    assert_eq!(f.count("SELECT COUNT(*) FROM refund_failures").await, 0);
}

#[tokio::test]
async fn refunds_answered_500_fail_the_attempt_and_open_the_breaker() {
    transient_refund_failures_open_the_breaker(Faults::default(), Some(500)).await;
}

#[tokio::test]
async fn refunds_answered_429_fail_the_attempt_and_open_the_breaker() {
    transient_refund_failures_open_the_breaker(Faults::default(), Some(429)).await;
}

#[tokio::test]
async fn refunds_timing_out_fail_the_attempt_and_open_the_breaker() {
    transient_refund_failures_open_the_breaker(slow(), None).await;
}

#[tokio::test]
async fn refunding_an_order_twice_moves_money_once() {
    let f = fixture().await;
    let pay = f.charged("o1").await;
    let req = refund_req("o1", &pay, "cancel");
    // The first attempt lands at the gateway but its answer comes too late.
    f.sim.set_faults(slow());
    assert!(f.ctx.refund_once(&req).await.is_err());
    f.sim.set_faults(Faults::default());
    assert_eq!(
        f.ctx.refund_once(&req).await.unwrap(),
        RefundOutcome::Refunded
    );
    let calls = f.sim.calls();
    assert_eq!(
        f.ctx.refund_once(&req).await.unwrap(),
        RefundOutcome::Refunded
    );
    assert_eq!(f.sim.calls(), calls, "the ledger answered the repeat");
    let p = &f.sim.charges_of("o1")[0];
    assert_eq!((p.refunded, p.refund_count), (12_000, 1));
    assert_eq!(f.count("SELECT COUNT(*) FROM refunds").await, 1);
}

#[tokio::test]
async fn a_second_refund_key_for_a_refunded_order_moves_no_money() {
    let f = fixture().await;
    let pay = f.charged("o1").await;
    let first = f
        .ctx
        .refund_once(&refund_req("o1", &pay, "cancel"))
        .await
        .unwrap();
    assert_eq!(first, RefundOutcome::Refunded);
    let second = f
        .ctx
        .refund_once(&refund_req("o1", &pay, "reconcile"))
        .await
        .unwrap();
    assert!(
        matches!(&second, RefundOutcome::Refused { message } if message.contains("409")),
        "{second:?}"
    );
    let p = &f.sim.charges_of("o1")[0];
    assert_eq!((p.refunded, p.refund_count), (12_000, 1));
    assert_eq!(f.breaker().await, "closed");
}

#[tokio::test]
async fn the_legacy_refund_retries_a_refusal_without_opening_the_breaker() {
    let f = fixture().await;
    let pay = f.charged("o1").await;
    let req = refund_req("o1", &pay, "cancel");
    f.sim.fail_refunds_with(Some(422));
    for _ in 0..(THRESHOLD + 2) {
        let err = f.ctx.refund_retrying(&req).await.unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
    }
    assert_eq!(f.breaker().await, "closed");
    // Whatever an operator fixed at the gateway, the next retry goes through.
    f.sim.fail_refunds_with(None);
    f.ctx.refund_retrying(&req).await.unwrap();
    assert_eq!(f.sim.charges_of("o1")[0].refund_count, 1);
    assert_eq!(f.count("SELECT COUNT(*) FROM refunds").await, 1);
}

#[tokio::test]
async fn a_charge_refused_with_4xx_is_declined_and_the_gateway_counts_as_healthy() {
    let f = fixture().await;
    f.sim.set_faults(failing(400));
    for i in 0..(THRESHOLD + 2) {
        let outcome = f
            .ctx
            .charge_once(&charge_req(&format!("o{i}"), "tok_ok"))
            .await
            .unwrap();
        assert!(
            matches!(outcome, ChargeOutcome::Declined { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(f.breaker().await, "closed");
    assert_eq!(
        f.count("SELECT COUNT(*) FROM charges WHERE outcome = 'DECLINED'")
            .await,
        5
    );
    // Declines (402) are healthy too; 5xx are not.
    f.sim.set_faults(Faults::default());
    for i in 0..(THRESHOLD + 2) {
        let outcome = f
            .ctx
            .charge_once(&charge_req(&format!("d{i}"), "tok_declined"))
            .await
            .unwrap();
        assert!(matches!(outcome, ChargeOutcome::Declined { .. }));
    }
    assert_eq!(f.breaker().await, "closed");
    f.sim.set_faults(failing(503));
    for i in 0..THRESHOLD {
        let outcome = f
            .ctx
            .charge_once(&charge_req(&format!("u{i}"), "tok_ok"))
            .await
            .unwrap();
        assert!(matches!(outcome, ChargeOutcome::Unavailable { .. }));
    }
    assert_eq!(f.breaker().await, "open");
}

#[tokio::test]
async fn settling_a_charge_the_gateway_refuses_finds_nothing_charged() {
    let f = fixture().await;
    f.sim.set_faults(failing(404));
    for i in 0..(THRESHOLD + 1) {
        let outcome = f
            .ctx
            .settle(&charge_req(&format!("o{i}"), "tok_ok"))
            .await
            .unwrap();
        assert_eq!(outcome, SettleOutcome::NothingCharged);
    }
    assert_eq!(f.breaker().await, "closed");
    assert!(f.sim.payments().is_empty());
}

#[tokio::test]
async fn settling_a_charge_that_landed_late_refunds_it_once() {
    let f = fixture().await;
    f.sim.set_faults(slow());
    let req = charge_req("o1", "tok_ok");
    assert!(matches!(
        f.ctx.charge_once(&req).await.unwrap(),
        ChargeOutcome::Unavailable { .. }
    ));
    f.sim.set_faults(Faults::default());
    for _ in 0..2 {
        let outcome = f.ctx.settle(&req).await.unwrap();
        assert!(
            matches!(outcome, SettleOutcome::Refunded { .. }),
            "{outcome:?}"
        );
    }
    let p = &f.sim.charges_of("o1")[0];
    assert_eq!((p.refunded, p.refund_count), (12_000, 1));
}

/// Fills the ledger by hand and checks which charges the reconciliation is given.
async fn unsettled_charges_are_the_old_approved_unrefunded_ones(db: &Db) {
    let charge = |key: &str, order: &str, outcome: &str, payment: Option<&str>, at: i64| {
        sqlx::query(
            "INSERT INTO charges (idempotency_key, order_id, amount, outcome, payment_id, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.to_string())
        .bind(order.to_string())
        .bind(5_000_i64)
        .bind(outcome.to_string())
        .bind(payment.map(str::to_string))
        .bind(at)
        .execute(db)
    };
    charge("old:charge", "old", "APPROVED", Some("pay_old"), 100)
        .await
        .unwrap();
    charge("older:charge", "older", "APPROVED", Some("pay_older"), 50)
        .await
        .unwrap();
    charge(
        "young:charge",
        "young",
        "APPROVED",
        Some("pay_young"),
        1_000,
    )
    .await
    .unwrap();
    charge("edge:charge", "edge", "APPROVED", Some("pay_edge"), 500)
        .await
        .unwrap();
    charge("declined:charge", "declined", "DECLINED", None, 100)
        .await
        .unwrap();
    charge("unknown:charge", "unknown", "UNAVAILABLE", None, 100)
        .await
        .unwrap();
    charge(
        "refunded:charge",
        "refunded",
        "APPROVED",
        Some("pay_r"),
        100,
    )
    .await
    .unwrap();
    charge("failed:charge", "failed", "APPROVED", Some("pay_f"), 100)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO refunds (idempotency_key, order_id, payment_id, amount, refunded_at)
         VALUES ('refunded:refund-late', 'refunded', 'pay_r', 5000, 200)",
    )
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO refund_failures
             (idempotency_key, order_id, payment_id, amount, http_status, message, failed_at)
         VALUES ('failed:cancel', 'failed', 'pay_f', 5000, 404, 'no such payment', 200)",
    )
    .execute(db)
    .await
    .unwrap();

    let ctx = PaymentContext {
        db: db.clone(),
        gateway: Gateway::new("http://127.0.0.1:9", Duration::from_millis(100)),
        breaker: Breaker::new(db.clone(), THRESHOLD, Duration::from_secs(60)),
    };
    let got = ctx
        .unsettled(&UnsettledQuery {
            charged_before: 500,
        })
        .await
        .unwrap();
    let want = |order: &str, payment: &str| UnsettledCharge {
        order_id: order.into(),
        payment_id: payment.into(),
        amount: 5_000,
    };
    assert_eq!(
        got,
        vec![want("older", "pay_older"), want("old", "pay_old")]
    );
    let later = ctx
        .unsettled(&UnsettledQuery {
            charged_before: i64::MAX,
        })
        .await
        .unwrap();
    let orders: Vec<_> = later.iter().map(|c| c.order_id.as_str()).collect();
    assert_eq!(orders, ["older", "old", "edge", "young"]);
}

#[tokio::test]
async fn unsettled_charges_on_sqlite() {
    let f = fixture().await;
    unsettled_charges_are_the_old_approved_unrefunded_ones(&f.ctx.db).await;
}

/// On the test Postgres server (`BAEDAL_TEST_POSTGRES_URL`, or the local default
/// when it answers), in a database of its own that is dropped afterwards.
#[tokio::test]
async fn unsettled_charges_on_postgres() {
    let explicit = std::env::var("BAEDAL_TEST_POSTGRES_URL").ok();
    let base = explicit
        .clone()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let admin =
        match tokio::time::timeout(Duration::from_secs(5), sqlx::AnyPool::connect(&base)).await {
            Ok(Ok(pool)) => pool,
            failed if explicit.is_none() => {
                eprintln!("skipped: no Postgres at {base} ({:?})", failed.err());
                return;
            }
            Ok(Err(e)) => panic!("connecting to {base}: {e}"),
            Err(_) => panic!("connecting to {base}: timed out"),
        };
    // Not `baedal_test_*`: the end-to-end harness drops those of other processes.
    let name = format!(
        "baedal_paytest_{}_{}",
        std::process::id(),
        crate::time::now_ms()
    );
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = DatabaseUrl::Postgres(format!("{prefix}/{name}"));
    let db = crate::db::open(&url, "payment", &MIGRATOR).await.unwrap();
    unsettled_charges_are_the_old_approved_unrefunded_ones(&db).await;
    db.close().await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
}
