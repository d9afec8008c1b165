//! The options every rsio application shares: flags, then `RSIO_*` environment
//! variables, then a TOML config file, then defaults.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::Deserialize;

use crate::{admin::AdminAuth, engine::AllowedOrigins};

/// Command-line flags (each also read from its `RSIO_*` variable). Flatten it
/// into an application's own `clap::Parser`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Worker processes [default: the number of usable CPUs].
    #[arg(long, env = "RSIO_WORKERS")]
    pub workers: Option<usize>,
    /// Base port: worker i serves port + i (port + 1 + i with `--shared-port`)
    /// [default: 3000].
    #[arg(long, env = "RSIO_PORT")]
    pub port: Option<u16>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "RSIO_HOST")]
    pub host: Option<IpAddr>,
    /// Log filter, e.g. `info` or `rsio=debug` [default: info].
    #[arg(long, env = "RSIO_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Pin worker i to the i-th usable CPU: `auto` or `none` [default: auto].
    #[arg(long, env = "RSIO_PIN")]
    pub pin: Option<PinMode>,
    /// Most connections one worker serves at once [default: 100000].
    #[arg(long, env = "RSIO_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Browser origins allowed besides same-origin pages, comma separated
    /// (`https://app.example.com,http://localhost:8080`); `*` allows any origin,
    /// as Node does. A foreign origin gets 403 [default: same-origin only].
    #[arg(long, env = "RSIO_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Most bytes queued for one slow client before it is disconnected
    /// [default: 16777216].
    #[arg(long, env = "RSIO_MAX_SEND_QUEUE_BYTES")]
    pub max_send_queue_bytes: Option<usize>,
    /// The peer is a reverse proxy: believe its `X-Forwarded-Host`,
    /// `X-Forwarded-For` and `X-Forwarded-Proto`. Never set it when clients can
    /// reach rsio directly: they could then pass the same-origin check and fake
    /// their address [default: false].
    #[arg(
        long,
        env = "RSIO_TRUST_PROXY",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub trust_proxy: Option<bool>,
    /// Most bytes queued on the ipc socket of one worker (or, in a worker, to the
    /// primary) before that peer counts as stuck: the primary kills and restarts such
    /// a worker, a worker drains [default: 67108864].
    #[arg(long, env = "RSIO_MAX_IPC_BACKLOG_BYTES")]
    pub max_ipc_backlog_bytes: Option<usize>,
    /// One address for every worker: the primary accepts on `--port` and hands
    /// each connection to the worker that owns its session (a new session to the
    /// least-loaded worker); the workers keep their own ports, port + 1 + i
    /// [default: false].
    #[arg(
        long,
        env = "RSIO_SHARED_PORT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub shared_port: Option<bool>,
    /// Serve `GET /metrics` (Prometheus, every worker's numbers with a `worker`
    /// label) and `GET /health` from the primary on this address, e.g.
    /// `127.0.0.1:9464` [default: off].
    #[arg(long, env = "RSIO_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Join the other hosts (rsio or Node servers) on this Redis,
    /// `redis://HOST:PORT[/DB]`: every worker becomes a member of the Redis
    /// cluster, as each Node server is, and the primary reads the broadcasts
    /// once for the host [default: off, this host alone].
    #[arg(long, env = "RSIO_REDIS", value_name = "URL")]
    pub redis: Option<String>,
    /// The protocol spoken on `--redis`: `streams` (`@socket.io/redis-streams-adapter`,
    /// with connection state recovery across hosts) or `classic`
    /// (`@socket.io/redis-adapter`) [default: streams].
    #[arg(long, env = "RSIO_REDIS_ADAPTER")]
    pub redis_adapter: Option<RedisAdapterKind>,
    /// Serve the official Socket.IO Admin UI: its `/admin` namespace on every
    /// worker, and its page under `/admin/` on the worker ports. `USER:BCRYPT_HASH`
    /// (quote it: the hash has `$`) logs in with that user and password, `none`
    /// turns authentication off [default: off].
    #[arg(long, env = "RSIO_ADMIN_UI", hide_env_values = true)]
    pub admin_ui: Option<AdminAuth>,
    /// The admin UI only looks: no emit, join, leave or disconnect [default: false].
    #[arg(
        long,
        env = "RSIO_ADMIN_UI_READONLY",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub admin_ui_readonly: Option<bool>,
    /// The admin UI's page: the `ui/dist` directory of the npm package
    /// `@socket.io/admin-ui`. Without it: `node_modules/@socket.io/admin-ui/ui/dist`
    /// in the working directory, else `admin-ui/node_modules/…` (scripts/setup).
    #[arg(long, env = "RSIO_ADMIN_UI_DIST")]
    pub admin_ui_dist: Option<PathBuf>,
    /// Let the hosted page at <https://admin.socket.io> connect: allow that origin,
    /// with CORS credentials [default: false].
    #[arg(
        long,
        env = "RSIO_ADMIN_UI_HOSTED",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub admin_ui_hosted: Option<bool>,
    /// A TOML file with the same keys (`workers`, `port`, `host`, `log_level`, `pin`,
    /// `max_connections`, `allowed_origins`, `max_send_queue_bytes`, `trust_proxy`,
    /// `max_ipc_backlog_bytes`, `shared_port`, `metrics`, `redis`, `redis_adapter`,
    /// `admin_ui`, `admin_ui_readonly`, `admin_ui_dist`, `admin_ui_hosted`).
    #[arg(long, env = "RSIO_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
/// Whether workers are pinned to CPU cores.
pub enum PinMode {
    #[default]
    /// Worker `i` runs on core `i` (modulo the cores allowed).
    Auto,
    /// No pinning: the kernel schedules workers.
    None,
}

/// Which of Node's Redis adapters `--redis` speaks.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RedisAdapterKind {
    /// `@socket.io/redis-streams-adapter` 0.3.x: durable messages in a stream,
    /// connection state recovery across hosts.
    #[default]
    Streams,
    /// `@socket.io/redis-adapter` 8.x: pub/sub only, no recovery.
    Classic,
}

/// Where and how this host meets the other hosts (see `--redis`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://HOST:PORT[/DB]` as given (it may hold a password: log
    /// [`RedisOptions::redacted_url`] instead); with the classic adapter, a
    /// comma-separated list of a Redis Cluster's nodes.
    pub url: String,
    /// Which of Node's adapters to speak.
    pub adapter: RedisAdapterKind,
}

impl RedisOptions {
    /// The URL without its user and password, for logs.
    pub fn redacted_url(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.url.clone(),
            },
            None => self.url.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workers: Option<usize>,
    port: Option<u16>,
    host: Option<IpAddr>,
    log_level: Option<String>,
    pin: Option<PinMode>,
    max_connections: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    max_send_queue_bytes: Option<usize>,
    trust_proxy: Option<bool>,
    max_ipc_backlog_bytes: Option<usize>,
    shared_port: Option<bool>,
    metrics: Option<SocketAddr>,
    redis: Option<String>,
    redis_adapter: Option<RedisAdapterKind>,
    admin_ui: Option<String>,
    admin_ui_readonly: Option<bool>,
    admin_ui_dist: Option<PathBuf>,
    admin_ui_hosted: Option<bool>,
}

/// The resolved options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Worker processes (one per core by default).
    pub workers: usize,
    /// The port clients connect to.
    pub port: u16,
    /// The address listened on.
    pub host: IpAddr,
    /// `tracing` filter (`info`, `rsio=debug`, …).
    pub log_level: String,
    /// CPU pinning of workers.
    pub pin: PinMode,
    /// Connections each worker serves at once.
    pub max_connections: usize,
    /// Applied to every server of [`WorkerContext::server`](super::WorkerContext::server)
    /// whose config keeps the library default.
    pub allowed_origins: AllowedOrigins,
    /// Bound on one client's send queue (see [`EngineConfig::max_send_queue_bytes`](crate::engine::EngineConfig::max_send_queue_bytes)).
    pub max_send_queue_bytes: usize,
    /// Applied to every server of [`WorkerContext::server`](super::WorkerContext::server)
    /// (see [`EngineConfig::trust_proxy`](crate::engine::EngineConfig::trust_proxy)).
    pub trust_proxy: bool,
    /// Bound on one ipc connection's backlog (see `--max-ipc-backlog-bytes`).
    pub max_ipc_backlog_bytes: usize,
    /// The primary accepts on `port` and hands connections to the workers, which
    /// serve `port + 1 + i` themselves (see `--shared-port`).
    pub shared_port: bool,
    /// Where the primary serves `/metrics` and `/health`; workers send their
    /// numbers to the primary only when it is set.
    pub metrics: Option<SocketAddr>,
    /// The Redis this host shares with other hosts, if any: then each worker's
    /// adapter is a member of the Redis cluster (see `--redis`).
    pub redis: Option<RedisOptions>,
    /// Who may use the admin UI; `None`: it is off.
    pub admin_ui: Option<AdminAuth>,
    /// The admin UI cannot change anything.
    pub admin_ui_readonly: bool,
    /// The admin UI page's directory, if given.
    pub admin_ui_dist: Option<PathBuf>,
    /// The hosted admin UI (<https://admin.socket.io>) may connect.
    pub admin_ui_hosted: bool,
}

#[derive(Debug, thiserror::Error)]
/// Why the cluster's options cannot be used.
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    /// The config file cannot be read.
    Read(PathBuf, std::io::Error),
    #[error("invalid config file {0}: {1}")]
    /// The config file is not valid TOML for these options.
    Parse(PathBuf, toml::de::Error),
    #[error("--workers must be at least 1")]
    /// `--workers 0`.
    NoWorkers,
    #[error("ports {0}..{1} do not fit below 65536")]
    /// The workers' ports would pass 65535.
    PortRange(u16, usize),
    /// `admin_ui` in the config file is neither `none` nor `USER:BCRYPT_HASH`.
    #[error(transparent)]
    AdminUi(#[from] crate::admin::AdminError),
}

impl ClusterConfig {
    /// The port worker `index` serves itself.
    pub fn worker_port(&self, index: usize) -> u16 {
        self.port + index as u16 + u16::from(self.shared_port)
    }
}

impl ClusterArgs {
    /// The options: command line over config file over defaults.
    pub fn resolve(&self) -> Result<ClusterConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read(path.clone(), e))?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse(path.clone(), e))?
            }
            None => FileConfig::default(),
        };
        let workers = self.workers.or(file.workers).unwrap_or_else(usable_cpus);
        if workers == 0 {
            return Err(ConfigError::NoWorkers);
        }
        let port = self.port.or(file.port).unwrap_or(3000);
        let shared_port = self.shared_port.or(file.shared_port).unwrap_or(false);
        let last = port as usize + workers + usize::from(shared_port);
        if last > 65_536 {
            return Err(ConfigError::PortRange(port, last));
        }
        Ok(ClusterConfig {
            workers,
            port,
            host: self
                .host
                .or(file.host)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            log_level: self
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            pin: self.pin.or(file.pin).unwrap_or_default(),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(100_000),
            allowed_origins: match self.allowed_origins.clone().or(file.allowed_origins) {
                Some(list) if list.iter().any(|o| o.trim() == "*") => AllowedOrigins::Any,
                Some(list) => AllowedOrigins::SameOriginAnd(
                    list.into_iter()
                        .map(|o| o.trim().trim_end_matches('/').to_string())
                        .filter(|o| !o.is_empty())
                        .collect(),
                ),
                None => AllowedOrigins::SameOriginAnd(Vec::new()),
            },
            max_send_queue_bytes: self
                .max_send_queue_bytes
                .or(file.max_send_queue_bytes)
                .unwrap_or(16 << 20),
            trust_proxy: self.trust_proxy.or(file.trust_proxy).unwrap_or(false),
            max_ipc_backlog_bytes: self
                .max_ipc_backlog_bytes
                .or(file.max_ipc_backlog_bytes)
                .unwrap_or(rsio_ipc::DEFAULT_MAX_QUEUED_BYTES),
            shared_port,
            metrics: self.metrics.or(file.metrics),
            redis: self
                .redis
                .clone()
                .or(file.redis)
                .filter(|url| !url.trim().is_empty())
                .map(|url| RedisOptions {
                    url: url.trim().to_string(),
                    adapter: self
                        .redis_adapter
                        .or(file.redis_adapter)
                        .unwrap_or_default(),
                }),
            admin_ui: match (&self.admin_ui, file.admin_ui) {
                (Some(auth), _) => Some(auth.clone()),
                (None, Some(text)) => Some(text.parse()?),
                (None, None) => None,
            },
            admin_ui_readonly: self
                .admin_ui_readonly
                .or(file.admin_ui_readonly)
                .unwrap_or(false),
            admin_ui_dist: self.admin_ui_dist.clone().or(file.admin_ui_dist),
            admin_ui_hosted: self
                .admin_ui_hosted
                .or(file.admin_ui_hosted)
                .unwrap_or(false),
        })
    }
}

/// CPUs this process may run on (taskset, cgroups and `CPUAffinity=` included).
pub fn usable_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("rsio-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rsio.toml");
        std::fs::write(&path, "workers = 3\nport = 4000\nlog_level = \"debug\"\n").unwrap();
        let args = ClusterArgs {
            port: Some(5000),
            config: Some(path.clone()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(
            (c.workers, c.port, c.log_level.as_str()),
            (3, 5000, "debug")
        );
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.pin, PinMode::Auto);
        std::fs::write(&path, "workerz = 3\n").unwrap();
        assert!(matches!(args.resolve(), Err(ConfigError::Parse(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn metrics_is_off_unless_a_flag_or_the_file_sets_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsio.toml");
        assert_eq!(ClusterArgs::default().resolve().unwrap().metrics, None);
        std::fs::write(&path, "metrics = \"127.0.0.1:9464\"\n").unwrap();
        let file = ClusterArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let addr: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert_eq!(file.resolve().unwrap().metrics, Some(addr));
        let flag: SocketAddr = "127.0.0.1:9465".parse().unwrap();
        let both = ClusterArgs {
            metrics: Some(flag),
            ..file
        };
        assert_eq!(both.resolve().unwrap().metrics, Some(flag));
    }

    #[test]
    fn trust_proxy_is_off_unless_a_flag_or_the_file_says_so() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            cluster: ClusterArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("rsio").chain(args.iter().copied()))
                .unwrap()
                .cluster
        };
        assert!(!parse(&[]).resolve().unwrap().trust_proxy);
        assert!(parse(&["--trust-proxy"]).resolve().unwrap().trust_proxy);
        // `--trust-proxy` takes no separate value: the next word stays an argument.
        assert!(Cli::try_parse_from(["rsio", "--trust-proxy", "--workers", "2"]).is_ok());

        let dir = std::env::temp_dir().join(format!("rsio-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rsio.toml");
        std::fs::write(&path, "trust_proxy = true\n").unwrap();
        let file = path.to_str().unwrap();
        assert!(parse(&["--config", file]).resolve().unwrap().trust_proxy);
        let off = parse(&["--config", file, "--trust-proxy=false"]);
        assert!(!off.resolve().unwrap().trust_proxy, "flags beat the file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn admin_ui_is_off_unless_a_flag_or_the_file_turns_it_on() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            cluster: ClusterArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("rsio").chain(args.iter().copied()))
                .map(|c| c.cluster)
        };
        let off = parse(&[]).unwrap().resolve().unwrap();
        assert_eq!(off.admin_ui, None);
        assert!(!off.admin_ui_readonly && !off.admin_ui_hosted);
        let hash = bcrypt::hash("pw", 4).unwrap();
        let flag = format!("ops:{hash}");
        let c = parse(&["--admin-ui", &flag, "--admin-ui-readonly"])
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(
            c.admin_ui,
            Some(AdminAuth::Basic {
                username: "ops".into(),
                password_hash: hash.clone()
            })
        );
        assert!(c.admin_ui_readonly);
        let none = parse(&["--admin-ui", "none"]).unwrap().resolve().unwrap();
        assert_eq!(none.admin_ui, Some(AdminAuth::None));
        assert!(
            parse(&["--admin-ui", "ops:plaintext"]).is_err(),
            "a password that is not a bcrypt hash is refused"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsio.toml");
        std::fs::write(
            &path,
            format!(
                "admin_ui = \"ops:{hash}\"\nadmin_ui_hosted = true\nadmin_ui_dist = \"/srv/ui\"\n"
            ),
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let c = parse(&["--config", file]).unwrap().resolve().unwrap();
        assert!(matches!(c.admin_ui, Some(AdminAuth::Basic { .. })));
        assert!(c.admin_ui_hosted);
        assert_eq!(c.admin_ui_dist, Some(PathBuf::from("/srv/ui")));
        let flag_wins = parse(&["--config", file, "--admin-ui", "none"]).unwrap();
        assert_eq!(flag_wins.resolve().unwrap().admin_ui, Some(AdminAuth::None));
        std::fs::write(&path, "admin_ui = \"ops:plaintext\"\n").unwrap();
        let bad = parse(&["--config", file]).unwrap().resolve();
        assert!(matches!(bad, Err(ConfigError::AdminUi(_))));
    }

    #[test]
    fn redis_comes_from_the_flags_or_the_file_and_defaults_to_streams() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            cluster: ClusterArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("rsio").chain(args.iter().copied()))
                .unwrap()
                .cluster
                .resolve()
                .unwrap()
                .redis
        };
        assert_eq!(parse(&[]), None, "one host unless asked");
        let streams = parse(&["--redis", "redis://127.0.0.1:6379"]).unwrap();
        assert_eq!(streams.url, "redis://127.0.0.1:6379");
        assert_eq!(streams.adapter, RedisAdapterKind::Streams);
        let classic = parse(&["--redis", "redis://h:1", "--redis-adapter", "classic"]);
        assert_eq!(classic.unwrap().adapter, RedisAdapterKind::Classic);
        assert!(Cli::try_parse_from(["rsio", "--redis-adapter", "kafka"]).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsio.toml");
        std::fs::write(
            &path,
            "redis = \"redis://10.0.0.1:6379/2\"\nredis_adapter = \"classic\"\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let from_file = parse(&["--config", file]).unwrap();
        assert_eq!(
            (from_file.url.as_str(), from_file.adapter),
            ("redis://10.0.0.1:6379/2", RedisAdapterKind::Classic)
        );
        let flags = parse(&["--config", file, "--redis-adapter", "streams"]).unwrap();
        assert_eq!(
            flags.adapter,
            RedisAdapterKind::Streams,
            "flags beat the file"
        );

        let secret = RedisOptions {
            url: "redis://user:pw@db.internal:6379/0".into(),
            adapter: RedisAdapterKind::Streams,
        };
        assert_eq!(secret.redacted_url(), "redis://***@db.internal:6379/0");
        assert_eq!(from_file.redacted_url(), "redis://10.0.0.1:6379/2");
    }

    #[test]
    fn refuses_bad_values() {
        let zero = ClusterArgs {
            workers: Some(0),
            ..Default::default()
        };
        assert!(matches!(zero.resolve(), Err(ConfigError::NoWorkers)));
        let high = ClusterArgs {
            workers: Some(4),
            port: Some(65_534),
            ..Default::default()
        };
        assert!(matches!(high.resolve(), Err(ConfigError::PortRange(..))));
        assert!(usable_cpus() >= 1);
        // The shared port comes before the workers' own ports.
        let fits = ClusterArgs {
            workers: Some(2),
            port: Some(65_534),
            ..Default::default()
        };
        let c = fits.resolve().unwrap();
        assert_eq!((c.worker_port(0), c.worker_port(1)), (65_534, 65_535));
        let shared = ClusterArgs {
            shared_port: Some(true),
            ..fits
        };
        assert!(matches!(shared.resolve(), Err(ConfigError::PortRange(..))));
        let shared = ClusterArgs {
            port: Some(4000),
            ..shared
        };
        let c = shared.resolve().unwrap();
        assert_eq!(
            (c.port, c.worker_port(0), c.worker_port(1)),
            (4000, 4001, 4002)
        );
    }
}
