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
        // `EngineConfig::validate` refused `Any` with credentials before any request.
        CorsOrigin::Any => AllowOrigin::any(),
        CorsOrigin::Reflect => AllowOrigin::mirror_request(),
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
        Engine, EngineConfig, EngineConfigError,
    };

    fn cors(origin: CorsOrigin, credentials: bool) -> EngineConfig {
        EngineConfig {
            cors: Some(CorsOptions {
                origin,
                credentials,
            }),
            ..EngineConfig::default()
        }
    }

    /// `Access-Control-Allow-Origin` and `-Credentials` for a request from
    /// `https://evil.example`.
    async fn answer(config: EngineConfig) -> (Option<String>, Option<String>) {
        let engine = Engine::new(config, Nop);
        let req = Request::get("/engine.io/?EIO=4&transport=polling")
            .header(header::ORIGIN, "https://evil.example")
            .body(Body::empty())
            .unwrap();
        let res = engine.router().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let get = |name| {
            res.headers()
                .get(name)
                .map(|v: &http::HeaderValue| v.to_str().unwrap().to_string())
        };
        (
            get(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        )
    }

    /// CVE-2020-28481 (socket.io < 2.4.0 allowed every origin by default): no CORS
    /// headers unless configured, `*` never with credentials, and `Any` with
    /// credentials refused when the engine is built, so `https://evil.example` is
    /// never echoed with credentials under `Any`.
    #[tokio::test]
    async fn no_cors_headers_by_default_and_no_wildcard_with_credentials() {
        assert_eq!(answer(EngineConfig::default()).await, (None, None));
        assert_eq!(
            answer(cors(CorsOrigin::Any, false)).await,
            (Some("*".into()), None)
        );
        let refused = cors(CorsOrigin::Any, true);
        assert_eq!(
            refused.validate(),
            Err(EngineConfigError::CorsAnyWithCredentials)
        );
        assert!(matches!(
            Engine::try_new(refused, Nop),
            Err(EngineConfigError::CorsAnyWithCredentials)
        ));
        let listed = cors(CorsOrigin::List(vec!["https://app.example".into()]), true);
        // (tower-http, like Node's `cors`, sends `-Credentials` whatever the origin;
        // without `-Allow-Origin` a browser still hides the response.)
        assert_eq!(answer(listed).await.0, None);
    }

    /// Node's `origin: true` is its own option: it echoes whatever origin asks.
    #[tokio::test]
    async fn reflect_echoes_the_origin_only_when_asked_for() {
        assert_eq!(
            answer(cors(CorsOrigin::Reflect, false)).await,
            (Some("https://evil.example".into()), None)
        );
        assert_eq!(
            answer(cors(CorsOrigin::Reflect, true)).await,
            (Some("https://evil.example".into()), Some("true".into()))
        );
    }

    #[test]
    #[should_panic(expected = "cannot be combined with credentials")]
    fn new_panics_on_any_with_credentials() {
        Engine::new(cors(CorsOrigin::Any, true), Nop);
    }
}
