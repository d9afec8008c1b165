//! Engine.IO server options, with Node's names and defaults.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use http::request::Parts;

/// The transports a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    pub polling: bool,
    pub websocket: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            polling: true,
            websocket: true,
        }
    }
}

/// The `io` cookie set on the handshake response (Node's `cookie` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieOptions {
    pub name: String,
    pub path: String,
    pub http_only: bool,
    /// `SameSite` value, e.g. `Lax`.
    pub same_site: Option<String>,
}

impl Default for CookieOptions {
    fn default() -> Self {
        CookieOptions {
            name: "io".into(),
            path: "/".into(),
            http_only: true,
            same_site: Some("Lax".into()),
        }
    }
}

/// Which origins may use the server from a browser (Node's `cors` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigin {
    /// `origin: "*"` (or `true`): any origin.
    Any,
    /// An explicit list of origins such as `http://localhost:3000`.
    List(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOptions {
    pub origin: CorsOrigin,
    pub credentials: bool,
}

/// The answer of an [`AllowRequest`] hook: `Err(message)` refuses the handshake
/// with HTTP 403 `{"code":4,"message":<message>}`.
pub type AllowRequestFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Node's `allowRequest(req, callback)`: runs for every request without a sid.
pub type AllowRequest = Arc<dyn Fn(&Parts) -> AllowRequestFuture + Send + Sync>;

/// Engine.IO options. Field names follow Node's option names in snake case.
#[derive(Clone)]
pub struct EngineConfig {
    /// Mount path, with a trailing slash (`/engine.io/`, `/socket.io/`).
    pub path: String,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub upgrade_timeout: Duration,
    /// Largest message and polling POST body, advertised as `maxPayload`.
    pub max_http_buffer_size: usize,
    pub transports: Transports,
    pub allow_upgrades: bool,
    pub cookie: Option<CookieOptions>,
    pub cors: Option<CorsOptions>,
    pub allow_request: Option<AllowRequest>,
    /// Compress polling responses of at least this many bytes (gzip/deflate);
    /// `None` disables compression.
    pub http_compression_threshold: Option<usize>,
    /// An extra message sent right after the `open` packet.
    pub initial_packet: Option<String>,
    /// How long a server-closed polling session waits for a last GET to deliver
    /// what was queued before it.
    pub close_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            path: "/engine.io/".into(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_http_buffer_size: 1_000_000,
            transports: Transports::default(),
            allow_upgrades: true,
            cookie: None,
            cors: None,
            allow_request: None,
            http_compression_threshold: Some(1024),
            initial_packet: None,
            close_timeout: Duration::from_millis(5_000),
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("path", &self.path)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("upgrade_timeout", &self.upgrade_timeout)
            .field("max_http_buffer_size", &self.max_http_buffer_size)
            .field("transports", &self.transports)
            .field("allow_upgrades", &self.allow_upgrades)
            .field("cookie", &self.cookie)
            .field("cors", &self.cors)
            .field("allow_request", &self.allow_request.is_some())
            .field(
                "http_compression_threshold",
                &self.http_compression_threshold,
            )
            .field("initial_packet", &self.initial_packet)
            .finish()
    }
}

impl EngineConfig {
    /// The mount path normalised to start and end with `/`.
    pub(crate) fn normalized_path(&self) -> String {
        let trimmed = self.path.trim_matches('/');
        if trimmed.is_empty() {
            "/".into()
        } else {
            format!("/{trimmed}/")
        }
    }
}
