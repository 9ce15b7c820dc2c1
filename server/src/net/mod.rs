//! Accepting connections, the same way for both transports: at most `max_connections` open at
//! once (one more is accepted and closed at once, before anything is read, so no accepted work is
//! ever left waiting), and TLS when the server has a certificate (`--tls-cert`).

mod conn;
mod http_serve;
mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

pub use conn::Conn;
pub use http_serve::serve_http;
pub use tls::{acceptor as tls_acceptor, Alpn, TlsFiles};

/// A transport's accepted connections, ready to serve.
pub type Incoming = ReceiverStream<std::io::Result<Conn>>;

/// Accepted connections queue here only until the transport picks them up.
const HANDOFF: usize = 64;
/// Pause after a failed accept (out of file descriptors, mostly) before the next try.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one "refused" log line per transport per this interval, so a flood cannot fill the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Starts accepting on `listener` until the returned stream is dropped. With `tls`, each
/// connection's handshake runs on its own task (a slow client cannot stall accepting) and the
/// connection is handed over once it completes.
pub fn accept(
    listener: TcpListener,
    max_connections: usize,
    tls: Option<TlsAcceptor>,
    transport: &'static str,
) -> Incoming {
    let (tx, rx) = mpsc::channel(HANDOFF);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        let mut last_refusal_log: Option<Instant> = None;
        let mut refused_since_log = 0u64;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The transport stopped taking connections: close the listener.
                _ = tx.closed() => break,
            };
            let (stream, remote) = match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(transport, error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(stream);
                refused_since_log += 1;
                if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                    tracing::warn!(
                        transport,
                        max_connections,
                        refused = refused_since_log,
                        "connection refused: --max-connections reached"
                    );
                    last_refusal_log = Some(Instant::now());
                    refused_since_log = 0;
                }
                continue;
            };
            // Small responses (gRPC frames, JSON) should leave at once.
            let _ = stream.set_nodelay(true);
            match &tls {
                None => {
                    if tx.send(Ok(Conn::plain(stream, remote, permit))).await.is_err() {
                        break;
                    }
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match handshake.await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(Conn::tls(stream, remote, permit))).await;
                            }
                            // Scanners and plain-text clients end up here: not worth more than debug.
                            Ok(Err(err)) => tracing::debug!(transport, %remote, error = %err, "TLS handshake failed"),
                            Err(_) => tracing::debug!(transport, %remote, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
