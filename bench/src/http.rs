//! The benchmark's HTTP client: every call is timed under its kind.

use crate::stats::Recorder;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    pool: Arc<Pool>,
    /// Calls go to this base first while it is up (else: round robin).
    first: Option<usize>,
    http: reqwest::Client,
    pub rec: Arc<Recorder>,
}

/// The API processes calls are spread over, as a load balancer would: round
/// robin over those that are up. A call that cannot connect to one (its
/// process is gone) marks it down; a call that can be repeated safely (a GET
/// or PUT, or one with an `Idempotency-Key`) and lost its connection goes to
/// the next one at once.
struct Pool {
    bases: Vec<String>,
    next: AtomicUsize,
    down: Vec<AtomicBool>,
    /// Calls each base answered (any status).
    answered: Vec<AtomicU64>,
    /// The same by call kind: (base, kind) -> calls.
    answered_by_kind: Mutex<BTreeMap<(usize, String), u64>>,
    /// Calls sent again to another base after a lost connection.
    failovers: AtomicU64,
}

impl Api {
    /// Calls spread over several API processes of one deployment.
    pub fn balanced(bases: &[String], rec: Arc<Recorder>) -> anyhow::Result<Self> {
        // No call may hang the run; the slowest legitimate one (a login's
        // password hash, a place under load) is far below this.
        Self::spread(bases, rec, Duration::from_secs(30))
    }

    /// A client whose calls give up after `timeout` without an answer (the chaos run's).
    #[allow(dead_code)]
    pub fn with_timeout(base: &str, rec: Arc<Recorder>, timeout: Duration) -> anyhow::Result<Self> {
        Self::spread(&[base.to_string()], rec, timeout)
    }

    fn spread(bases: &[String], rec: Arc<Recorder>, timeout: Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(!bases.is_empty(), "no API base URL");
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .no_proxy()
            .build()?;
        Ok(Api {
            pool: Arc::new(Pool {
                bases: bases
                    .iter()
                    .map(|b| b.trim_end_matches('/').to_string())
                    .collect(),
                next: AtomicUsize::new(0),
                down: bases.iter().map(|_| AtomicBool::new(false)).collect(),
                answered: bases.iter().map(|_| AtomicU64::new(0)).collect(),
                answered_by_kind: Mutex::new(BTreeMap::new()),
                failovers: AtomicU64::new(0),
            }),
            first: None,
            http,
            rec,
        })
    }

    /// `path` on the first base that is up.
    pub fn url(&self, path: &str) -> String {
        let p = &self.pool;
        let i = (0..p.bases.len())
            .find(|&i| !p.down[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        format!("{}{path}", p.bases[i])
    }

    pub fn bases(&self) -> &[String] {
        &self.pool.bases
    }

    /// The same client (same bases, same view of which are down) sending
    /// each call to base `i` first.
    pub fn via(&self, i: usize) -> Api {
        Api {
            first: Some(i % self.pool.bases.len()),
            ..self.clone()
        }
    }

    /// Calls answered by each base so far, by call kind.
    pub fn answered_by_kind(&self) -> Vec<BTreeMap<String, u64>> {
        let mut out = vec![BTreeMap::new(); self.pool.bases.len()];
        for ((i, kind), n) in self.pool.answered_by_kind.lock().unwrap().iter() {
            out[*i].insert(kind.clone(), *n);
        }
        out
    }

    /// Calls answered by each base so far.
    pub fn answered(&self) -> Vec<u64> {
        self.pool
            .answered
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    pub fn failovers(&self) -> u64 {
        self.pool.failovers.load(Ordering::Relaxed)
    }

    /// The bases to try for one call: the next in turn first, then the others;
    /// those marked down only when none is up.
    fn turn(&self) -> Vec<usize> {
        let p = &self.pool;
        let n = p.bases.len();
        let first = self
            .first
            .unwrap_or_else(|| p.next.fetch_add(1, Ordering::Relaxed) % n);
        let order: Vec<usize> = (0..n).map(|k| (first + k) % n).collect();
        let up: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| !p.down[i].load(Ordering::Relaxed))
            .collect();
        if up.is_empty() { order } else { up }
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
        let started = Instant::now();
        let repeatable = matches!(method, Method::GET | Method::PUT)
            || headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("idempotency-key"));
        let bases = self.turn();
        let mut answer = None;
        for (k, &i) in bases.iter().enumerate() {
            let url = format!("{}{path}", self.pool.bases[i]);
            let (a, connect_failed) = self
                .attempt(method.clone(), &url, token, body, headers)
                .await;
            if connect_failed {
                self.pool.down[i].store(true, Ordering::Relaxed);
            }
            let last = k + 1 == bases.len();
            if a.status != 0 {
                self.pool.answered[i].fetch_add(1, Ordering::Relaxed);
                *self
                    .pool
                    .answered_by_kind
                    .lock()
                    .unwrap()
                    .entry((i, kind.to_string()))
                    .or_default() += 1;
            } else if !last && (connect_failed || (repeatable && !a.timed_out)) {
                // Not sent at all, or safe to send again: the next base takes it.
                self.pool.failovers.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            answer = Some(a);
            break;
        }
        let answer = answer.expect("at least one base");
        if answer.ok() {
            self.rec.ok(kind, started.elapsed());
        } else {
            self.rec.error(kind, &answer.status.to_string());
        }
        answer
    }

    /// One attempt on one base; also whether the connection could not be made.
    async fn attempt(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (Answer, bool) {
        let mut req = self.http.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let mut connect_failed = false;
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
            Err(e) => {
                connect_failed = e.is_connect();
                Answer {
                    status: 0,
                    body: Value::String(e.to_string()),
                    retry_after: None,
                    next_page: None,
                    timed_out: e.is_timeout(),
                }
            }
        };
        (answer, connect_failed)
    }

    pub async fn get(&self, kind: &str, path: &str, token: &str) -> Answer {
        self.call(kind, Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, kind: &str, path: &str, token: &str, body: Option<&Value>) -> Answer {
        self.call(kind, Method::POST, path, Some(token), body).await
    }

    /// Logs a demo user in; returns the whole answer (token, id, role, shopId).
    pub async fn login_answer(&self, user: &str) -> anyhow::Result<Value> {
        let body = serde_json::json!({"username": user, "password": "demo"});
        let a = self
            .call("login", Method::POST, "/api/auth/login", None, Some(&body))
            .await;
        if !a.ok() {
            anyhow::bail!("login {user}: {} {}", a.status, a.body);
        }
        Ok(a.body)
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
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request `200 {}`; its address.
    async fn answering() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if s.write_all(ok).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    /// An address nothing listens on.
    async fn refusing() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn calls_go_round_robin_and_skip_a_base_that_refuses() {
        let (a, b) = (answering().await, answering().await);
        let api = Api::balanced(&[a, b], Arc::new(Recorder::default())).unwrap();
        for _ in 0..4 {
            assert!(api.get("x", "/", "t").await.ok());
        }
        assert_eq!(api.answered(), [2, 2]);

        let (dead, live) = (refusing().await, answering().await);
        let api = Api::balanced(&[dead.clone(), live], Arc::new(Recorder::default())).unwrap();
        // Not sent at all: even a call that is not safe to repeat goes to the next.
        for _ in 0..3 {
            assert!(api.post("x", "/", "t", None).await.ok());
        }
        assert_eq!(api.answered(), [0, 3]);
        assert!(api.failovers() >= 1);
        assert!(!api.url("/p").starts_with(&dead));
        assert_eq!(api.answered_by_kind()[1]["x"], 3);
        // Sent to the dead base first, it still lands on the live one.
        assert!(api.via(0).get("y", "/", "t").await.ok());
    }

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
