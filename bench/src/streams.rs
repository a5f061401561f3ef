//! `baedal-bench streams`: live updates at city scale on one API process.
//! Places `BENCH_STREAM_ORDERS` orders (the two demo customers, alternately),
//! opens `BENCH_STREAMS` event streams spread evenly over them, lets them idle
//! for `BENCH_STREAMS_IDLE_S` (the API's CPU and the store reads meanwhile),
//! then the owners act on every order (the first half accepted, the second
//! half rejected), and times each change from the moment the order recorded
//! it (the `at` of its history entry) to its event on every stream that
//! follows the order. Writes `BENCH_STREAMS_OUT` (default
//! `target/bench/streams.json`); `baedal-bench check-streams <file>` is the
//! smoke run's assertion on it: every stream opened and got every change
//! exactly once, and an idle stream read nothing; never a timing.
//!
//! The stack must allow that many streams (`SSE_STREAMS_PER_USER`,
//! `SSE_STREAMS_MAX`; scripts/bench.sh sets both) and the driver and the API
//! a file descriptor per stream.

use crate::http::Api;
use crate::lifecycle::{self, Placed};
use crate::procs::Watched;
use crate::stats::{Recorder, Summary, round};
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, watch};

struct Settings {
    url: String,
    streams: usize,
    orders: usize,
    idle: Duration,
    /// How long every change may take to reach every stream before the run
    /// counts what is missing.
    settle: Duration,
    pids: Watched,
    out: String,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        use crate::env::{var, whole as n};
        let streams = n("BENCH_STREAMS", 10_000)?.max(1) as usize;
        let orders = (n("BENCH_STREAM_ORDERS", 500)? as usize).clamp(2, streams.max(2));
        Ok(Settings {
            url: var("BENCH_URL", "http://127.0.0.1:28080"),
            streams,
            orders,
            idle: Duration::from_secs(n("BENCH_STREAMS_IDLE_S", 20)?.max(1)),
            settle: Duration::from_secs(n("BENCH_STREAMS_SETTLE_S", 60)?.max(1)),
            pids: Watched::parse(&var("BENCH_PIDS", ""))?,
            out: var("BENCH_STREAMS_OUT", "target/bench/streams.json"),
        })
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One event a stream received.
struct Seen {
    stream: usize,
    order: usize,
    event_id: u64,
    status: String,
    /// When the order recorded the change (its history entry's `at`), ms since the epoch.
    at_ms: f64,
    received_ms: f64,
}

/// What every stream saw, shared by the stream tasks.
#[derive(Default)]
struct Board {
    seen: Mutex<Vec<Seen>>,
    /// Streams that answered 200, and those refused (by status; 0: no answer).
    opened: AtomicUsize,
    refused: Mutex<BTreeMap<u16, usize>>,
    /// Streams whose server ended them (after a final status).
    ended: AtomicUsize,
    /// Streams that have read their order's backlog (every event up to the
    /// status the order had when the stream opened).
    caught_up: AtomicUsize,
}

/// Splits complete `text/event-stream` events off the front of `buf`:
/// (id, data) of each; comments (the keep-alives) are skipped.
fn take_events(buf: &mut String) -> Vec<(Option<u64>, String)> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let (mut id, mut data) = (None, String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            out.push((id, data));
        }
    }
    out
}

/// One screen following one order until the server ends the stream or the run stops.
#[allow(clippy::too_many_arguments)]
async fn follow(
    http: reqwest::Client,
    url: String,
    token: String,
    stream: usize,
    order: usize,
    backlog: usize,
    board: Arc<Board>,
    opening: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let permit = opening.acquire_owned().await;
    let resp = match http.get(&url).bearer_auth(&token).send().await {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => {
            *board
                .refused
                .lock()
                .unwrap()
                .entry(r.status().as_u16())
                .or_default() += 1;
            return;
        }
        Err(_) => {
            *board.refused.lock().unwrap().entry(0).or_default() += 1;
            return;
        }
    };
    board.opened.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut got = 0;
    loop {
        let chunk = tokio::select! {
            c = body.next() => c,
            _ = stop.changed() => return,
        };
        let Some(Ok(chunk)) = chunk else {
            board.ended.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let received_ms = now_ms();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        for (id, data) in take_events(&mut buf) {
            let doc: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            let at_ms = doc["at"]
                .as_str()
                .and_then(|s| humantime::parse_rfc3339(s).ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
            board.seen.lock().unwrap().push(Seen {
                stream,
                order,
                event_id: id.unwrap_or(u64::MAX),
                status: doc["status"].as_str().unwrap_or("").to_string(),
                at_ms,
                received_ms,
            });
            got += 1;
            if got == backlog {
                board.caught_up.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The API's own counters (its `/metrics` page), by series name.
async fn counters(http: &reqwest::Client, base: &str) -> anyhow::Result<HashMap<String, f64>> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect())
}

const POLLS: &str = "baedal_live_polls_total";
const READS: &str = "baedal_event_stream_reads_total";
const OPEN: &str = "baedal_event_streams_open";

fn delta(after: &HashMap<String, f64>, before: &HashMap<String, f64>, k: &str) -> f64 {
    after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0)
}

/// Waits until `done()` or `limit` passes; says whether it became true.
async fn until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

pub async fn run() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    let api = Api::with_timeout(
        &s.url,
        Arc::new(Recorder::default()),
        Duration::from_secs(60),
    )?;
    crate::wait_healthy(&api, &s.url).await?;
    let users = Arc::new(lifecycle::login_all(&api, 0).await?);

    crate::progress(&format!("streams: placing {} orders", s.orders));
    let placed: Vec<Result<Placed, String>> = futures::stream::iter(0..s.orders)
        .map(|n| {
            let (api, users) = (api.clone(), users.clone());
            async move { lifecycle::place(&api, &users, "place", n % 2).await }
        })
        .buffered(16)
        .collect()
        .await;
    let orders: Vec<Placed> = placed
        .into_iter()
        .enumerate()
        .map(|(n, p)| p.map_err(|why| anyhow::anyhow!("placing order #{n}: {why}")))
        .collect::<anyhow::Result<_>>()?;
    // Every order's history when its streams open (PAID: one entry or more).
    let mut backlogs = Vec::with_capacity(orders.len());
    for p in &orders {
        let a = api
            .get(
                "order",
                &format!("/api/orders/{}", p.order_id),
                &users.customers[p.customer],
            )
            .await;
        anyhow::ensure!(
            a.ok() && a.body["status"] == "PAID",
            "order {} is not PAID: {} {}",
            p.order_id,
            a.status,
            a.body
        );
        backlogs.push(a.body["history"].as_array().map_or(0, Vec::len));
    }

    crate::progress(&format!(
        "streams: opening {} event streams over {} orders",
        s.streams,
        orders.len()
    ));
    // No overall timeout: a stream lives as long as the run wants it.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()?;
    let board = Arc::new(Board::default());
    let opening = Arc::new(Semaphore::new(256));
    let (stop_tx, stop_rx) = watch::channel(false);
    let opened_at = Instant::now();
    let tasks: Vec<_> = (0..s.streams)
        .map(|i| {
            let o = i % orders.len();
            let p = &orders[o];
            tokio::spawn(follow(
                http.clone(),
                format!("{}/api/orders/{}/events", s.url, p.order_id),
                users.customers[p.customer].clone(),
                i,
                o,
                backlogs[o],
                board.clone(),
                opening.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let all_in = until(Duration::from_secs(180), || {
        board.caught_up.load(Ordering::Relaxed)
            + board.refused.lock().unwrap().values().sum::<usize>()
            >= s.streams
    })
    .await;
    let open_s = opened_at.elapsed().as_secs_f64();
    let opened = board.opened.load(Ordering::Relaxed);
    crate::progress(&format!(
        "streams: {opened} open in {open_s:.1} s{}",
        if all_in { "" } else { " (not all caught up)" }
    ));

    // Idle: nothing changes on any followed order.
    tokio::time::sleep(Duration::from_secs(2)).await;
    crate::progress(&format!("streams: idle for {} s", s.idle.as_secs()));
    let metrics_before = counters(&http, &s.url).await?;
    let cpu_before = s.pids.cpu();
    let idle_from = Instant::now();
    let idle_from_ms = now_ms();
    tokio::time::sleep(s.idle).await;
    let idle_to_ms = now_ms();
    let idle_s = idle_from.elapsed().as_secs_f64();
    let cpu_idle = s.pids.cpu().since(&cpu_before);
    let metrics_idle = counters(&http, &s.url).await?;
    let rss_mb = s.pids.pid("api").and_then(crate::procs::rss_mb);
    let seen_before_changes = board.seen.lock().unwrap().len();

    // Changes: each owner accepts the first half of their orders and rejects the rest.
    crate::progress("streams: the owners accept half the orders and reject the rest");
    let changes_from_ms = now_ms();
    let cpu_before = s.pids.cpu();
    let half = orders.len() / 2;
    let acted: Vec<(usize, Result<f64, String>)> = futures::stream::iter(orders.iter().enumerate())
        .map(|(o, p)| {
            let (api, users) = (api.clone(), users.clone());
            async move {
                let owner = &users.owners[p.customer];
                let (kind, body, want) = if o < half {
                    ("owner_accept", json!({"cookMinutes": 10}), "ACCEPTED")
                } else {
                    ("owner_reject", json!({"reason": "SOLD_OUT"}), "REJECTED")
                };
                let verb = &kind["owner_".len()..];
                let started = Instant::now();
                let a = api
                    .post(
                        kind,
                        &format!("/api/shop/orders/{}/{verb}", p.order_id),
                        owner,
                        Some(&body),
                    )
                    .await;
                let r = if a.ok() && a.body["status"] == want {
                    Ok(started.elapsed().as_secs_f64() * 1000.0)
                } else {
                    Err(format!("{kind} {}: {} {}", p.order_id, a.status, a.body))
                };
                (o, r)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let actions_s = (now_ms() - changes_from_ms) / 1000.0;
    let mut action_ms = Vec::new();
    let mut failed = Vec::new();
    let mut unchanged = std::collections::HashSet::new();
    for (o, r) in acted {
        match r {
            Ok(ms) => action_ms.push(ms),
            Err(why) => {
                unchanged.insert(o);
                failed.push(why);
            }
        }
    }
    // Every stream of an order that changed gets that change, once.
    let expected = (0..s.streams)
        .filter(|i| !unchanged.contains(&(i % orders.len())))
        .count();
    let changed = |st: &str| st == "ACCEPTED" || st == "REJECTED";
    let settled = until(s.settle, || {
        board.seen.lock().unwrap()[seen_before_changes..]
            .iter()
            .filter(|e| changed(&e.status))
            .count()
            >= expected
    })
    .await;
    // Streams of rejected orders end by themselves: give them a moment.
    let rejected_streams = (0..s.streams).filter(|i| i % orders.len() >= half).count();
    until(Duration::from_secs(5), || {
        board.ended.load(Ordering::Relaxed) >= rejected_streams
    })
    .await;
    let cpu_changes = s.pids.cpu().since(&cpu_before);
    let metrics_after = counters(&http, &s.url).await?;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }

    let seen = std::mem::take(&mut *board.seen.lock().unwrap());
    let mut per_stream: HashMap<usize, Vec<&Seen>> = HashMap::new();
    for e in seen.iter().filter(|e| changed(&e.status)) {
        per_stream.entry(e.stream).or_default().push(e);
    }
    let received = per_stream.len();
    let duplicates: usize = per_stream.values().map(|v| v.len() - 1).sum();
    let wrong: usize = per_stream
        .values()
        .flatten()
        .filter(|e| {
            let want = if e.order < half {
                "ACCEPTED"
            } else {
                "REJECTED"
            };
            e.status != want || e.event_id as usize != backlogs[e.order]
        })
        .count();
    let delays: Vec<f64> = per_stream
        .values()
        .map(|v| v[0])
        .filter(|e| e.at_ms.is_finite())
        .map(|e| (e.received_ms - e.at_ms).max(0.0))
        .collect();
    let idle_events = seen
        .iter()
        .filter(|e| (idle_from_ms..idle_to_ms).contains(&e.received_ms))
        .count();
    let api_cpu = |m: &BTreeMap<String, f64>| m.get("api").copied();
    let summary = |v: &[f64]| Summary::of(v).map_or(Value::Null, Summary::to_json);
    let reads_changes = delta(&metrics_after, &metrics_idle, READS);
    let out = json!({
        "streams": s.streams,
        "orders": orders.len(),
        "users": users.customers.len(),
        "open": {
            "opened": opened,
            "refused": board.refused.lock().unwrap().iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "seconds": round(open_s, 2),
            "open_on_the_api": metrics_idle.get(OPEN).copied(),
        },
        "idle": {
            "seconds": round(idle_s, 2),
            "api_cpu_s": api_cpu(&cpu_idle).map(|c| round(c, 3)),
            "api_cpu_share_of_a_core": api_cpu(&cpu_idle).map(|c| round(c / idle_s, 4)),
            "api_rss_mb": rss_mb.map(|m| round(m, 1)),
            "store_polls": delta(&metrics_idle, &metrics_before, POLLS),
            "store_polls_per_s": round(delta(&metrics_idle, &metrics_before, POLLS) / idle_s, 2),
            "stream_reads": delta(&metrics_idle, &metrics_before, READS),
            "events": idle_events,
        },
        "changes": {
            "orders": orders.len(),
            "accepted": half,
            "rejected": orders.len() - half,
            "failed": failed,
            "seconds": round(actions_s, 2),
            "action_ms": summary(&action_ms),
            "api_cpu_s": api_cpu(&cpu_changes).map(|c| round(c, 3)),
        },
        "delivery": {
            "expected": expected,
            "received": received,
            "missing": expected.saturating_sub(received),
            "duplicates": duplicates,
            "wrong": wrong,
            "settled": settled,
            "ended_by_server": board.ended.load(Ordering::Relaxed),
            "ended_expected": rejected_streams,
            "change_to_event_ms": summary(&delays),
            "stream_reads": reads_changes,
            "stream_reads_per_event": if received > 0 { round(reads_changes / received as f64, 3) } else { 0.0 },
        },
    });
    if let Some(parent) = std::path::Path::new(&s.out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&s.out, serde_json::to_vec_pretty(&out)?)?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The smoke run's assertion on a streams summary: what must hold whatever
/// the machine; never a timing.
pub fn check(s: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let num = |p: &str| s.pointer(p).and_then(Value::as_f64);
    let streams = num("/streams").unwrap_or(0.0);
    if streams < 1.0 {
        problems.push("no streams".into());
    }
    if num("/open/opened") != Some(streams) {
        problems.push(format!(
            "{:?} of {streams} streams opened; refused: {}",
            num("/open/opened"),
            s["open"]["refused"]
        ));
    }
    if num("/open/open_on_the_api") != Some(streams) {
        problems.push(format!(
            "the API counted {:?} open streams, not {streams}",
            num("/open/open_on_the_api")
        ));
    }
    if s["changes"]["failed"]
        .as_array()
        .is_none_or(|f| !f.is_empty())
    {
        problems.push(format!("owner actions failed: {}", s["changes"]["failed"]));
    }
    for (k, want) in [
        ("/delivery/received", Some(streams)),
        ("/delivery/missing", Some(0.0)),
        ("/delivery/duplicates", Some(0.0)),
        ("/delivery/wrong", Some(0.0)),
        ("/delivery/ended_by_server", num("/delivery/ended_expected")),
        ("/idle/stream_reads", Some(0.0)),
        ("/idle/events", Some(0.0)),
    ] {
        if num(k) != want {
            problems.push(format!("{k} is {:?}, expected {want:?}", num(k)));
        }
    }
    // An idle stream costs the store nothing: the process's one poller asks
    // (about ten times a second), the streams themselves read nothing.
    if num("/idle/store_polls").is_none_or(|p| p < 1.0) {
        problems.push("the live poller did not poll while streams were open".into());
    }
    if num("/delivery/change_to_event_ms/count") != Some(streams) {
        problems.push("no delay for every stream".into());
    }
    // A change costs one store read per stream that follows the order, not more.
    if num("/delivery/stream_reads").is_none_or(|r| r > streams) {
        problems.push(format!(
            "{:?} store reads for {streams} streams' changes",
            num("/delivery/stream_reads")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Value {
        json!({
            "streams": 4,
            "open": {"opened": 4, "refused": {}, "open_on_the_api": 4.0},
            "idle": {"stream_reads": 0.0, "events": 0, "store_polls": 20.0},
            "changes": {"failed": []},
            "delivery": {
                "received": 4, "missing": 0, "duplicates": 0, "wrong": 0,
                "ended_by_server": 2, "ended_expected": 2, "stream_reads": 4.0,
                "change_to_event_ms": {"count": 4, "p50": 100.0, "p99": 200.0},
            },
        })
    }

    #[test]
    fn the_check_passes_a_clean_run_and_names_each_breach() {
        assert_eq!(check(&good()), Ok(()));
        for (path, bad, says) in [
            ("/open/opened", json!(3), "streams opened"),
            ("/delivery/missing", json!(1), "/delivery/missing"),
            ("/delivery/duplicates", json!(2), "/delivery/duplicates"),
            ("/idle/stream_reads", json!(5.0), "/idle/stream_reads"),
            ("/delivery/stream_reads", json!(9.0), "store reads"),
            (
                "/changes/failed",
                json!(["owner_accept x: 409"]),
                "owner actions failed",
            ),
            ("/idle/store_polls", json!(0.0), "did not poll"),
        ] {
            let mut s = good();
            *s.pointer_mut(path).unwrap() = bad;
            let problems = check(&s).expect_err(path);
            assert!(
                problems.iter().any(|p| p.contains(says)),
                "{path}: {problems:?}"
            );
        }
    }

    #[test]
    fn splits_events_and_skips_keep_alives() {
        let mut buf = String::from(
            "id: 0\ndata: {\"status\":\"PAID\"}\n\n: keep-alive\n\nid: 1\ndata: {\"a\":\n",
        );
        let evs = take_events(&mut buf);
        assert_eq!(evs, vec![(Some(0), "{\"status\":\"PAID\"}".to_string())]);
        assert_eq!(buf, "id: 1\ndata: {\"a\":\n");
        buf.push_str("data: 1}\n\n");
        assert_eq!(
            take_events(&mut buf),
            vec![(Some(1), "{\"a\":\n1}".to_string())]
        );
        assert!(buf.is_empty());
    }
}
