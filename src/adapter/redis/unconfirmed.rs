//! Broadcasts whose `XADD` failed with its outcome unknown (the connection
//! broke after the command was sent, before its reply) and that were
//! delivered here without an offset. Redis may have run the command: with
//! persistence the entry is still in the stream after a restart, and the
//! reader would deliver it to this server's clients a second time. The reader
//! drops such an entry instead.
//!
//! An entry is known by its stream, uid and data. Two broadcasts may have the
//! same data, so the search ends at a bound: the stream's last id when the
//! command connection is back, read before anything else is written on it.
//! Had Redis run the lost write, its entry is at or before the bound; all
//! this server writes later is after it. Once the reader passes the bound,
//! the write was not run.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use redis::Arg;

use super::codec::parse_entry_id;

/// Most entries kept: a writer has one pipeline in flight when its connection breaks.
const MAX: usize = 1024;
/// How long one is kept at most: longer than a Redis restart is expected to take.
const KEEP: Duration = Duration::from_secs(600);

struct Entry {
    at: Instant,
    stream: Box<[u8]>,
    uid: Box<[u8]>,
    data: Box<[u8]>,
    /// The last id of `stream` when the command connection was back.
    bound: Option<(u64, u64)>,
}

/// The entries this server wrote, maybe, and delivered itself already.
#[derive(Default)]
pub(super) struct Unconfirmed {
    /// How many are kept: the reader's check is one atomic load when none is.
    len: AtomicUsize,
    entries: Mutex<VecDeque<Entry>>,
}

/// The simple arguments of `cmd`.
fn args(cmd: &redis::Cmd) -> Vec<&[u8]> {
    cmd.args_iter()
        .filter_map(|a| match a {
            Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect()
}

impl Unconfirmed {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether none is kept.
    pub(super) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Keeps the stream, `uid` and `data` of `cmd`, a failed
    /// `XADD <stream> … * <field> <value> …`.
    pub(super) fn keep(&self, cmd: &redis::Cmd) {
        let args = args(cmd);
        let (Some(stream), Some(star)) = (args.get(1), args.iter().position(|a| *a == b"*")) else {
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
        let mut entries = self.lock();
        if entries.len() >= MAX {
            entries.pop_front();
        }
        entries.push_back(Entry {
            at: Instant::now(),
            stream: Box::from(*stream),
            uid,
            data,
            bound: None,
        });
        self.len.store(entries.len(), Ordering::Release);
    }

    /// The streams of the entries without a bound.
    pub(super) fn unbounded_streams(&self) -> Vec<String> {
        let mut streams: Vec<String> = Vec::new();
        for e in self.lock().iter().filter(|e| e.bound.is_none()) {
            let stream = String::from_utf8_lossy(&e.stream);
            if !streams.iter().any(|s| *s == stream) {
                streams.push(stream.into_owned());
            }
        }
        streams
    }

    /// Sets the bound of the entries of `stream` that have none.
    pub(super) fn bound(&self, stream: &str, last: (u64, u64)) {
        for e in self.lock().iter_mut() {
            if e.bound.is_none() && &*e.stream == stream.as_bytes() {
                e.bound = Some(last);
            }
        }
    }

    /// Whether the reader's entry `id` of `stream` (of any stream when `None`:
    /// a host's primary forwards entries without their stream) is one kept (it
    /// is then forgotten: it is in the stream once). Forgets the entries whose
    /// bound the reader passed.
    pub(super) fn take(&self, stream: Option<&str>, id: &str, fields: &[(&[u8], &[u8])]) -> bool {
        let Some(at) = parse_entry_id(id) else {
            return false;
        };
        let field = |name: &[u8]| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let of = |e: &Entry| stream.is_none_or(|s| &*e.stream == s.as_bytes());
        let mut entries = self.lock();
        let now = Instant::now();
        entries.retain(|e| {
            now.duration_since(e.at) <= KEEP && !(of(e) && e.bound.is_some_and(|b| at > b))
        });
        let found = match (field(b"type"), field(b"uid"), field(b"data")) {
            (Some(b"3"), Some(uid), Some(data)) => entries
                .iter()
                .position(|e| of(e) && &*e.uid == uid && &*e.data == data),
            _ => None,
        };
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
    use crate::adapter::redis::conn::Entry as StreamEntry;

    fn take(u: &Unconfirmed, stream: Option<&str>, (id, fields): StreamEntry<'_>) -> bool {
        u.take(stream, &id, &fields)
    }

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

    fn read<'a>(id: &str, uid: &'a str, data: &'a str) -> StreamEntry<'a> {
        let fields = vec![
            (&b"uid"[..], uid.as_bytes()),
            (&b"nsp"[..], &b"/"[..]),
            (&b"type"[..], &b"3"[..]),
            (&b"data"[..], data.as_bytes()),
        ];
        (id.to_string(), fields)
    }

    #[test]
    fn a_kept_entry_is_taken_once() {
        let u = Unconfirmed::default();
        assert!(u.is_empty());
        u.keep(&xadd("aa", "{\"x\":1}"));
        u.keep(&xadd("aa", "{\"x\":2}"));
        assert!(!u.is_empty());
        assert!(
            !take(&u, Some("socket.io"), read("1-0", "bb", "{\"x\":1}")),
            "another server's"
        );
        assert!(
            !take(&u, Some("other"), read("1-1", "aa", "{\"x\":1}")),
            "another stream's"
        );
        assert!(!take(&u, Some("socket.io"), read("1-2", "aa", "{\"x\":3}")));
        assert!(take(&u, Some("socket.io"), read("1-3", "aa", "{\"x\":1}")));
        assert!(
            !take(&u, Some("socket.io"), read("1-4", "aa", "{\"x\":1}")),
            "taken once"
        );
        assert!(take(&u, Some("socket.io"), read("1-5", "aa", "{\"x\":2}")));
        assert!(u.is_empty());
    }

    #[test]
    fn an_entry_forwarded_without_its_stream_matches_on_any_stream() {
        let u = Unconfirmed::default();
        u.keep(&xadd("aa", "{\"x\":1}"));
        assert!(
            !take(&u, None, read("1-0", "bb", "{\"x\":1}")),
            "another server's"
        );
        assert!(take(&u, None, read("1-1", "aa", "{\"x\":1}")));
        assert!(u.is_empty());
    }

    #[test]
    fn the_search_ends_at_the_last_id_when_the_connection_is_back() {
        let u = Unconfirmed::default();
        u.keep(&xadd("aa", "tick"));
        assert_eq!(u.unbounded_streams(), vec!["socket.io".to_string()]);
        u.bound("socket.io", (4, 0));
        assert!(u.unbounded_streams().is_empty());
        // Redis did not run it: the same data written after the reconnect is not it.
        assert!(!take(&u, Some("socket.io"), read("5-0", "aa", "tick")));
        assert!(u.is_empty(), "forgotten once the reader passed the bound");

        u.keep(&xadd("aa", "tick"));
        u.bound("socket.io", (9, 0));
        assert!(
            take(&u, Some("socket.io"), read("9-0", "aa", "tick")),
            "at the bound"
        );
    }

    #[test]
    fn at_most_max_are_kept() {
        let u = Unconfirmed::default();
        for i in 0..MAX + 1 {
            u.keep(&xadd("aa", &i.to_string()));
        }
        assert!(
            !take(&u, Some("socket.io"), read("1-0", "aa", "0")),
            "the oldest went first"
        );
        assert!(take(
            &u,
            Some("socket.io"),
            read("1-1", "aa", &MAX.to_string())
        ));
    }
}
