//! The accept loop: every TCP connection, WebSocket or not, holds one of a
//! fixed number of slots while it lives; a connection that does not send
//! a complete request head in time (its first, or its next on keep-alive)
//! is closed by hyper's own header-read timer. axum's `serve` has neither
//! knob, so connections are served here with hyper directly, as it does.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The open-connection gauge and the refused-connection counter.
pub type ConnMetrics = (
    prometheus_client::metrics::gauge::Gauge<i64, std::sync::atomic::AtomicI64>,
    prometheus_client::metrics::counter::Counter<u64, std::sync::atomic::AtomicU64>,
);

pub struct Limits {
    /// Concurrent TCP connections at most; past it new ones are closed at
    /// once (a fast failure the client can retry, not a hang).
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_wait: Duration,
}

/// Serves `router` on `listener` until `stop`, then lets requests in
/// flight finish (at most `shutdown_wait`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    (open, refused): ConnMetrics,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let conns = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, usually: wait instead of
                    // spinning, as hyper's own server does.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.inc();
            drop(tcp);
            continue;
        };
        // Small frames must not wait for Nagle's algorithm (~40 ms tails).
        let _ = tcp.set_nodelay(true);
        // Handlers that need the client's address (uploads, upgrades under
        // `upload_auth = "peer_address"`) read it from the extensions.
        let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(remote);
                req
            },
        ));
        open.inc();
        let io = Counted {
            tcp,
            _slot: slot,
            open: open.clone(),
        };
        let conn = http.serve_connection(TokioIo::new(io), svc).with_upgrades();
        let stop = stop.clone();
        conns.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    // Finish the request in flight, take no other. An
                    // upgraded connection (a WebSocket) has left hyper by
                    // now: sessions close on their own signal.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    conns.close();
    if tokio::time::timeout(limits.shutdown_wait, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests did not finish in time");
    }
}

/// A connection's stream holding its slot: the slot is freed when the
/// stream is dropped, which for a WebSocket is when the socket ends (the
/// upgrade takes the stream out of hyper, not out of the count).
struct Counted {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
