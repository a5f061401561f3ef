//! `baedal-worker --context <list>`: runs the named contexts' activities (the
//! `order` context also hosts the workflow). Defaults to `BAEDAL_CONTEXTS`, or all.

use baedal_activities::config::{Config, parse_contexts};
use baedal_activities::runtime;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: glibc's malloc and free were
/// about a tenth of this process's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,temporalio_sdk_core=warn".into()),
        )
        .init();
    let cfg = Config::from_env()?;
    let mut contexts = cfg.contexts.clone();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--context" | "--contexts" => {
                let list = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--context needs a list, e.g. order,payment"))?;
                contexts = parse_contexts(&list)?;
            }
            a if a.starts_with("--context=") => {
                contexts = parse_contexts(&a["--context=".len()..])?
            }
            "-h" | "--help" => {
                println!(
                    "usage: baedal-worker [--context order,payment,shop,delivery,notification]"
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let names: Vec<_> = contexts.iter().map(|c| c.name()).collect();
    tracing::info!(contexts = ?names, temporal = %cfg.temporal_address, "baedal-worker starting");
    runtime::build(cfg.worker_threads)?.block_on(baedal_worker::run(cfg, &contexts, async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    }))
}
