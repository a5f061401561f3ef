//! Every list is read a page at a time, newest first (SPEC §3): `limit`
//! (default 50, at most 200) and an opaque `cursor`; the body stays a JSON
//! array and, when more items follow, `Link: <…>; rel="next"` names the next
//! page's URL: the same path and filters, with the cursor of this page's end.

use crate::error::ApiError;
use axum::Json;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use baedal_activities::page::{Cursor, DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest};
use serde::Deserialize;
use serde_json::Value;

/// The paging parameters of a list, as documented.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// How many items (default 50; more than 200 gets 200).
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// Where the page starts: the `cursor` of the previous page's `Link: rel="next"`.
    cursor: Option<String>,
}

/// A list call's page request, and the URL it came by (for the next page's link).
pub struct Paging {
    pub request: PageRequest,
    uri: axum::http::Uri,
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let crate::extract::Query(p) =
            crate::extract::Query::<PageParams>::from_request_parts(parts, state).await?;
        let limit = match p.limit {
            None => DEFAULT_LIMIT,
            Some(0) => return Err(ApiError::unprocessable("limit must be at least 1")),
            Some(n) => n.min(MAX_LIMIT),
        };
        let after = match p.cursor.as_deref() {
            None | Some("") => Cursor::start(),
            Some(raw) => Cursor::decode(raw).ok_or_else(|| {
                ApiError::BadRequest(
                    "cursor is not one this list gave (take it from Link: rel=\"next\")".into(),
                )
            })?,
        };
        let uri = match parts.extensions.get::<OriginalUri>() {
            Some(OriginalUri(u)) => u.clone(),
            None => parts.uri.clone(),
        };
        Ok(Paging {
            request: PageRequest { limit, after },
            uri,
        })
    }
}

impl Paging {
    /// The page as a JSON array, with the next page's link when one follows.
    pub fn respond(self, page: Page<Value>) -> Response {
        let mut response = Json(page.items).into_response();
        if let Some(next) = page.next {
            let link = format!("<{}>; rel=\"next\"", self.next_url(&next));
            if let Ok(v) = HeaderValue::from_str(&link) {
                response.headers_mut().insert(header::LINK, v);
            }
        }
        response
    }

    /// This call's path and query, with `cursor` (and `limit`) for the next page.
    fn next_url(&self, next: &Cursor) -> String {
        let kept = url::form_urlencoded::parse(self.uri.query().unwrap_or_default().as_bytes())
            .filter(|(k, _)| k != "cursor" && k != "limit")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect::<Vec<_>>();
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        q.append_pair("limit", &self.request.limit.to_string());
        q.append_pair("cursor", &next.encode());
        format!("{}?{}", self.uri.path(), q.finish())
    }
}
