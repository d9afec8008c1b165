//! This server's requests awaiting answers from other servers, by request id:
//! registered when sent, forgotten when the caller stops waiting.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use tokio::sync::mpsc;

use crate::adapter::AdapterError;

/// Waits at most `timeout` for `expected` answers on `rx`: the answers that
/// came, and how many did not.
pub(crate) async fn collect<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    expected: usize,
    timeout: Duration,
) -> (Vec<T>, usize) {
    let mut answers = Vec::with_capacity(expected);
    let wait = async {
        while answers.len() < expected {
            let Some(answer) = rx.recv().await else {
                break;
            };
            answers.push(answer);
        }
    };
    let _ = tokio::time::timeout(timeout, wait).await;
    let missing = expected - answers.len();
    (answers, missing)
}

/// [`collect`] for answers that are lists (the sockets of one server), joined;
/// `Timeout(missing)` when some did not come.
pub(crate) async fn collect_lists<T>(
    rx: &mut mpsc::UnboundedReceiver<Vec<T>>,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<T>, AdapterError> {
    match collect(rx, expected, timeout).await {
        (lists, 0) => Ok(lists.into_iter().flatten().collect()),
        (_, missing) => Err(AdapterError::Timeout(missing)),
    }
}

/// Pending requests, each with where its answers go (`P`).
pub(crate) struct Requests<P> {
    map: Arc<Mutex<HashMap<String, P>>>,
}

impl<P> Default for Requests<P> {
    fn default() -> Self {
        Requests {
            map: Arc::default(),
        }
    }
}

impl<P: Send + 'static> Requests<P> {
    /// Registers a request under a fresh id (`id_len` random bytes in hex); it
    /// is forgotten when the guard drops.
    pub(crate) fn register(&self, pending: P, id_len: usize) -> (String, RequestGuard<P>) {
        let id = random_hex(id_len);
        self.lock().insert(id.clone(), pending);
        let guard = RequestGuard {
            map: Arc::downgrade(&self.map),
            id: id.clone(),
        };
        (id, guard)
    }

    /// The pending requests (no user code may run while this is held).
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, P>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Forgets a request when its caller stops waiting.
pub(crate) struct RequestGuard<P> {
    map: Weak<Mutex<HashMap<String, P>>>,
    id: String,
}

impl<P> Drop for RequestGuard<P> {
    fn drop(&mut self) {
        if let Some(map) = self.map.upgrade() {
            map.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.id);
        }
    }
}

/// `n` random bytes in hex (Node's `randomBytes(n).toString("hex")`).
pub(crate) fn random_hex(n: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 * n);
    for _ in 0..n {
        let _ = write!(s, "{:02x}", rand::random::<u8>());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_forgotten_when_its_guard_drops() {
        let requests = Requests::<u8>::default();
        let (id, guard) = requests.register(7, 8);
        assert_eq!(id.len(), 16);
        assert_eq!(requests.lock().get(&id), Some(&7));
        drop(guard);
        assert!(requests.lock().is_empty());
    }
}
