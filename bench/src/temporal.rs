//! The Temporal side of the benchmark: a minimal workflow (one no-op activity)
//! for the ceiling, a workflow whose update returns at once for the bare
//! update-with-start round trip, and the histories of the measured orders.

use crate::actions::{Event, billable_actions};
use crate::stats::Summary;
use anyhow::Context as _;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, GrpcCompression,
    WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy,
    WorkflowStartOptions, WorkflowUpdateWithStartOptions,
};
use temporalio_common::UntypedWorkflow;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::runtime::PollerBehavior;
use temporalio_sdk::{
    ActivityOptions, Runtime, SyncWorkflowContext, Worker, WorkerOptions, WorkflowContext,
    WorkflowResult,
};

/// Any single Temporal call slower than this means the server is stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct NoopActivities;

#[activities]
impl NoopActivities {
    #[activity]
    pub async fn noop(_ctx: ActivityContext) -> Result<(), ActivityError> {
        Ok(())
    }
}

/// The least a workflow can do through an activity: the ceiling's unit of work.
#[workflow]
#[derive(Default)]
pub struct OneActivity;

#[workflow_methods]
impl OneActivity {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        ctx.execute_activity(
            NoopActivities::noop,
            (),
            ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10)).build(),
        )
        .await?;
        Ok(())
    }
}

/// Update-with-start at its cheapest: the update answers at once and the run ends.
#[workflow]
#[derive(Default)]
pub struct Touch {
    touched: bool,
}

#[workflow_methods]
impl Touch {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        ctx.wait_condition(|s| s.touched).await?;
        Ok(())
    }

    #[update]
    pub fn touch(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.touched = true;
    }
}

pub async fn connect(address: &str, namespace: &str) -> anyhow::Result<Client> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let url = url::Url::parse(&url).with_context(|| format!("TEMPORAL_ADDRESS={address:?}"))?;
    let conn = tokio::time::timeout(
        CALL_TIMEOUT,
        Connection::connect(
            ConnectionOptions::new(url)
                .identity(format!("baedal-bench@{}", std::process::id()))
                // As the product's processes connect (TEMPORAL_GRPC_COMPRESSION).
                .grpc_compression(
                    if baedal_activities::config::grpc_gzip(
                        std::env::var("TEMPORAL_GRPC_COMPRESSION").ok().as_deref(),
                    )? {
                        GrpcCompression::Gzip
                    } else {
                        GrpcCompression::None
                    },
                )
                .build(),
        ),
    )
    .await
    .context("connecting to Temporal timed out")?
    .with_context(|| format!("connecting to Temporal at {address}"))?;
    Ok(Client::new(
        conn,
        ClientOptions::new(namespace.to_string()).build(),
    )?)
}

/// The minimal workflows' worker, on a thread and runtime of its own (a worker's
/// future is not `Send`), as a separate worker process would have.
pub struct BenchWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl BenchWorker {
    /// `pollers`: concurrent polls per task kind, or `None` for the SDK's defaults
    /// (what the order worker runs with). The ceiling is meant to be the server's,
    /// so its worker polls as widely as the load is concurrent; with the defaults
    /// (a single non-sticky workflow-task poll) the worker itself would be the limit.
    pub fn start(client: Client, task_queue: &str, pollers: Option<usize>) -> anyhow::Result<Self> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let queue = task_queue.to_string();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let started = (|| -> anyhow::Result<Worker> {
                    let runtime = Runtime::from_current_tokio(Default::default())?;
                    let options = WorkerOptions::new(queue)
                        .register_workflow::<OneActivity>()?
                        .register_workflow::<Touch>()?
                        .register_activities(NoopActivities);
                    let options = match pollers {
                        None => options.build(),
                        Some(n) => options
                            .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(n.max(2)))
                            .nonsticky_to_sticky_poll_ratio(0.5)
                            .activity_task_poller_behavior(PollerBehavior::SimpleMaximum(n.max(1)))
                            .build(),
                    };
                    Ok(Worker::new(&runtime, client, options)?)
                })();
                let mut worker = match started {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                        return Err(e);
                    }
                };
                let shutdown = worker.shutdown_handle();
                let run = worker.run();
                tokio::pin!(run);
                tokio::select! {
                    r = &mut run => r?,
                    _ = stop_rx => {
                        shutdown();
                        tokio::time::timeout(Duration::from_secs(30), run).await??;
                    }
                }
                Ok(())
            })
        });
        ready_rx
            .recv_timeout(CALL_TIMEOUT)
            .context("the benchmark's worker did not start")??;
        Ok(BenchWorker {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => anyhow::bail!("the benchmark's worker thread panicked"),
            None => Ok(()),
        }
    }
}

pub struct Ceiling {
    pub workflows: usize,
    pub events_per_workflow: usize,
    pub elapsed: Duration,
    /// Until the last workflow started in the window finished.
    pub drained: Duration,
}

impl Ceiling {
    pub fn events_per_s(&self) -> f64 {
        (self.workflows * self.events_per_workflow) as f64 / self.elapsed.as_secs_f64()
    }
    pub fn workflows_per_s(&self) -> f64 {
        self.workflows as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs one-activity workflows back to back on `concurrency` lanes for `length`;
/// counts those that completed within it (the ones still running then drain, uncounted).
pub async fn ceiling(
    client: &Client,
    queue: &str,
    run_tag: &str,
    concurrency: usize,
    length: Duration,
) -> anyhow::Result<Ceiling> {
    let one = |id: String| {
        let client = client.clone();
        let queue = queue.to_string();
        async move {
            let handle = client
                .start_workflow(
                    OneActivity::run,
                    (),
                    WorkflowStartOptions::new(queue, id).build(),
                )
                .await?;
            handle
                .get_result(WorkflowGetResultOptions::default())
                .await?;
            anyhow::Ok(())
        }
    };
    // Warm the worker's caches and connections; not counted.
    let warm = (0..concurrency).map(|i| one(format!("bench-ceiling-{run_tag}-warm-{i}")));
    for r in futures::future::join_all(warm).await {
        r?;
    }
    let done = Arc::new(AtomicUsize::new(0));
    let seq = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let end = started + length;
    let lanes = (0..concurrency).map(|_| {
        let (done, seq, one) = (done.clone(), seq.clone(), &one);
        async move {
            while Instant::now() < end {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                tokio::time::timeout(CALL_TIMEOUT, one(format!("bench-ceiling-{run_tag}-{i}")))
                    .await
                    .context("a minimal workflow did not finish in time")??;
                if Instant::now() <= end {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }
    });
    for r in futures::future::join_all(lanes).await {
        r?;
    }
    let drained = started.elapsed();
    let sample = history(client, &format!("bench-ceiling-{run_tag}-0")).await?;
    Ok(Ceiling {
        workflows: done.load(Ordering::Relaxed),
        events_per_workflow: sample.len(),
        elapsed: length,
        drained,
    })
}

/// Round trips of update-with-start on a fresh `Touch` workflow each, at `concurrency`.
pub async fn bare_update_with_start(
    client: &Client,
    queue: &str,
    run_tag: &str,
    concurrency: usize,
    count: usize,
) -> anyhow::Result<Summary> {
    let one = |id: String| {
        let client = client.clone();
        let queue = queue.to_string();
        async move {
            let options = WorkflowUpdateWithStartOptions::new(
                queue,
                id,
                WorkflowIdConflictPolicy::UseExisting,
            )
            .build();
            let started = Instant::now();
            tokio::time::timeout(
                CALL_TIMEOUT,
                client.execute_update_with_start_workflow(
                    Touch::run,
                    (),
                    Touch::touch,
                    (),
                    options,
                ),
            )
            .await
            .context("update-with-start did not answer in time")??;
            anyhow::Ok(started.elapsed().as_secs_f64() * 1000.0)
        }
    };
    let warm = (0..concurrency).map(|i| one(format!("bench-uws-{run_tag}-warm-{i}")));
    for r in futures::future::join_all(warm).await {
        r?;
    }
    let took: Vec<anyhow::Result<f64>> =
        futures::stream::iter((0..count).map(|i| one(format!("bench-uws-{run_tag}-{i}"))))
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let took = took.into_iter().collect::<anyhow::Result<Vec<f64>>>()?;
    Summary::of(&took).context("no update-with-start was measured")
}

/// One workflow's history, in order: each event's type and what the count of
/// Temporal Cloud Actions needs of it.
pub async fn history(client: &Client, workflow_id: &str) -> anyhow::Result<Vec<Event>> {
    let events = tokio::time::timeout(
        CALL_TIMEOUT,
        client
            .get_workflow_handle::<UntypedWorkflow>(workflow_id.to_string())
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .into_events(),
    )
    .await
    .with_context(|| format!("fetching the history of {workflow_id} timed out"))?
    .with_context(|| format!("fetching the history of {workflow_id}"))?;
    Ok(events.iter().map(Event::from).collect())
}

/// Events per order and how they break down by type, over these workflows;
/// the same for Temporal Cloud billable Actions (see `actions`).
pub struct Histories {
    pub per_workflow: Vec<usize>,
    /// Mean count of each event type per workflow, most frequent first.
    pub by_type: Vec<(String, f64)>,
    pub actions_per_workflow: Vec<u64>,
    /// Mean Actions of each kind per workflow, most first.
    pub actions_by_kind: Vec<(String, f64)>,
    /// Every workflow and activity task of these workflows: which worker took it.
    pub tasks: Vec<Task>,
}

/// One task a worker took, from its `*_TASK_STARTED` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The activity's task queue; for a workflow task, the workflow's.
    pub queue: String,
    pub workflow_task: bool,
    /// The worker's identity (`baedal@<pid>` for this product's workers).
    pub identity: String,
    pub at_ms: i64,
}

/// The workflow and activity tasks of one history, each with its queue and worker.
pub fn tasks(events: &[Event]) -> Vec<Task> {
    let workflow_queue = events
        .iter()
        .find(|e| e.event_type == "WORKFLOW_EXECUTION_STARTED")
        .map_or(String::new(), |e| e.task_queue.clone());
    let scheduled: BTreeMap<i64, &str> = events
        .iter()
        .filter(|e| e.event_type == "ACTIVITY_TASK_SCHEDULED")
        .map(|e| (e.event_id, e.task_queue.as_str()))
        .collect();
    events
        .iter()
        .filter_map(|e| {
            let (queue, workflow_task) = match e.event_type.as_str() {
                "WORKFLOW_TASK_STARTED" => (workflow_queue.clone(), true),
                "ACTIVITY_TASK_STARTED" => (
                    scheduled
                        .get(&e.scheduled_event_id)
                        .map_or(String::new(), |q| q.to_string()),
                    false,
                ),
                _ => return None,
            };
            Some(Task {
                queue,
                workflow_task,
                identity: e.identity.clone(),
                at_ms: e.at_ms,
            })
        })
        .collect()
}

const CLOSE_EVENTS: [&str; 6] = [
    "WORKFLOW_EXECUTION_COMPLETED",
    "WORKFLOW_EXECUTION_FAILED",
    "WORKFLOW_EXECUTION_TIMED_OUT",
    "WORKFLOW_EXECUTION_CANCELED",
    "WORKFLOW_EXECUTION_TERMINATED",
    "WORKFLOW_EXECUTION_CONTINUED_AS_NEW",
];

/// The history of a workflow once it has closed: an order's last projections
/// and notifications may still run for a moment after the rider completes.
async fn closed_history(client: &Client, workflow_id: &str) -> anyhow::Result<Vec<Event>> {
    let deadline = Instant::now() + CALL_TIMEOUT;
    loop {
        let h = history(client, workflow_id).await?;
        if h.last()
            .is_some_and(|e| CLOSE_EVENTS.contains(&e.event_type.as_str()))
        {
            return Ok(h);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{workflow_id} was still open after {CALL_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn histories(client: &Client, workflow_ids: &[String]) -> anyhow::Result<Histories> {
    let fetched: Vec<anyhow::Result<Vec<Event>>> =
        futures::stream::iter(workflow_ids.iter().map(|id| closed_history(client, id)))
            .buffer_unordered(8)
            .collect()
            .await;
    let mut per_workflow = Vec::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut actions_per_workflow = Vec::new();
    let mut action_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut all_tasks = Vec::new();
    for h in fetched {
        let h = h?;
        per_workflow.push(h.len());
        all_tasks.extend(tasks(&h));
        let actions = billable_actions(&h);
        actions_per_workflow.push(actions.values().sum());
        for (kind, n) in actions {
            *action_counts.entry(kind.to_string()).or_default() += n;
        }
        for e in h {
            *counts.entry(e.event_type).or_default() += 1;
        }
    }
    let n = per_workflow.len().max(1) as f64;
    Ok(Histories {
        per_workflow,
        by_type: means(counts, n),
        actions_per_workflow,
        actions_by_kind: means(action_counts, n),
        tasks: all_tasks,
    })
}

/// Totals over `n` workflows as means per workflow, most first.
fn means(totals: BTreeMap<String, u64>, n: f64) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = totals.into_iter().map(|(k, c)| (k, c as f64 / n)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_carry_their_queue_and_worker() {
        let ev = |id: i64, t: &str| Event {
            event_id: id,
            event_type: t.to_string(),
            at_ms: id * 10,
            ..Event::default()
        };
        let events = vec![
            Event {
                task_queue: "order-fulfillment".into(),
                ..ev(1, "WORKFLOW_EXECUTION_STARTED")
            },
            ev(2, "WORKFLOW_TASK_SCHEDULED"),
            Event {
                identity: "baedal@10".into(),
                ..ev(3, "WORKFLOW_TASK_STARTED")
            },
            ev(4, "WORKFLOW_TASK_COMPLETED"),
            Event {
                task_queue: "payment".into(),
                ..ev(5, "ACTIVITY_TASK_SCHEDULED")
            },
            Event {
                identity: "baedal@11".into(),
                scheduled_event_id: 5,
                ..ev(6, "ACTIVITY_TASK_STARTED")
            },
            ev(7, "ACTIVITY_TASK_COMPLETED"),
        ];
        let t = tasks(&events);
        assert_eq!(
            t,
            [
                Task {
                    queue: "order-fulfillment".into(),
                    workflow_task: true,
                    identity: "baedal@10".into(),
                    at_ms: 30,
                },
                Task {
                    queue: "payment".into(),
                    workflow_task: false,
                    identity: "baedal@11".into(),
                    at_ms: 60,
                },
            ]
        );
    }
}
