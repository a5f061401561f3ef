//! Login and signed bearer tokens (HS256 JWT via `jsonwebtoken`, with expiry).
//! Passwords are argon2 hashes in the identity store.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use axum::Json;
use axum::extract::State;
use baedal_activities::identity;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Keys {
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    pub ttl_secs: u64,
}

impl Keys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none", rename = "shopId")]
    pub shop_id: Option<String>,
    pub exp: u64,
}

pub fn decode_token(keys: &Keys, token: &str) -> anyhow::Result<Claims> {
    let v = Validation::new(Algorithm::HS256);
    Ok(jsonwebtoken::decode::<Claims>(token, &keys.decoding, &v)?.claims)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

pub async fn login(State(st): State<AppState>, Body(l): Body<Login>) -> ApiResult<Json<Value>> {
    let db = st.dbs.identity.clone();
    let user = identity::verify_login(&db, l.username.trim(), &l.password)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("wrong username or password".into()))?;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(anyhow::Error::from)?
        .as_secs()
        + st.keys.ttl_secs;
    let claims = Claims {
        sub: user.id.clone(),
        role: user.role.clone(),
        shop_id: user.shop_id.clone(),
        exp,
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &st.keys.encoding)
        .map_err(anyhow::Error::from)?;
    let mut body = json!({"token": token, "role": user.role, "id": user.id});
    if let Some(shop) = user.shop_id {
        body["shopId"] = json!(shop);
    }
    Ok(Json(body))
}
