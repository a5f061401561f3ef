//! Extractors: JSON bodies that refuse unknown fields with a problem response,
//! and the authenticated caller.

use crate::AppState;
use crate::auth::{Claims, decode_token};
use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

/// `Json<T>` whose rejections are problem+json: malformed 400, wrong shape 422,
/// too large 413, not JSON 415.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Unprocessable(e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::BadRequest(e.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::PayloadTooLarge(
                    "bodies are limited to 64 KiB".into(),
                ))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The caller, from `Authorization: Bearer <token>`; the SSE path also accepts
/// `?token=` because browsers' EventSource cannot send headers.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header_token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .map(str::trim)
                    .ok_or_else(|| {
                        ApiError::Unauthorized("use Authorization: Bearer <token>".into())
                    })
            })
            .transpose()?;
        let query_token = if parts.uri.path().ends_with("/events") {
            parts.uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .map(str::to_string)
            })
        } else {
            None
        };
        let token = header_token
            .map(str::to_string)
            .or(query_token)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        let claims = decode_token(&state.keys, &token)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token".into()))?;
        Ok(AuthUser(claims))
    }
}

impl AuthUser {
    pub fn require(&self, role: &str) -> Result<&Claims, ApiError> {
        if self.0.role == role {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden(format!(
                "this call is for the {role} role"
            )))
        }
    }
}
