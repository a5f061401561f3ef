//! Idempotency keys: what a caller's `Idempotency-Key` already stands for.
//!
//! A key is the caller's own and serves one request: one placement (a body,
//! and the order it placed), or one action on one order (and its first answer).
//! Using it for anything else is refused by the API (422).

use crate::db::Db;
use crate::time::now_ms;

/// What a placement's key leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Nothing is placed under this key yet (lookup), or this claim won it
    /// (claim): place the order under the id given.
    New,
    /// The key was used before with the same body: that order.
    Existing(String),
    /// The key was used before with another body, or for an action.
    Conflict,
}

async fn spent_on_placement(db: &Db, caller: &str, key: &str) -> anyhow::Result<bool> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT order_id FROM placements WHERE customer_id = $1 AND idempotency_key = $2",
    )
    .bind(caller)
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

async fn spent_on_action(db: &Db, caller: &str, key: &str) -> anyhow::Result<bool> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT order_id FROM action_answers WHERE caller_id = $1 AND idempotency_key = $2",
    )
    .bind(caller)
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// What a placement key stands for now, without claiming it.
pub async fn find_placement(
    db: &Db,
    customer_id: &str,
    key: &str,
    body_hash: &str,
) -> anyhow::Result<Placement> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT body_hash, order_id FROM placements WHERE customer_id = $1 AND idempotency_key = $2",
    )
    .bind(customer_id)
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some((hash, id)) if hash == body_hash => Placement::Existing(id),
        Some(_) => Placement::Conflict,
        None if spent_on_action(db, customer_id, key).await? => Placement::Conflict,
        None => Placement::New,
    })
}

/// Claims an idempotency key for a placement (atomic: the first claim wins).
pub async fn claim_key(
    db: &Db,
    customer_id: &str,
    key: &str,
    body_hash: &str,
    order_id: &str,
) -> anyhow::Result<Placement> {
    if spent_on_action(db, customer_id, key).await? {
        return Ok(Placement::Conflict);
    }
    let inserted = sqlx::query(
        "INSERT INTO placements (customer_id, idempotency_key, body_hash, order_id, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_id, idempotency_key) DO NOTHING",
    )
    .bind(customer_id)
    .bind(key)
    .bind(body_hash)
    .bind(order_id)
    .bind(now_ms())
    .execute(db)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Placement::New);
    }
    find_placement(db, customer_id, key, body_hash).await
}

/// Points a placement key from an attempt that was not established (declined,
/// payment unavailable) to a new order id. Compare-and-swap on the old id, so
/// of two retries racing, one moves it and both place the same new order.
/// Returns the id the key names afterwards.
pub async fn move_placement(
    db: &Db,
    customer_id: &str,
    key: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<String> {
    let moved = sqlx::query(
        "UPDATE placements SET order_id = $1
         WHERE customer_id = $2 AND idempotency_key = $3 AND order_id = $4",
    )
    .bind(to)
    .bind(customer_id)
    .bind(key)
    .bind(from)
    .execute(db)
    .await?
    .rows_affected();
    if moved == 1 {
        return Ok(to.to_string());
    }
    let (now,): (String,) = sqlx::query_as(
        "SELECT order_id FROM placements WHERE customer_id = $1 AND idempotency_key = $2",
    )
    .bind(customer_id)
    .bind(key)
    .fetch_one(db)
    .await?;
    Ok(now)
}

/// One caller's action on one order, sent with an idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct KeyedAction<'a> {
    pub caller: &'a str,
    pub key: &'a str,
    pub order_id: &'a str,
    /// `cancel`, `accept`, `offer.accept`, ...
    pub action: &'a str,
}

/// What an action's key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKey {
    /// Never used.
    Unused,
    /// Claimed for this order and action; no final answer yet (the attempt is
    /// under way, or ended retryable).
    Open,
    /// This order and action's first answer, to send again as it was.
    Answered { status: u16, body: String },
    /// Used for another order, another action or a placement.
    Conflict,
}

/// What the key stands for now, without claiming it.
pub async fn find_action(db: &Db, a: KeyedAction<'_>) -> anyhow::Result<ActionKey> {
    let row: Option<(String, String, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT order_id, action, status, body FROM action_answers
         WHERE caller_id = $1 AND idempotency_key = $2",
    )
    .bind(a.caller)
    .bind(a.key)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some((order, action, _, _)) if order != a.order_id || action != a.action => {
            ActionKey::Conflict
        }
        Some((_, _, Some(status), Some(body))) => ActionKey::Answered {
            status: u16::try_from(status)?,
            body,
        },
        Some(_) => ActionKey::Open,
        None if spent_on_placement(db, a.caller, a.key).await? => ActionKey::Conflict,
        None => ActionKey::Unused,
    })
}

/// Claims the key for this action before it is sent (the first claim wins):
/// the same key cannot be spent on two orders or actions at once. Never
/// answers `Unused`.
pub async fn claim_action(db: &Db, a: KeyedAction<'_>) -> anyhow::Result<ActionKey> {
    if spent_on_placement(db, a.caller, a.key).await? {
        return Ok(ActionKey::Conflict);
    }
    sqlx::query(
        "INSERT INTO action_answers (caller_id, idempotency_key, order_id, action, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (caller_id, idempotency_key) DO NOTHING",
    )
    .bind(a.caller)
    .bind(a.key)
    .bind(a.order_id)
    .bind(a.action)
    .bind(now_ms())
    .execute(db)
    .await?;
    find_action(db, a).await
}

/// Keeps the action's final answer, unless one is kept already (two repeats
/// racing), and returns the one kept: every repeat answers the same.
pub async fn answer_action(
    db: &Db,
    a: KeyedAction<'_>,
    status: u16,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    sqlx::query(
        "UPDATE action_answers SET status = $1, body = $2
         WHERE caller_id = $3 AND idempotency_key = $4 AND order_id = $5 AND action = $6
           AND status IS NULL",
    )
    .bind(i64::from(status))
    .bind(body)
    .bind(a.caller)
    .bind(a.key)
    .bind(a.order_id)
    .bind(a.action)
    .execute(db)
    .await?;
    Ok(match find_action(db, a).await? {
        ActionKey::Answered { status, body } => (status, body),
        // Nothing claimed to fill in (the caller did not claim first): send it as is.
        _ => (status, body.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh in-memory order database with every migration applied.
    async fn db() -> Db {
        sqlx::any::install_default_drivers();
        // One connection, kept: every query sees the same in-memory database.
        let db = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        super::super::MIGRATOR.run(&db).await.unwrap();
        db
    }

    fn cancel<'a>(key: &'a str, order_id: &'a str) -> KeyedAction<'a> {
        KeyedAction {
            caller: "customer1",
            key,
            order_id,
            action: "cancel",
        }
    }

    #[tokio::test]
    async fn a_placement_key_names_one_body_and_moves_once() {
        let db = db().await;
        let find = |hash: &'static str| find_placement(&db, "customer1", "k", hash);
        assert_eq!(find("h").await.unwrap(), Placement::New);
        assert_eq!(
            claim_key(&db, "customer1", "k", "h", "o1").await.unwrap(),
            Placement::New
        );
        assert_eq!(
            claim_key(&db, "customer1", "k", "h", "o2").await.unwrap(),
            Placement::Existing("o1".into())
        );
        assert_eq!(find("other").await.unwrap(), Placement::Conflict);

        // Two retries of a declined o1: the first moves the key, the second joins it.
        let first = move_placement(&db, "customer1", "k", "o1", "o3");
        assert_eq!(first.await.unwrap(), "o3");
        let second = move_placement(&db, "customer1", "k", "o1", "o4");
        assert_eq!(second.await.unwrap(), "o3");
        assert_eq!(find("h").await.unwrap(), Placement::Existing("o3".into()));
    }

    #[tokio::test]
    async fn an_action_key_keeps_the_first_answer_for_its_order_and_action() {
        let db = db().await;
        let a = cancel("k", "o1");
        assert_eq!(find_action(&db, a).await.unwrap(), ActionKey::Unused);
        assert_eq!(claim_action(&db, a).await.unwrap(), ActionKey::Open);
        assert_eq!(claim_action(&db, a).await.unwrap(), ActionKey::Open);
        assert_eq!(
            answer_action(&db, a, 200, "{\"status\":\"CANCELLED\"}")
                .await
                .unwrap(),
            (200, "{\"status\":\"CANCELLED\"}".to_string())
        );
        // A racing repeat's later answer does not replace the first.
        assert_eq!(
            answer_action(&db, a, 409, "{}").await.unwrap(),
            (200, "{\"status\":\"CANCELLED\"}".to_string())
        );
        assert_eq!(
            find_action(&db, a).await.unwrap(),
            ActionKey::Answered {
                status: 200,
                body: "{\"status\":\"CANCELLED\"}".into()
            }
        );

        // The same key for another order, or another action: refused.
        assert_eq!(
            find_action(&db, cancel("k", "o2")).await.unwrap(),
            ActionKey::Conflict
        );
        let accept = KeyedAction {
            action: "accept",
            ..a
        };
        assert_eq!(
            claim_action(&db, accept).await.unwrap(),
            ActionKey::Conflict
        );
    }

    #[tokio::test]
    async fn a_key_serves_either_a_placement_or_an_action() {
        let db = db().await;
        claim_key(&db, "customer1", "placed", "h", "o1")
            .await
            .unwrap();
        assert_eq!(
            claim_action(&db, cancel("placed", "o1")).await.unwrap(),
            ActionKey::Conflict
        );
        claim_action(&db, cancel("acted", "o1")).await.unwrap();
        assert_eq!(
            claim_key(&db, "customer1", "acted", "h", "o2")
                .await
                .unwrap(),
            Placement::Conflict
        );
        // Keys are each caller's own.
        let theirs = KeyedAction {
            caller: "customer2",
            ..cancel("acted", "o9")
        };
        assert_eq!(claim_action(&db, theirs).await.unwrap(), ActionKey::Open);
    }
}
