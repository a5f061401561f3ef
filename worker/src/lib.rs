//! Worker host: one Temporal worker per context it is told to run, each polling
//! that context's task queue. The `order` context also hosts the workflow (and
//! the order read model's local activity, which must live beside it).

use anyhow::Context as _;
use baedal_activities::config::Config;
use baedal_activities::identity;
use baedal_workflows::{Context, PaymentReconciliation, ReconcileInput};
use std::future::Future;
use std::sync::Arc;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, GrpcCompression};
use temporalio_common::data_converters::{
    DataConverter, DefaultFailureConverter, PayloadConverter,
};
use temporalio_common::telemetry::TelemetryOptions;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker};

pub mod codec;
mod contexts;
pub mod deadlines;
pub mod feed;
pub mod metrics;

/// JSON payloads sealed with the key in this file.
pub fn sealing_converter(key_file: &str) -> anyhow::Result<DataConverter> {
    let cipher = codec::PayloadCipher::from_file(key_file)?;
    Ok(sealed_with(std::sync::Arc::new(cipher)))
}

/// The data converter of every client and worker: JSON payloads, sealed by
/// [`codec::SealingCodec`] with this cipher.
fn sealed_with(cipher: std::sync::Arc<codec::PayloadCipher>) -> DataConverter {
    DataConverter::new(
        PayloadConverter::default(),
        DefaultFailureConverter::default(),
        codec::SealingCodec(cipher),
    )
}

/// Connects to Temporal with the configured address and namespace; payloads
/// are sealed with the key in `PAYLOAD_KEY_FILE` (see [`codec`]).
pub async fn connect(cfg: &Config) -> anyhow::Result<Client> {
    let cipher = codec::PayloadCipher::from_file(&cfg.payload_key_file)?;
    connect_sealing(cfg, std::sync::Arc::new(cipher)).await
}

/// [`connect`] with a cipher the caller already holds (the gateway's codec
/// endpoint uses the same one), so the key file is read once per process.
pub async fn connect_sealing(
    cfg: &Config,
    cipher: std::sync::Arc<codec::PayloadCipher>,
) -> anyhow::Result<Client> {
    let url = url::Url::parse(&cfg.temporal_url())
        .with_context(|| format!("TEMPORAL_ADDRESS={:?}", cfg.temporal_address))?;
    let conn = Connection::connect(
        ConnectionOptions::new(url)
            .identity(format!("baedal@{}", std::process::id()))
            // The SDK gzips by default; sealed payloads do not compress.
            .grpc_compression(if cfg.temporal_grpc_gzip {
                GrpcCompression::Gzip
            } else {
                GrpcCompression::None
            })
            .build(),
    )
    .await
    .with_context(|| format!("connecting to Temporal at {}", cfg.temporal_address))?;
    Ok(Client::new(
        conn,
        ClientOptions::new(cfg.temporal_namespace.clone())
            .data_converter(sealed_with(cipher))
            .build(),
    )?)
}

/// Runs the named contexts' workers until `shutdown` resolves, then drains them.
pub async fn run(
    cfg: Config,
    contexts: &[Context],
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // One meter for the SDK's metrics and the product's, served on METRICS_ADDR.
    let (runtime, metrics) = match cfg.metrics_addr {
        Some(addr) => {
            let (meter, _) = metrics::serve(addr)?;
            let telemetry = TelemetryOptions::builder().metrics(meter.clone()).build();
            let options = RuntimeOptions::builder()
                .telemetry_options(telemetry)
                .build()
                .map_err(|e| anyhow::anyhow!("runtime options: {e}"))?;
            (
                Runtime::from_current_tokio(options)?,
                metrics::Metrics::new(meter),
            )
        }
        None => (
            Runtime::from_current_tokio(Default::default())?,
            metrics::Metrics::none(),
        ),
    };
    let metrics = Arc::new(metrics);
    let cipher = Arc::new(codec::PayloadCipher::from_file(&cfg.payload_key_file)?);
    let client = connect_sealing(&cfg, cipher.clone()).await?;
    let feed = feed::Feed::new(&cfg, cipher, metrics.clone());
    let mut workers = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut relays = Vec::new();
    let host = contexts::Host {
        cfg: &cfg,
        client: &client,
        feed: &feed,
        stop: &stop_rx,
    };
    for &context in contexts {
        let name = context.name();
        let mut started = host.start(context).await?;
        relays.extend(started.tasks);
        // Counted only where someone can read the count.
        if cfg.metrics_addr.is_some() {
            started
                .options
                .activity_inbound_interceptor(metrics::ActivityOutcomes {
                    metrics: metrics.clone(),
                    context: name,
                });
        }
        let worker = Worker::new(&runtime, client.clone(), started.options)
            .with_context(|| format!("starting the {name} worker"))?;
        tracing::info!(context = name, "worker started");
        workers.push(worker);
    }
    // Identity is the gateway's; workers only make sure the demo riders can log in.
    let _ = identity::MIGRATOR;
    let handles: Vec<_> = workers.iter().map(|w| w.shutdown_handle()).collect();
    let runs = futures::future::join_all(workers.iter_mut().map(|w| w.run()));
    tokio::pin!(runs);
    tokio::pin!(shutdown);
    let results = tokio::select! {
        results = &mut runs => results,
        _ = &mut shutdown => {
            tracing::info!("shutting down workers");
            for h in &handles { h(); }
            let _ = stop_tx.send(true);
            runs.await
        }
    };
    for r in relays {
        r.abort();
    }
    for r in results {
        r.context("worker stopped with an error")?;
    }
    Ok(())
}

/// The payment reconciliation runs on a Temporal Schedule, one per deployment.
/// The order context's worker creates it, or brings its interval and input up
/// to date, each time it starts.
pub async fn ensure_reconciliation_schedule(cfg: &Config, client: &Client) -> anyhow::Result<()> {
    use temporalio_client::schedules::{
        CreateScheduleOptions, ScheduleAction, ScheduleError, ScheduleOverlapPolicy, ScheduleSpec,
    };
    let id = cfg.reconcile_schedule_id();
    let action = || {
        ScheduleAction::start_workflow(
            PaymentReconciliation::run,
            ReconcileInput {
                queues: cfg.queues(),
                min_age_ms: cfg.reconcile_min_age.as_millis() as u64,
            },
            cfg.workflow_queue(),
            id.clone(),
        )
    };
    let spec = ScheduleSpec::from_interval(cfg.reconcile_interval);
    let created = client
        .create_schedule(
            id.clone(),
            CreateScheduleOptions::builder()
                .action(action())
                .spec(spec.clone())
                // A run still going when the next is due: skip, never pile up.
                .overlap_policy(ScheduleOverlapPolicy::Skip)
                .note("refunds charges that no live or delivered order holds")
                .build(),
        )
        .await;
    match created {
        Ok(_) => {
            tracing::info!(schedule = %id, every = ?cfg.reconcile_interval, "reconciliation scheduled")
        }
        Err(ScheduleError::Rpc(s)) if s.code() == temporalio_client::tonic::Code::AlreadyExists => {
            let action = action();
            client
                .get_schedule_handle(id.clone())
                .update(
                    move |u| {
                        u.set_spec(spec);
                        u.set_action(action);
                    },
                    Default::default(),
                )
                .await
                .with_context(|| format!("updating schedule {id}"))?;
        }
        Err(e) => return Err(e).with_context(|| format!("creating schedule {id}")),
    }
    Ok(())
}
