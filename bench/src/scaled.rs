//! The scaled topology (`BENCH_TOPOLOGY=scaled`): two API processes and two
//! worker processes per context (scripts/bench.sh starts them and names them
//! `api.1`, `api.2`, `workers.<context>.1`, `workers.<context>.2` in
//! `BENCH_PIDS`). Midway through the lifecycles the first API and the first
//! worker of every context are killed with SIGKILL and stay down; the calls go
//! on to the live API, the work to the live workers.
//!
//! What shows which process served what, all read from outside the processes:
//!
//! - API: the driver counts the answers each API process gave, by call kind;
//!   order `n` is placed through API `n % 2` first, so orders alternate.
//! - Worker, Temporal's side: each workflow and activity task's
//!   `*_TASK_STARTED` event names the worker identity that took it,
//!   `baedal@<pid>`, which maps to the process; activity tasks are counted on
//!   the queue they were scheduled on (`payment`, `delivery`), workflow tasks
//!   for the order context.
//! - Worker, its own side: each worker serves its metrics on `METRICS_ADDR`;
//!   `baedal_activity_total{context,outcome="completed"}` counts the
//!   activities it ran (local ones included: the order context's),
//!   `baedal_feed_changes_total{consumer,outcome="applied"}` the change-feed
//!   messages it applied (shop, delivery, notification: the two processes of a
//!   context share one durable consumer). Read just before the kill and at the end.

use crate::http::Api;
use crate::procs::Watched;
use crate::temporal::Task;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const CONTEXTS: [&str; 5] = ["order", "payment", "shop", "delivery", "notification"];

/// The processes the run kills: the first API and the first worker of each context.
pub fn victims() -> Vec<String> {
    std::iter::once("api.1".to_string())
        .chain(CONTEXTS.iter().map(|c| format!("workers.{c}.1")))
        .collect()
}

/// What one worker process says it did, from its metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Work {
    /// Activities of its context it completed (local ones included).
    pub activities: u64,
    /// Change-feed messages its context's consumer applied.
    pub feed_changes: u64,
}

impl Work {
    fn since(self, earlier: Work) -> Work {
        Work {
            activities: self.activities.saturating_sub(earlier.activities),
            feed_changes: self.feed_changes.saturating_sub(earlier.feed_changes),
        }
    }
}

/// Reads a context's counters out of Prometheus text: the sum over every
/// sample of `baedal_activity_total` with this context and outcome
/// `completed`, and of `baedal_feed_changes_total` with this consumer and
/// outcome `applied`.
pub fn parse_metrics(text: &str, context: &str) -> Work {
    let mut w = Work::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"'))
            })
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        match name.trim_end_matches("_total") {
            "baedal_activity"
                if label("context") == Some(context) && label("outcome") == Some("completed") =>
            {
                w.activities += value as u64;
            }
            "baedal_feed_changes"
                if label("consumer") == Some(context) && label("outcome") == Some("applied") =>
            {
                w.feed_changes += value as u64;
            }
            _ => {}
        }
    }
    w
}

/// A worker process: its name in `BENCH_PIDS` and its metrics address.
#[derive(Debug, Clone)]
pub struct Worker {
    pub name: String,
    pub context: String,
    pub metrics: String,
}

/// Parses `name=host:port,…` (`BENCH_WORKER_METRICS`); the context is the
/// name's middle part (`workers.<context>.<n>`).
pub fn parse_workers(spec: &str) -> anyhow::Result<Vec<Worker>> {
    spec.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (name, addr) = part.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("BENCH_WORKER_METRICS entry {part:?} is not name=host:port")
            })?;
            let context = name.split('.').nth(1).unwrap_or("").to_string();
            anyhow::ensure!(
                CONTEXTS.contains(&context.as_str()),
                "BENCH_WORKER_METRICS entry {part:?}: no context in the name (workers.<context>.<n>)"
            );
            Ok(Worker {
                name: name.trim().to_string(),
                context,
                metrics: addr.trim().to_string(),
            })
        })
        .collect()
}

async fn scrape(http: &reqwest::Client, w: &Worker) -> Result<Work, String> {
    let url = format!("http://{}/metrics", w.metrics);
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url} answered {}", resp.status()));
    }
    let text = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
    Ok(parse_metrics(&text, &w.context))
}

/// Every worker's metrics, by name (an error where they could not be read).
pub async fn scrape_all(workers: &[Worker]) -> BTreeMap<String, Result<Work, String>> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let reads = workers.iter().map(|w| {
        let http = &http;
        async move { (w.name.clone(), scrape(http, w).await) }
    });
    futures::future::join_all(reads).await.into_iter().collect()
}

/// The kill, as it went.
pub struct Kill {
    /// When the last victim was gone.
    pub at: SystemTime,
    /// Seconds into the lifecycles.
    pub after_s: f64,
    /// Orders started when it struck.
    pub at_order: usize,
    /// (name, pid, what went wrong)
    pub killed: Vec<(String, u32, Option<String>)>,
    /// What each API had answered, by call kind, just before.
    pub answered_before: Vec<BTreeMap<String, u64>>,
    /// What each worker had done, just before.
    pub work_before: BTreeMap<String, Result<Work, String>>,
}

/// Whether a worker's metrics show work of its context: an activity for the
/// contexts with Temporal work (order, payment, delivery), a change-feed
/// message for the others.
fn has_worked(context: &str, work: &Result<Work, String>) -> bool {
    match work {
        Ok(w) if matches!(context, "order" | "payment" | "delivery") => w.activities > 0,
        Ok(w) => w.feed_changes > 0,
        Err(_) => false,
    }
}

/// Waits until `at` orders have started and every worker's metrics show work
/// of its context (which worker of a pair Temporal hands a task to is
/// chance: with a few tasks before the kill, one of a pair may have had none
/// yet, and the run must show both serving), reads what each process has
/// done, then SIGKILLs [`victims`]. None if the lifecycles ended first.
pub async fn kill_midway(
    watched: &Watched,
    api: &Api,
    workers: &[Worker],
    started: &AtomicUsize,
    at: usize,
    done: &AtomicBool,
    since: Instant,
) -> Option<Kill> {
    while started.load(Ordering::SeqCst) < at {
        if done.load(Ordering::SeqCst) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let work_before = loop {
        let work = scrape_all(workers).await;
        let idle: Vec<&str> = workers
            .iter()
            .filter(|w| !has_worked(&w.context, &work[&w.name]))
            .map(|w| w.name.as_str())
            .collect();
        if idle.is_empty() {
            break work;
        }
        if done.load(Ordering::SeqCst) {
            eprintln!(
                "[bench] the lifecycles ended before {} showed work: no kill",
                idle.join(", ")
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let at_order = started.load(Ordering::SeqCst);
    let after_s = since.elapsed().as_secs_f64();
    let mut killed = Vec::new();
    let mut answered_before = Vec::new();
    for name in victims() {
        let pid = watched.pid(&name).unwrap_or(0);
        let r = watched.kill(&name).await.err().map(|e| format!("{e:#}"));
        killed.push((name, pid, r));
        // The API is the first to go: what each had answered until then.
        if answered_before.is_empty() {
            answered_before = api.answered_by_kind();
        }
    }
    // Every victim is gone: what any of them shows after this is an error.
    let kill_at = SystemTime::now();
    eprintln!(
        "[bench] SIGKILL {} at order {at_order} ({after_s:.1} s into the lifecycles)",
        killed
            .iter()
            .map(|(n, p, _)| format!("{n} (pid {p})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Some(Kill {
        at: kill_at,
        after_s,
        at_order,
        killed,
        answered_before,
        work_before,
    })
}

/// Temporal tasks by context and by who took them (the process's name, or
/// the identity when it is none of the watched processes): [before, after]
/// `kill_ms`. Workflow tasks are the order context's; an activity task counts
/// for the context whose queue it was scheduled on.
pub fn tally(
    tasks: &[Task],
    watched: &Watched,
    kill_ms: i64,
) -> BTreeMap<String, BTreeMap<String, [u64; 2]>> {
    let mut out: BTreeMap<String, BTreeMap<String, [u64; 2]>> = BTreeMap::new();
    for t in tasks {
        let context = if t.workflow_task {
            "order"
        } else {
            match CONTEXTS.iter().find(|c| t.queue.ends_with(*c)) {
                Some(c) => *c,
                None => continue,
            }
        };
        let who = t
            .identity
            .rsplit_once('@')
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
            .and_then(|pid| watched.name_of(pid))
            .map_or_else(|| t.identity.clone(), str::to_string);
        let slot = usize::from(t.at_ms >= kill_ms);
        out.entry(context.to_string())
            .or_default()
            .entry(who)
            .or_default()[slot] += 1;
    }
    out
}

/// One claim of the run and whether it held.
pub struct Proof {
    pub claim: String,
    pub ok: bool,
    pub detail: String,
}

/// Everything the scaled run read, for its proofs and its part of the summary.
pub struct Evidence<'a> {
    pub api: &'a Api,
    pub watched: &'a Watched,
    pub workers: &'a [Worker],
    pub kill: Option<&'a Kill>,
    pub tasks: &'a BTreeMap<String, BTreeMap<String, [u64; 2]>>,
    pub work_end: &'a BTreeMap<String, Result<Work, String>>,
    /// (check, checked, breaches) of the chaos run's checks.
    pub checks: &'a [(String, usize, Vec<String>)],
    pub lost: usize,
    pub double_charges: usize,
}

fn api_name(i: usize) -> String {
    format!("api.{}", i + 1)
}

impl Evidence<'_> {
    fn tasks_of(&self, context: &str, process: &str) -> [u64; 2] {
        self.tasks
            .get(context)
            .and_then(|m| m.get(process))
            .copied()
            .unwrap_or([0, 0])
    }

    fn work_before(&self, name: &str) -> Result<Work, String> {
        match self.kill {
            None => Err("no kill".into()),
            Some(k) => k
                .work_before
                .get(name)
                .cloned()
                .unwrap_or_else(|| Err("not read".into())),
        }
    }

    fn work_after(&self, name: &str) -> Result<Work, String> {
        if self.killed(name) {
            return Ok(Work::default());
        }
        let end = self
            .work_end
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err("not read".into()));
        match (end, self.work_before(name)) {
            (Ok(end), Ok(before)) => Ok(end.since(before)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    fn killed(&self, name: &str) -> bool {
        self.kill
            .is_some_and(|k| k.killed.iter().any(|(n, _, _)| n == name))
    }

    pub fn proofs(&self) -> Vec<Proof> {
        let mut out = Vec::new();
        let Some(kill) = self.kill else {
            out.push(Proof {
                claim: "one API and one worker of each context killed mid-run".into(),
                ok: false,
                detail: "the lifecycles ended before the kill was due".into(),
            });
            return out;
        };

        let mut ok = kill.killed.iter().all(|(_, _, e)| e.is_none());
        let mut detail = Vec::new();
        for (name, pid, e) in &kill.killed {
            let gone = !crate::procs::running(*pid);
            ok &= gone;
            detail.push(format!(
                "{name} (pid {pid}){}",
                match (e, gone) {
                    (Some(e), _) => format!(": {e}"),
                    (None, false) => ": still running".into(),
                    _ => String::new(),
                }
            ));
        }
        let dead = self.watched.dead();
        ok &= dead.is_empty() && kill.killed.len() == victims().len();
        if !dead.is_empty() {
            detail.push(format!("exited without being killed: {}", dead.join(", ")));
        }
        out.push(Proof {
            claim: format!(
                "one API and one worker of each context killed (SIGKILL) at order {}, the rest up to the end",
                kill.at_order
            ),
            ok,
            detail: detail.join(", "),
        });

        let before = &kill.answered_before;
        let places: Vec<u64> = before
            .iter()
            .map(|m| m.get("place").copied().unwrap_or(0))
            .collect();
        let calls: Vec<u64> = before.iter().map(|m| m.values().sum()).collect();
        out.push(Proof {
            claim: "both APIs served orders before the kill".into(),
            ok: places.len() == 2 && places.iter().all(|&p| p > 0),
            detail: (0..places.len())
                .map(|i| format!("{}: {} places, {} calls", api_name(i), places[i], calls[i]))
                .collect::<Vec<_>>()
                .join("; "),
        });

        for context in CONTEXTS {
            let mine: Vec<&Worker> = self
                .workers
                .iter()
                .filter(|w| w.context == context)
                .collect();
            let temporal_side = matches!(context, "order" | "payment" | "delivery");
            let mut ok = mine.len() == 2;
            let mut detail = Vec::new();
            for w in &mine {
                let tasks = self.tasks_of(context, &w.name)[0];
                let work = self.work_before(&w.name);
                let did = work
                    .as_ref()
                    .is_ok_and(|w| w.activities + w.feed_changes > 0);
                ok &= did && (!temporal_side || tasks > 0);
                detail.push(format!(
                    "{}: {}{}",
                    w.name,
                    if temporal_side {
                        format!("{tasks} Temporal tasks, ")
                    } else {
                        String::new()
                    },
                    match work {
                        Ok(w) => format!(
                            "{} activities, {} feed changes",
                            w.activities, w.feed_changes
                        ),
                        Err(e) => format!("metrics unreadable ({e})"),
                    }
                ));
            }
            out.push(Proof {
                claim: format!("both {context} workers did {context} work before the kill"),
                ok,
                detail: detail.join("; "),
            });
        }

        let mut ok = true;
        let mut detail = Vec::new();
        let end = self.api.answered();
        for (i, calls_end) in end.iter().enumerate() {
            let name = api_name(i);
            let after = calls_end.saturating_sub(calls.get(i).copied().unwrap_or(0));
            if !self.killed(&name) {
                ok &= after > 0;
            }
            detail.push(format!("{name}: {after} calls"));
        }
        for w in self.workers.iter().filter(|w| !self.killed(&w.name)) {
            let tasks = self.tasks_of(&w.context, &w.name)[1];
            let work = self.work_after(&w.name);
            ok &= work
                .as_ref()
                .is_ok_and(|x| x.activities + x.feed_changes > 0);
            detail.push(format!(
                "{}: {tasks} Temporal tasks, {}",
                w.name,
                match work {
                    Ok(x) => format!(
                        "{} activities, {} feed changes",
                        x.activities, x.feed_changes
                    ),
                    Err(e) => format!("metrics unreadable ({e})"),
                }
            ));
        }
        out.push(Proof {
            claim: "the live API and workers served the rest after the kill".into(),
            ok,
            detail: format!(
                "{}; {} calls sent again to the other API",
                detail.join("; "),
                self.api.failovers()
            ),
        });

        let breaches: usize = self.checks.iter().map(|(_, _, b)| b.len()).sum();
        out.push(Proof {
            claim:
                "nothing lost: every order delivered, charged once, views and notifications right"
                    .into(),
            ok: self.lost == 0 && self.double_charges == 0 && breaches == 0,
            detail: format!(
                "{} lost, {} double charges, {breaches} breaches of the chaos run's checks",
                self.lost, self.double_charges
            ),
        });
        out
    }

    /// The summary's `scaled` section.
    pub fn to_json(&self, proofs: &[Proof]) -> Value {
        let end = self.api.answered_by_kind();
        let apis: Vec<Value> = self
            .api
            .bases()
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let name = api_name(i);
                let before = self
                    .kill
                    .and_then(|k| k.answered_before.get(i).cloned())
                    .unwrap_or_default();
                let calls_before: u64 = before.values().sum();
                let calls_end: u64 = end.get(i).map_or(0, |m| m.values().sum());
                json!({
                    "name": name,
                    "url": url,
                    "pid": self.watched.pid(&name),
                    "killed": self.killed(&name),
                    "calls_before_kill": calls_before,
                    "calls_after_kill": calls_end.saturating_sub(calls_before),
                    "answered_before_kill": before,
                })
            })
            .collect();
        let work = |w: Result<Work, String>| match w {
            Ok(w) => json!({"activities": w.activities, "feed_changes": w.feed_changes}),
            Err(e) => json!({"error": e}),
        };
        let workers: Vec<Value> = self
            .workers
            .iter()
            .map(|w| {
                let [before, after] = self.tasks_of(&w.context, &w.name);
                json!({
                    "name": w.name,
                    "context": w.context,
                    "pid": self.watched.pid(&w.name),
                    "killed": self.killed(&w.name),
                    "temporal_tasks": {"before_kill": before, "after_kill": after},
                    "before_kill": work(self.work_before(&w.name)),
                    "after_kill": work(self.work_after(&w.name)),
                })
            })
            .collect();
        // Tasks taken by anyone but the watched workers (none expected).
        let others: BTreeMap<String, Vec<String>> = self
            .tasks
            .iter()
            .map(|(c, m)| {
                (
                    c.clone(),
                    m.keys()
                        .filter(|who| !self.workers.iter().any(|w| &w.name == *who))
                        .cloned()
                        .collect(),
                )
            })
            .filter(|(_, v): &(String, Vec<String>)| !v.is_empty())
            .collect();
        let breaches: usize = self.checks.iter().map(|(_, _, b)| b.len()).sum();
        json!({
            "apis": apis,
            "failovers": self.api.failovers(),
            "workers": workers,
            "tasks_by_others": others,
            "kill": self.kill.map(|k| json!({
                "at_order": k.at_order,
                "after_s": (k.after_s * 10.0).round() / 10.0,
                "at_unix_ms": k.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                "killed": k.killed.iter().map(|(n, p, e)| json!({"name": n, "pid": p, "ok": e.is_none(), "note": e})).collect::<Vec<_>>(),
            })),
            "checks": self.checks.iter().map(|(n, c, b)| json!({"name": n, "checked": c, "breaches": b})).collect::<Vec<_>>(),
            "breaches": breaches,
            "proofs": proofs.iter().map(|p| json!({"claim": p.claim, "ok": p.ok, "detail": p.detail})).collect::<Vec<_>>(),
        })
    }
}

/// The summary's `scaled` section as the table prints it.
pub fn table(s: &Value) -> String {
    let mut out = String::new();
    let k = &s["kill"];
    let _ = writeln!(
        out,
        "\nscaled topology: 2 APIs, 2 workers per context; SIGKILL at order {} ({} s into the lifecycles): {}",
        k["at_order"],
        k["after_s"],
        k["killed"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x["name"].as_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        out,
        "\n{:<24} {:>7} {:>7}  {:<38} after",
        "process", "pid", "killed", "before the kill"
    );
    let _ = writeln!(out, "{}", "-".repeat(100));
    for a in s["apis"].as_array().into_iter().flatten() {
        let places = a["answered_before_kill"]["place"].as_u64().unwrap_or(0);
        let before = format!("{} calls, {places} places", a["calls_before_kill"]);
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:>7}  {before:<38} {} calls",
            a["name"].as_str().unwrap_or("?"),
            a["pid"].to_string(),
            if a["killed"] == true { "yes" } else { "no" },
            a["calls_after_kill"],
        );
    }
    let work = |t: &Value, w: &Value| {
        if w["error"].is_string() {
            format!("{t} tasks, metrics unreadable")
        } else {
            format!(
                "{t} tasks, {} act., {} feed",
                w["activities"], w["feed_changes"]
            )
        }
    };
    for w in s["workers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:>7}  {:<38} {}",
            w["name"].as_str().unwrap_or("?"),
            w["pid"].to_string(),
            if w["killed"] == true { "yes" } else { "no" },
            work(&w["temporal_tasks"]["before_kill"], &w["before_kill"]),
            work(&w["temporal_tasks"]["after_kill"], &w["after_kill"]),
        );
    }
    let _ = writeln!(
        out,
        "(tasks: workflow and activity tasks in the orders' histories; act./feed: \
         the worker's own metrics; {} calls sent again to the other API)",
        s["failovers"]
    );
    let _ = writeln!(
        out,
        "\n{:<44} {:>8} {:>9}",
        "check (as the chaos run's)", "checked", "breaches"
    );
    for c in s["checks"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<44} {:>8} {:>9}",
            c["name"].as_str().unwrap_or("?"),
            c["checked"].to_string(),
            c["breaches"].as_array().map_or(0, Vec::len)
        );
    }
    for c in s["checks"].as_array().into_iter().flatten() {
        let b = c["breaches"].as_array().cloned().unwrap_or_default();
        if !b.is_empty() {
            let _ = writeln!(
                out,
                "\n{} — {} breaches:",
                c["name"].as_str().unwrap_or("?"),
                b.len()
            );
            for x in b.iter().take(8) {
                let _ = writeln!(out, "  {}", x.as_str().unwrap_or(""));
            }
        }
    }
    let _ = writeln!(out);
    for p in s["proofs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{} {}\n      {}",
            if p["ok"] == true { "  ok " } else { "  NO " },
            p["claim"].as_str().unwrap_or("?"),
            p["detail"].as_str().unwrap_or("")
        );
    }
    out
}

/// What the smoke check asserts of a scaled summary: every proof held, no
/// breach, every kill done.
pub fn check(s: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let proofs = s["proofs"].as_array().cloned().unwrap_or_default();
    if proofs.is_empty() {
        problems.push("scaled.proofs is missing".into());
    }
    for p in proofs.iter().filter(|p| p["ok"] != true) {
        problems.push(format!("not shown: {} ({})", p["claim"], p["detail"]));
    }
    if s["breaches"].as_u64() != Some(0) {
        problems.push(format!("scaled.breaches = {}", s["breaches"]));
    }
    let killed = s["kill"]["killed"].as_array().cloned().unwrap_or_default();
    if killed.len() != victims().len() || killed.iter().any(|k| k["ok"] != true) {
        problems.push(format!("kills: {}", s["kill"]["killed"]));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_has_worked_by_its_contexts_measure() {
        let w = |activities, feed_changes| -> Result<Work, String> {
            Ok(Work {
                activities,
                feed_changes,
            })
        };
        // Temporal contexts: a delivery worker that applied feed changes
        // but took no offer has not yet served as the claim needs.
        assert!(!has_worked("delivery", &w(0, 38)));
        assert!(has_worked("delivery", &w(1, 0)));
        assert!(has_worked("order", &w(3, 0)));
        assert!(!has_worked("payment", &w(0, 0)));
        // Feed contexts: the feed is their work.
        assert!(has_worked("shop", &w(0, 1)));
        assert!(!has_worked("notification", &w(0, 0)));
        assert!(!has_worked("shop", &Err("unreadable".into())));
    }

    const METRICS: &str = r#"# HELP baedal_activity_total Activity executions by outcome
# TYPE baedal_activity_total counter
baedal_activity_total{activity="order.record",context="order",outcome="completed",service_name="temporal-core-sdk"} 42
baedal_activity_total{activity="order.record",context="order",outcome="failed"} 3
baedal_activity_total{activity="payment.charge",context="payment",outcome="completed"} 7
baedal_feed_changes_total{consumer="shop",outcome="applied"} 120
baedal_feed_changes_total{consumer="shop",outcome="retried"} 2
baedal_feed_changes{consumer="delivery",outcome="applied"} 5
temporal_request_total{operation="PollWorkflowTaskQueue"} 99
"#;

    #[test]
    fn reads_a_contexts_counters_from_prometheus_text() {
        assert_eq!(
            parse_metrics(METRICS, "order"),
            Work {
                activities: 42,
                feed_changes: 0
            }
        );
        assert_eq!(parse_metrics(METRICS, "shop").feed_changes, 120);
        assert_eq!(parse_metrics(METRICS, "delivery").feed_changes, 5);
        assert_eq!(parse_metrics("", "order"), Work::default());
    }

    #[test]
    fn parses_the_worker_list() {
        let w = parse_workers("workers.order.1=127.0.0.1:1, workers.shop.2=127.0.0.1:2").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[1].context.as_str(), w[1].metrics.as_str()),
            ("shop", "127.0.0.1:2")
        );
        assert!(parse_workers("api.1=127.0.0.1:1").is_err());
        assert!(parse_workers("workers.order.1").is_err());
    }

    #[test]
    fn tallies_tasks_by_context_and_process_around_the_kill() {
        let me = std::process::id();
        let watched = Watched::parse(&format!("workers.payment.1={me}")).unwrap();
        let task = |queue: &str, wf: bool, who: &str, at: i64| Task {
            queue: queue.into(),
            workflow_task: wf,
            identity: who.into(),
            at_ms: at,
        };
        let me_id = format!("baedal@{me}");
        let t = tally(
            &[
                task("payment", false, &me_id, 10),
                task("payment", false, &me_id, 30),
                task("order-fulfillment", true, "baedal@1", 10),
                task("shop", false, "baedal@1", 10),
                task("elsewhere", false, "x", 10),
            ],
            &watched,
            20,
        );
        assert_eq!(t["payment"]["workers.payment.1"], [1, 1]);
        assert_eq!(t["order"]["baedal@1"], [1, 0]);
        assert_eq!(t["shop"]["baedal@1"], [1, 0]);
        assert_eq!(t.len(), 3);
    }
}
