//! The benchmark's HTTP client: every call is timed under its kind.

use crate::stats::Recorder;
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a call answered: status and JSON body (`Null` when the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
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
        let http = reqwest::Client::builder()
            // No call may hang the run; the slowest legitimate one (a login's
            // password hash, a place under load) is far below this.
            .timeout(Duration::from_secs(30))
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
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let started = Instant::now();
        let answer = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(Value::Null);
                Answer { status, body }
            }
            Err(e) => Answer {
                status: 0,
                body: Value::String(e.to_string()),
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
