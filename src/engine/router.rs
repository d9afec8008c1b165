//! Mounting an engine in an axum `Router`, with its CORS policy.

use std::sync::Arc;

use axum::{body::Body, response::Response, routing::any, Router};
use http::{header, Method, Request, StatusCode};
use tower::util::MapResponseLayer;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::{
    config::{CorsOptions, CorsOrigin},
    server::{Engine, EngineHandler},
};

impl<H: EngineHandler> Engine<H> {
    /// A router serving this engine at its configured path (e.g. `/socket.io/`).
    /// Merge it into an application's router, or serve it with [`crate::http::serve`].
    pub fn router(self: &Arc<Self>) -> Router {
        let engine = self.clone();
        let path = self.config.normalized_path();
        let router = Router::new().route(
            &path,
            any(move |req: Request<Body>| {
                let engine = engine.clone();
                async move { engine.handle(req).await }
            }),
        );
        match &self.config.cors {
            Some(cors) => router
                .layer(cors_layer(cors))
                .layer(MapResponseLayer::new(preflight_no_content)),
            None => router,
        }
    }
}

pub(crate) fn cors_layer(opts: &CorsOptions) -> CorsLayer {
    let origin = match &opts.origin {
        // `*` cannot be combined with credentials: echo the request's origin instead.
        CorsOrigin::Any if opts.credentials => AllowOrigin::mirror_request(),
        CorsOrigin::Any => AllowOrigin::any(),
        CorsOrigin::List(list) => AllowOrigin::list(list.iter().filter_map(|o| o.parse().ok())),
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_credentials(opts.credentials)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
}

/// Node's `cors` package answers a preflight with 204; tower-http with 200.
fn preflight_no_content(mut res: Response) -> Response {
    if res.status() == StatusCode::OK
        && res
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS)
    {
        *res.status_mut() = StatusCode::NO_CONTENT;
    }
    res
}
