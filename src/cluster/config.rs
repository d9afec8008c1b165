//! The options every rsio application shares: flags, then `RSIO_*` environment
//! variables, then a TOML config file, then defaults.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::Deserialize;

use crate::engine::AllowedOrigins;

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
    /// A TOML file with the same keys (`workers`, `port`, `host`, `log_level`, `pin`,
    /// `max_connections`, `allowed_origins`, `max_send_queue_bytes`, `trust_proxy`,
    /// `max_ipc_backlog_bytes`, `shared_port`, `metrics`).
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
