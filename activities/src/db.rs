//! One database per context: a SQLite file each under the data directory, or a
//! Postgres schema each. Queries use `$1` placeholders and plain types so the
//! same SQL runs on both through sqlx's `Any` driver.

use crate::config::DatabaseUrl;
use anyhow::Context as _;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
pub use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};
use std::time::Duration;

pub type Db = AnyPool;

/// SQLite connections of a pool that serves many readers at once (the API).
pub const SQLITE_READERS: u32 = 8;
/// SQLite connections of a worker's pool. A worker's statements are short
/// and few at a time (a feed consumer applies one change after another), and
/// SQLite writes one at a time anyway. Each connection has its own page
/// cache, which a write through another connection voids: with two, each
/// stays warm. Measured against eight back to back: the workers' CPU per
/// order 5–8 % lower against Temporal's, their memory a fifth lower
/// (BENCHMARKS.md).
pub const SQLITE_WORKER: u32 = 2;

/// Opens (creating if needed) the named context's database and migrates it,
/// with [`SQLITE_READERS`] connections on SQLite.
pub async fn open(url: &DatabaseUrl, context: &str, migrator: &Migrator) -> anyhow::Result<Db> {
    open_with(url, context, migrator, SQLITE_READERS).await
}

/// [`open`] with `sqlite_connections` connections on SQLite (Postgres: 10).
///
/// SQLite statements run on the calling thread (`statements=inline`, the option
/// patched into sqlx's SQLite driver in `vendor/sqlx-sqlite`), not on a
/// thread of the connection's own. Handing every statement to that thread and
/// being woken with its result was the largest single cost of the workers and
/// the API: two thread wake-ups per statement, four for `BEGIN` and for
/// `COMMIT`. Back to back, inline statements cut the workers' CPU per order
/// by about a fifth and the API's by about a quarter, against Temporal's
/// (BENCHMARKS.md). The calling thread is blocked while SQLite works,
/// including while it waits for another process's write lock, so a
/// transaction awaits nothing but its own statements: another task's write
/// on the same thread would wait for a lock that cannot be released.
pub async fn open_with(
    url: &DatabaseUrl,
    context: &str,
    migrator: &Migrator,
    sqlite_connections: u32,
) -> anyhow::Result<Db> {
    install_default_drivers();
    let pool = match url {
        DatabaseUrl::SqliteDir(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
            let url = format!("sqlite://{dir}/{context}.db?mode=rwc&statements=inline");
            let pool = AnyPoolOptions::new()
                .max_connections(sqlite_connections)
                // A connection to a local file does not drop: no ping before
                // every use (it was ~3 % of a worker's CPU).
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // API and workers are separate processes sharing the file.
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        // Reads through a memory map of the file instead of a
                        // read call per page (preads were ~5 % of a worker).
                        conn.execute("PRAGMA mmap_size = 268435456").await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .with_context(|| format!("opening {url}"))?;
            // Password hashes, addresses, phone numbers: for this user's eyes only.
            restrict_to_owner(&format!("{dir}/{context}.db"))?;
            pool
        }
        DatabaseUrl::Postgres(base) => {
            let schema = format!("baedal_{context}");
            let admin = AnyPoolOptions::new()
                .max_connections(1)
                .connect(base)
                .await?;
            // Two processes starting at once may race to create the schema.
            let _ = admin
                .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
                .await;
            admin.close().await;
            let set_path = format!("SET search_path TO {schema}");
            AnyPoolOptions::new()
                .max_connections(10)
                .after_connect(move |conn, _| {
                    let set_path = set_path.clone();
                    Box::pin(async move {
                        conn.execute(set_path.as_str()).await?;
                        Ok(())
                    })
                })
                .connect(base)
                .await
                .with_context(|| format!("opening Postgres schema {schema}"))?
        }
    };
    if let DatabaseUrl::SqliteDir(_) = url {
        pool.execute("PRAGMA journal_mode = WAL").await?;
    }
    migrate(&pool, context, migrator).await?;
    Ok(pool)
}

/// The API and the workers migrate on start; when they race, the loser retries.
async fn migrate(pool: &Db, context: &str, migrator: &Migrator) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing::debug!(context, error = %e, "migration raced, retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("migrating the {context} database")),
        }
    }
}

/// Makes a file readable and writable by its owner only (0600).
pub fn restrict_to_owner(path: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {path} private (0600)"))
}

/// `rows` copies of `row` joined by `sep`, each `?` in them numbered in turn
/// from `$first`: `numbered(1, 2, "(?, ?, 0)", ", ")` is
/// `($1, $2, 0), ($3, $4, 0)`. For statements that take many rows at once
/// (one statement instead of one per row); the Any driver passes `$n` to
/// SQLite and Postgres alike.
pub fn numbered(first: usize, rows: usize, row: &str, sep: &str) -> String {
    let mut out = String::new();
    let mut n = first;
    for i in 0..rows {
        if i > 0 {
            out.push_str(sep);
        }
        for (j, part) in row.split('?').enumerate() {
            if j > 0 {
                out.push_str(&format!("${n}"));
                n += 1;
            }
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_are_numbered_across_rows_from_the_first() {
        assert_eq!(
            numbered(1, 2, "(?, ?, 0)", ", "),
            "($1, $2, 0), ($3, $4, 0)"
        );
        assert_eq!(
            numbered(1, 2, "(a = ? AND b = ?)", " OR "),
            "(a = $1 AND b = $2) OR (a = $3 AND b = $4)"
        );
        assert_eq!(numbered(3, 3, "?", ", "), "$3, $4, $5");
        assert_eq!(numbered(1, 0, "(?)", ", "), "");
    }
}

/// The patched driver's inline statements behave as the threaded driver's
/// do: transactions commit, roll back (explicitly, when dropped, after a
/// failed statement), every row comes back, and a writer waits for another
/// connection's write lock instead of failing.
#[cfg(test)]
mod inline_tests {
    use super::{Db, SQLITE_READERS, SQLITE_WORKER, open_with};
    use crate::config::DatabaseUrl;

    async fn store(dir: &tempfile::TempDir, connections: u32) -> Db {
        let url = DatabaseUrl::SqliteDir(dir.path().display().to_string());
        let db = open_with(&url, "scratch", &crate::notification::MIGRATOR, connections)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)")
            .execute(&db)
            .await
            .unwrap();
        db
    }

    async fn keys(db: &Db) -> Vec<String> {
        sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(db)
            .await
            .unwrap()
    }

    async fn put<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(
        db: E,
        k: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO t (k, v) VALUES ($1, 1)")
            .bind(k)
            .execute(db)
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn inline_statements_commit_roll_back_and_return_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let db = store(&dir, SQLITE_WORKER).await;

        let mut tx = db.begin().await.unwrap();
        put(&mut *tx, "a").await.unwrap();
        put(&mut *tx, "b").await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = db.begin().await.unwrap();
        put(&mut *tx, "dropped").await.unwrap();
        drop(tx);

        let mut tx = db.begin().await.unwrap();
        put(&mut *tx, "rolled back").await.unwrap();
        tx.rollback().await.unwrap();

        // A failed statement (the key exists) fails its transaction, which
        // then rolls back as it drops; the connection is usable afterwards.
        let mut tx = db.begin().await.unwrap();
        put(&mut *tx, "c").await.unwrap();
        assert!(put(&mut *tx, "a").await.is_err());
        drop(tx);
        assert_eq!(keys(&db).await, ["a", "b"]);

        // More rows than the threaded driver's row channel holds (50).
        for n in 0..120 {
            put(&db, &format!("n{n:03}")).await.unwrap();
        }
        let all = keys(&db).await;
        assert_eq!(all.len(), 122);
        assert_eq!(all.last().map(String::as_str), Some("n119"));
        let first: Option<String> =
            sqlx::query_scalar("SELECT k FROM t WHERE k LIKE 'n%' ORDER BY k")
                .fetch_optional(&db)
                .await
                .unwrap();
        assert_eq!(first.as_deref(), Some("n000"));
    }

    #[tokio::test]
    async fn an_inline_writer_waits_for_another_connections_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let inline = store(&dir, SQLITE_WORKER).await;
        // Another process's connection, on a thread and runtime of its own,
        // holds the write lock until told to commit.
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (commit_tx, commit_rx) = std::sync::mpsc::channel::<()>();
        let path = dir.path().display().to_string();
        let holder = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let url = DatabaseUrl::SqliteDir(path);
                let other = open_with(
                    &url,
                    "scratch",
                    &crate::notification::MIGRATOR,
                    SQLITE_READERS,
                )
                .await
                .unwrap();
                let mut tx = other.begin().await.unwrap();
                put(&mut *tx, "first").await.unwrap();
                locked_tx.send(()).unwrap();
                let _ = tokio::task::spawn_blocking(move || commit_rx.recv()).await;
                tx.commit().await.unwrap();
            });
        });
        locked_rx.recv().unwrap();
        // Let the holder commit a little later, from a thread this one's
        // blocking wait does not hold up.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            commit_tx.send(()).unwrap();
        });
        put(&inline, "second").await.unwrap();
        release.join().unwrap();
        holder.join().unwrap();
        assert_eq!(keys(&inline).await, ["first", "second"]);
    }
}
