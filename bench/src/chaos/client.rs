//! The run's HTTP client: the benchmark's [`Api`] plus what a careful client does
//! through outages — retry a refused or unanswered call (503, 429, no connection)
//! after `Retry-After`, with the same `Idempotency-Key` — and a book of every call
//! that never got an answer (a hang past the timeout, or retries that ran out).

use crate::http::Api;
use reqwest::Method;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The last answer of a call, after its retries.
#[derive(Debug, Clone)]
pub struct Reply {
    /// 0 when no answer came at all.
    pub status: u16,
    pub body: Value,
    /// Some attempt waited past the client timeout (a hang).
    pub hung: bool,
    /// The retries ran out before an answer other than 503/429 came.
    pub gave_up: bool,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A final answer came (whatever it says).
    pub fn answered(&self) -> bool {
        !self.gave_up && self.status != 0
    }

    /// `status` of the answer's body, when it has one.
    pub fn body_status(&self) -> Option<&str> {
        self.body["status"].as_str()
    }
}

/// What the run's calls came to.
#[derive(Default)]
pub struct CallBook {
    pub calls: u64,
    pub retried: u64,
    /// Calls that never got an answer, with why.
    pub unanswered: Vec<String>,
    /// Calls answered 5xx other than 503 on some attempt.
    pub server_errors: Vec<String>,
}

pub struct Client {
    pub api: Api,
    /// How long one call may keep retrying through an outage.
    budget: Duration,
    book: Mutex<CallBook>,
}

impl Client {
    pub fn new(api: Api, budget: Duration) -> Self {
        Client {
            api,
            budget,
            book: Mutex::new(CallBook::default()),
        }
    }

    pub fn take_book(&self) -> CallBook {
        std::mem::take(&mut *self.book.lock().unwrap())
    }

    /// One call, retried through 503/429/502/504/500 and lost connections until
    /// it is answered or the budget runs out.
    pub async fn call(
        &self,
        kind: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Reply {
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        let deadline = Instant::now() + self.budget;
        let mut backoff = Duration::from_millis(200);
        let mut hung = false;
        let mut server_error: Option<u16> = None;
        let mut attempts = 0u32;
        let reply = loop {
            attempts += 1;
            let a = self
                .api
                .send(kind, method.clone(), path, token, body, &headers)
                .await;
            hung |= a.timed_out;
            let retry = match a.status {
                0 | 429 | 502 | 503 | 504 => true,
                500..=599 => {
                    server_error.get_or_insert(a.status);
                    true
                }
                _ => false,
            };
            if !retry {
                break Reply {
                    status: a.status,
                    body: a.body,
                    hung,
                    gave_up: false,
                };
            }
            if Instant::now() >= deadline {
                break Reply {
                    status: a.status,
                    body: a.body,
                    hung,
                    gave_up: true,
                };
            }
            let wait = a
                .retry_after
                .unwrap_or(backoff)
                .clamp(Duration::from_millis(100), Duration::from_secs(10));
            tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        let mut book = self.book.lock().unwrap();
        book.calls += 1;
        if attempts > 1 {
            book.retried += 1;
        }
        let what = format!("{method} {path}");
        if reply.hung || reply.gave_up {
            book.unanswered.push(format!(
                "{what}: {} after {attempts} attempts{}",
                if reply.gave_up {
                    format!("no answer but {} for {:?}", reply.status, self.budget)
                } else {
                    "an attempt hung past the client timeout".into()
                },
                if reply.gave_up && reply.hung {
                    " (one hung)"
                } else {
                    ""
                }
            ));
        }
        if let Some(s) = server_error {
            book.server_errors.push(format!(
                "{what}: answered {s} (final answer {})",
                reply.status
            ));
        }
        reply
    }

    /// One attempt, no retry (pollers that simply look again later). A hang
    /// still counts as an unanswered call.
    pub async fn once(&self, kind: &str, path: &str, token: &str) -> Reply {
        let a = self
            .api
            .send(kind, Method::GET, path, Some(token), None, &[])
            .await;
        let mut book = self.book.lock().unwrap();
        book.calls += 1;
        if a.timed_out {
            book.unanswered
                .push(format!("GET {path}: hung past the client timeout"));
        }
        if (500..=599).contains(&a.status) && a.status != 503 {
            book.server_errors
                .push(format!("GET {path}: answered {}", a.status));
        }
        Reply {
            status: a.status,
            body: a.body,
            hung: a.timed_out,
            gave_up: false,
        }
    }

    pub async fn get(&self, kind: &str, path: &str, token: &str) -> Reply {
        self.call(kind, Method::GET, path, Some(token), None, None)
            .await
    }

    pub async fn post(
        &self,
        kind: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Reply {
        self.call(kind, Method::POST, path, Some(token), body, key)
            .await
    }

    /// Every item of a list, following `Link: rel="next"` (bounded).
    pub async fn get_all(&self, kind: &str, path: &str, token: &str) -> Result<Vec<Value>, String> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut next = Some(format!("{path}{sep}limit=200"));
        let mut items = Vec::new();
        for _ in 0..500 {
            let Some(p) = next.take() else {
                return Ok(items);
            };
            // Reads need no Temporal; a few more tries cover an API restarting.
            let mut tries = 0;
            let a = loop {
                let a = self
                    .api
                    .send(kind, Method::GET, &p, Some(token), None, &[])
                    .await;
                if a.status == 200 || tries >= 20 {
                    break a;
                }
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            if a.status != 200 {
                return Err(format!("GET {p}: {} {}", a.status, a.body));
            }
            let Some(page) = a.body.as_array() else {
                return Err(format!("GET {p}: not a JSON array: {}", a.body));
            };
            items.extend(page.iter().cloned());
            next = a.next_page;
        }
        Err(format!("GET {path}: more than 500 pages"))
    }
}
