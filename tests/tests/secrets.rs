//! Secrets at rest: the token-signing key lives in a file of its own, readable
//! by this user only (made when missing), not beside the password hashes; the
//! stores' files are 0600 too; rotating the key keeps the previous key's tokens
//! valid until they expire, and only while the previous key is named. Personal
//! data rests in Temporal sealed by the payload codec, and operators read it
//! through the codec endpoint.

use baedal_activities::{DatabaseUrl, db, identity};
use baedal_tests::*;
use std::os::unix::fs::PermissionsExt;

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_and_the_stores_are_private_files_and_the_key_is_not_in_a_store() {
    let s = spawn_stack().await;
    let key = s.cfg.auth_signing_key_file.clone();
    assert_eq!(mode(&key), 0o600, "{key}");
    assert!(std::fs::read(&key).unwrap().len() >= 32);
    let DatabaseUrl::SqliteDir(dir) = &s.cfg.database else {
        panic!("SQLite expected")
    };
    for context in [
        "identity",
        "order",
        "payment",
        "shop",
        "delivery",
        "notification",
    ] {
        assert_eq!(mode(&format!("{dir}/{context}.db")), 0o600, "{context}.db");
    }
    let store = db::open(&s.cfg.database, "identity", &identity::MIGRATOR)
        .await
        .unwrap();
    let kept: Vec<(String,)> = sqlx::query_as("SELECT name FROM secrets")
        .fetch_all(&store)
        .await
        .unwrap();
    assert!(kept.is_empty(), "{kept:?}");
    // Logins work with it, and a restart (a second gateway) reads the same key.
    let token = s.login("customer1").await;
    let other = s.spawn_api_with(s.cfg.clone()).await;
    let r = s
        .http
        .get(format!("{other}/api/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

async fn a_rotated_key_keeps_the_previous_keys_tokens_valid_while_it_is_named(postgres: bool) {
    let s = spawn_stack_with(on_store(postgres, StackOptions::default())).await;
    let old_token = s.login("customer1").await;
    let dir = tempfile::tempdir().unwrap();
    let new_key = format!("{}/new.key", dir.path().display());

    // Rotated: the new key signs, the old one is still accepted.
    let mut rotated = s.cfg.clone();
    rotated.auth_previous_signing_key_file = Some(rotated.auth_signing_key_file.clone());
    rotated.auth_signing_key_file = new_key.clone();
    let api = s.spawn_api_with(rotated).await;
    let get = |base: String, token: String| {
        let http = s.http.clone();
        async move {
            http.get(format!("{base}/api/orders"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(api.clone(), old_token.clone()).await, 200);
    let r = s
        .http
        .post(format!("{api}/api/auth/login"))
        .json(&serde_json::json!({"username": "customer1", "password": "demo"}))
        .send()
        .await
        .unwrap();
    let new_token = r.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(api, new_token.clone()).await, 200);
    // The old gateway never knew the new key.
    assert_eq!(get(s.base.clone(), new_token.clone()).await, 401);

    // Once the previous key is no longer named, its tokens are refused.
    let mut only_new = s.cfg.clone();
    only_new.auth_signing_key_file = new_key;
    let api = s.spawn_api_with(only_new).await;
    assert_eq!(get(api.clone(), old_token).await, 401);
    assert_eq!(get(api, new_token).await, 200);
}

#[tokio::test]
async fn a_key_too_short_to_sign_with_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = format!("{}/short.key", dir.path().display());
    std::fs::write(&path, "too short").unwrap();
    let err = baedal_api::auth::Keys::from_files(&path, None, 60)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("shorter than"), "{err}");
}

/// Every string in a JSON value, and what it reads as when it is base64.
fn texts(v: &serde_json::Value, out: &mut Vec<String>) {
    use base64::Engine as _;
    match v {
        serde_json::Value::String(s) => {
            out.push(s.clone());
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s) {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| texts(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| texts(x, out)),
        _ => {}
    }
}

async fn an_orders_history_in_temporal_holds_no_phone_address_or_card_in_clear(postgres: bool) {
    let s = spawn_stack_with(on_store(postgres, StackOptions::default())).await;
    let customer = s.login("customer1").await;
    let owner = s.login("owner1").await;
    let id = s.place(&customer).await;
    s.accept(&id, &owner, 10).await;
    let history: serde_json::Value =
        serde_json::from_slice(&s.history_json(&id).await.unwrap()).unwrap();
    let mut all = Vec::new();
    texts(&history, &mut all);
    let secrets = ["010-1234-5678", "테헤란로", "tok_ok"];
    for secret in secrets {
        assert!(
            !all.iter().any(|t| t.contains(secret)),
            "{secret} is in the history in clear"
        );
    }
    // The data is there, sealed: the deployment's key opens it, and the
    // operators' codec endpoint (on this machine) shows it.
    let sealed: Vec<serde_json::Value> = all_payloads(&history);
    assert!(sealed.len() > 5, "{} payloads", sealed.len());
    let body = serde_json::json!({ "payloads": sealed });
    let r = s
        .http
        .post(s.url("/api/codec/decode"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let opened: serde_json::Value = r.json().await.unwrap();
    let mut clear = Vec::new();
    texts(&opened, &mut clear);
    assert!(clear.iter().any(|t| t.contains("010-1234-5678")));
    assert!(clear.iter().any(|t| t.contains("테헤란로")));
}

/// The `{metadata, data}` payloads of a history, in the codec protocol's form.
fn all_payloads(v: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        match v {
            serde_json::Value::Object(o) => {
                if let (Some(m), Some(d)) = (o.get("metadata"), o.get("data"))
                    && m.get("encoding").is_some()
                    && d.is_string()
                {
                    out.push(serde_json::json!({"metadata": m, "data": d}));
                    return;
                }
                o.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

on_both_stores!(
    an_orders_history_in_temporal_holds_no_phone_address_or_card_in_clear,
    a_rotated_key_keeps_the_previous_keys_tokens_valid_while_it_is_named,
);

/// A history recorded from today's code (kept in tests/histories/ and replayed
/// by the replay test, which opens it with the recording key) holds no phone
/// number, address or card in clear either.
#[test]
fn a_recorded_history_of_todays_code_holds_no_personal_data_in_clear() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/histories/race_offer_accept.json"
    );
    let history: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut all = Vec::new();
    texts(&history, &mut all);
    for secret in ["010-1234-5678", "테헤란로", "tok_ok"] {
        assert!(
            !all.iter().any(|t| t.contains(secret)),
            "{secret} is in {path} in clear"
        );
    }
    let sealed = all_payloads(&history)
        .iter()
        .filter(|p| p["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA==")
        .count();
    assert!(sealed > 5, "{sealed} sealed payloads");
}
