//! Mounting a server in any tower stack: as a [`Layer`] in front of an
//! application, or as a [`Service`] of its own.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{body::Body, Router};
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use super::Server;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server as a tower [`Service`]: it answers its path (`/socket.io/`) and
/// 404 elsewhere. Made by [`Server::service`].
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use hyper_util::{rt::{TokioExecutor, TokioIo}, server::conn::auto, service::TowerToHyperService};
/// let io = rsio::Server::builder().build();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// loop {
///     let (stream, _) = listener.accept().await?;
///     let service = TowerToHyperService::new(io.service());
///     tokio::spawn(async move {
///         let _ = auto::Builder::new(TokioExecutor::new()).http1_only()
///             .serve_connection_with_upgrades(TokioIo::new(stream), service)
///             .await;
///     });
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct SocketIoService {
    router: Router,
}

impl SocketIoService {
    pub(crate) fn new(server: Server) -> SocketIoService {
        SocketIoService {
            router: server.router(),
        }
    }
}

impl std::fmt::Debug for SocketIoService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIoService").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for SocketIoService
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = <Router as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Router as Service<Request<B>>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.router.call(req)
    }
}

/// A tower [`Layer`] that serves the server's path and passes every other
/// request on to the service it wraps. Made by [`Server::layer`].
///
/// ```no_run
/// # let io = rsio::Server::builder().build();
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(io.layer());
/// ```
#[derive(Clone)]
pub struct SocketIoLayer {
    router: Router,
    path: Arc<str>,
}

impl SocketIoLayer {
    pub(crate) fn new(server: Server) -> SocketIoLayer {
        SocketIoLayer {
            path: server.config().engine.normalized_path().into(),
            router: server.router(),
        }
    }
}

impl std::fmt::Debug for SocketIoLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIoLayer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SocketIoLayer {
    type Service = SocketIoLayerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SocketIoLayerService {
            router: self.router.clone(),
            path: self.path.clone(),
            inner,
        }
    }
}

/// The service [`SocketIoLayer`] makes: the server's path to rsio, the rest to `S`.
#[derive(Clone)]
pub struct SocketIoLayerService<S> {
    router: Router,
    path: Arc<str>,
    inner: S,
}

impl<S> std::fmt::Debug for SocketIoLayerService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIoLayerService")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for SocketIoLayerService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.uri().path() == &*self.path {
            let router = self.router.clone();
            Box::pin(async move {
                match router.oneshot(req).await {
                    Ok(res) => Ok(res),
                    Err(never) => match never {},
                }
            })
        } else {
            // The one made ready by `poll_ready` serves; a fresh clone waits for the next.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            Box::pin(async move { Ok(inner.call(req).await?.map(Body::new)) })
        }
    }
}
