//! The benchmark's HTTP client: every call is timed under its kind.

use crate::stats::Recorder;
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a call answered: status and JSON body (`Null` when the body is not JSON).
/// The benchmark reads status and body; the chaos run (src/chaos) the rest too.
#[allow(dead_code)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// `Retry-After` in seconds, when the answer carries one.
    pub retry_after: Option<Duration>,
    /// The next page of a list (`Link: <…>; rel="next"`), as a path.
    pub next_page: Option<String>,
    /// No answer within the client's timeout (status 0).
    pub timed_out: bool,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    pub rec: Arc<Recorder>,
}

impl Api {
    pub fn new(base: &str, rec: Arc<Recorder>) -> anyhow::Result<Self> {
        // No call may hang the run; the slowest legitimate one (a login's
        // password hash, a place under load) is far below this.
        Self::with_timeout(base, rec, Duration::from_secs(30))
    }

    /// A client whose calls give up after `timeout` without an answer.
    pub fn with_timeout(base: &str, rec: Arc<Recorder>, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .no_proxy()
            .build()?;
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            http,
            rec,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends one call and records its latency under `kind` when it succeeds, or
    /// its status when it does not. Transport errors are answers with status 0.
    pub async fn call(
        &self,
        kind: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        self.send(kind, method, path, token, body, &[]).await
    }

    /// [`Api::call`] with extra request headers (e.g. `Idempotency-Key`).
    pub async fn send(
        &self,
        kind: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let started = Instant::now();
        let answer = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let retry_after = header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let next_page = header("link").and_then(|l| next_link(&l));
                match resp.bytes().await {
                    Ok(b) => Answer {
                        status,
                        body: serde_json::from_slice(&b).unwrap_or(Value::Null),
                        retry_after,
                        next_page,
                        timed_out: false,
                    },
                    // The status came but the body did not: no answer.
                    Err(e) => Answer {
                        status: 0,
                        body: Value::String(e.to_string()),
                        retry_after: None,
                        next_page: None,
                        timed_out: e.is_timeout(),
                    },
                }
            }
            Err(e) => Answer {
                status: 0,
                body: Value::String(e.to_string()),
                retry_after: None,
                next_page: None,
                timed_out: e.is_timeout(),
            },
        };
        if answer.ok() {
            self.rec.ok(kind, started.elapsed());
        } else {
            self.rec.error(kind, &answer.status.to_string());
        }
        answer
    }

    pub async fn get(&self, kind: &str, path: &str, token: &str) -> Answer {
        self.call(kind, Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, kind: &str, path: &str, token: &str, body: Option<&Value>) -> Answer {
        self.call(kind, Method::POST, path, Some(token), body).await
    }

    /// Logs a demo user in; returns the bearer token.
    pub async fn login(&self, user: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({"username": user, "password": "demo"});
        let a = self
            .call("login", Method::POST, "/api/auth/login", None, Some(&body))
            .await;
        if !a.ok() {
            anyhow::bail!("login {user}: {} {}", a.status, a.body);
        }
        a.body["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("login {user}: no token in {}", a.body))
    }

    /// A plain GET outside the measured calls (verification, the payment simulator).
    pub async fn fetch_json(&self, url: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

/// The `rel="next"` target of a `Link` header, as a path on the same server.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        // An absolute URL keeps only its path and query.
        let path = match url.find("://") {
            Some(i) => &url[url[i + 3..].find('/').map_or(url.len(), |j| i + 3 + j)..],
            None => url,
        };
        (is_next && !path.is_empty()).then(|| path.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn finds_the_next_page_of_a_link_header() {
        assert_eq!(
            next_link(r#"</api/orders?limit=50&cursor=abc>; rel="next""#).as_deref(),
            Some("/api/orders?limit=50&cursor=abc")
        );
        assert_eq!(
            next_link(r#"<http://127.0.0.1:1/api/x?cursor=1>; rel="next", </api/x>; rel="first""#)
                .as_deref(),
            Some("/api/x?cursor=1")
        );
        assert_eq!(next_link(r#"</api/x>; rel="prev""#), None);
    }
}
