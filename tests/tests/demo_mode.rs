//! Demo data only in demo mode: `BAEDAL_DEMO=1` seeds the demo accounts, shops
//! and riders; without it a fresh store has none, so the published demo
//! password opens nothing; demo mode refuses a non-loopback address unless
//! `BAEDAL_DEMO_PUBLIC=1` says that is meant. Each seeded account has a hash of
//! its own.

use baedal_activities::{Config, db, identity};
use baedal_tests::*;
use serde_json::{Value, json};
use std::collections::HashMap;

/// A call that needs no login.
async fn public(s: &Stack, path: &str) -> (u16, Value) {
    let r = s.http.get(s.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn without_demo_mode_nothing_is_seeded_and_the_demo_password_opens_nothing(postgres: bool) {
    let mut opts = StackOptions::default();
    opts.env.push(("BAEDAL_DEMO", "0".into()));
    let s = spawn_stack_with(on_store(postgres, opts)).await;
    for user in ["customer1", "owner1", "rider1"] {
        let r = s
            .http
            .post(s.url("/api/auth/login"))
            .json(&json!({"username": user, "password": "demo"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{user}");
    }
    let (code, shops) = public(&s, "/api/shops").await;
    assert_eq!((code, shops), (200, json!([])));
    let (code, _) = public(&s, "/api/shops/shop1/menu").await;
    assert_eq!(code, 404);
}

async fn demo_mode_seeds_accounts_shops_and_riders_each_account_with_its_own_salt(postgres: bool) {
    let s = spawn_stack_with(on_store(postgres, StackOptions::default())).await;
    let (_, shops) = public(&s, "/api/shops").await;
    assert_eq!(shops.as_array().map(Vec::len), Some(2), "{shops}");
    let riders = s.riders(6).await;
    assert_eq!(riders.len(), 6);
    let identity = db::open(&s.cfg.database, "identity", &identity::MIGRATOR)
        .await
        .unwrap();
    let hashes: Vec<(String,)> = sqlx::query_as("SELECT password_hash FROM users")
        .fetch_all(&identity)
        .await
        .unwrap();
    let distinct: std::collections::HashSet<_> = hashes.iter().collect();
    assert!(hashes.len() >= 10, "{} accounts", hashes.len());
    assert_eq!(distinct.len(), hashes.len(), "two accounts share a hash");
}

#[tokio::test]
async fn demo_mode_on_a_public_address_needs_to_be_meant() {
    let build = |pairs: &[(&str, &str)]| {
        let mut env: HashMap<String, String> = HashMap::from([
            ("TEMPORAL_ADDRESS".into(), temporal_address()),
            ("BAEDAL_DEMO".into(), "1".into()),
        ]);
        let dir = tempfile::tempdir().unwrap();
        env.insert(
            "DATABASE_URL".into(),
            format!("sqlite:{}", dir.path().display()),
        );
        for (k, v) in pairs {
            env.insert(k.to_string(), v.to_string());
        }
        let cfg = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
        async move {
            let built = baedal_api::AppState::build(cfg).await;
            drop(dir);
            built.map(|_| ()).map_err(|e| e.to_string())
        }
    };
    let refused = build(&[("HTTP_ADDR", "0.0.0.0:8080")]).await.unwrap_err();
    assert!(refused.contains("BAEDAL_DEMO_PUBLIC"), "{refused}");
    build(&[("HTTP_ADDR", "0.0.0.0:8080"), ("BAEDAL_DEMO_PUBLIC", "1")])
        .await
        .unwrap();
    build(&[("HTTP_ADDR", "127.0.0.1:8080")]).await.unwrap();
}

on_both_stores!(
    without_demo_mode_nothing_is_seeded_and_the_demo_password_opens_nothing,
    demo_mode_seeds_accounts_shops_and_riders_each_account_with_its_own_salt,
);
