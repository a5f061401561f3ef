//! One error type for the HTTP layer; every refusal is `application/problem+json`.
//! Internal causes are logged, never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    PaymentDeclined(String),
    #[error("{0}")]
    PaymentUnavailable(String, Duration),
    /// A dependency (Temporal) is unreachable for now; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// Too many tries of this kind for now (failed logins, declined payments).
    #[error("{0}")]
    TooManyRequests(String, Duration),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn unprocessable(msg: impl Into<String>) -> Self {
        ApiError::Unprocessable(msg.into())
    }
    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl ApiError {
    /// The answer's status and its problem+json body. Internal causes stay out
    /// of the body (they are logged when the answer is sent).
    pub fn problem(&self) -> (StatusCode, serde_json::Value) {
        let (status, slug, title) = match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Conflict(_) => (
                StatusCode::CONFLICT,
                "conflict",
                "Not allowed in the order's current state",
            ),
            ApiError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                "Invalid input",
            ),
            ApiError::PaymentDeclined(_) => (
                StatusCode::PAYMENT_REQUIRED,
                "payment-declined",
                "Payment declined",
            ),
            ApiError::PaymentUnavailable(..) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "payment-busy",
                "Payment is busy, please pay again shortly",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable, please try again shortly",
            ),
            ApiError::TooManyRequests(..) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many tries, wait before trying again",
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request body too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Send JSON",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        };
        let detail = match self {
            ApiError::Internal(_) => {
                "something went wrong on our side; it has been logged".to_string()
            }
            ApiError::Unauthorized(why) => why.clone(),
            other => other.to_string(),
        };
        let body = json!({
            "type": format!("https://baedal.dev/problems/{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        (status, body)
    }
}

/// A problem+json answer with this status and body (as built by [`ApiError::problem`]).
pub fn problem_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = ?e, "request failed");
        }
        let (status, body) = self.problem();
        let mut resp = problem_response(status, body.to_string());
        let retry_after = match &self {
            ApiError::PaymentUnavailable(_, retry) => Some(retry.as_secs().max(1)),
            ApiError::Unavailable(_) => Some(2),
            // Rounded up: a client that waits exactly this long is let in.
            ApiError::TooManyRequests(_, wait) => {
                Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Unauthorized(_) = &self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The problem body for a refusal that no [`ApiError`] made (axum's own 405,
/// or any other 4xx/5xx answered without a problem body): the status's reason
/// names the kind, `detail` says what to do about it.
pub fn status_problem(status: StatusCode, detail: &str) -> serde_json::Value {
    let title = status.canonical_reason().unwrap_or("Error");
    let slug = title.to_ascii_lowercase().replace([' ', '\''], "-");
    json!({
        "type": format!("https://baedal.dev/problems/{slug}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    })
}
