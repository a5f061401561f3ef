//! `baedal-chaos`: order lifecycles under crashes (`make chaos`, RELIABILITY.md).
//!
//! Drives a seeded mix of order paths through the HTTP API — delivered,
//! cancelled, rejected, shop timeout, rider decline, no rider — with
//! conflicting actions sent at the same time and requests repeated with the
//! same `Idempotency-Key`, while it SIGKILLs and restarts the worker, the API
//! and the Temporal server (scripts/chaos.sh starts them and passes their pids
//! in `CHAOS_PIDS`). Then it checks the payment gateway's ledger, every role's
//! read model and the notification feeds, prints one line per check (what was
//! checked, how many breaches) and exits 1 on any breach.
//!
//! ```text
//! baedal-chaos [--seed N] [--orders N] [--concurrency N] [--riders N]
//!              [--worker-kills N] [--api-kills N] [--temporal-restarts N] [--settle-s N]
//! ```

// Its whole numbers come from flags as well: `whole` is the benchmark's.
#[allow(dead_code)]
#[path = "../env.rs"]
mod env;
#[allow(dead_code)]
#[path = "../http.rs"]
mod http;
#[allow(dead_code)]
#[path = "../procs.rs"]
mod procs;
#[allow(dead_code)]
#[path = "../stats.rs"]
mod stats;

mod checks;
mod client;
mod drive;
mod plan;
mod stack;

use anyhow::{Context as _, bail};
use client::Client;
use drive::{Established, OfferDesk, ProbeGate, User, Users, World, is_final};
use serde_json::{Value, json};
use stack::{Ready, Stack};
use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Options {
    seed: u64,
    orders: usize,
    concurrency: usize,
    riders: usize,
    worker_kills: usize,
    api_kills: usize,
    temporal_restarts: usize,
    settle: Duration,
    url: String,
    paysim: String,
    temporal: String,
    pids: String,
    logs: std::path::PathBuf,
    out: String,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let env = env::var;
        let seed_now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 % 1_000_000;
        let mut o = Options {
            seed: seed_now,
            orders: 200,
            concurrency: 8,
            riders: 12,
            worker_kills: 2,
            api_kills: 1,
            temporal_restarts: 1,
            settle: Duration::from_secs(180),
            url: env("CHAOS_URL", "http://127.0.0.1:48080"),
            paysim: env("CHAOS_PAYSIM_URL", "http://127.0.0.1:48090"),
            temporal: env("TEMPORAL_ADDRESS", "127.0.0.1:47233"),
            pids: env("CHAOS_PIDS", ""),
            logs: env("CHAOS_LOGS", "target/chaos/logs").into(),
            out: env("CHAOS_OUT", "target/chaos/summary.json"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            if flag == "-h" || flag == "--help" {
                println!(
                    "usage: baedal-chaos [--seed N] [--orders N] [--concurrency N] [--riders N] \
                     [--worker-kills N] [--api-kills N] [--temporal-restarts N] [--settle-s N]"
                );
                std::process::exit(0);
            }
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .with_context(|| format!("{flag} needs a value"))?,
            };
            let num = || -> anyhow::Result<u64> {
                value
                    .trim()
                    .parse()
                    .with_context(|| format!("{flag} {value:?} is not a whole number"))
            };
            match flag.as_str() {
                "--seed" => o.seed = num()?,
                "--orders" => o.orders = num()? as usize,
                "--concurrency" => o.concurrency = (num()? as usize).max(1),
                "--riders" => o.riders = (num()? as usize).max(1),
                "--worker-kills" => o.worker_kills = num()? as usize,
                "--api-kills" => o.api_kills = num()? as usize,
                "--temporal-restarts" => o.temporal_restarts = num()? as usize,
                "--settle-s" => o.settle = Duration::from_secs(num()?),
                other => bail!("unknown option {other} (see --help)"),
            }
        }
        Ok(o)
    }

    /// The faults in the order they strike, each once this many orders have started:
    /// evenly spread over the run, kinds interleaved.
    fn faults(&self) -> Vec<(usize, &'static str)> {
        let mut kinds = Vec::new();
        for k in 0..self
            .worker_kills
            .max(self.api_kills)
            .max(self.temporal_restarts)
        {
            if k < self.worker_kills {
                kinds.push("worker");
            }
            if k < self.api_kills {
                kinds.push("api");
            }
            if k < self.temporal_restarts {
                kinds.push("temporal");
            }
        }
        let n = kinds.len();
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| ((self.orders * (i + 1) / (n + 1)).max(1), k))
            .collect()
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[chaos] {}", msg.as_ref());
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("[chaos] could not run: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let o = Options::parse()?;
    if o.pids.is_empty() {
        bail!(
            "CHAOS_PIDS is empty: run scripts/chaos.sh, which starts the stack and passes its pids"
        );
    }
    let (api_url, paysim_url, temporal_addr) =
        (o.url.clone(), o.paysim.clone(), o.temporal.clone());
    let stack = Arc::new(Stack::adopt(
        &o.pids,
        move |name| match name {
            "api" => Ready::Http(format!("{api_url}/api/health")),
            "paysim" => Ready::Http(format!("{paysim_url}/health")),
            "temporal" => Ready::Listening(temporal_addr.clone()),
            _ => Ready::Alive(Duration::from_secs(2)),
        },
        o.logs.clone(),
    )?);
    for needed in ["temporal", "api", "worker", "paysim"] {
        if !stack.has(needed) {
            bail!("CHAOS_PIDS names no {needed}");
        }
    }
    let result = drive_and_check(&o, stack.clone()).await;
    stack.stop_own();
    result
}

async fn drive_and_check(o: &Options, stack: Arc<Stack>) -> anyhow::Result<bool> {
    let started = Instant::now();
    let rec = Arc::new(stats::Recorder::default());
    // A generous timeout: an attempt that waits longer is a hang (a breach).
    let api = http::Api::with_timeout(&o.url, rec, Duration::from_secs(60))?;
    let client = Arc::new(Client::new(api, Duration::from_secs(150)));
    wait_healthy(&client).await?;

    progress(format!(
        "seed {}: {} orders at concurrency {}, {} riders; faults: {}",
        o.seed,
        o.orders,
        o.concurrency,
        o.riders,
        o.faults()
            .iter()
            .map(|(at, k)| format!("{k} at order {at}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let users = Arc::new(login_all(&client, o.riders).await?);
    let mut menus = Vec::new();
    for shop in &users.shops {
        let r = client
            .call(
                "menu",
                reqwest::Method::GET,
                &format!("/api/shops/{shop}/menu"),
                None,
                None,
                None,
            )
            .await;
        let mut m: Vec<(String, i64)> = r
            .body
            .as_array()
            .with_context(|| format!("menu of {shop}: {} {}", r.status, r.body))?
            .iter()
            .filter_map(|i| Some((i["id"].as_str()?.to_string(), i["price"].as_i64()?)))
            .collect();
        m.sort();
        if m.is_empty() {
            bail!("{shop} has an empty menu");
        }
        menus.push(m);
    }
    let plans = plan::draw(o.seed, o.orders, users.customers.len(), &menus);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    drive::report_riders(&client, &users).await;
    let desk = Arc::new(OfferDesk::default());
    let background = vec![
        tokio::spawn(drive::heartbeat(
            client.clone(),
            users.clone(),
            Duration::from_secs(20),
            stop_rx.clone(),
        )),
        tokio::spawn(desk.clone().run(
            client.clone(),
            users.clone(),
            Duration::from_millis(400),
            stop_rx.clone(),
        )),
        tokio::spawn({
            let (stack, mut stop) = (stack.clone(), stop_rx.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => stack.watch_once().await,
                        _ = stop.changed() => return,
                    }
                }
            }
        }),
    ];
    let world = Arc::new(World {
        client: client.clone(),
        users: users.clone(),
        desk,
        book: Default::default(),
        seed: o.seed,
        started: AtomicUsize::new(0),
        placing: AtomicUsize::new(0),
        order_budget: Duration::from_secs(150),
        probe: Default::default(),
    });

    // The faults strike as the run reaches their order numbers.
    let schedule = o.faults();
    let faults = tokio::spawn({
        let (world, stack, schedule) = (world.clone(), stack.clone(), schedule.clone());
        async move {
            for (at, what) in schedule {
                while world.started.load(Ordering::SeqCst) < at {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // A worker dies best with a charge under way (its outcome then
                // unknown to the workflow); wait a little for one.
                if what == "worker" {
                    let until = Instant::now() + Duration::from_secs(10);
                    while world.placing.load(Ordering::SeqCst) == 0 && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    // The request reaches the workflow, which schedules the charge.
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                let down = match what {
                    "api" => Duration::from_secs(3),
                    "worker" => Duration::from_secs(4),
                    _ => Duration::from_secs(5),
                };
                progress(format!(
                    "SIGKILL {what} (order {at} started), down {down:?}"
                ));
                let f = stack.crash(what, down).await;
                progress(format!(
                    "{what} back after {:.1} s{}",
                    f.down_s,
                    if f.ok {
                        String::new()
                    } else {
                        format!(": {}", f.note)
                    }
                ));
            }
        }
    });

    world.run_lanes(plans, o.concurrency).await;
    let _ = faults.await;
    progress(format!(
        "{} orders driven in {:.0} s; settling (up to {:?})",
        o.orders,
        started.elapsed().as_secs_f64(),
        o.settle
    ));
    let established: Vec<Established> = world.book.lock().unwrap().orders.clone();
    let open = settle(&client, &users, &established, o.settle).await;
    if open > 0 {
        progress(format!(
            "{open} orders still not final after the settle period"
        ));
    }

    // The end probe: every rider must be able to take an offer again.
    let probe_plans = plan::probe(o.seed, o.orders, o.riders, users.customers.len(), &menus);
    let gate = Arc::new(ProbeGate::new(probe_plans.len()));
    *world.probe.lock().unwrap() = Some(gate.clone());
    progress(format!(
        "end probe: {} orders at once, one offer for each rider",
        probe_plans.len()
    ));
    world.run_lanes(probe_plans, o.riders).await;
    let everything: Vec<Established> = world.book.lock().unwrap().orders.clone();
    let probe_ids: Vec<Established> = everything
        .iter()
        .filter(|e| e.plan.path == plan::Path::Probe)
        .cloned()
        .collect();
    settle(&client, &users, &probe_ids, Duration::from_secs(60)).await;
    let offered: HashSet<usize> = gate.offered.lock().unwrap().clone();

    // Read back and judge; state that settles over time is read again while it has breaches.
    progress("reading back the ledger, read models and feeds");
    let judge_until = Instant::now() + Duration::from_secs(30);
    let calls = client.take_book();
    let (rows, snap) = loop {
        let snap = checks::read_back(&client, &users, &everything, &o.paysim).await;
        let faults_done: Vec<(String, bool, String)> = stack
            .faults
            .lock()
            .unwrap()
            .iter()
            .map(|f| (f.what.clone(), f.ok, f.note.clone()))
            .collect();
        let unexpected = stack.unexpected.lock().unwrap().clone();
        let rows = {
            let book = world.book.lock().unwrap();
            checks::evaluate(&checks::Inputs {
                users: &users,
                book: &book,
                calls: &calls,
                snap: &snap,
                probe_offered: Some(&offered),
                unexpected_exits: &unexpected,
                processes: stack.names().len(),
                faults: &faults_done,
                faults_planned: schedule.len(),
            })
        };
        let settling = rows.iter().any(|r| r.eventual && !r.breaches.is_empty());
        if !settling || Instant::now() > judge_until {
            break (rows, snap);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    let _ = stop_tx.send(true);
    for b in background {
        let _ = b.await;
    }

    let book = world.book.lock().unwrap();
    let mut planned: Vec<(plan::Path, usize)> = Vec::new();
    for p in plan::Path::MIX
        .iter()
        .map(|(p, _)| *p)
        .chain([plan::Path::Probe])
    {
        let n = everything.iter().filter(|e| e.plan.path == p).count()
            + book
                .not_established
                .iter()
                .filter(|s| s.contains(&format!("({})", p.name())))
                .count();
        planned.push((p, n));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let breaches: usize = rows.iter().map(|r| r.breaches.len()).sum();
    let faults_log = stack.faults.lock().unwrap().clone();

    println!();
    println!(
        "baedal chaos run — seed {}, {} orders (+{} probe), concurrency {}, {} riders, {:.0} s",
        o.seed, o.orders, o.riders, o.concurrency, o.riders, elapsed
    );
    println!("faults:");
    for f in &faults_log {
        println!(
            "  {:>6.1} s  {:<28} back after {:>4.1} s  {}",
            f.at_s,
            f.what,
            f.down_s,
            if f.ok { "ok" } else { &f.note }
        );
    }
    println!(
        "calls: {} ({} retried through an outage), {} orders established, {} not\n",
        calls.calls,
        calls.retried,
        everything.len(),
        book.not_established.len()
    );
    print!("{}", checks::mix(&book, &snap.views, &planned));
    println!();
    print!("{}", checks::table(&rows));
    for r in rows.iter().filter(|r| !r.breaches.is_empty()) {
        println!("\n{} — {} breaches:", r.name, r.breaches.len());
        for b in r.breaches.iter().take(8) {
            println!("  {b}");
        }
        if r.breaches.len() > 8 {
            println!("  … {} more in {}", r.breaches.len() - 8, o.out);
        }
    }
    if !book.not_established.is_empty() || !book.notes.is_empty() {
        println!("\nnotes (how lanes ended early; the checks above judge the orders either way):");
        for n in book.not_established.iter().chain(&book.notes).take(12) {
            println!("  {n}");
        }
    }
    println!(
        "\n{}: seed {} — {breaches} breaches",
        if breaches == 0 { "PASS" } else { "FAIL" },
        o.seed
    );

    let summary = json!({
        "seed": o.seed,
        "orders": o.orders,
        "probeOrders": o.riders,
        "concurrency": o.concurrency,
        "riders": o.riders,
        "elapsedS": (elapsed * 10.0).round() / 10.0,
        "finishedAtUnix": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "calls": calls.calls,
        "retriedCalls": calls.retried,
        "established": everything.len(),
        "notEstablished": book.not_established,
        "faults": faults_log.iter().map(|f| json!({"what": f.what, "atS": f.at_s, "downS": f.down_s, "ok": f.ok, "note": f.note})).collect::<Vec<_>>(),
        "checks": rows.iter().map(|r| json!({"name": r.name, "checked": r.checked, "breaches": r.breaches})).collect::<Vec<_>>(),
        "breaches": breaches,
        "notes": book.notes,
        "orders": everything.iter().map(|e| {
            let v = snap.views.get(&e.order_id);
            json!({
                "n": e.plan.n,
                "orderId": e.order_id,
                "path": e.plan.path.name(),
                "status": v.map(|v| v["status"].clone()),
                "reason": v.map(|v| v["reason"].clone()),
                "rider": v.and_then(|v| v["rider"]["id"].as_str()),
                "history": v.map(|v| v["history"].clone()),
            })
        }).collect::<Vec<_>>(),
    });
    if let Some(dir) = std::path::Path::new(&o.out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", o.out))?;
    println!("summary: {}", o.out);
    Ok(breaches == 0)
}

async fn wait_healthy(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = client
            .api
            .fetch_json(&client.api.url("/api/health"), None)
            .await
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer /api/health within 60 s",
                client.api.url("")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn login(client: &Client, name: &str) -> anyhow::Result<(User, Value)> {
    let body = json!({"username": name, "password": "demo"});
    let r = client
        .call(
            "login",
            reqwest::Method::POST,
            "/api/auth/login",
            None,
            Some(&body),
            None,
        )
        .await;
    match (r.status, r.body["token"].as_str(), r.body["id"].as_str()) {
        (200, Some(token), Some(id)) => Ok((
            User {
                name: name.to_string(),
                id: id.to_string(),
                token: token.to_string(),
            },
            r.body.clone(),
        )),
        _ => bail!("login {name}: {} {}", r.status, r.body),
    }
}

async fn login_all(client: &Client, riders: usize) -> anyhow::Result<Users> {
    let mut customers = Vec::new();
    for c in ["customer1", "customer2"] {
        customers.push(login(client, c).await?.0);
    }
    let mut owners = Vec::new();
    let mut shops = Vec::new();
    for name in ["owner1", "owner2"] {
        let (u, body) = login(client, name).await?;
        shops.push(
            body["shopId"]
                .as_str()
                .with_context(|| format!("{name} has no shopId: {body}"))?
                .to_string(),
        );
        owners.push(u);
    }
    // Password hashing is slow on purpose: a few logins at a time.
    let names: Vec<String> = (1..=riders).map(|i| format!("rider{i}")).collect();
    let logged: Vec<anyhow::Result<(User, Value)>> =
        futures::StreamExt::collect(futures::StreamExt::buffered(
            futures::stream::iter(names.iter().map(|n| login(client, n))),
            4,
        ))
        .await;
    let riders = logged
        .into_iter()
        .map(|r| r.map(|(u, _)| u))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("are BAEDAL_DEMO_RIDERS riders seeded? (scripts/chaos.sh sets it to --riders)")?;
    Ok(Users {
        customers,
        owners,
        shops,
        riders,
    })
}

/// Waits until every order is final and, if undelivered, its refund settled
/// (or the time is up). Returns how many are not.
async fn settle(client: &Client, users: &Users, orders: &[Established], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut open: Vec<&Established> = orders.iter().collect();
    loop {
        let reads = open.iter().map(|o| async move {
            let r = client
                .get(
                    "settle",
                    &format!("/api/orders/{}", o.order_id),
                    &users.customers[o.plan.customer].token,
                )
                .await;
            let s = r.body["status"].as_str().unwrap_or("");
            let done = is_final(s)
                && (s == "DELIVERED"
                    || matches!(
                        r.body["refund"]["status"].as_str(),
                        Some("REFUNDED" | "FAILED")
                    ));
            (*o, done)
        });
        let done: Vec<(&Established, bool)> = futures::StreamExt::collect(
            futures::StreamExt::buffer_unordered(futures::stream::iter(reads), 8),
        )
        .await;
        open = done
            .into_iter()
            .filter(|(_, d)| !d)
            .map(|(o, _)| o)
            .collect();
        if open.is_empty() || Instant::now() > deadline {
            return open.len();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
