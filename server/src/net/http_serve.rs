//! The REST transport's connection loop (what `axum::serve` does, plus the HTTP/2 stream limit
//! and connections from [`super::accept`], and a header-read timeout for slow clients).

use std::future::Future;
use std::pin::pin;

use axum::Router;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use super::Incoming;

/// Serves `router` on every connection of `incoming` until `stop` resolves; then stops accepting,
/// lets each connection finish its in-flight requests (HTTP/1 keep-alive ends, HTTP/2 sends
/// GOAWAY) and returns once all are closed.
pub async fn serve_http(
    mut incoming: Incoming,
    router: Router,
    max_concurrent_streams: u32,
    stop: impl Future<Output = ()>,
) {
    // Each connection task holds a receiver: `closed()` resolves when the last one ends.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop = pin!(stop);
    loop {
        let conn = tokio::select! {
            conn = incoming.next() => conn,
            _ = &mut stop => break,
        };
        let conn = match conn {
            Some(Ok(conn)) => conn,
            Some(Err(err)) => {
                tracing::debug!(error = %err, "connection not served");
                continue;
            }
            None => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(crate::core::HEADER_READ_TIMEOUT);
            builder.http2().max_concurrent_streams(max_concurrent_streams);
            let mut connection = pin!(builder.serve_connection_with_upgrades(TokioIo::new(conn), service));
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::trace!(error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stop_rx.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(incoming);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
}
