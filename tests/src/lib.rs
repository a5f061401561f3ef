//! Test harness: `spawn_stack()` starts the whole product in-process against a
//! real Temporal dev server (one per test binary, started from the pinned CLI),
//! with a fresh SQLite directory and its own task queues per stack, a payment
//! gateway simulator and a webhook receiver on real ports. Tests talk to it over
//! HTTP like a client would.

use anyhow::{Context as _, bail};
use baedal_activities::Config;
use baedal_workflows::Context;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Address of the shared dev server, started on first use.
pub fn temporal_address() -> String {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        if let Ok(a) = std::env::var("TEMPORAL_ADDRESS") {
            return a;
        }
        start_dev_server().expect("starting the Temporal dev server")
    })
    .clone()
}

/// The first port of the kernel's ephemeral range (what `bind(0)` hands out).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port for a server this process starts (Temporal, NATS, a metrics
/// endpoint). It lies below the kernel's ephemeral range, so no `bind(0)` (the
/// stacks' own API, gateway and webhook listeners) can take it between this
/// call and the server binding it: once that happened, and the Temporal client
/// of every test in the binary met an HTTP listener of another test's stack.
/// Ports are handed out in turn from a start that differs per process, and one
/// that something else holds is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = u32::from(ephemeral_low());
    if ephemeral_low < LOW + 1_000 {
        // No room below the range: take an ephemeral one, as before.
        return StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let span = ephemeral_low - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {ephemeral_low}");
}

/// `temporal server start-dev` on `port`, with the search attributes the
/// workflow upserts; in memory, or in the SQLite file `db` so it survives a restart.
fn dev_server_command(port: u16, db: Option<&std::path::Path>) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let bin = std::env::var("TEMPORAL_BIN").unwrap_or_else(|_| "temporal".into());
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
        .args(["--log-level", "error", "--port", &port.to_string()])
        .args(["--ui-port", &free_port().to_string()]);
    for attr in baedal_workflows::search::ALL_KEYWORDS {
        cmd.args(["--search-attribute", &format!("{attr}=Keyword")]);
    }
    if let Some(db) = db {
        cmd.arg("--db-filename").arg(db);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // The server dies with the thread that spawned it, even if the test is killed.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

fn wait_listening(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("the Temporal dev server did not listen on {addr} within 60s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn start_dev_server() -> anyhow::Result<String> {
    let port = free_port();
    let (tx, rx) = std::sync::mpsc::channel();
    // Spawned from a thread that lives as long as the test binary (PDEATHSIG).
    std::thread::spawn(move || {
        match dev_server_command(port, None).spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(anyhow::anyhow!(
                    "spawning the temporal CLI: {e} (set TEMPORAL_BIN or run `make test`)"
                )));
            }
        }
        loop {
            std::thread::park();
        }
    });
    rx.recv()??;
    let addr = format!("127.0.0.1:{port}");
    wait_listening(&addr)?;
    Ok(addr)
}

/// URL of the NATS server (JetStream on) the stacks' order changes go through:
/// `NATS_URL` when set, else one server per test binary, started on first use on
/// a free port with a temporary store and dying with the test process.
pub fn nats_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(u) = std::env::var("NATS_URL")
            && !u.is_empty()
        {
            return u;
        }
        start_nats_server().expect("starting nats-server")
    })
    .clone()
}

/// `NATS_SERVER_BIN` (scripts/test.sh sets it), else `nats-server` on PATH, else
/// Debian's /usr/sbin/nats-server.
fn nats_server_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return bin.into();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nats-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| "/usr/sbin/nats-server".into())
}

/// The servers' store directories (in the temp dir) are named after the test
/// process that made them: `baedal-test-nats-<pid>-<random>`.
const NATS_STORE_PREFIX: &str = "baedal-test-nats-";

/// Removes the store directories of test processes that are gone (their servers
/// died with them; nothing else removes the directories).
fn remove_stale_nats_stores() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(NATS_STORE_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start_nats_server() -> anyhow::Result<String> {
    remove_stale_nats_stores();
    // A port free a moment ago may be taken by the time the server binds it:
    // then the server exits, and it starts again on another.
    let mut attempt = 1;
    loop {
        match try_start_nats_server() {
            Ok(url) => return Ok(url),
            Err((e, exited)) if exited && attempt < 3 => {
                eprintln!("nats-server exited on start ({e:#}); starting it again");
                attempt += 1;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// One try: the error, and whether the server exited (rather than never listened).
fn try_start_nats_server() -> Result<String, (anyhow::Error, bool)> {
    use std::os::unix::process::CommandExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let setup = |e: std::io::Error| (anyhow::Error::from(e), false);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{NATS_STORE_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(setup)?;
    let port = free_port();
    let bin = nats_server_bin();
    let log_path = dir.path().join("nats.log");
    let log = std::fs::File::create(&log_path).map_err(setup)?;
    let log_err = log.try_clone().map_err(setup)?;
    let exited = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    // Spawned from a thread that lives as long as the test binary (PDEATHSIG),
    // and keeps the store directory as long.
    std::thread::spawn({
        let exited = exited.clone();
        let bin = bin.clone();
        move || {
            let mut cmd = std::process::Command::new(&bin);
            cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(dir.path().join("store"))
                .stdin(std::process::Stdio::null())
                .stdout(log)
                .stderr(log_err);
            // The server dies with this thread, even if the test is killed.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    let _ = child.wait();
                    exited.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!(
                        "spawning {}: {e} (install nats-server, set NATS_SERVER_BIN \
                         or NATS_URL, or run `make test`)",
                        bin.display()
                    )));
                }
            }
            let _store = dir;
            loop {
                std::thread::park();
            }
        }
    });
    rx.recv()
        .map_err(|e| (anyhow::Error::from(e), false))?
        .map_err(|e| (e, false))?;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        let gone = exited.load(Ordering::SeqCst);
        if gone || Instant::now() > deadline {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n");
            let what = if gone {
                "exited"
            } else {
                "did not listen within 30s"
            };
            return Err((
                anyhow::anyhow!("{} on {addr} {what}; its log ends:\n{tail}", bin.display()),
                gone,
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(format!("nats://{addr}"))
}

/// A dev server a test owns: it keeps its state in a file, so the test can stop
/// and start it on the same address (a server restart).
pub struct OwnDevServer {
    pub address: String,
    port: u16,
    db: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnDevServer {
    pub fn start() -> Self {
        let mut s = OwnDevServer {
            port: free_port(),
            address: String::new(),
            db: tempfile::tempdir().unwrap(),
            child: None,
        };
        s.address = format!("127.0.0.1:{}", s.port);
        s.restart();
        s
    }

    /// Kills the server at once (no graceful shutdown), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and state file.
    pub fn restart(&mut self) {
        self.kill();
        let db = self.db.path().join("temporal.db");
        self.child = Some(dev_server_command(self.port, Some(&db)).spawn().unwrap());
        wait_listening(&self.address).unwrap();
    }
}

impl Drop for OwnDevServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Messages the webhook receiver accepted, plus how many it refused on purpose.
#[derive(Clone, Default)]
pub struct Webhook {
    pub received: Arc<Mutex<Vec<Value>>>,
    /// Refuse this many deliveries (503) first, to prove the relay retries.
    pub refuse_first: Arc<Mutex<u32>>,
}

pub struct StackOptions {
    pub contexts: Vec<Context>,
    pub env: Vec<(&'static str, String)>,
    pub webhook: bool,
    /// Run every context on a fresh Postgres database instead of SQLite files.
    pub postgres: bool,
    /// Another Temporal server than the binary's shared one.
    pub temporal_address: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            contexts: Context::ALL.to_vec(),
            env: vec![
                // Tests run the reconciliation when they mean to (reconcile_now).
                ("RECONCILE_INTERVAL", "1h".into()),
                ("SHOP_ACCEPT_TIMEOUT", "30s".into()),
                ("RIDER_OFFER_TIMEOUT", "20s".into()),
                ("RIDER_SEARCH_TIMEOUT", "60s".into()),
            ],
            webhook: false,
            postgres: false,
            temporal_address: None,
        }
    }
}

/// A worker thread and the sender that tells it to stop.
type RunningWorker = (oneshot::Sender<()>, std::thread::JoinHandle<()>);

pub struct Stack {
    pub base: String,
    pub http: reqwest::Client,
    pub sim: baedal_paysim::Sim,
    pub webhook: Webhook,
    pub cfg: Config,
    pub temporal: temporalio_client::Client,
    _dir: tempfile::TempDir,
    workers: Mutex<HashMap<String, RunningWorker>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The payload key of the recorded histories (a test key, for nothing else).
pub const RECORDING_PAYLOAD_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/histories/recording-payload.key"
);

pub async fn spawn_stack() -> Stack {
    spawn_stack_with(StackOptions::default()).await
}

pub async fn spawn_stack_with(opts: StackOptions) -> Stack {
    init_test_log();
    let dir = tempfile::tempdir().unwrap();
    let sim = baedal_paysim::Sim::default();
    let sim_addr = serve(baedal_paysim::router(sim.clone())).await;
    let webhook = Webhook::default();
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert(
        "TEMPORAL_ADDRESS".into(),
        opts.temporal_address
            .clone()
            .unwrap_or_else(temporal_address),
    );
    env.insert(
        "BAEDAL_TASK_QUEUE_PREFIX".into(),
        format!("t{}-", uuid::Uuid::new_v4().simple()),
    );
    // The order changes' broker, shared by the binary's stacks: their stream and
    // consumer names carry the task queue prefix.
    env.insert("NATS_URL".into(), nats_url());
    env.insert(
        "DATABASE_URL".into(),
        format!("sqlite:{}", dir.path().display()),
    );
    env.insert("PAYMENT_GATEWAY_URL".into(), format!("http://{sim_addr}"));
    env.insert("PAYMENT_TIMEOUT_MS".into(), "1000".into());
    env.insert(
        "AUTH_SIGNING_KEY_FILE".into(),
        format!("{}/auth-signing.key", dir.path().display()),
    );
    // Recordings are sealed with the test key kept beside them, so the replay
    // test can open them; every other stack makes a key of its own.
    let payload_key = if std::env::var("RECORD_HISTORIES").is_ok() {
        RECORDING_PAYLOAD_KEY.to_string()
    } else {
        format!("{}/payload.key", dir.path().display())
    };
    env.insert("PAYLOAD_KEY_FILE".into(), payload_key);
    // The tests log in as the demo accounts (SPEC §3).
    env.insert("BAEDAL_DEMO".into(), "1".into());
    // The seeded riders report no position during a test: they stay offerable
    // (a test of staleness sets its own).
    env.insert("RIDER_STALE_AFTER".into(), "30m".into());
    if opts.postgres {
        env.insert("DATABASE_URL".into(), fresh_postgres_database().await);
    }
    if opts.webhook {
        let addr = serve(webhook_router(webhook.clone())).await;
        env.insert("NOTIFY_WEBHOOK_URL".into(), format!("http://{addr}/kakao"));
    }
    for (k, v) in &opts.env {
        env.insert((*k).into(), v.clone());
    }
    let cfg = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let state = baedal_api::AppState::build(cfg.clone())
        .await
        .expect("api state");
    let temporal = state.temporal.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let api = tokio::spawn(async move {
        let _ = baedal_api::serve(state, listener, std::future::pending()).await;
    });
    let stack = Stack {
        base,
        http: reqwest::Client::new(),
        sim,
        webhook,
        cfg,
        temporal,
        _dir: dir,
        workers: Mutex::new(HashMap::new()),
        tasks: Mutex::new(vec![api]),
    };
    for c in opts.contexts {
        stack.start_worker(c);
    }
    stack
}

async fn serve(router: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let _ = axum::serve(l, router).await;
    });
    addr
}

/// Creates an empty database on the test Postgres server and returns its URL.
async fn fresh_postgres_database() -> String {
    use sqlx::Executor;
    let base = std::env::var("BAEDAL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connecting to the test Postgres server");
    // Databases of earlier test processes are dropped here: a stack's pools live
    // until its process ends, so a test cannot drop its own. Names carry the
    // process id so tests running side by side keep theirs.
    let mine = format!("baedal_test_p{}_", std::process::id());
    let stale: Vec<(String,)> = sqlx::query_as(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'baedal\\_test\\_%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    for (db,) in stale.into_iter().filter(|(db,)| !db.starts_with(&mine)) {
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
            .await;
    }
    let name = format!("{mine}{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

fn webhook_router(w: Webhook) -> axum::Router {
    use axum::http::StatusCode;
    axum::Router::new().route(
        "/kakao",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let w = w.clone();
            async move {
                let mut refuse = w.refuse_first.lock().unwrap();
                if *refuse > 0 {
                    *refuse -= 1;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                w.received.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    )
}

fn init_test_log() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Warnings always (a failing test prints what its stack warned of, a
        // passing one prints nothing); `TEST_LOG=1` for everything at info.
        let default = if std::env::var("TEST_LOG").is_ok() {
            "info"
        } else {
            "warn"
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| default.into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// A customer order body for the first shop.
pub fn order_body(token: &str) -> Value {
    json!({
        "shopId": "shop1",
        "items": [{"menuId": "shop1-fried", "quantity": 2}, {"menuId": "shop1-cola", "quantity": 1}],
        "address": {"text": "서울 강남구 테헤란로 1", "lat": 37.5012, "lon": 127.0396},
        "phone": "010-1234-5678",
        "paymentToken": token,
    })
}

/// Sends a request and returns (status, content type, parsed body or null), for
/// tests that look at the answer's media type as well as its body.
pub async fn send_for_answer(req: reqwest::RequestBuilder) -> (u16, String, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    (
        status,
        ct,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// The statuses of an order's `history`, in order.
pub fn statuses(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_string())
        .collect()
}

/// 18,000 × 2 + 2,000 × 1.
pub const ORDER_TOTAL: i64 = 38_000;

impl Stack {
    /// Starts (or restarts) one context's worker inside this process.
    pub fn start_worker(&self, c: Context) {
        self.start_workers(&[c], c.name());
    }

    /// One worker host running `contexts` together, as `baedal-worker --context
    /// a,b,…` does; `key` names it for [`Stack::stop_worker`]-like calls.
    pub fn start_workers(&self, contexts: &[Context], key: &str) {
        let (tx, rx) = oneshot::channel();
        let cfg = self.cfg.clone();
        let contexts = contexts.to_vec();
        // The worker's future is not Send: give it a runtime of its own, as a
        // separate process would have.
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            if let Err(e) = rt.block_on(baedal_worker::run(cfg, &contexts, async {
                let _ = rx.await;
            })) {
                eprintln!("worker {contexts:?} stopped: {e:#}");
            }
        });
        self.workers
            .lock()
            .unwrap()
            .insert(key.into(), (tx, thread));
    }

    /// A second API process on the same stores and Temporal (as a scaled-out
    /// gateway would be); returns its base URL.
    pub async fn spawn_api(&self) -> String {
        self.spawn_api_with(self.cfg.clone()).await
    }

    /// Another API process with settings of its own (say, a rotated key).
    pub async fn spawn_api_with(&self, cfg: Config) -> String {
        let state = baedal_api::AppState::build(cfg).await.expect("api state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = baedal_api::serve(state, listener, std::future::pending()).await;
        });
        self.tasks.lock().unwrap().push(task);
        base
    }

    /// Stops one context's worker (its queued work waits for the next one).
    pub fn stop_worker(&self, c: Context) {
        if let Some((tx, _)) = self.workers.lock().unwrap().remove(c.name()) {
            let _ = tx.send(());
        }
    }

    /// Stops one context's worker and returns once it has drained and is gone,
    /// so nothing sent afterwards can reach it.
    pub async fn stop_worker_and_wait(&self, c: Context) {
        let stopped = self.workers.lock().unwrap().remove(c.name());
        if let Some((tx, thread)) = stopped {
            let _ = tx.send(());
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .unwrap()
                .expect("worker thread");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn login(&self, user: &str) -> String {
        let r = self
            .http
            .post(self.url("/api/auth/login"))
            .json(&json!({"username": user, "password": "demo"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login {user}");
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// An action as a careful client sends it: with an `Idempotency-Key`, and
    /// again with the same key after a 503 (Temporal busy or restarting), as its
    /// `Retry-After` asks. Any other answer is returned.
    pub async fn act(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let key = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self
                .http
                .post(self.url(path))
                .bearer_auth(token)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let b = r.json::<Value>().await.unwrap_or(Value::Null);
            if code != 503 || Instant::now() > deadline {
                return (code, b);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Places an order and expects it established (201); returns the order id.
    pub async fn place(&self, customer_token: &str) -> String {
        let (s, b) = self
            .post("/api/orders", customer_token, order_body("tok_ok"))
            .await;
        assert_eq!(s, 201, "place order: {b}");
        b["orderId"].as_str().unwrap().to_string()
    }

    /// Polls `path` until `pred` holds, or fails after `within`.
    pub async fn eventually(
        &self,
        path: &str,
        token: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (s, b) = self.get(path, token).await;
            if s == 200 && pred(&b) {
                return b;
            }
            if Instant::now() > deadline {
                panic!("{path} never satisfied the condition within {within:?}; last: {s} {b}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the customer's view of an order has `status`.
    pub async fn wait_status(&self, order_id: &str, customer_token: &str, status: &str) -> Value {
        self.eventually(
            &format!("/api/orders/{order_id}"),
            customer_token,
            Duration::from_secs(40),
            |o| o["status"] == status,
        )
        .await
    }

    /// The rider holding a live offer of `order_id`, polling riders 1..=n.
    pub async fn rider_with_offer(
        &self,
        order_id: &str,
        riders: &[(String, String)],
    ) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            for (name, token) in riders {
                let (_, offers) = self.get("/api/rider/offers", token).await;
                if offers
                    .as_array()
                    .is_some_and(|a| a.iter().any(|o| o["orderId"] == order_id))
                {
                    return (name.clone(), token.clone());
                }
            }
            assert!(
                Instant::now() < deadline,
                "no rider got an offer of {order_id}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the owner's list shows the order (the shop context has it).
    pub async fn owner_sees(&self, order_id: &str, owner_token: &str) {
        self.eventually(
            "/api/shop/orders",
            owner_token,
            Duration::from_secs(20),
            |l| {
                l.as_array()
                    .unwrap()
                    .iter()
                    .any(|o| o["orderId"] == order_id)
            },
        )
        .await;
    }

    /// Once the owner sees the order, accepts it with `cook_minutes`; returns the
    /// 200 answer.
    pub async fn accept(&self, order_id: &str, owner_token: &str, cook_minutes: u32) -> Value {
        self.owner_sees(order_id, owner_token).await;
        let (code, body) = self
            .act(
                &format!("/api/shop/orders/{order_id}/accept"),
                owner_token,
                json!({ "cookMinutes": cook_minutes }),
            )
            .await;
        assert_eq!(code, 200, "accept {order_id}: {body}");
        body
    }

    /// Places `orders` orders at once, accepts them all, and has every rider
    /// accept every offer they see as fast as they can, until each rider holds a
    /// delivery. Fails if any rider is ever assigned a second one, or is offered
    /// or holds more than one afterwards.
    pub async fn race_riders_for(&self, orders: usize, riders: &[(String, String)]) {
        let customer = self.login("customer1").await;
        let owner = self.login("owner1").await;
        let ids: Vec<String> =
            futures::future::join_all((0..orders).map(|_| self.place(&customer))).await;
        futures::future::join_all(ids.iter().map(|id| self.accept(id, &owner, 10))).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut assigned = HashMap::new();
        while assigned.len() < riders.len() && Instant::now() < deadline {
            for (name, t) in riders {
                let (_, offers) = self.get("/api/rider/offers", t).await;
                for o in offers.as_array().unwrap() {
                    let oid = o["orderId"].as_str().unwrap();
                    let (code, _) = self
                        .post(&format!("/api/rider/offers/{oid}/accept"), t, json!({}))
                        .await;
                    if code == 200 {
                        assert!(
                            assigned.insert(name.clone(), oid.to_string()).is_none(),
                            "{name} got a second delivery"
                        );
                    } else {
                        assert_eq!(code, 409);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            assigned.len(),
            riders.len(),
            "each rider carries exactly one delivery"
        );
        // While they carry them, nobody is offered anything more.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (name, t) in riders {
            let (_, offers) = self.get("/api/rider/offers", t).await;
            assert_eq!(offers, json!([]), "{name} was offered a second delivery");
            let (_, d) = self.get("/api/rider/deliveries", t).await;
            assert_eq!(d.as_array().unwrap().len(), 1, "{name}");
        }
    }

    /// The rest of a happy path once the shop has accepted: the rider holding the
    /// offer takes it, the owner marks the food ready, the rider picks it up and
    /// completes. Each call must answer 200.
    pub async fn deliver(&self, order_id: &str, owner_token: &str, rider_token: &str) {
        for (path, token) in [
            (format!("/api/rider/offers/{order_id}/accept"), rider_token),
            (format!("/api/shop/orders/{order_id}/ready"), owner_token),
            (
                format!("/api/rider/deliveries/{order_id}/pickup"),
                rider_token,
            ),
            (
                format!("/api/rider/deliveries/{order_id}/complete"),
                rider_token,
            ),
        ] {
            let (code, body) = self.act(&path, token, json!({})).await;
            assert_eq!(code, 200, "{path}: {body}");
        }
    }

    pub async fn riders(&self, n: u32) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for i in 1..=n {
            let name = format!("rider{i}");
            let t = self.login(&name).await;
            out.push((name, t));
        }
        out
    }

    /// Returns once Temporal has admitted the update `update_id` of the order's
    /// workflow (with no worker running, it waits there for the next workflow
    /// task): what Temporal admits first reaches the workflow first.
    pub async fn wait_update_admitted(&self, order_id: &str, update_id: &str) {
        use temporalio_client::grpc::WorkflowService;
        use temporalio_client::tonic::IntoRequest;
        use temporalio_common::protos::temporal::api::{
            common::v1::WorkflowExecution,
            enums::v1::UpdateWorkflowExecutionLifecycleStage as Stage,
            update::v1::{UpdateRef, WaitPolicy},
            workflowservice::v1::PollWorkflowExecutionUpdateRequest,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let request = PollWorkflowExecutionUpdateRequest {
                namespace: self.cfg.temporal_namespace.clone(),
                update_ref: Some(UpdateRef {
                    workflow_execution: Some(WorkflowExecution {
                        workflow_id: baedal_workflows::workflow_id(order_id),
                        run_id: String::new(),
                    }),
                    update_id: update_id.to_string(),
                }),
                identity: "baedal-tests".into(),
                wait_policy: Some(WaitPolicy {
                    lifecycle_stage: Stage::Admitted.into(),
                }),
            };
            let mut client = self.temporal.clone();
            let polled = tokio::time::timeout(
                Duration::from_secs(5),
                WorkflowService::poll_workflow_execution_update(
                    &mut client,
                    request.into_request(),
                ),
            )
            .await;
            if let Ok(Ok(r)) = polled
                && r.into_inner().stage >= Stage::Admitted as i32
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "update {update_id} of {order_id} was never admitted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Exported history of an order's workflow (for replay tests and event counts).
    pub async fn history_json(&self, order_id: &str) -> anyhow::Result<Vec<u8>> {
        let h = self
            .temporal
            .get_workflow_handle::<baedal_workflows::OrderFulfillment>(
                baedal_workflows::workflow_id(order_id),
            )
            .fetch_history(Default::default());
        h.to_json().await.context("fetching history")
    }

    /// Workflow ids Temporal visibility lists for `query`.
    pub async fn find_workflows(&self, query: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let stream = self.temporal.list_workflows(
            query.to_string(),
            temporalio_client::WorkflowListOptions::default(),
        );
        let found: Vec<_> = stream.try_collect().await.unwrap();
        found.iter().map(|w| w.id().to_string()).collect()
    }

    /// Waits until visibility lists workflow `wid` for `query` (it is eventually consistent).
    pub async fn eventually_listed(&self, query: &str, wid: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.find_workflows(query).await.iter().any(|w| w == wid) {
                return;
            }
            assert!(Instant::now() < deadline, "{wid} never listed by {query}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Cancels an order's workflow as an operator would (`temporal workflow cancel`).
    pub async fn operator_cancel(&self, order_id: &str) {
        self.temporal
            .get_workflow_handle::<baedal_workflows::OrderFulfillment>(
                baedal_workflows::workflow_id(order_id),
            )
            .cancel(
                temporalio_client::WorkflowCancelOptions::builder()
                    .reason("operator: customer called support")
                    .build(),
            )
            .await
            .unwrap();
    }

    /// Runs the payment reconciliation now (a trigger of its schedule) and
    /// returns its report.
    pub async fn reconcile_now(&self) -> baedal_workflows::ReconcileReport {
        use temporalio_client::schedules::ScheduleOverlapPolicy;
        let schedule = self
            .temporal
            .get_schedule_handle(self.cfg.reconcile_schedule_id());
        let runs = |d: &temporalio_client::schedules::ScheduleDescription| d.recent_actions();
        let before = runs(&schedule.describe(Default::default()).await.unwrap()).len();
        schedule
            .trigger(ScheduleOverlapPolicy::AllowAll, Default::default())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let started = loop {
            let recent = runs(&schedule.describe(Default::default()).await.unwrap());
            if recent.len() > before {
                break recent.last().unwrap().workflow_id.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the reconciliation never started"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.temporal
            .get_workflow_handle::<baedal_workflows::PaymentReconciliation>(started)
            .get_result(Default::default())
            .await
            .unwrap()
    }

    pub async fn wait_workflow_closed(&self, order_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let d = self
                .temporal
                .get_workflow_handle::<baedal_workflows::OrderFulfillment>(
                    baedal_workflows::workflow_id(order_id),
                )
                .describe(Default::default())
                .await;
            if let Ok(d) = d
                && d.status() != temporalio_client::WorkflowExecutionStatus::Running
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "workflow of {order_id} never closed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, (tx, _)) in self.workers.lock().unwrap().drain() {
            let _ = tx.send(());
        }
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Writes the order's history under tests/histories/ when RECORD_HISTORIES is set
/// (see tests/histories/README.md).
pub async fn record_history(s: &Stack, id: &str, name: &str) {
    if std::env::var("RECORD_HISTORIES").is_ok() {
        let json = s.history_json(id).await.unwrap();
        let path = format!("{}/histories/{name}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(&path, json).unwrap();
        eprintln!("recorded {path}");
    }
}

/// Follows an order's event stream from the start: each event's JSON arrives on
/// the channel, which closes when the server ends the stream.
pub async fn follow(
    s: &Stack,
    path: &str,
    token: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    follow_from(s, path, token, None).await.expect("a stream")
}

/// Follows an event stream, resuming after `last_event_id` if given (an empty
/// `token` sends no `Authorization`: a `?ticket=` in `path` opens it); the
/// answer's status when it is not a stream.
pub async fn follow_from(
    s: &Stack,
    path: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<Value>, u16> {
    use futures::StreamExt;
    let mut req = s.http.get(s.url(path));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req.send().await.unwrap();
    if resp.status() != 200 {
        return Err(resp.status().as_u16());
    }
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        loop {
            // A receiver dropped by the test is a client that goes away: the
            // connection closes with this task.
            let chunk = tokio::select! {
                _ = tx.closed() => return,
                chunk = stream.next() => match chunk {
                    Some(Ok(chunk)) => chunk,
                    _ => return,
                },
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty()
                    && tx
                        .send(serde_json::from_str(&data.join("\n")).unwrap())
                        .is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// The next event of a followed stream, `None` once the server ended it.
pub async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Option<Value> {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an event (or the stream's end) within 30 s")
}

/// The default options with these settings (each replacing a default of the
/// same name).
pub fn with_env(env: &[(&'static str, &str)]) -> StackOptions {
    let mut o = StackOptions::default();
    for (k, v) in env {
        o.env.retain(|(kk, _)| kk != k);
        o.env.push((k, v.to_string()));
    }
    o
}

/// These options on Postgres (one schema per context) instead of SQLite files.
pub fn on_store(postgres: bool, mut opts: StackOptions) -> StackOptions {
    opts.postgres = postgres;
    opts
}

/// Runs the scenario `$name` (an `async fn(postgres: bool)`) as two tests,
/// `$name::on_sqlite` and `$name::on_postgres`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$name(false).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$name(true).await
            }
        }
    )+};
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn free_ports_lie_outside_what_bind_zero_hands_out_and_differ() {
        let ephemeral_low = ephemeral_low();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        for &p in &ports {
            assert!(p < ephemeral_low, "{p} is in the ephemeral range");
            StdListener::bind(("127.0.0.1", p)).expect("a handed-out port is free");
        }
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    }
}
