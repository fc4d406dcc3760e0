//! The HTTP/1.1 listener: accepts connections and serves the [`router`]
//! (crate::api::router) on each, with the read deadlines axum's own `serve`
//! does not have.
//!
//! - A request head (request line and headers) must arrive within
//!   `http.header_timeout_s` of the connection opening or of the previous
//!   answer. A client that sent part of a head by then gets
//!   `408 request_timeout` and the connection is closed; an idle keep-alive
//!   connection is just closed.
//! - A body must arrive within `http.body_timeout_s` (enforced where bodies
//!   are read, [`super::json`]); the answer is the same 408, with
//!   `Connection: close`.
//!
//! Stopping stops accepting, lets every connection finish the request it is
//! serving (idle ones close at once) and returns when all are gone.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// The error code of an answer to a request that was not sent in time.
pub const REQUEST_TIMEOUT: &str = "request_timeout";

/// How long a connection closed after a 408 is still read from (and the
/// bytes dropped), so that closing it does not reset it before the client
/// has read the answer.
const LINGER: Duration = Duration::from_secs(1);

/// Read deadlines of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// Longest wait for a complete request head.
    pub header: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then waits for
/// the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    deadlines: Deadlines,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            serve_connection(stream, router, deadlines, &metrics, stop).await;
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection; answers a request head cut off by the header
/// deadline with a 408.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    deadlines: Deadlines,
    metrics: &Metrics,
    stop: CancellationToken,
) {
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    let result = tokio::select! {
        result = &mut conn => result,
        () = stop.cancelled() => {
            std::pin::Pin::new(&mut conn).graceful_shutdown();
            (&mut conn).await
        }
    };
    let Err(e) = result else { return };
    if !e.is_timeout() {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
        return;
    }
    let parts = conn.into_parts();
    if parts.read_buf.is_empty() {
        return; // idle keep-alive connection: nothing was asked
    }
    metrics.rejected.with_label_values(&[REQUEST_TIMEOUT]).inc();
    answer_timeout(parts.io.into_inner(), deadlines.header).await;
}

/// Writes the 408 envelope, closes the sending side and reads on for
/// [`LINGER`] before dropping the connection.
async fn answer_timeout(mut stream: TcpStream, waited: Duration) {
    let body = serde_json::json!({ "error": {
        "code": REQUEST_TIMEOUT,
        "message": format!(
            "The request head did not arrive within {} s.", waited.as_secs()
        ),
    }})
    .to_string();
    let head = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let written = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(LINGER, written).await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
