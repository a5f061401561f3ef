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
        (status = 500, response = crate::openapi::Internal),
    ),
)]
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
