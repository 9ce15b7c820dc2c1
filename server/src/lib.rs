//! cspserve's inference server: REST (axum) and gRPC (tonic) at once, a dynamic batcher in
//! front of each model, model backends on their own OS threads.

pub mod config;
pub mod core;
pub mod grpc;
pub mod http;
pub mod net;
pub mod request_id;
pub mod secret;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Args;

/// Parses settings, starts the runtime and serves until SIGTERM/SIGINT.
pub fn run(args: Args) -> Result<()> {
    let settings = args.settings()?;
    if let Some(t) = settings.threads {
        // candle's CPU kernels size their pools from this; it must be set before the first op.
        std::env::set_var("RAYON_NUM_THREADS", t.max(1).to_string());
    }
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("csp-io").build()?;
    runtime.block_on(serve(settings, shutdown_signal()))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour codes only on a terminal: piped logs (files, collectors, tests) stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).try_init();
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Loads and warms up the models, binds both listeners, logs one ready line, and serves until
/// `stop` resolves; then refuses new work, drains admitted work within the grace period and returns.
pub async fn serve(settings: config::Settings, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    // TLS files first: a wrong path should not wait for the models to load.
    let (http_tls, grpc_tls) = match &settings.tls {
        Some(files) => {
            (Some(net::tls_acceptor(files, net::Alpn::Http)?), Some(net::tls_acceptor(files, net::Alpn::Grpc)?))
        }
        None => (None, None),
    };
    let core = crate::core::start(settings.models.clone(), settings.limits.clone(), settings.decode_threads)?;
    let infer = core.infer();
    for (name, task) in &settings.tasks {
        let info = infer.model(name)?;
        let actual = info.task.as_str();
        if actual != task {
            bail!("model `{name}` is configured as `{task}` but its network is a `{actual}` model");
        }
    }
    let http_listener =
        TcpListener::bind(settings.http_addr).await.with_context(|| format!("binding HTTP {}", settings.http_addr))?;
    let grpc_listener =
        TcpListener::bind(settings.grpc_addr).await.with_context(|| format!("binding gRPC {}", settings.grpc_addr))?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;

    // Transports stop accepting once this flips (after the drain).
    let (close_tx, close_rx) = watch::channel(false);
    let closed = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|c| *c).await;
    };
    let http_options = http::HttpOptions {
        api_key: settings.api_key.clone(),
        cors_allow_origins: settings.cors_allow_origins.clone(),
    };
    let router = http::router(infer.clone(), http_options);
    let limits = settings.connections;
    let http_incoming = net::accept(http_listener, limits.max_connections, http_tls, "http");
    let http_server = net::serve_http(http_incoming, router, limits.max_concurrent_streams, closed(close_rx.clone()));
    let routes = grpc::routes(infer.clone(), grpc::GrpcOptions { api_key: settings.api_key.clone() });
    let grpc_server = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .layer(request_id::RequestIdLayer(request_id::Transport::Grpc))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            net::accept(grpc_listener, limits.max_connections, grpc_tls, "grpc"),
            closed(close_rx),
        );
    let http_task = tokio::spawn(http_server);
    let grpc_task = tokio::spawn(grpc_server);
    let names: Vec<String> = infer.models().into_iter().map(|m| m.name).collect();
    let (scheme, tls) = if settings.tls.is_some() { ("https", "on") } else { ("http", "off") };
    tracing::info!("ready: {scheme}://{http_addr} gRPC {grpc_addr} (TLS {tls}) models: {}", names.join(", "));
    println!("csp-server ready: http={http_addr} grpc={grpc_addr} models={}", names.join(","));

    stop.await;
    tracing::info!("shutting down: refusing new work, draining");
    let drained = core.shutdown(settings.shutdown_grace).await;
    if !drained {
        tracing::warn!(grace = ?settings.shutdown_grace, "grace period over with work still running");
    }
    let _ = close_tx.send(true);
    let wait = Duration::from_secs(5);
    let _ = tokio::time::timeout(wait, http_task).await;
    let _ = tokio::time::timeout(wait, grpc_task).await;
    tracing::info!("stopped");
    Ok(())
}
