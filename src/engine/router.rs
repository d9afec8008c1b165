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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::{header, Request, StatusCode};
    use tower::ServiceExt;

    use crate::engine::{
        config::{CorsOptions, CorsOrigin},
        server::Nop,
        Engine, EngineConfig,
    };

    async fn allow_origin(config: EngineConfig) -> Option<String> {
        let engine = Engine::new(config, Nop);
        let req = Request::get("/engine.io/?EIO=4&transport=polling")
            .header(header::ORIGIN, "https://evil.example")
            .body(Body::empty())
            .unwrap();
        let res = engine.router().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// CVE-2020-28481 (socket.io < 2.4.0 allowed every origin by default): no CORS
    /// headers unless configured, and never `*` together with credentials.
    #[tokio::test]
    async fn no_cors_headers_by_default_and_no_wildcard_with_credentials() {
        assert_eq!(allow_origin(EngineConfig::default()).await, None);
        let cors = |credentials| EngineConfig {
            cors: Some(CorsOptions {
                origin: CorsOrigin::Any,
                credentials,
            }),
            ..EngineConfig::default()
        };
        assert_eq!(allow_origin(cors(false)).await.as_deref(), Some("*"));
        assert_eq!(
            allow_origin(cors(true)).await.as_deref(),
            Some("https://evil.example"),
            "with credentials the origin is echoed, never `*`"
        );
        let listed = EngineConfig {
            cors: Some(CorsOptions {
                origin: CorsOrigin::List(vec!["https://app.example".into()]),
                credentials: true,
            }),
            ..EngineConfig::default()
        };
        assert_eq!(allow_origin(listed).await, None);
    }
}
