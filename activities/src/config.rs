//! Configuration: one typed struct, read once from the environment at start-up,
//! with defaults that make a local run work untouched (SPEC section 5).

use anyhow::{Context as _, bail};
use baedal_workflows::{Context, Queues, Timeouts};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: String,
    pub temporal_address: String,
    pub temporal_namespace: String,
    /// `TEMPORAL_GRPC_COMPRESSION=gzip`: gzip every gRPC call to Temporal. Off
    /// by default: the payloads are sealed (AES-GCM ciphertext does not
    /// compress), and compressing costs CPU on both ends of every call.
    pub temporal_grpc_gzip: bool,
    /// Prefix for every task queue, so several stacks can share one namespace.
    pub task_queue_prefix: String,
    pub database: DatabaseUrl,
    pub payment_gateway_url: String,
    pub payment_timeout: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub notify_webhook_url: Option<String>,
    /// The broker that carries the change feed (NATS with JetStream).
    pub nats_url: String,
    /// `METRICS_ADDR`: where a worker serves its Prometheus metrics (the
    /// Temporal SDK's and its own); none when unset.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub shop_accept_timeout: Duration,
    pub rider_offer_timeout: Duration,
    pub rider_search_timeout: Duration,
    /// `RIDER_STALE_AFTER`: riders who have not reported a position for this
    /// long get no offers.
    pub rider_stale_after: Duration,
    pub contexts: Vec<Context>,
    /// `BAEDAL_DEMO=1`: seed the demo accounts, shops and riders (SPEC §3).
    pub demo: bool,
    /// `BAEDAL_DEMO_PUBLIC=1`: demo mode may listen on an address other than
    /// loopback (its accounts share a published password).
    pub demo_public: bool,
    /// How many demo riders are seeded (rider1..riderN); the benchmark raises it.
    pub demo_riders: u32,
    pub token_ttl: Duration,
    /// The token-signing key's file (`AUTH_SIGNING_KEY_FILE`); made, readable by
    /// this user only, when missing.
    pub auth_signing_key_file: String,
    /// The key before the last rotation: its tokens stay valid until they expire.
    pub auth_previous_signing_key_file: Option<String>,
    /// The key that seals every payload sent to Temporal (`PAYLOAD_KEY_FILE`);
    /// made, readable by this user only, when missing. All processes share it.
    pub payload_key_file: String,
    /// Failed logins of one account within a minute before it answers 429.
    pub login_failures_per_account: u32,
    /// Failed logins from one client address within a minute before it answers 429.
    pub login_failures_per_address: u32,
    /// Declined payments of one card within ten minutes before it answers 429.
    pub declines_per_card: u32,
    /// A client must send its request headers within this long (else: closed).
    pub header_read_timeout: Duration,
    /// A request, its body included, is answered within this long (else: 408).
    pub request_timeout: Duration,
    /// Orders one customer may place within ten minutes (tries included) before
    /// placing answers 429.
    pub orders_per_customer: u32,
    /// Event streams one user may hold open at once.
    pub sse_streams_per_user: usize,
    /// Event streams one gateway process holds open at once.
    pub sse_streams_max: usize,
    /// An event stream ends after this long (the client resumes by `Last-Event-ID`).
    pub sse_max_lifetime: Duration,
    /// Concurrent workflow-task polls of the order worker (half of them on the
    /// task queue itself, where every new order's first task waits; half on
    /// the worker's sticky queue). 0: the SDK's default (4 sticky, 1 not).
    /// The default, 16, took the benchmark's place p99 from 7.0 s to 2.9 s.
    pub workflow_task_pollers: usize,
    /// Threads of a worker's async runtime (`WORKER_THREADS`, default 1: see
    /// `runtime::build`); more than 1 gives a multi-threaded runtime.
    pub worker_threads: usize,
    /// Threads of the API's async runtime (`API_THREADS`, default 1: see
    /// `runtime::build`); more than 1 gives a multi-threaded runtime.
    pub api_threads: usize,
    /// How often the payment reconciliation runs (a Temporal Schedule).
    pub reconcile_interval: Duration,
    /// Charges younger than this are left to their own order's saga.
    pub reconcile_min_age: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DatabaseUrl {
    /// One SQLite file per context in this directory.
    SqliteDir(String),
    /// One schema per context in this Postgres database.
    Postgres(String),
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let dur = |key: &str, default: &str| -> anyhow::Result<Duration> {
            let raw = get(key).unwrap_or_else(|| default.to_string());
            humantime::parse_duration(raw.trim())
                .with_context(|| format!("{key}={raw:?} is not a duration like 30s or 5m"))
        };
        let num = |key: &str, default: u64| -> anyhow::Result<u64> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .with_context(|| format!("{key}={v:?} is not a whole number")),
            }
        };
        let threads = |key: &str| -> anyhow::Result<usize> {
            match num(key, 1)? {
                0 => bail!("{key}=0: a process needs at least one thread"),
                n => Ok(n.min(1_024) as usize),
            }
        };
        let flag = |key: &str| -> anyhow::Result<bool> {
            match get(key).as_deref().map(str::trim) {
                None | Some("0") | Some("false") => Ok(false),
                Some("1") | Some("true") => Ok(true),
                Some(v) => bail!("{key}={v:?}: expected 1 or 0"),
            }
        };
        let contexts = match get("BAEDAL_CONTEXTS") {
            None => Context::ALL.to_vec(),
            Some(list) => parse_contexts(&list)?,
        };
        let database = DatabaseUrl::parse(get("DATABASE_URL").as_deref())?;
        let data_dir = match &database {
            DatabaseUrl::SqliteDir(dir) => dir.clone(),
            DatabaseUrl::Postgres(_) => "./data".into(),
        };
        Ok(Config {
            http_addr: get("HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into()),
            temporal_address: get("TEMPORAL_ADDRESS").unwrap_or_else(|| "127.0.0.1:7233".into()),
            temporal_namespace: get("TEMPORAL_NAMESPACE").unwrap_or_else(|| "default".into()),
            temporal_grpc_gzip: grpc_gzip(get("TEMPORAL_GRPC_COMPRESSION").as_deref())?,
            task_queue_prefix: get("BAEDAL_TASK_QUEUE_PREFIX").unwrap_or_default(),
            auth_signing_key_file: get("AUTH_SIGNING_KEY_FILE")
                .unwrap_or_else(|| format!("{data_dir}/auth-signing.key")),
            auth_previous_signing_key_file: get("AUTH_PREVIOUS_SIGNING_KEY_FILE"),
            payload_key_file: get("PAYLOAD_KEY_FILE")
                .unwrap_or_else(|| format!("{data_dir}/payload.key")),
            database,
            payment_gateway_url: get("PAYMENT_GATEWAY_URL")
                .unwrap_or_else(|| "http://127.0.0.1:8090".into())
                .trim_end_matches('/')
                .to_string(),
            payment_timeout: Duration::from_millis(num("PAYMENT_TIMEOUT_MS", 1000)?),
            breaker_failures: num("PAYMENT_BREAKER_FAILURES", 5)?.max(1) as u32,
            breaker_cooldown: dur("PAYMENT_BREAKER_COOLDOWN", "10s")?,
            notify_webhook_url: get("NOTIFY_WEBHOOK_URL"),
            nats_url: get("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            metrics_addr: get("METRICS_ADDR")
                .map(|a| {
                    a.trim().parse().with_context(|| {
                        format!("METRICS_ADDR={a:?}: expected host:port, e.g. 0.0.0.0:9464")
                    })
                })
                .transpose()?,
            shop_accept_timeout: dur("SHOP_ACCEPT_TIMEOUT", "3m")?,
            rider_offer_timeout: dur("RIDER_OFFER_TIMEOUT", "30s")?,
            rider_search_timeout: dur("RIDER_SEARCH_TIMEOUT", "5m")?,
            rider_stale_after: dur("RIDER_STALE_AFTER", "2m")?,
            contexts,
            demo: flag("BAEDAL_DEMO")?,
            demo_public: flag("BAEDAL_DEMO_PUBLIC")?,
            demo_riders: num("BAEDAL_DEMO_RIDERS", 6)?.clamp(1, 10_000) as u32,
            token_ttl: dur("AUTH_TOKEN_TTL", "12h")?,
            login_failures_per_account: num("LOGIN_FAILURES_PER_ACCOUNT", 5)?.clamp(1, 1_000_000)
                as u32,
            login_failures_per_address: num("LOGIN_FAILURES_PER_ADDRESS", 20)?.clamp(1, 1_000_000)
                as u32,
            declines_per_card: num("PAYMENT_DECLINES_PER_CARD", 5)?.clamp(1, 1_000_000) as u32,
            header_read_timeout: dur("HEADER_READ_TIMEOUT", "10s")?,
            request_timeout: dur("REQUEST_TIMEOUT", "60s")?,
            orders_per_customer: num("ORDERS_PER_CUSTOMER", 150)?.clamp(1, 10_000_000) as u32,
            sse_streams_per_user: num("SSE_STREAMS_PER_USER", 5)?.clamp(1, 10_000) as usize,
            sse_streams_max: num("SSE_STREAMS_MAX", 2000)?.clamp(1, 1_000_000) as usize,
            sse_max_lifetime: dur("SSE_MAX_LIFETIME", "30m")?,
            workflow_task_pollers: num("WORKFLOW_TASK_POLLERS", 16)?.min(1_000) as usize,
            worker_threads: threads("WORKER_THREADS")?,
            api_threads: threads("API_THREADS")?,
            reconcile_interval: dur("RECONCILE_INTERVAL", "5m")?,
            reconcile_min_age: dur("RECONCILE_MIN_AGE", "2m")?,
        })
    }

    /// Demo mode's accounts share a published password: it listens on loopback
    /// only, unless `BAEDAL_DEMO_PUBLIC=1` says the exposure is meant.
    pub fn check_demo_exposure(&self) -> anyhow::Result<()> {
        if !self.demo || self.demo_public {
            return Ok(());
        }
        let host = self
            .http_addr
            .rsplit_once(':')
            .map_or(self.http_addr.as_str(), |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!(
                "BAEDAL_DEMO=1 seeds accounts whose password is published; HTTP_ADDR={} is not \
                 a loopback address: set BAEDAL_DEMO_PUBLIC=1 if that is meant",
                self.http_addr
            );
        }
        Ok(())
    }

    pub fn queues(&self) -> Queues {
        Queues::with_prefix(&self.task_queue_prefix)
    }

    pub fn workflow_queue(&self) -> String {
        format!(
            "{}{}",
            self.task_queue_prefix,
            baedal_workflows::ORDER_FULFILLMENT_QUEUE
        )
    }

    /// The change feed's JetStream stream and subject: one per deployment (queue
    /// prefix), named with the characters stream names allow.
    pub fn feed_stream(&self) -> (String, String) {
        let prefix: String = self
            .task_queue_prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        (
            format!("{prefix}ORDER_CHANGES"),
            format!("{prefix}orders.changes"),
        )
    }

    /// The reconciliation schedule's id: one per deployment (queue prefix).
    pub fn reconcile_schedule_id(&self) -> String {
        format!("{}payment-reconciliation", self.task_queue_prefix)
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            payment_ms: self.payment_timeout.as_millis() as u64,
            shop_accept_ms: self.shop_accept_timeout.as_millis() as u64,
            rider_offer_ms: self.rider_offer_timeout.as_millis() as u64,
            rider_search_ms: self.rider_search_timeout.as_millis() as u64,
        }
    }

    pub fn temporal_url(&self) -> String {
        if self.temporal_address.contains("://") {
            self.temporal_address.clone()
        } else {
            format!("http://{}", self.temporal_address)
        }
    }
}

pub fn parse_contexts(list: &str) -> anyhow::Result<Vec<Context>> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.trim().is_empty()) {
        let c = Context::parse(part).map_err(anyhow::Error::msg)?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.is_empty() {
        bail!("no context named in {list:?}");
    }
    Ok(out)
}

impl DatabaseUrl {
    pub fn parse(raw: Option<&str>) -> anyhow::Result<Self> {
        match raw {
            None => Ok(DatabaseUrl::SqliteDir("./data".into())),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(DatabaseUrl::Postgres(u.to_string()))
            }
            Some(u) if u.starts_with("sqlite:") => {
                let dir = u.trim_start_matches("sqlite:").trim_start_matches("//");
                Ok(DatabaseUrl::SqliteDir(if dir.is_empty() {
                    "./data".into()
                } else {
                    dir.into()
                }))
            }
            Some(u) => bail!(
                "DATABASE_URL={u:?}: expected sqlite:<directory> (one file per context) or postgres://…"
            ),
        }
    }
}

/// `TEMPORAL_GRPC_COMPRESSION` (`none`, the default, or `gzip`): whether
/// gRPC calls to Temporal are gzipped. Every process that connects to
/// Temporal reads it here (the benchmark's own client too).
pub fn grpc_gzip(value: Option<&str>) -> anyhow::Result<bool> {
    match value.map(str::trim) {
        None | Some("none") => Ok(false),
        Some("gzip") => Ok(true),
        Some(v) => bail!("TEMPORAL_GRPC_COMPRESSION={v:?}: expected none or gzip"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_make_a_local_run_work() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.http_addr, "127.0.0.1:8080");
        assert_eq!(c.database, DatabaseUrl::SqliteDir("./data".into()));
        assert_eq!(c.payment_timeout, Duration::from_millis(1000));
        assert_eq!(c.contexts.len(), 5);
    }

    #[test]
    fn worker_threads_default_to_one_and_refuse_what_is_not_a_count() {
        assert_eq!(cfg(&[]).unwrap().worker_threads, 1);
        assert_eq!(cfg(&[("WORKER_THREADS", " 4 ")]).unwrap().worker_threads, 4);
        for bad in ["0", "-1", "two", ""] {
            let e = format!("{:#}", cfg(&[("WORKER_THREADS", bad)]).unwrap_err());
            assert!(e.contains("WORKER_THREADS"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn api_threads_default_to_one_and_refuse_what_is_not_a_count() {
        assert_eq!(cfg(&[]).unwrap().api_threads, 1);
        assert_eq!(cfg(&[("API_THREADS", "2")]).unwrap().api_threads, 2);
        for bad in ["0", "-3", "many"] {
            let e = format!("{:#}", cfg(&[("API_THREADS", bad)]).unwrap_err());
            assert!(e.contains("API_THREADS"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn grpc_compression_is_off_unless_asked_for() {
        assert!(!grpc_gzip(None).unwrap());
        assert!(!grpc_gzip(Some("none")).unwrap());
        assert!(grpc_gzip(Some(" gzip ")).unwrap());
        assert!(grpc_gzip(Some("zstd")).is_err());
    }

    #[test]
    fn durations_and_contexts_parse() {
        let c = cfg(&[
            ("SHOP_ACCEPT_TIMEOUT", "2s"),
            ("RIDER_SEARCH_TIMEOUT", "5m"),
            ("BAEDAL_CONTEXTS", "order, payment"),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/test"),
        ])
        .unwrap();
        assert_eq!(c.shop_accept_timeout, Duration::from_secs(2));
        assert_eq!(c.rider_search_timeout, Duration::from_secs(300));
        assert_eq!(c.contexts, vec![Context::Order, Context::Payment]);
        assert!(matches!(c.database, DatabaseUrl::Postgres(_)));
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        let e = cfg(&[("SHOP_ACCEPT_TIMEOUT", "soon")]).unwrap_err();
        assert!(e.to_string().contains("SHOP_ACCEPT_TIMEOUT"));
        let e = cfg(&[("BAEDAL_CONTEXTS", "order,kitchen")]).unwrap_err();
        assert!(e.to_string().contains("kitchen"));
        assert!(cfg(&[("DATABASE_URL", "mysql://x")]).is_err());
        let e = cfg(&[("BAEDAL_DEMO", "yes")]).unwrap_err();
        assert!(e.to_string().contains("BAEDAL_DEMO"));
        let e = cfg(&[("METRICS_ADDR", "9464")]).unwrap_err();
        assert!(e.to_string().contains("METRICS_ADDR"));
        let c = cfg(&[("METRICS_ADDR", "0.0.0.0:9464")]).unwrap();
        assert_eq!(c.metrics_addr.map(|a| a.port()), Some(9464));
        assert_eq!(cfg(&[]).unwrap().metrics_addr, None);
    }

    #[test]
    fn demo_mode_is_off_by_default_and_loopback_only_unless_made_public() {
        let c = cfg(&[]).unwrap();
        assert!(!c.demo);
        assert!(c.check_demo_exposure().is_ok());
        for addr in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
            let c = cfg(&[("BAEDAL_DEMO", "1"), ("HTTP_ADDR", addr)]).unwrap();
            assert!(c.demo);
            assert!(c.check_demo_exposure().is_ok(), "{addr}");
        }
        for addr in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.1.2.3:80",
            "api.example:8080",
        ] {
            let c = cfg(&[("BAEDAL_DEMO", "1"), ("HTTP_ADDR", addr)]).unwrap();
            let e = c.check_demo_exposure().unwrap_err();
            assert!(e.to_string().contains("BAEDAL_DEMO_PUBLIC"), "{addr}: {e}");
            let c = cfg(&[
                ("BAEDAL_DEMO", "1"),
                ("BAEDAL_DEMO_PUBLIC", "1"),
                ("HTTP_ADDR", addr),
            ])
            .unwrap();
            assert!(c.check_demo_exposure().is_ok(), "{addr}");
        }
    }
}
