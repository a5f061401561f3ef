//! Extractors: JSON bodies that refuse unknown fields with a problem response,
//! path and query parameters whose refusals are problems too, the authenticated
//! caller, and the optional `Idempotency-Key`.

use crate::AppState;
use crate::auth::{Claims, decode_token};
use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
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

/// `axum::extract::Path` whose rejections are problem+json: a segment that does
/// not decode (not UTF-8, not the expected type) is a 400; a route whose
/// parameters do not match its extractor is our bug, a 500.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match <axum::extract::Path<T> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
        {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) if e.status().is_client_error() => Err(ApiError::BadRequest(e.body_text())),
            Err(e) => Err(ApiError::Internal(anyhow::anyhow!(
                "path parameters: {}",
                e.body_text()
            ))),
        }
    }
}

/// `axum::extract::Query` whose rejection (a query string that does not fit
/// the handler's parameters) is a 400 problem+json.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        <axum::extract::Query<T> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// The caller, from `Authorization: Bearer <token>` (a login token). An order's
/// event stream also takes `?ticket=`, because browsers' EventSource cannot send
/// headers: a short-lived token that opens that one stream only, so no login
/// token ever rides in a URL (and so in logs and browser history).
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
        // `/orders/{id}/events` (the gateway's router strips `/api`).
        let stream_of = parts
            .uri
            .path()
            .strip_suffix("/events")
            .and_then(|p| p.rsplit_once('/'))
            .map(|(_, id)| id.to_string());
        let ticket = stream_of.as_ref().and_then(|_| {
            url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .find(|(k, _)| k == "ticket")
                .map(|(_, v)| v.into_owned())
        });
        let (token, wanted_scope) = match (header_token, ticket) {
            (Some(t), _) => (t.to_string(), None),
            (None, Some(t)) => (t, stream_of.as_deref().map(crate::auth::events_scope)),
            (None, None) => return Err(ApiError::Unauthorized("missing bearer token".into())),
        };
        let claims = decode_token(&state.keys, &token)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token".into()))?;
        // A login token opens every call (but never rides in a URL); a ticket
        // opens the one stream it names.
        if claims.scope != wanted_scope {
            return Err(ApiError::Unauthorized(
                "this token does not open this call".into(),
            ));
        }
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

/// The optional `Idempotency-Key` header: 1..=200 visible ASCII characters
/// (`!` to `~`). A handler that takes `Option<IdempotencyKey>` gets a valid key
/// or none; anything else is refused with 400 before the handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const HEADER: &'static str = "Idempotency-Key";
    pub const MAX_LEN: usize = 200;

    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(ApiError::BadRequest(format!(
                "{} must be 1..{} characters",
                Self::HEADER,
                Self::MAX_LEN
            )));
        }
        if !raw.iter().all(u8::is_ascii_graphic) {
            return Err(ApiError::BadRequest(format!(
                "{} must be visible ASCII characters (no spaces)",
                Self::HEADER
            )));
        }
        // Only ASCII bytes are left, so this cannot fail.
        Ok(IdempotencyKey(String::from_utf8_lossy(raw).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, ApiError> {
        let mut values = parts.headers.get_all(Self::HEADER).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "send one {} header, not several",
                Self::HEADER
            )));
        }
        Self::parse(first.as_bytes()).map(Some)
    }
}

/// Documents the header wherever a handler's `params(...)` lists `IdempotencyKey`.
impl utoipa::IntoParams for IdempotencyKey {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Required, Type};
        vec![
            ParameterBuilder::new()
                .name(Self::HEADER)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "1..200 visible ASCII characters chosen by the client (a UUID will do); \
                     makes a retry safe. An action repeated with the same key answers its \
                     first answer (same status and body), even after the order has finished; \
                     an order placed again with the same key and body is the same order, \
                     charged once. The same key for another order, action or body is `422`. \
                     `500` and `503` answers are not kept: retry them with the same key.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(Self::MAX_LEN))
                        .pattern(Some("^[!-~]+$")),
                ))
                .build(),
        ]
    }
}

/// The client's address (the TCP peer), when the server was started with it.
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_1_to_200_visible_ascii_characters() {
        assert_eq!(IdempotencyKey::parse(b"a").unwrap().as_str(), "a");
        let uuid = b"0b6f3c1e-6a0e-4c1b-9d4e-2f1a7c9b8e01";
        assert!(IdempotencyKey::parse(uuid).is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 200]).is_ok());
        for bad in [
            &b""[..],
            &[b'k'; 201][..],
            "주문".as_bytes(),
            b"two words",
            b"tab\there",
            b"nul\0",
        ] {
            assert!(
                matches!(IdempotencyKey::parse(bad), Err(ApiError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }
}
