//! Engine.IO server options, with Node's names and defaults.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use http::request::Parts;

/// The transports a server accepts (Node's `transports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transports {
    /// HTTP long-polling.
    pub polling: bool,
    /// WebSocket.
    pub websocket: bool,
}

impl Transports {
    /// Both transports (the default).
    pub const ALL: Transports = Transports {
        polling: true,
        websocket: true,
    };
    /// WebSocket only (Node's `transports: ["websocket"]`).
    pub const WEBSOCKET: Transports = Transports {
        polling: false,
        websocket: true,
    };
    /// Long-polling only (Node's `transports: ["polling"]`).
    pub const POLLING: Transports = Transports {
        polling: true,
        websocket: false,
    };
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
#[non_exhaustive]
pub struct CookieOptions {
    /// The cookie's name (`io`).
    pub name: String,
    /// The cookie's `Path` (`/`).
    pub path: String,
    /// Whether the cookie is `HttpOnly` (true).
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
    /// Node's `origin: "*"`: `Access-Control-Allow-Origin: *`. Browsers refuse
    /// `*` on a credentialed request, so with `credentials` the config is refused
    /// ([`EngineConfigError::CorsAnyWithCredentials`]).
    Any,
    /// Node's `origin: true`: the request's `Origin` is echoed back.
    ///
    /// **Dangerous with `credentials`**: every site a user visits may then make
    /// requests carrying the user's cookies and read the answers (the hole of
    /// CVE-2020-28481). Prefer [`CorsOrigin::List`].
    Reflect,
    /// An explicit list of origins such as `http://localhost:3000`.
    List(Vec<String>),
}

/// Node's `cors` option: which origins may read responses, and whether
/// credentials (cookies) may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CorsOptions {
    /// Which origins may read responses.
    pub origin: CorsOrigin,
    /// `Access-Control-Allow-Credentials: true`; not allowed with [`CorsOrigin::Any`].
    pub credentials: bool,
}

impl CorsOptions {
    /// These origins, without credentials.
    pub fn new(origin: CorsOrigin) -> CorsOptions {
        CorsOptions {
            origin,
            credentials: false,
        }
    }

    /// Allows credentials (cookies); refused with [`CorsOrigin::Any`].
    pub fn credentials(mut self, credentials: bool) -> CorsOptions {
        self.credentials = credentials;
        self
    }
}

/// Why an [`EngineConfig`] cannot be used; returned by
/// [`EngineConfig::validate`], `Engine::try_new` and `Server::try_new`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineConfigError {
    /// `CorsOrigin::Any` with `credentials: true`.
    #[error(
        "cors: origin Any (`*`) cannot be combined with credentials: browsers refuse `*` on \
         credentialed requests; list the origins (CorsOrigin::List), or, knowing that any site \
         may then read responses with the user's cookies, reflect the request's origin \
         (CorsOrigin::Reflect)"
    )]
    CorsAnyWithCredentials,
}

/// Which browser origins may open or use a session. Checked on every request,
/// the WebSocket handshake and upgrade included: CORS does not apply to
/// WebSocket, so without this check any site a user visits can open a socket
/// with the user's cookies (cross-site WebSocket hijacking).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Every origin: Node's behaviour, and the library default.
    #[default]
    Any,
    /// Requests without an `Origin` header (non-browser clients), same-origin
    /// requests (the `Origin`'s host and port are the request's `Host`, or its
    /// `X-Forwarded-Host` when [`EngineConfig::trust_proxy`] is set), and the listed origins
    /// (`https://app.example.com`, `http://localhost:3000`).
    /// Anything else is refused with 403 `{"code":4,"message":"Forbidden"}`.
    SameOriginAnd(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a request with these `Origin` and `Host` headers may pass.
    pub fn allows(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        let AllowedOrigins::SameOriginAnd(list) = self else {
            return true;
        };
        let Some(origin) = origin else {
            return true;
        };
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        if list.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return true;
        }
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => ":80",
            "https" => ":443",
            _ => return false,
        };
        let strip = |a: &str| -> String {
            let a = a.to_ascii_lowercase();
            match a.strip_suffix(default_port) {
                Some(bare) => bare.to_string(),
                None => a,
            }
        };
        strip(authority) == strip(host)
    }
}

/// The answer of an [`AllowRequest`] hook: `Err(message)` refuses the handshake
/// with HTTP 403 `{"code":4,"message":<message>}`.
pub type AllowRequestFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Node's `allowRequest(req, callback)`: runs for every request without a sid.
pub type AllowRequest = Arc<dyn Fn(&Parts) -> AllowRequestFuture + Send + Sync>;

/// permessage-deflate (RFC 7692) on the WebSocket transport, Node's
/// `perMessageDeflate`. The server never keeps its compression context between
/// messages, so a broadcast is compressed once for every recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Messages smaller than this many bytes are sent uncompressed.
    pub threshold: usize,
    /// zlib compression level, 0 (none) to 9 (smallest); Node's default is 6.
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            threshold: 1024,
            level: 6,
        }
    }
}

/// Where an Engine.IO server alone is mounted when [`EngineConfig::path`] is `None`.
pub const ENGINE_PATH: &str = "/engine.io/";

/// Engine.IO options. Field names follow Node's option names in snake case.
///
/// Made with [`EngineConfig::default`] and changed field by field (a Socket.IO
/// server is easier to configure with `Server::builder()`, which sets these).
#[derive(Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Mount path, with a trailing slash. `None` (the default) is the path of
    /// whoever serves it: `/engine.io/` for an [`Engine`](super::Engine) alone,
    /// `/socket.io/` for a Socket.IO `Server`, so that changing another option
    /// never moves the server away from where its clients look.
    pub path: Option<String>,
    /// How often the server pings (Node's `pingInterval`, 25 s).
    pub ping_interval: Duration,
    /// How long the server waits for a pong (Node's `pingTimeout`, 20 s).
    pub ping_timeout: Duration,
    /// How long a transport upgrade may take (Node's `upgradeTimeout`, 10 s).
    pub upgrade_timeout: Duration,
    /// Largest message and polling POST body, advertised as `maxPayload`.
    pub max_http_buffer_size: usize,
    /// The transports accepted.
    pub transports: Transports,
    /// Whether a polling client may upgrade to WebSocket.
    pub allow_upgrades: bool,
    /// The `io` cookie on the handshake response; `None` sets no cookie.
    pub cookie: Option<CookieOptions>,
    /// CORS headers for browsers on other origins; `None` sends none.
    pub cors: Option<CorsOptions>,
    /// Node's `allowRequest`: may refuse a handshake (see [`AllowRequest`]).
    pub allow_request: Option<AllowRequest>,
    /// Compress polling responses of at least this many bytes (gzip/deflate);
    /// `None` disables compression.
    pub http_compression_threshold: Option<usize>,
    /// An extra message sent right after the `open` packet.
    pub initial_packet: Option<String>,
    /// How long a server-closed polling session waits for a last GET to deliver
    /// what was queued before it.
    pub close_timeout: Duration,
    /// Browser origins allowed to connect (not in Node: its WebSocket accepts any).
    pub allowed_origins: AllowedOrigins,
    /// Most bytes queued for one client that does not read fast enough. A
    /// `volatile` packet is dropped as soon as anything is queued; a client whose
    /// queue would grow past this bound is disconnected ("send queue full").
    pub max_send_queue_bytes: usize,
    /// The peer is a reverse proxy: believe its `X-Forwarded-Host` (same-origin
    /// check), `X-Forwarded-For` (`handshake.address()`) and `X-Forwarded-Proto`
    /// (`handshake.secure()`). Off by default, as Node's `trust proxy`: otherwise
    /// any client may send these headers and claim another host or address.
    pub trust_proxy: bool,
    /// Accept Engine.IO v3 clients (Socket.IO v2 clients), as Node's `allowEIO3`:
    /// any `EIO` other than `4` is then served as v3.
    pub allow_eio3: bool,
    /// permessage-deflate for WebSocket clients that offer it; `None` (the
    /// default, as in Node) never compresses.
    pub per_message_deflate: Option<DeflateConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            path: None,
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
            allowed_origins: AllowedOrigins::Any,
            max_send_queue_bytes: 16 << 20,
            trust_proxy: false,
            allow_eio3: false,
            per_message_deflate: None,
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
            .field("close_timeout", &self.close_timeout)
            .field("allowed_origins", &self.allowed_origins)
            .field("max_send_queue_bytes", &self.max_send_queue_bytes)
            .field("trust_proxy", &self.trust_proxy)
            .field("allow_eio3", &self.allow_eio3)
            .field("per_message_deflate", &self.per_message_deflate)
            .finish()
    }
}

impl EngineConfig {
    /// Refuses combinations that cannot work, before any request is served.
    pub fn validate(&self) -> Result<(), EngineConfigError> {
        if let Some(CorsOptions {
            origin: CorsOrigin::Any,
            credentials: true,
        }) = &self.cors
        {
            return Err(EngineConfigError::CorsAnyWithCredentials);
        }
        Ok(())
    }

    /// The mount path normalised to start and end with `/`.
    pub(crate) fn normalized_path(&self) -> String {
        let trimmed = self
            .path
            .as_deref()
            .unwrap_or(ENGINE_PATH)
            .trim_matches('/');
        if trimmed.is_empty() {
            "/".into()
        } else {
            format!("/{trimmed}/")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_listed_origins_pass() {
        let any = AllowedOrigins::Any;
        assert!(any.allows(Some(b"https://evil.example"), Some(b"app.example")));
        let policy = AllowedOrigins::SameOriginAnd(vec!["https://app.example.com".into()]);
        let ok = |origin: Option<&str>, host: Option<&str>| {
            policy.allows(origin.map(str::as_bytes), host.map(str::as_bytes))
        };
        assert!(ok(None, Some("127.0.0.1:3000")), "no Origin: not a browser");
        assert!(ok(Some("http://127.0.0.1:3000"), Some("127.0.0.1:3000")));
        assert!(ok(Some("HTTP://Localhost:3000"), Some("localhost:3000")));
        assert!(ok(Some("http://example.com"), Some("example.com:80")));
        assert!(ok(Some("https://example.com:443"), Some("example.com")));
        assert!(ok(
            Some("https://APP.example.com"),
            Some("rsio.internal:3000")
        ));
        assert!(!ok(Some("http://127.0.0.1:3001"), Some("127.0.0.1:3000")));
        assert!(!ok(Some("https://evil.example"), Some("127.0.0.1:3000")));
        assert!(!ok(Some("http://example.com"), Some("example.com:443")));
        assert!(!ok(Some("null"), Some("127.0.0.1:3000")));
        assert!(!ok(Some("file://x"), Some("x")));
        assert!(!ok(Some("http://a"), None));
        assert!(
            !policy.allows(Some(b"http://a\xff"), Some(b"a")),
            "not UTF-8"
        );
    }
}
