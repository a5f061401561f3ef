//! `baedal-bench`: the benchmark behind `make bench` (see BENCHMARKS.md).
//!
//! `baedal-bench` runs it against a started stack (scripts/bench.sh starts one)
//! and writes the summary; `baedal-bench check <summary.json>` is the smoke
//! run's assertion on that file. With `BENCH_TOPOLOGY=scaled` the stack is two
//! APIs and two workers per context, part of it killed midway (see `scaled`).

mod actions;
mod dispatch;
mod env;
mod http;
mod lifecycle;
mod procs;
mod report;
mod scaled;
mod stats;
mod streams;
mod temporal;
mod wrk;

// The chaos run's client, bookkeeping and checks: the scaled topology's run
// is judged by the same checks.
#[allow(dead_code)]
#[path = "chaos/checks.rs"]
mod checks;
#[allow(dead_code)]
#[path = "chaos/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "chaos/drive.rs"]
mod drive;
#[allow(dead_code)]
#[path = "chaos/plan.rs"]
mod plan;

use anyhow::Context as _;
use http::Api;
use report::{by_name, ms, num};
use serde_json::{Value, json};
use stats::{Recorder, Summary, round};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Config {
    /// The API base URLs: one, or (scaled) one per API process.
    urls: Vec<String>,
    /// `BENCH_TOPOLOGY=scaled`: two APIs, two workers per context, one of each
    /// killed midway (see `scaled`).
    scaled: bool,
    /// Scaled: the kill strikes once this many orders have started.
    kill_at: usize,
    /// Scaled: the worker processes and their metrics addresses.
    workers: Vec<scaled::Worker>,
    paysim: String,
    temporal: String,
    namespace: String,
    task_queue: String,
    orders: usize,
    concurrency: usize,
    riders: usize,
    offer_poll: Duration,
    order_timeout: Duration,
    deadline: Duration,
    ceiling: Duration,
    wrk: wrk::WrkOptions,
    pids: procs::Watched,
    out: String,
    smoke: bool,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        use crate::env::{var, whole as n};
        let orders = n("BENCH_ORDERS", 500)? as usize;
        let concurrency = (n("BENCH_CONCURRENCY", 32)? as usize).max(1);
        let paysim_default = var("PAYMENT_GATEWAY_URL", "http://127.0.0.1:28090");
        let scaled = match var("BENCH_TOPOLOGY", "single").as_str() {
            "single" => false,
            "scaled" => true,
            other => anyhow::bail!("BENCH_TOPOLOGY={other:?}: expected single or scaled"),
        };
        let urls: Vec<String> = var("BENCH_URLS", &var("BENCH_URL", "http://127.0.0.1:28080"))
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let workers = scaled::parse_workers(&var("BENCH_WORKER_METRICS", ""))?;
        if scaled {
            anyhow::ensure!(
                urls.len() == 2,
                "BENCH_TOPOLOGY=scaled needs the two APIs in BENCH_URLS"
            );
            anyhow::ensure!(
                workers.len() == 2 * scaled::CONTEXTS.len(),
                "BENCH_TOPOLOGY=scaled needs two workers per context in BENCH_WORKER_METRICS"
            );
        }
        Ok(Config {
            urls,
            scaled,
            kill_at: (n("BENCH_KILL_AT", (orders / 2) as u64)? as usize).clamp(1, orders.max(1)),
            workers,
            paysim: var("BENCH_PAYSIM_URL", &paysim_default),
            temporal: var("TEMPORAL_ADDRESS", "127.0.0.1:27233"),
            namespace: var("TEMPORAL_NAMESPACE", "default"),
            task_queue: var("BENCH_TASK_QUEUE", "baedal-bench"),
            orders,
            concurrency,
            riders: (n("BENCH_RIDERS", 2 * concurrency as u64)? as usize).max(1),
            offer_poll: Duration::from_millis(n("BENCH_OFFER_POLL_MS", 50)?.max(5)),
            order_timeout: Duration::from_secs(n("BENCH_ORDER_TIMEOUT_S", 180)?),
            deadline: Duration::from_secs(n("BENCH_DEADLINE_S", 1800)?),
            ceiling: Duration::from_secs(n("BENCH_CEILING_S", 20)?.max(1)),
            wrk: wrk::WrkOptions {
                threads: n("BENCH_WRK_THREADS", 2)? as u32,
                connections: n("BENCH_WRK_CONNECTIONS", 16)? as u32,
                duration: Duration::from_secs(n("BENCH_WRK_S", 5)?.max(1)),
            },
            pids: procs::Watched::parse(&var("BENCH_PIDS", ""))?,
            out: var("BENCH_OUT", "target/bench/summary.json"),
            smoke: var("BENCH_SMOKE", "0") == "1",
        })
    }
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["run"] => run(Config::from_env()?).await,
        ["dispatch"] => dispatch::run().await,
        ["streams"] => streams::run().await,
        ["check", path] => judge(
            path,
            report::check,
            "shape ok, no lost or double-charged orders",
        ),
        ["check-streams", path] => judge(
            path,
            streams::check,
            "every stream opened and got every change once; idle streams read nothing",
        ),
        _ => anyhow::bail!(
            "usage: baedal-bench [run] | baedal-bench dispatch | baedal-bench streams | baedal-bench check <summary.json> | baedal-bench check-streams <streams.json>"
        ),
    }
}

/// Reads a summary and runs a smoke run's check on it.
fn judge(
    path: &str,
    check: fn(&Value) -> Result<(), Vec<String>>,
    passed: &str,
) -> anyhow::Result<()> {
    let s: Value =
        serde_json::from_slice(&std::fs::read(path).with_context(|| format!("reading {path}"))?)
            .with_context(|| format!("{path} is not JSON"))?;
    match check(&s) {
        Ok(()) => {
            progress(&format!("{path}: {passed}"));
            Ok(())
        }
        Err(problems) => anyhow::bail!("{path}:\n  {}", problems.join("\n  ")),
    }
}

async fn wait_healthy(api: &Api, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = api.fetch_json(&format!("{base}/api/health"), None).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{base} did not answer /api/health within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let rec = Arc::new(Recorder::default());
    let api = Api::balanced(&cfg.urls, rec.clone())?;
    for base in api.bases() {
        wait_healthy(&api, base).await?;
    }
    let client = temporal::connect(&cfg.temporal, &cfg.namespace).await?;
    // Workflow ids of this run's minimal workflows must not collide with an earlier run's.
    let run_tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_secs()
        .to_string();

    progress(&format!("logging in 4 users and {} riders", cfg.riders));
    let users = Arc::new(lifecycle::login_all(&api, cfg.riders).await?);
    lifecycle::place_riders(&api, &users).await?;

    let careful = if cfg.scaled {
        let totals = lifecycle::basket_totals(&api).await?;
        Some(Arc::new(lifecycle::Careful::new(&api, totals, &run_tag)))
    } else {
        None
    };

    progress(&format!(
        "driving {} order lifecycles at concurrency {}{}",
        cfg.orders,
        cfg.concurrency,
        if cfg.scaled {
            format!(
                " over {} APIs; SIGKILL of {} at order {}",
                api.bases().len(),
                scaled::victims().join(", "),
                cfg.kill_at
            )
        } else {
            String::new()
        }
    ));
    let cpu_before = cfg.pids.cpu();
    let started = Arc::new(AtomicUsize::new(0));
    let done = AtomicBool::new(false);
    let since = Instant::now();
    let drive = async {
        let outcome = lifecycle::run(
            &api,
            users.clone(),
            &lifecycle::Settings {
                orders: cfg.orders,
                concurrency: cfg.concurrency,
                offer_poll: cfg.offer_poll,
                order_timeout: cfg.order_timeout,
                phase_deadline: cfg.deadline,
                started: started.clone(),
                careful: careful.clone(),
            },
        )
        .await;
        done.store(true, Ordering::SeqCst);
        outcome
    };
    let strike = async {
        if !cfg.scaled {
            return None;
        }
        scaled::kill_midway(
            &cfg.pids,
            &api,
            &cfg.workers,
            &started,
            cfg.kill_at,
            &done,
            since,
        )
        .await
    };
    let (outcome, kill) = tokio::join!(drive, strike);
    let cpu_orders = cfg.pids.cpu().since(&cpu_before);
    let dead = cfg.pids.dead();
    if !dead.is_empty() {
        anyhow::bail!("processes exited during the run: {}", dead.join(", "));
    }
    progress(&format!(
        "{} delivered in {:.1} s; checking every order and its payment",
        outcome.delivered,
        outcome.elapsed.as_secs_f64()
    ));
    let verdict = lifecycle::verify(&api, &users, &outcome.placed, &cfg.paysim).await?;
    let ids: Vec<String> = verdict
        .delivered
        .iter()
        .map(|id| format!("order-{id}"))
        .collect();
    progress(&format!("fetching {} workflow histories", ids.len()));
    let hist = tokio::time::timeout(Duration::from_secs(600), temporal::histories(&client, &ids))
        .await
        .context("fetching the histories took over 10 minutes")??;
    let scaled = match &careful {
        Some(careful) => Some(
            scaled_checks(
                &cfg,
                &api,
                &users,
                careful,
                kill.as_ref(),
                &hist,
                (cfg.orders - verdict.delivered.len(), verdict.double_charges),
            )
            .await,
        ),
        None => None,
    };

    let probes = cfg.orders.clamp(1, 200);
    progress(&format!(
        "place overhead: {probes} orders placed alone, then cancelled; bare update-with-start"
    ));
    let (probe_problems, probe_double_charges) =
        lifecycle::place_probe(&api, &users, probes, cfg.concurrency, &cfg.paysim).await?;
    // The same worker options as the order worker (the SDK's defaults), so the
    // comparison is of the two request paths, not of worker tuning.
    let queue = format!("{}-uws", cfg.task_queue);
    let worker = temporal::BenchWorker::start(client.clone(), &queue, None)?;
    let bare =
        temporal::bare_update_with_start(&client, &queue, &run_tag, cfg.concurrency, probes).await;
    worker.stop()?;
    let bare = bare?;

    progress(&format!(
        "ceiling: one-activity workflows for {} s at concurrency {}",
        cfg.ceiling.as_secs(),
        cfg.concurrency
    ));
    let queue = format!("{}-ceiling", cfg.task_queue);
    let worker = temporal::BenchWorker::start(client.clone(), &queue, Some(cfg.concurrency))?;
    let cpu_before = cfg.pids.cpu();
    let ceiling = temporal::ceiling(&client, &queue, &run_tag, cfg.concurrency, cfg.ceiling).await;
    let cpu_ceiling = cfg.pids.cpu().since(&cpu_before);
    worker.stop()?;
    let ceiling = ceiling?;

    let sample = outcome
        .placed
        .iter()
        .find(|p| verdict.delivered.contains(&p.order_id))
        .context("no delivered order to read")?;
    let token = &users.customers[sample.customer];
    let read_url = api.url(&format!("/api/orders/{}", sample.order_id));
    progress(&format!(
        "read paths with wrk: {} s each, {} threads, {} connections",
        cfg.wrk.duration.as_secs(),
        cfg.wrk.threads,
        cfg.wrk.connections
    ));
    let read = wrk::run(&read_url, token, &cfg.wrk)?;
    let query = wrk::run(&format!("{read_url}/live"), token, &cfg.wrk)?;

    let mut summary = summarize(
        &cfg,
        &rec,
        &outcome,
        &verdict,
        &hist,
        &ceiling,
        bare,
        (&probe_problems, probe_double_charges),
        (&read, &query),
        (&cpu_orders, &cpu_ceiling),
    );
    let mut unproven = Vec::new();
    if let Some((section, problems)) = scaled {
        summary["scaled"] = section;
        unproven = problems;
    }
    if let Some(dir) = std::path::Path::new(&cfg.out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cfg.out, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", cfg.out))?;
    print!("{}", report::table(&summary));
    println!("\nsummary: {}", cfg.out);
    for why in outcome
        .failures
        .iter()
        .chain(&verdict.lost)
        .chain(&probe_problems)
        .take(10)
    {
        progress(why);
    }
    if summary["lost_orders"] != 0 || summary["double_charges"] != 0 || !probe_problems.is_empty() {
        anyhow::bail!(
            "{} orders lost, {} double charges, {} problems with the place probes",
            summary["lost_orders"],
            summary["double_charges"],
            probe_problems.len()
        );
    }
    if !unproven.is_empty() {
        anyhow::bail!("scaled topology:\n  {}", unproven.join("\n  "));
    }
    Ok(())
}

/// The scaled topology's judgement: the chaos run's checks over the lifecycle
/// orders (read again for up to 30 s while state that settles shows
/// breaches), and what shows which process served what. Returns the
/// summary's `scaled` section and what did not hold.
async fn scaled_checks(
    cfg: &Config,
    api: &Api,
    users: &lifecycle::Users,
    careful: &lifecycle::Careful,
    kill: Option<&scaled::Kill>,
    hist: &temporal::Histories,
    (lost, double_charges): (usize, usize),
) -> (Value, Vec<String>) {
    progress("checking as the chaos run does: money, read models, notifications, riders");
    let people = users.for_checks();
    let reader = client::Client::new(api.clone(), Duration::from_secs(60));
    let calls = careful.calls();
    let orders: Vec<drive::Established> = careful.book.lock().unwrap().orders.clone();
    let faults: Vec<(String, bool, String)> = kill.map_or_else(Vec::new, |k| {
        k.killed
            .iter()
            .map(|(n, _, e)| {
                (
                    format!("SIGKILL {n}"),
                    e.is_none(),
                    e.clone().unwrap_or_default(),
                )
            })
            .collect()
    });
    let unexpected: Vec<String> = cfg
        .pids
        .dead()
        .into_iter()
        .map(|n| format!("{n} exited without being killed"))
        .collect();
    let until = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let snap = checks::read_back(&reader, &people, &orders, &cfg.paysim).await;
        let rows = {
            let book = careful.book.lock().unwrap();
            checks::evaluate(&checks::Inputs {
                users: &people,
                book: &book,
                calls: &calls,
                snap: &snap,
                probe_offered: None,
                unexpected_exits: &unexpected,
                processes: cfg.pids.named().len(),
                faults: &faults,
                faults_planned: scaled::victims().len(),
            })
        };
        let settling = rows.iter().any(|r| r.eventual && !r.breaches.is_empty());
        if !settling || Instant::now() > until {
            break rows;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    let checks: Vec<(String, usize, Vec<String>)> = rows
        .into_iter()
        .map(|r| (r.name.to_string(), r.checked, r.breaches))
        .collect();
    let kill_ms = kill
        .and_then(|k| k.at.duration_since(UNIX_EPOCH).ok())
        .map_or(i64::MAX, |d| d.as_millis() as i64);
    let tasks = scaled::tally(&hist.tasks, &cfg.pids, kill_ms);
    let work_end = scaled::scrape_all(&cfg.workers).await;
    let evidence = scaled::Evidence {
        api,
        watched: &cfg.pids,
        workers: &cfg.workers,
        kill,
        tasks: &tasks,
        work_end: &work_end,
        checks: &checks,
        lost,
        double_charges,
    };
    let proofs = evidence.proofs();
    let problems = proofs
        .iter()
        .filter(|p| !p.ok)
        .map(|p| format!("{}: {}", p.claim, p.detail))
        .collect();
    (evidence.to_json(&proofs), problems)
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    cfg: &Config,
    rec: &Recorder,
    outcome: &lifecycle::Outcome,
    verdict: &lifecycle::Verdict,
    hist: &temporal::Histories,
    ceiling: &temporal::Ceiling,
    bare: Summary,
    (probe_problems, probe_double_charges): (&[String], usize),
    (read, query): (&wrk::WrkResult, &wrk::WrkResult),
    (cpu_orders, cpu_ceiling): (&BTreeMap<String, f64>, &BTreeMap<String, f64>),
) -> Value {
    let delivered = verdict.delivered.len();
    let orders_per_s = delivered as f64 / outcome.elapsed.as_secs_f64();
    let events_per_order = if hist.per_workflow.is_empty() {
        f64::NAN
    } else {
        hist.per_workflow.iter().sum::<usize>() as f64 / hist.per_workflow.len() as f64
    };
    let efficiency = orders_per_s * events_per_order / ceiling.events_per_s();
    let actions_per_order = if hist.actions_per_workflow.is_empty() {
        f64::NAN
    } else {
        hist.actions_per_workflow.iter().sum::<u64>() as f64
            / hist.actions_per_workflow.len() as f64
    };
    let place = rec.summary("place_alone");
    let place_p99 = place.map_or(f64::NAN, |p| p.p99);
    let place_p50 = place.map_or(f64::NAN, |p| p.p50);
    let under_load_p99 = rec.summary("place").map_or(f64::NAN, |p| p.p99);
    let per_order: BTreeMap<String, f64> = cpu_orders
        .iter()
        .map(|(k, v)| (k.clone(), v / delivered as f64))
        .collect();
    let share = if cfg.pids.is_empty() {
        f64::NAN
    } else {
        let ours = per_order.get("api").unwrap_or(&0.0) + per_order.get("workers").unwrap_or(&0.0);
        ours / (ours + per_order.get("temporal").unwrap_or(&0.0))
    };
    let mut cpu_json = by_name(&per_order, 4);
    if cfg.pids.is_empty() {
        // Without the stack's pids only the driver itself is measured.
        for name in ["api", "workers", "temporal"] {
            cpu_json[name] = Value::Null;
        }
    }
    let events_dist = Summary::of(
        &hist
            .per_workflow
            .iter()
            .map(|&n| n as f64)
            .collect::<Vec<_>>(),
    );
    let lost = cfg.orders - delivered;
    let mut s = json!({
        "orders_per_s": num(orders_per_s, 3),
        "events_per_order": num(events_per_order, 2),
        "actions_per_order": num(actions_per_order, 2),
        "efficiency": num(efficiency, 3),
        "place_p99_ms": num(place_p99, 2),
        "place_overhead_p99_ratio": num(place_p99 / bare.p99, 2),
        "place_overhead_p50_ratio": num(place_p50 / bare.p50, 2),
        "place_under_load_p99_ms": num(under_load_p99, 2),
        "place_under_load_overhead_p99_ratio": num(under_load_p99 / bare.p99, 2),
        "bare_update_with_start_p99_ms": num(bare.p99, 2),
        "read_model_rps": num(read.requests_per_s, 1),
        "query_rps": num(query.requests_per_s, 1),
        "read_vs_query_rps_ratio": num(read.requests_per_s / query.requests_per_s, 2),
        "lost_orders": lost,
        "double_charges": verdict.double_charges + probe_double_charges,
        "place_probe_problems": probe_problems,
        "cpu_s_per_order": cpu_json,
        "cpu_share_api_workers": num(share, 3),
        "peak_rss_mb": by_name(&cfg.pids.peak_rss_mb(), 1),
        "ceiling_events_per_s": num(ceiling.events_per_s(), 1),
        "orders": {
            "requested": cfg.orders,
            "delivered": delivered,
            "elapsed_s": num(outcome.elapsed.as_secs_f64(), 2),
            "owner_accept_retries": outcome.accept_retries,
            "rider_offer_retries": outcome.offer_retries,
            "failures": outcome.failures.iter().chain(&verdict.lost).take(20).collect::<Vec<_>>(),
        },
        "latencies_ms": Value::Object(rec.all().into_iter().map(|(k, v)| (k, v.to_json())).collect()),
        "call_errors": rec.errors(),
        "place_to_delivered_ms": ms(Summary::of(&outcome.place_to_delivered_ms)),
        "events_per_order_distribution": ms(events_dist),
        "histories_read": hist.per_workflow.len(),
        "events_by_type": Value::Object(
            hist.by_type.iter().map(|(k, v)| (k.clone(), json!(round(*v, 2)))).collect()
        ),
        // Temporal Cloud billable Actions by kind, mean per order (see actions.rs).
        "actions_by_kind": Value::Object(
            hist.actions_by_kind.iter().map(|(k, v)| (k.clone(), json!(round(*v, 2)))).collect()
        ),
        "ceiling": {
            "workflows": ceiling.workflows,
            "events_per_workflow": ceiling.events_per_workflow,
            "seconds": num(ceiling.elapsed.as_secs_f64(), 2),
            "drained_after_s": num(ceiling.drained.as_secs_f64(), 2),
            "worker_pollers": cfg.concurrency.max(2),
            "workflows_per_s": num(ceiling.workflows_per_s(), 1),
            "events_per_s": num(ceiling.events_per_s(), 1),
            "cpu_s_per_workflow": by_name(
                &cpu_ceiling.iter().map(|(k, v)| (k.clone(), v / ceiling.workflows.max(1) as f64)).collect(),
                5,
            ),
        },
        "bare_update_with_start_ms": bare.to_json(),
        "read_path": {
            "read_model": wrk_json(read),
            "query": wrk_json(query),
            "p99_ratio_query_vs_read": num(query.p99_ms / read.p99_ms, 2),
            "seconds": cfg.wrk.duration.as_secs(),
            "threads": cfg.wrk.threads,
            "connections": cfg.wrk.connections,
        },
        "settings": {
            "orders": cfg.orders,
            "concurrency": cfg.concurrency,
            "riders": cfg.riders,
            "offer_poll_ms": cfg.offer_poll.as_millis() as u64,
            "ceiling_s": cfg.ceiling.as_secs(),
            "smoke": cfg.smoke,
        },
        "finished_at_unix": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    });
    s["targets"] = report::targets(&s);
    let topology = if cfg.scaled { "scaled" } else { "single" };
    s["topology"] = json!(topology);
    s["settings"]["topology"] = json!(topology);
    s["settings"]["apis"] = json!(cfg.urls.len());
    s["settings"]["kill_at_order"] = json!(cfg.scaled.then_some(cfg.kill_at));
    s
}

fn wrk_json(r: &wrk::WrkResult) -> Value {
    json!({
        "requests_per_s": num(r.requests_per_s, 1),
        "p50_ms": num(r.p50_ms, 3),
        "p99_ms": num(r.p99_ms, 3),
        "requests": r.requests,
        "errors": r.errors,
    })
}
