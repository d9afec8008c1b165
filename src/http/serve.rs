//! The accept loop. `axum::serve` installs no timer, so hyper's header-read
//! timeout would be inert there and slow clients could hold connections open
//! forever; this loop sets one, caps connections and drains on shutdown.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::{
    body::Incoming,
    header::{HeaderValue, CONNECTION},
    Request, StatusCode,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, OwnedSemaphorePermit, Semaphore},
};
use tower::ServiceExt;
use tracing::{debug, warn};

#[derive(Debug, Clone)]
/// Limits of the accept loop of [`serve`].
pub struct ServeConfig {
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Largest request head (request line + headers) hyper buffers.
    pub max_header_bytes: usize,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long open connections may take to finish once shutdown starts.
    pub drain_timeout: Duration,
    /// When set, `GET /health` is answered here, before the router: 200 `serving`,
    /// or 503 `draining` once the flag is true.
    pub health: Option<Arc<AtomicBool>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_connections: 100_000,
            drain_timeout: Duration::from_secs(10),
            health: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
/// Why [`serve`] stopped.
pub enum ServeError {
    #[error("accept failed: {0}")]
    /// Accepting failed for a reason that is not transient.
    Accept(#[from] std::io::Error),
}

/// The answer to `GET /health`: whether this process still serves.
pub fn health_response(draining: bool) -> axum::response::Response {
    let (status, body) = if draining {
        (http::StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (http::StatusCode::OK, "serving\n")
    };
    let mut res = axum::response::Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

const BUSY_RESPONSE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting
/// and waits up to `drain_timeout` for open connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with_handoff(listener, None, router, config, shutdown).await
}

/// [`serve`], also serving the connections that arrive on `handoff` (accepted
/// elsewhere, e.g. by a cluster primary on a shared port). Their answers, but for
/// a protocol switch, close the connection: its next request may belong to
/// another process, which only the one that accepted it can tell.
pub async fn serve_with_handoff(
    listener: TcpListener,
    mut handoff: Option<mpsc::Receiver<TcpStream>>,
    router: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192));
    let builder = Arc::new(builder.http1_only());
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, handed) = tokio::select! {
            _ = &mut shutdown => break,
            stream = next_handed(&mut handoff) => match stream.peer_addr() {
                Ok(peer) => (stream, peer, true),
                // Closed by its client meanwhile.
                Err(_) => continue,
            },
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer, false),
                Err(err) if is_transient(&err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(target: "http", "accept: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(err) => return Err(err.into()),
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            crate::metrics::add(crate::metrics::counter::CAP_REFUSALS, 1);
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let health = config.health.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            let draining = health
                .as_ref()
                .filter(|_| req.uri().path() == "/health")
                .map(|h| h.load(Ordering::Relaxed));
            async move {
                if let Some(draining) = draining {
                    return Ok(health_response(draining));
                }
                let res = router.oneshot(req.map(Body::new)).await;
                let mut res = res.unwrap_or_else(|never| match never {});
                if handed && res.status() != StatusCode::SWITCHING_PROTOCOLS {
                    res.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(res)
            }
        });
        // The permit travels with the socket: an upgraded WebSocket outlives this
        // connection future and still counts against `max_connections`.
        let stream = CountedStream {
            inner: stream,
            _permit: permit,
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                debug!(target: "http", %peer, "connection: {err}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(config.drain_timeout) => {
            debug!(target: "http", "drain timed out");
        }
    }
    Ok(())
}

/// A client's socket and its place among `max_connections`, released when the
/// socket is dropped.
struct CountedStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The next handed-off connection; never, without a handoff channel or once it
/// closed.
async fn next_handed(handoff: &mut Option<mpsc::Receiver<TcpStream>>) -> TcpStream {
    if let Some(rx) = handoff {
        if let Some(stream) = rx.recv().await {
            return stream;
        }
        *handoff = None;
    }
    std::future::pending().await
}

async fn refuse_busy(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY_RESPONSE)).await;
}

fn is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(err.raw_os_error(), Some(23 | 24 | 105 | 12))
}
