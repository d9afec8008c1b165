//! Who may use the admin namespace: none (explicitly), or one user with a bcrypt
//! password hash, as `@socket.io/admin-ui`'s `auth` option.
//!
//! After a login the page keeps a session id and reconnects with it (to any worker:
//! the UI's server URL may name any port, and a reload reconnects). Node keeps the
//! ids in a per-process store; here a session id is a token every worker can check
//! by itself: `<expiry>.<HMAC-SHA256(key, user, expiry)>` in hex, where the key is
//! derived from a secret all workers share (the primary puts a random one in
//! [`SECRET_ENV`](super::SECRET_ENV)) and the password hash, so that changing the
//! password ends every session. Tokens expire after
//! [`SESSION_TTL`](super::SESSION_TTL).

use std::{sync::Arc, time::SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::AdminOptions;
use crate::server::{ConnectError, Namespace, Socket};

type HmacSha256 = Hmac<Sha256>;

/// The error message of a refused login, the one the page recognizes.
pub const INVALID_CREDENTIALS: &str = "invalid credentials";

/// Who may connect to the admin namespace.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminAuth {
    /// Anyone who can reach the port (`--admin-ui none`).
    None,
    /// One user; `password_hash` is a bcrypt hash (`$2b$…`).
    Basic {
        /// The one user name the page must give.
        username: String,
        /// bcrypt hash of the password (the password itself is never stored).
        password_hash: String,
    },
}

impl std::fmt::Debug for AdminAuth {
    // The hash stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAuth::None => f.write_str("None"),
            AdminAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

/// The key that signs session tokens.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// The key for `auth` from the shared `secret`; a random secret when there is none.
    pub fn derive(secret: Option<&[u8]>, auth: &AdminAuth) -> SessionKey {
        let random: [u8; 32];
        let secret = match secret {
            Some(s) if !s.is_empty() => s,
            _ => {
                random = rand::random();
                &random
            }
        };
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"rsio admin-ui session key\0");
        if let AdminAuth::Basic {
            username,
            password_hash,
        } = auth
        {
            mac.update(username.as_bytes());
            mac.update(b"\0");
            mac.update(password_hash.as_bytes());
        }
        SessionKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self, expiry: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(&expiry.to_be_bytes());
        mac
    }

    /// A fresh session token, for basic authentication (none without it).
    pub fn issue(&self, auth: &AdminAuth) -> Option<String> {
        if *auth == AdminAuth::None {
            return None;
        }
        let expiry = unix_now() + super::SESSION_TTL.as_secs();
        Some(self.issue_until(expiry))
    }

    fn issue_until(&self, expiry: u64) -> String {
        let tag = self.mac(expiry).finalize().into_bytes();
        let mut out = format!("{expiry:x}.");
        for b in tag {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Whether `token` was issued with this key and has not expired.
    pub fn check(&self, token: &str) -> bool {
        let Some((expiry, tag)) = token.split_once('.') else {
            return false;
        };
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else {
            return false;
        };
        if expiry <= unix_now() || tag.len() != 64 {
            return false;
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            match u8::from_str_radix(&tag[2 * i..2 * i + 2], 16) {
                Ok(v) => *b = v,
                Err(_) => return false,
            }
        }
        // Constant-time comparison.
        self.mac(expiry).verify_slice(&bytes).is_ok()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Adds the login check to the admin namespace (nothing with [`AdminAuth::None`]).
pub fn install(ns: &Namespace, options: Arc<AdminOptions>) {
    if options.auth == AdminAuth::None {
        tracing::warn!(target: "rsio::admin", "admin UI without authentication: anyone who reaches the port can see and disconnect every client");
        return;
    }
    // Password checks of one worker run at most this many at a time: a flood of
    // login attempts queues here instead of filling the blocking thread pool.
    let slots = Arc::new(tokio::sync::Semaphore::new(VERIFY_SLOTS));
    ns.use_middleware(move |socket: Socket| {
        let (options, slots) = (options.clone(), slots.clone());
        async move { check(&options, &slots, &socket).await }
    });
}

/// Whether `password` matches the bcrypt `hash`, checked on the blocking pool
/// (bcrypt takes tens of milliseconds by design) once a slot is free.
async fn verify(slots: &tokio::sync::Semaphore, password: &str, hash: &str) -> bool {
    let Ok(Ok(_slot)) = tokio::time::timeout(VERIFY_WAIT, slots.acquire()).await else {
        return false;
    };
    let (password, hash) = (password.to_string(), hash.to_string());
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
        .await
        .map(|r| r.unwrap_or(false))
        .unwrap_or(false)
}

/// Concurrent bcrypt checks per worker.
const VERIFY_SLOTS: usize = 2;
/// A login attempt that waits longer than this for a slot is refused.
const VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A valid session token, or the user name and the password that matches the hash.
async fn check(
    options: &AdminOptions,
    slots: &tokio::sync::Semaphore,
    socket: &Socket,
) -> Result<(), ConnectError> {
    let auth = socket.handshake().auth();
    if let Some(token) = auth.get("sessionId").and_then(|v| v.as_str()) {
        if options.key.check(token) {
            return Ok(());
        }
    }
    let AdminAuth::Basic {
        username,
        password_hash,
    } = &options.auth
    else {
        return Ok(());
    };
    let given_user = auth.get("username").and_then(|v| v.as_str());
    let given_password = auth.get("password").and_then(|v| v.as_str());
    if let (Some(user), Some(password)) = (given_user, given_password) {
        if user == username && verify(slots, password, password_hash).await {
            return Ok(());
        }
    }
    tracing::info!(target: "rsio::admin", "admin UI login refused");
    Err(ConnectError::new(INVALID_CREDENTIALS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(hash: &str) -> AdminAuth {
        AdminAuth::Basic {
            username: "admin".into(),
            password_hash: hash.into(),
        }
    }

    #[test]
    fn a_token_is_valid_with_the_same_secret_only() {
        let auth = basic("$2b$04$hash");
        let a = SessionKey::derive(Some(b"shared"), &auth);
        let b = SessionKey::derive(Some(b"shared"), &auth);
        let token = a.issue(&auth).unwrap();
        assert!(
            b.check(&token),
            "another worker with the same secret accepts it"
        );
        let other = SessionKey::derive(Some(b"other"), &auth);
        assert!(!other.check(&token));
        let new_password = SessionKey::derive(Some(b"shared"), &basic("$2b$04$new"));
        assert!(
            !new_password.check(&token),
            "a new password ends the sessions"
        );
        assert!(!a.check("0.00"));
        assert!(!a.check("garbage"));
        // Tampered expiry.
        let (_, tag) = token.split_once('.').unwrap();
        assert!(!a.check(&format!("ffffffffff.{tag}")));
        // Expired.
        assert!(!a.check(&a.issue_until(unix_now() - 1)));
        assert!(a.check(&a.issue_until(unix_now() + 60)));
        assert_eq!(a.issue(&AdminAuth::None), None);
    }

    #[test]
    fn random_keys_differ() {
        let auth = basic("$2b$04$hash");
        let a = SessionKey::derive(None, &auth);
        let b = SessionKey::derive(None, &auth);
        assert!(!b.check(&a.issue(&auth).unwrap()));
    }

    #[tokio::test]
    async fn verify_checks_the_password_in_a_free_slot() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let slots = tokio::sync::Semaphore::new(1);
        assert!(verify(&slots, "right", &hash).await);
        assert!(!verify(&slots, "wrong", &hash).await);
        assert_eq!(slots.available_permits(), 1, "the slot is given back");
        slots.close();
        assert!(!verify(&slots, "right", &hash).await, "no slot, no login");
    }

    #[test]
    fn debug_hides_the_hash() {
        let text = format!("{:?}", basic("$2b$04$secrethash"));
        assert!(!text.contains("secrethash"), "{text}");
    }
}
