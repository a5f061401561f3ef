//! `baedal-paysim`: the payment gateway simulator for local runs (`make up`).

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let addr = std::env::var("PAYSIM_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "payment gateway simulator listening");
    axum::serve(
        listener,
        baedal_paysim::router(baedal_paysim::Sim::default()),
    )
    .with_graceful_shutdown(async {
        // `up` stops its processes with SIGTERM; Ctrl-C in a terminal sends SIGINT.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    })
    .await?;
    Ok(())
}
