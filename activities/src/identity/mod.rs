//! Identity: the login accounts of every role and the token-signing key.

use crate::db::Db;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::FromRow;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/identity");

#[derive(Debug, Clone, FromRow)]
pub struct User {
    pub id: String,
    pub password_hash: String,
    pub role: String,
    pub shop_id: Option<String>,
}

pub const DEMO_PASSWORD: &str = "demo";

/// Seeds the demo accounts once: customers, the two shops' owners, and riders.
pub async fn seed_demo(db: &Db, riders: u32) -> anyhow::Result<()> {
    let mut wanted: Vec<(String, &str, Option<&str>)> = vec![
        ("customer1".into(), "customer", None),
        ("customer2".into(), "customer", None),
        ("owner1".into(), "owner", Some("shop1")),
        ("owner2".into(), "owner", Some("shop2")),
    ];
    wanted.extend((1..=riders).map(|i| (format!("rider{i}"), "rider", None)));
    let existing: Vec<(String,)> = sqlx::query_as("SELECT id FROM users").fetch_all(db).await?;
    let existing: std::collections::HashSet<String> = existing.into_iter().map(|r| r.0).collect();
    let missing: Vec<_> = wanted
        .into_iter()
        .filter(|(id, _, _)| !existing.contains(id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // One hash (and so one salt) per account, even though they share the demo
    // password: a cracked hash must not open every account. Argon2 is slow on
    // purpose, so the hashes are made off the async runtime, a core each.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut hashed = Vec::with_capacity(missing.len());
    for chunk in missing.chunks(missing.len().div_ceil(cores)) {
        let chunk = chunk.to_vec();
        hashed.push(tokio::task::spawn_blocking(move || {
            chunk
                .into_iter()
                .map(|(id, role, shop)| Ok((id, role, shop, hash_password(DEMO_PASSWORD)?)))
                .collect::<anyhow::Result<Vec<_>>>()
        }));
    }
    let mut accounts = Vec::with_capacity(missing.len());
    for chunk in hashed {
        accounts.extend(chunk.await??);
    }
    // Every hash is made before the transaction starts: a transaction awaits
    // nothing but its own statements (statements run inline, db::Sqlite).
    let mut tx = db.begin().await?;
    for (id, role, shop, hash) in accounts {
        sqlx::query(
            "INSERT INTO users (id, password_hash, role, shop_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(hash)
        .bind(role)
        .bind(shop.map(str::to_string))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// The account, if the password matches. Argon2 runs off the async runtime,
/// and an unknown account is checked against a stand-in hash: the answer takes
/// the same work whether the account exists or not.
pub async fn verify_login(db: &Db, username: &str, password: &str) -> anyhow::Result<Option<User>> {
    let user: Option<User> =
        sqlx::query_as("SELECT id, password_hash, role, shop_id FROM users WHERE id = $1")
            .bind(username)
            .fetch_optional(db)
            .await?;
    let stored = match &user {
        Some(u) => u.password_hash.clone(),
        None => stand_in_hash().to_string(),
    };
    let password = password.to_string();
    let name = username.to_string();
    let matches = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| anyhow::anyhow!("stored hash of {name} is unreadable: {e}"))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await??;
    Ok(user.filter(|_| matches))
}

/// A hash of a random password no one knows, made with the same parameters as
/// every account's.
pub fn stand_in_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(&format!("{:032x}", uuid_like())).expect("hashing a stand-in password")
    })
}

fn uuid_like() -> u128 {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    u128::from_le_bytes(b)
}
