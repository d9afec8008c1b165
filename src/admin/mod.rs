//! The server side of the official Socket.IO Admin UI (`@socket.io/admin-ui`
//! 0.5.1): the `/admin` namespace protocol its page speaks, built on rsio's public
//! server API.
//!
//! - Authentication ([`auth`]): a namespace middleware; `basic` (a username and a
//!   bcrypt hash) or explicitly none. A login gets a session token that every
//!   worker of the cluster accepts (an HMAC, not a per-process store).
//! - `config {supportedFeatures}` on connect; read-only mode drops the operations.
//! - `server_stats` every 2 s from every worker (`stats`), through the adapter,
//!   so a page connected to one worker sees all of them.
//! - `all_sockets` on connect, and `socket_connected`, `socket_disconnected`,
//!   `room_joined`, `room_left` as they happen, from every worker (`events`).
//! - The operations `emit`, `join`, `leave` and `_disconnect`, applied to every
//!   worker through the adapter (`actions`).
//! - The page itself, served from the npm package's `ui/dist` ([`ui`]).
//!
//! With the admin UI off nothing here runs and nothing is hooked. With it on and
//! no page open anywhere, a socket connect costs a check and a disconnect listener;
//! nothing is sent. While a page is open, each socket connect, disconnect, join and
//! leave is one admin broadcast, and each worker sends its stats every 2 s; nothing
//! per message (the traffic figures are read from the
//! [`metrics`](crate::metrics) counters, which exist anyway). Per-event
//! notifications (`event_received`, `event_sent`: the page's Events view) are not
//! sent: they would cost an admin broadcast per message.
//!
//! In a cluster `--admin-ui` sets it up in every worker. Without the cluster
//! runtime:
//!
//! ```no_run
//! use rsio::admin::{instrument, ui, AdminAuth, AdminOptions};
//! # async fn run(io: rsio::server::Server) -> Result<(), Box<dyn std::error::Error>> {
//! let auth: AdminAuth = "admin:$2b$10$...".parse()?;
//! instrument(&io, AdminOptions::for_worker(auth, false, 0));
//! let page = ui::load(&ui::find_dist(None)?)?;
//! let app = io.router().merge(ui::router(page));
//! # let _ = app; Ok(()) }
//! ```

mod actions;
pub mod auth;
mod events;
mod stats;
pub mod ui;

use std::{str::FromStr, sync::Arc, time::Duration};

use serde_json::json;

use crate::server::{Server, Socket};

pub use auth::{AdminAuth, SessionKey};

/// The namespace the Admin UI connects to (its default).
pub const NAMESPACE: &str = "/admin";

/// The environment variable through which the primary hands every worker the same
/// random secret, so that a session token made by one worker is valid on all.
pub const SECRET_ENV: &str = "RSIO_ADMIN_UI_SECRET";

/// The origin of the hosted page (`--admin-ui-hosted` lets it connect).
pub const HOSTED_ORIGIN: &str = "https://admin.socket.io";

/// How long a session token stays valid: the page logs in again after that.
pub const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the admin UI cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `--admin-ui` was neither `none` nor `USER:BCRYPT_HASH`.
    #[error("--admin-ui takes `none` or `USER:BCRYPT_HASH`, got {0:?}")]
    Syntax(String),
    /// The password is not a bcrypt hash (`$2b$10$…`).
    #[error("the admin UI password must be a bcrypt hash ($2b$…): {0}")]
    NotBcrypt(#[from] bcrypt::BcryptError),
    /// The user name is empty.
    #[error("the admin UI user name is empty")]
    EmptyUser,
}

/// How the admin namespace behaves.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// Who may connect.
    pub auth: AdminAuth,
    /// No operations (emit, join, leave, disconnect) from the page.
    pub readonly: bool,
    /// This server's name in the page, distinct per worker (`host#worker-0`).
    pub server_id: String,
    /// Signs session tokens; the same on every worker of a cluster.
    pub key: SessionKey,
}

impl AdminOptions {
    /// Options for worker `index`: server id `hostname#worker-<index>`, session key
    /// from [`SECRET_ENV`] (a random one when it is not set: tokens are then valid
    /// on this process only).
    pub fn for_worker(auth: AdminAuth, readonly: bool, index: usize) -> AdminOptions {
        let secret = std::env::var(SECRET_ENV).ok();
        let key = SessionKey::derive(secret.as_deref().map(str::as_bytes), &auth);
        AdminOptions {
            auth,
            readonly,
            server_id: format!("{}#worker-{index}", hostname()),
            key,
        }
    }
}

/// The features the page may use: the operations unless read-only, then the
/// aggregated figures and the per-socket view (the UI's "development mode").
pub fn supported_features(readonly: bool) -> Vec<&'static str> {
    let mut features = if readonly {
        Vec::new()
    } else {
        vec![
            "EMIT",
            "JOIN",
            "LEAVE",
            "DISCONNECT",
            "MJOIN",
            "MLEAVE",
            "MDISCONNECT",
        ]
    };
    features.extend(["AGGREGATED_EVENTS", "ALL_EVENTS"]);
    features
}

/// Serves the Admin UI protocol on `server`'s `/admin` namespace: the middleware,
/// the handlers, the hooks on every namespace (those to come included) and the
/// stats task (which needs a Tokio runtime and ends with the server).
pub fn instrument(server: &Server, options: AdminOptions) {
    let options = Arc::new(options);
    let hub = events::Hub::new(server.inner_ref());
    // Namespaces created from now on, then the ones that exist (`/` at least): a
    // namespace created in between is hooked once all the same.
    {
        let hub = hub.clone();
        server.on_new_namespace(move |ns| hub.hook(ns));
    }
    for (name, _) in server.socket_counts() {
        if let Some(ns) = server.namespace(&name) {
            hub.hook(&ns);
        }
    }
    let admin_ns = server.of(NAMESPACE);
    auth::install(&admin_ns, options.clone());
    let (h, opts) = (hub.clone(), options.clone());
    admin_ns.on_connection(move |socket: Socket| {
        let (hub, options) = (h.clone(), opts.clone());
        async move { on_admin_connection(hub, options, socket).await }
    });
    actions::answer_socket_requests(&hub);
    stats::spawn(server, hub, options);
}

/// A page connected: its session token, the config, the handlers of its
/// operations, then every socket of every worker.
async fn on_admin_connection(hub: Arc<events::Hub>, options: Arc<AdminOptions>, socket: Socket) {
    if let Some(token) = options.key.issue(&options.auth) {
        let _ = socket.emit("session", &(token,));
    }
    if !options.readonly {
        actions::register(&hub, &socket);
    }
    let config = json!({ "supportedFeatures": supported_features(options.readonly) });
    let _ = socket.emit("config", &(config,));
    let sockets = actions::all_sockets(&hub).await;
    let _ = socket.emit("all_sockets", &(sockets,));
}

/// This machine's host name (`localhost` if it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl FromStr for AdminAuth {
    type Err = AdminError;

    /// `none`, or `USER:BCRYPT_HASH` (the first `:` ends the user name).
    fn from_str(s: &str) -> Result<AdminAuth, AdminError> {
        if s == "none" {
            return Ok(AdminAuth::None);
        }
        let (username, hash) = s
            .split_once(':')
            .ok_or_else(|| AdminError::Syntax(s.chars().take(40).collect()))?;
        if username.is_empty() {
            return Err(AdminError::EmptyUser);
        }
        bcrypt::HashParts::from_str(hash)?;
        Ok(AdminAuth::Basic {
            username: username.to_string(),
            password_hash: hash.to_string(),
        })
    }
}

/// Now as JavaScript's `Date.toJSON()` writes it (`2026-12-03T15:45:13.123Z`),
/// the form the page's `new Date(..)` reads.
pub(crate) fn iso_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    iso_time(now.as_millis() as u64)
}

/// `millis` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn iso_time(millis: u64) -> String {
    let secs = millis / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_time_is_javascripts_to_json() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        // new Date(1796312713123).toJSON()
        assert_eq!(iso_time(1_796_312_713_123), "2026-12-03T15:45:13.123Z");
        // A leap day: new Date(951782400000).toJSON()
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn readonly_drops_the_operations() {
        assert_eq!(
            supported_features(true),
            vec!["AGGREGATED_EVENTS", "ALL_EVENTS"]
        );
        let all = supported_features(false);
        for f in ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MDISCONNECT"] {
            assert!(all.contains(&f), "{f}");
        }
    }

    #[test]
    fn parses_none_and_user_hash() {
        assert_eq!("none".parse::<AdminAuth>().unwrap(), AdminAuth::None);
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth: AdminAuth = format!("admin:{hash}").parse().unwrap();
        assert_eq!(
            auth,
            AdminAuth::Basic {
                username: "admin".into(),
                password_hash: hash
            }
        );
        assert!(matches!(
            "admin:secret".parse::<AdminAuth>(),
            Err(AdminError::NotBcrypt(_))
        ));
        assert!(matches!(
            "admin".parse::<AdminAuth>(),
            Err(AdminError::Syntax(_))
        ));
        assert!(matches!(
            ":$2b$04$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".parse::<AdminAuth>(),
            Err(AdminError::EmptyUser)
        ));
    }
}
