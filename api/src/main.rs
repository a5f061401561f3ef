//! `baedal-api`: the HTTP gateway on `HTTP_ADDR` (default 127.0.0.1:8080).

use baedal_activities::Config;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: glibc's malloc and free were
/// about a tenth of this process's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cfg = Config::from_env()?;
    baedal_activities::runtime::build(cfg.api_threads)?.block_on(run(cfg))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.http_addr).await?;
    tracing::info!(addr = %cfg.http_addr, temporal = %cfg.temporal_address, "baedal-api listening");
    let state = baedal_api::AppState::build(cfg).await?;
    baedal_api::serve(state, listener, async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    })
    .await
}
