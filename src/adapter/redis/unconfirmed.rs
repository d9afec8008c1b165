//! Broadcasts whose `XADD` failed with its outcome unknown (the connection
//! broke after the command was sent, before its reply) and that were
//! delivered here without an offset. Redis may have run the command: with
//! persistence the entry is still in the stream after a restart, and the
//! reader would deliver it to this server's clients a second time. The reader
//! drops such an entry instead.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

/// Most entries kept: a writer has one pipeline in flight when its connection breaks.
const MAX: usize = 1024;
/// How long one is kept: longer than a Redis restart is expected to take.
const KEEP: Duration = Duration::from_secs(600);

struct Entry {
    at: Instant,
    uid: Box<[u8]>,
    data: Box<[u8]>,
}

/// The entries this server wrote, maybe, and delivered itself already.
#[derive(Default)]
pub(super) struct Unconfirmed {
    /// How many are kept: the reader's check is one atomic load when none is.
    len: AtomicUsize,
    entries: Mutex<VecDeque<Entry>>,
}

impl Unconfirmed {
    /// Whether none is kept.
    pub(super) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Keeps the `uid` and `data` fields of `cmd`, a failed
    /// `XADD <stream> … * <field> <value> …`.
    pub(super) fn keep(&self, cmd: &redis::Cmd) {
        let args: Vec<&[u8]> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(b) => Some(b),
                _ => None,
            })
            .collect();
        let Some(star) = args.iter().position(|a| *a == b"*") else {
            return;
        };
        let field = |name: &[u8]| {
            args[star + 1..]
                .chunks_exact(2)
                .find(|kv| kv[0] == name)
                .map(|kv| Box::from(kv[1]))
        };
        let (Some(uid), Some(data)) = (field(b"uid"), field(b"data")) else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX {
            entries.pop_front();
        }
        entries.push_back(Entry {
            at: Instant::now(),
            uid,
            data,
        });
        self.len.store(entries.len(), Ordering::Release);
    }

    /// Whether an entry with these `uid` and `data` fields is kept; it is then
    /// forgotten (it is in the stream once).
    pub(super) fn take(&self, uid: &[u8], data: &[u8]) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while entries
            .front()
            .is_some_and(|e| now.duration_since(e.at) > KEEP)
        {
            entries.pop_front();
        }
        let found = entries
            .iter()
            .position(|e| &*e.uid == uid && &*e.data == data);
        if let Some(i) = found {
            entries.remove(i);
        }
        self.len.store(entries.len(), Ordering::Release);
        found.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xadd(uid: &str, data: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("socket.io")
            .arg("MAXLEN")
            .arg("~")
            .arg(10_000)
            .arg("*")
            .arg("uid")
            .arg(uid)
            .arg("nsp")
            .arg("/")
            .arg("type")
            .arg("3")
            .arg("data")
            .arg(data);
        cmd
    }

    #[test]
    fn a_kept_entry_is_taken_once() {
        let u = Unconfirmed::default();
        assert!(u.is_empty());
        u.keep(&xadd("aa", "{\"x\":1}"));
        u.keep(&xadd("aa", "{\"x\":2}"));
        assert!(!u.is_empty());
        assert!(!u.take(b"bb", b"{\"x\":1}"), "another server's entry");
        assert!(!u.take(b"aa", b"{\"x\":3}"));
        assert!(u.take(b"aa", b"{\"x\":1}"));
        assert!(!u.take(b"aa", b"{\"x\":1}"), "taken once");
        assert!(u.take(b"aa", b"{\"x\":2}"));
        assert!(u.is_empty());
    }

    #[test]
    fn at_most_max_are_kept() {
        let u = Unconfirmed::default();
        for i in 0..MAX + 1 {
            u.keep(&xadd("aa", &i.to_string()));
        }
        assert!(!u.take(b"aa", b"0"), "the oldest went first");
        assert!(u.take(b"aa", MAX.to_string().as_bytes()));
    }
}
