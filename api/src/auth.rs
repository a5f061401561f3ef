//! Login and signed bearer tokens (HS256 JWT via `jsonwebtoken`, with expiry).
//! Passwords are argon2 hashes in the identity store.
//!
//! A username or password that no account can have (control or bidi
//! characters, overlong) is answered 401 like any wrong credentials, without
//! asking the store: login tells a caller only whether they may come in, never
//! which inputs are well formed, and a client cannot fix credentials by
//! editing them the way it fixes an order's fields.

use crate::AppState;
use crate::domain::{Id, unprintable};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, ClientAddr};
use axum::Json;
use axum::extract::State;
use baedal_activities::{identity, keyfile};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The token-signing keys: the current one signs and verifies; the one before
/// the last rotation only verifies, so its tokens stay valid until they expire.
#[derive(Clone)]
pub struct Keys {
    pub encoding: EncodingKey,
    pub decoding: Vec<DecodingKey>,
    pub ttl_secs: u64,
}

/// Shorter keys than this are refused (HS256 wants at least its hash's size).
const MIN_KEY_BYTES: usize = 32;

impl Keys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: vec![DecodingKey::from_secret(secret)],
            ttl_secs,
        }
    }

    /// Tokens signed with `secret` (the key before a rotation) are still accepted.
    pub fn accepting(mut self, secret: &[u8]) -> Self {
        self.decoding.push(DecodingKey::from_secret(secret));
        self
    }

    /// The keys from their files: the current one is made (random, 0600) when
    /// its file does not exist yet; the previous one must exist.
    pub fn from_files(
        current: &str,
        previous: Option<&str>,
        ttl_secs: u64,
    ) -> anyhow::Result<Self> {
        const WHAT: &str = "token-signing key";
        let key =
            keyfile::load_or_create(current, WHAT, MIN_KEY_BYTES, || keyfile::random_hex(32))?;
        let keys = Keys::new(&key, ttl_secs);
        Ok(match previous {
            Some(p) => keys.accepting(&keyfile::read(p, WHAT, MIN_KEY_BYTES)?),
            None => keys,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none", rename = "shopId")]
    pub shop_id: Option<String>,
    pub exp: u64,
    /// What a single-purpose token opens (`events:<orderId>`: one order's event
    /// stream); a login token has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// How long a stream ticket opens its stream (reconnects included).
pub const TICKET_TTL_SECS: u64 = 300;

/// A ticket that opens this caller's event stream of one order, and nothing else.
pub fn stream_ticket(keys: &Keys, caller: &Claims, order_id: &str) -> anyhow::Result<String> {
    let claims = Claims {
        sub: caller.sub.clone(),
        role: caller.role.clone(),
        shop_id: None,
        exp: unix_now()? + TICKET_TTL_SECS,
        scope: Some(events_scope(order_id)),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &keys.encoding,
    )?)
}

/// The scope of a ticket for this order's event stream.
pub fn events_scope(order_id: &str) -> String {
    format!("events:{order_id}")
}

fn unix_now() -> anyhow::Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs())
}

/// The token's claims, if one of the keys signed it and it has not expired.
pub fn decode_token(keys: &Keys, token: &str) -> anyhow::Result<Claims> {
    let v = Validation::new(Algorithm::HS256);
    let mut first_error = None;
    for key in &keys.decoding {
        match jsonwebtoken::decode::<Claims>(token, key, &v) {
            Ok(t) => return Ok(t.claims),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.map_or_else(|| anyhow::anyhow!("no key"), Into::into))
}

/// At most this many characters of password are looked at (argon2 hashes all of it).
const MAX_PASSWORD_CHARS: usize = 1024;

/// Whether some account could have this password: printable text, bounded.
fn possible_password(password: &str) -> bool {
    password.chars().count() <= MAX_PASSWORD_CHARS && unprintable(password).is_none()
}

/// Credentials (demo accounts use the password `demo`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[schema(example = "customer1")]
    username: String,
    #[schema(example = "demo", format = Password)]
    password: String,
}

/// Log in
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    operation_id = "login",
    description = "Exchanges a username and password for a bearer token (HS256 JWT with expiry).",
    request_body = Login,
    responses(
        (status = 200, description = "A token for the user's role", body = crate::openapi::LoginResponse),
        crate::openapi::BodyRefusals,
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::Internal),
    ),
)]
pub async fn login(
    State(st): State<AppState>,
    ClientAddr(client): ClientAddr,
    Body(l): Body<Login>,
) -> ApiResult<Json<Value>> {
    let wrong = || ApiError::Unauthorized("wrong username or password".into());
    let throttles = &st.throttles;
    let account = l.username.trim().to_lowercase();
    let closed = client
        .and_then(|ip| throttles.login_address.closed_for(&ip))
        .or_else(|| throttles.login_account.closed_for(&account));
    if let Some(wait) = closed {
        st.metrics.throttled(crate::metrics::Limit::LoginFailures);
        return Err(ApiError::TooManyRequests(
            "too many failed logins; wait before trying again".into(),
            wait,
        ));
    }
    let failed = || {
        throttles.login_account.failed(&account);
        if let Some(ip) = client {
            throttles.login_address.failed(&ip);
        }
        wrong()
    };
    // Credentials no account can have are refused like a wrong password, before
    // the store is asked (Postgres refuses NUL in text). Looked at before the
    // trim, as every text field is: "name\n" is not "name".
    if unprintable(&l.username).is_some() || !possible_password(&l.password) {
        return Err(failed());
    }
    let username = l.username.trim();
    if !Id::possible(username) {
        return Err(failed());
    }
    let db = st.dbs.identity.clone();
    let user = {
        let _hashing = st.hashing.acquire().await.map_err(anyhow::Error::from)?;
        identity::verify_login(&db, username, &l.password).await?
    };
    let user = user.ok_or_else(failed)?;
    let claims = Claims {
        sub: user.id.clone(),
        role: user.role.clone(),
        shop_id: user.shop_id.clone(),
        exp: unix_now()? + st.keys.ttl_secs,
        scope: None,
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &st.keys.encoding)
        .map_err(anyhow::Error::from)?;
    let mut body = json!({"token": token, "role": user.role, "id": user.id});
    if let Some(shop) = user.shop_id {
        body["shopId"] = json!(shop);
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_no_account_can_have() {
        assert!(possible_password("demo"));
        assert!(possible_password("correct horse battery staple 비밀"));
        assert!(!possible_password("de\0mo"));
        assert!(!possible_password("demo\n"));
        assert!(!possible_password("\u{202E}omed"));
        assert!(!possible_password(&"x".repeat(MAX_PASSWORD_CHARS + 1)));
    }
}
