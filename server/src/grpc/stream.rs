//! Bidirectional streams: several requests in flight at once, responses in request order.

use std::future::Future;

use futures::future::{self, Either};
use futures::{Stream, StreamExt};
use tonic::Status;

/// Most requests of one stream running at once. Past it the stream stops reading from the client,
/// so a fast sender is held back by flow control instead of queueing without bound here.
pub const STREAM_WINDOW: usize = 32;

/// Runs `handle` on each request of `inbound`, up to `window` at a time, and yields the responses
/// in request order. `handle` turns its own failures into a response, so one bad request does not
/// end the stream; a broken inbound stream (transport or decoding error) ends the output with
/// that status, after the responses of the requests before it.
pub fn in_order<S, In, Out, F, Fut>(
    inbound: S,
    window: usize,
    mut handle: F,
) -> impl Stream<Item = Result<Out, Status>> + Send + 'static
where
    S: Stream<Item = Result<In, Status>> + Send + 'static,
    F: FnMut(In) -> Fut + Send + 'static,
    Fut: Future<Output = Out> + Send + 'static,
    Out: Send + 'static,
{
    inbound
        .map(move |item| match item {
            Ok(request) => Either::Left(future::FutureExt::map(handle(request), Ok)),
            Err(status) => Either::Right(future::ready(Err(status))),
        })
        .buffered(window.max(1))
        .scan(false, |ended, item| {
            if *ended {
                return future::ready(None);
            }
            *ended = item.is_err();
            future::ready(Some(item))
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn responses_come_back_in_request_order_while_running_concurrently() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let inbound = futures::stream::iter((0..20u64).map(Ok::<_, Status>));
        let (r, p) = (running.clone(), peak.clone());
        let out = in_order(inbound, 8, move |i: u64| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                // Later requests finish first: order must come from the stream, not from timing.
                tokio::time::sleep(Duration::from_millis(40 - 2 * i)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                if i % 5 == 3 {
                    format!("error {i}")
                } else {
                    format!("ok {i}")
                }
            }
        });
        let got: Vec<String> = out.map(|r| r.unwrap()).collect().await;
        let want: Vec<String> =
            (0..20).map(|i| if i % 5 == 3 { format!("error {i}") } else { format!("ok {i}") }).collect();
        assert_eq!(got, want);
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak > 1 && peak <= 8, "peak concurrency {peak}");
    }

    #[tokio::test]
    async fn a_broken_inbound_stream_ends_after_the_earlier_responses() {
        let items = vec![Ok(1u32), Ok(2), Err(Status::data_loss("decode error")), Ok(4)];
        let out = in_order(futures::stream::iter(items), 4, |i: u32| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            i * 10
        });
        let got: Vec<Result<u32, Status>> = out.collect().await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap(), &10);
        assert_eq!(got[1].as_ref().unwrap(), &20);
        assert_eq!(got[2].as_ref().unwrap_err().code(), tonic::Code::DataLoss);
    }

    #[tokio::test]
    async fn the_window_bounds_how_far_ahead_requests_are_read() {
        let read = Arc::new(AtomicUsize::new(0));
        let r = read.clone();
        let inbound = futures::stream::iter(0..100u32).map(move |i| {
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Status>(i)
        });
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let mut out = Box::pin(in_order(inbound, 4, move |i: u32| {
            let mut gate = gate_rx.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                i
            }
        }));
        // Nothing can finish while the gate is shut: only the window's worth is read.
        assert!(tokio::time::timeout(Duration::from_millis(20), out.next()).await.is_err());
        assert_eq!(read.load(Ordering::SeqCst), 4);
        gate_tx.send(true).unwrap();
        let rest: Vec<u32> = out.map(|r| r.unwrap()).collect().await;
        assert_eq!(rest, (0..100).collect::<Vec<_>>());
    }
}
