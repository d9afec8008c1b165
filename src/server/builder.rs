//! [`ServerBuilder`]: a server configured option by option, with Node's names.

use std::{future::Future, sync::Arc, time::Duration};

use super::{AdapterFactory, Server, ServerConfig};
use crate::{
    adapter::RecoveryConfig,
    engine::{AllowedOrigins, CookieOptions, CorsOptions, DeflateConfig, Transports},
    parser::Parser,
};

/// Builds a [`Server`]: `Server::builder().ping_interval(…).build()`. Every
/// option has Node's default; the server is at `/socket.io/` unless
/// [`ServerBuilder::path`] says otherwise.
#[must_use]
#[derive(Default)]
pub struct ServerBuilder {
    config: ServerConfig,
    adapter: Option<AdapterFactory>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("adapter", &self.adapter.is_some())
            .finish()
    }
}

impl ServerBuilder {
    /// Starts from an existing config.
    pub fn from_config(config: ServerConfig) -> ServerBuilder {
        ServerBuilder {
            config,
            adapter: None,
        }
    }

    /// Node's `path` (`/socket.io/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.config.engine.path = Some(path.into());
        self
    }

    /// Node's `pingInterval` (25 s).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.config.engine.ping_interval = interval;
        self
    }

    /// Node's `pingTimeout` (20 s).
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.config.engine.ping_timeout = timeout;
        self
    }

    /// Node's `upgradeTimeout` (10 s).
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.config.engine.upgrade_timeout = timeout;
        self
    }

    /// Node's `maxHttpBufferSize` (1 MB): the largest message and polling body.
    pub fn max_http_buffer_size(mut self, bytes: usize) -> Self {
        self.config.engine.max_http_buffer_size = bytes;
        self
    }

    /// Node's `transports` (both).
    pub fn transports(mut self, transports: Transports) -> Self {
        self.config.engine.transports = transports;
        self
    }

    /// Node's `allowUpgrades` (true).
    pub fn allow_upgrades(mut self, allow: bool) -> Self {
        self.config.engine.allow_upgrades = allow;
        self
    }

    /// Node's `cookie` (none).
    pub fn cookie(mut self, cookie: CookieOptions) -> Self {
        self.config.engine.cookie = Some(cookie);
        self
    }

    /// Node's `cors` (none). [`ServerBuilder::try_build`] refuses
    /// [`CorsOrigin::Any`](crate::engine::CorsOrigin::Any) with credentials.
    pub fn cors(mut self, cors: CorsOptions) -> Self {
        self.config.engine.cors = Some(cors);
        self
    }

    /// Node's `allowRequest`: runs for every handshake request with its head,
    /// `Err(message)` refuses it with HTTP 403 `{"code":4,"message":…}`.
    ///
    /// ```no_run
    /// # use rsio::prelude::*;
    /// let io = Server::builder()
    ///     .allow_request(|parts: rsio::http::request::Parts| async move {
    ///         match parts.headers.get("x-token") {
    ///             Some(token) if token == "secret" => Ok(()),
    ///             _ => Err("no token"),
    ///         }
    ///     })
    ///     .build();
    /// ```
    pub fn allow_request<F, Fut, E>(mut self, hook: F) -> Self
    where
        F: Fn(http::request::Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.config.engine.allow_request = Some(Arc::new(move |parts| {
            let fut = hook(parts.clone());
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }));
        self
    }

    /// Node's `httpCompression` threshold (1024 bytes); `None` never compresses.
    pub fn http_compression(mut self, threshold: Option<usize>) -> Self {
        self.config.engine.http_compression_threshold = threshold;
        self
    }

    /// Node's `perMessageDeflate` (off).
    pub fn per_message_deflate(mut self, deflate: DeflateConfig) -> Self {
        self.config.engine.per_message_deflate = Some(deflate);
        self
    }

    /// Node's `initialPacket`: a message sent right after the `open` packet.
    pub fn initial_packet(mut self, message: impl Into<String>) -> Self {
        self.config.engine.initial_packet = Some(message.into());
        self
    }

    /// Node's `allowEIO3` (false): serve Socket.IO v2 clients too.
    pub fn allow_eio3(mut self, allow: bool) -> Self {
        self.config.engine.allow_eio3 = allow;
        self
    }

    /// Which browser origins may connect, WebSocket included (every origin).
    pub fn allowed_origins(mut self, origins: AllowedOrigins) -> Self {
        self.config.engine.allowed_origins = origins;
        self
    }

    /// Believe `X-Forwarded-*` headers (off): only behind a reverse proxy.
    pub fn trust_proxy(mut self, trust: bool) -> Self {
        self.config.engine.trust_proxy = trust;
        self
    }

    /// Most bytes queued for one slow client before it is disconnected (16 MiB).
    pub fn max_send_queue_bytes(mut self, bytes: usize) -> Self {
        self.config.engine.max_send_queue_bytes = bytes;
        self
    }

    /// How long a server-closed polling session waits for its last GET (5 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.engine.close_timeout = timeout;
        self
    }

    /// Node's `connectTimeout` (45 s): a connection that joins no namespace in
    /// this time is closed.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Node's `connectionStateRecovery` (off).
    pub fn connection_state_recovery(mut self, recovery: RecoveryConfig) -> Self {
        self.config.connection_state_recovery = Some(recovery);
        self
    }

    /// Node's `parser` ([`Parser::Default`]; [`Parser::Msgpack`] for clients
    /// with `socket.io-msgpack-parser`).
    pub fn parser(mut self, parser: Parser) -> Self {
        self.config.parser = parser;
        self
    }

    /// Most binary attachments one packet may announce.
    pub fn max_attachments(mut self, max: usize) -> Self {
        self.config.max_attachments = max;
        self
    }

    /// Application state for the [`State<T>`](super::State) extractor: one
    /// value per type, cloned for each handler that asks (wrap what is costly
    /// to clone in an `Arc`). Called again with the same type, the last wins.
    pub fn with_state<T: Clone + Send + Sync + 'static>(mut self, state: T) -> Self {
        Arc::make_mut(&mut self.config.state).insert(state);
        self
    }

    /// The adapter of each namespace (the in-memory one by default), e.g.
    /// Redis Streams' [`factory`](crate::adapter::RedisStreams::factory).
    pub fn adapter(mut self, factory: AdapterFactory) -> Self {
        self.adapter = Some(factory);
        self
    }

    /// The config built so far (e.g. for a cluster worker's `server(config)`).
    pub fn config(self) -> ServerConfig {
        self.config
    }

    /// The server, or why its config cannot work.
    pub fn try_build(self) -> Result<Server, crate::engine::EngineConfigError> {
        self.config.engine.validate()?;
        Ok(self.build())
    }

    /// The server.
    ///
    /// # Panics
    ///
    /// On a config that [`ServerBuilder::try_build`] refuses (a programming error).
    pub fn build(self) -> Server {
        match self.adapter {
            Some(factory) => Server::with_adapter(self.config, factory),
            None => Server::new(self.config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of making a config serves `/socket.io/`: changing an Engine.IO
    /// option from `EngineConfig::default()` used to move the server to
    /// `/engine.io/`, where no Socket.IO client looks.
    #[test]
    fn socket_io_path_however_the_config_is_made() {
        let config = ServerConfig {
            engine: crate::engine::EngineConfig {
                ping_interval: Duration::from_secs(1),
                ..crate::engine::EngineConfig::default()
            },
            ..ServerConfig::default()
        };
        let made = [
            Server::new(config),
            Server::new(ServerConfig::default()),
            Server::builder()
                .ping_interval(Duration::from_secs(1))
                .build(),
            Server::builder().build(),
        ];
        for io in made {
            assert_eq!(io.config().engine.normalized_path(), "/socket.io/");
        }
        let io = Server::builder().path("/custom").build();
        assert_eq!(io.config().engine.normalized_path(), "/custom/");
    }
}
