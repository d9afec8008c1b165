//! A host's one reader of the broadcasts on Redis: run by the cluster's primary,
//! it reads the streams (`XREAD BLOCK`, streams adapter) or receives the
//! broadcast and request channels (`PSUBSCRIBE <key>#*` and
//! `<key>-request#*`, classic adapter) once for all the
//! host's workers, and hands on each entry or message as Redis sent it, for the
//! primary to forward. The workers, members for everything else (they publish,
//! answer requests and count as servers), then read nothing themselves: a
//! broadcast crosses Redis once per host, not once per worker.
//!
//! It connects, reconnects and backs off as a member does (the same
//! [`super::link`] and stream readers); a reconnecting stream reader resumes
//! from the last id it read.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use bytes::Bytes;
use redis::Value;

use super::{
    conn::{self, StreamReader},
    link::{Link, Member, Sub},
    CodecError, RedisAdapterError, RedisClassicConfig, RedisStreamsConfig, Route,
};

/// What the host reader hands on, as Redis sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fed {
    /// A stream entry: its id and its fields and values, alternating.
    Entry { id: String, fields: Vec<Bytes> },
    /// A message of a broadcast channel.
    Message { channel: String, payload: Bytes },
}

impl Fed {
    /// Which workers of the host it is for, read from as little of it as
    /// routing needs (see [`Route`]).
    pub(crate) fn route(&self) -> Route {
        match self {
            Fed::Entry { fields, .. } => super::codec::entry_route(fields),
            Fed::Message { channel, payload } => super::classic::message_route(channel, payload),
        }
    }
}

/// Where the host reader hands on what it reads.
type Sink = Box<dyn Fn(Fed) + Send + Sync>;

/// A host's one reader of the broadcasts (see the module's documentation).
pub(crate) struct HostReader {
    link: Link,
    /// The streams to read (streams adapter; unused by the classic one).
    streams: RedisStreamsConfig,
    /// Whether it reads streams (else it receives the broadcast channels).
    reads_streams: bool,
    /// `key` of the classic adapter's channels.
    key: String,
    sink: Sink,
    this: Weak<HostReader>,
}

impl HostReader {
    fn with(
        link: Link,
        streams: Option<RedisStreamsConfig>,
        key: String,
        sink: Sink,
    ) -> Arc<HostReader> {
        Arc::new_cyclic(|this| HostReader {
            link,
            key,
            reads_streams: streams.is_some(),
            streams: streams.unwrap_or_default(),
            sink,
            this: this.clone(),
        })
    }

    /// A reader of the streams of `config` on the Redis at `url`.
    pub(crate) fn streams(
        url: &str,
        config: RedisStreamsConfig,
        sink: impl Fn(Fed) + Send + Sync + 'static,
    ) -> Result<Arc<HostReader>, RedisAdapterError> {
        Ok(HostReader::with(
            Link::single(url)?,
            Some(config),
            String::new(),
            Box::new(sink),
        ))
    }

    /// A receiver of the broadcast and request channels of `config` on the
    /// Redis at `urls` (several: the nodes of a Redis Cluster), for the
    /// namespaces [`HostReader::watch`] names.
    pub(crate) fn classic(
        urls: &[&str],
        config: &RedisClassicConfig,
        sink: impl Fn(Fed) + Send + Sync + 'static,
    ) -> Result<Arc<HostReader>, RedisAdapterError> {
        let link = match urls {
            [one] => Link::single(one)?,
            many => Link::cluster(many)?,
        };
        Ok(HostReader::with(
            link,
            None,
            config.key.clone(),
            Box::new(sink),
        ))
    }

    /// A worker of the host serves namespace `nsp`: with the classic adapter,
    /// receive its broadcast and room channels (`<key>#<nsp>#*`) and, on the
    /// same connection, its requests (`<key>-request#<nsp>#`): what one server
    /// publishes, every server applies in that order (a broadcast, then its
    /// room's sockets leave), as on a Node server's one subscriber connection.
    /// Both by pattern, which `PUBSUB NUMSUB` does not count: the workers' own
    /// subscriptions to the request channel are the server count. Idempotent.
    pub(crate) fn watch(&self, nsp: &str) {
        if self.reads_streams {
            // The streams hold every namespace's entries.
            return;
        }
        let nsp = glob_escape(nsp);
        let key = glob_escape(&self.key);
        self.link.subscribe(Sub::Pattern(format!("{key}#{nsp}#*")));
        self.link
            .subscribe(Sub::Pattern(format!("{key}-request#{nsp}#")));
    }

    /// Connects and starts reading, on the current tokio runtime; Redis being
    /// unreachable is logged and retried with backoff.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub(crate) fn start(self: &Arc<Self>) {
        let member: Weak<dyn Member> = self.this.clone();
        if self.link.start(member) && self.reads_streams {
            conn::spawn_readers(self);
        }
    }
}

/// `s` matching itself in a Redis glob pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Member for HostReader {
    fn link(&self) -> &Link {
        &self.link
    }

    fn on_pubsub(&self, channel: &str, payload: &[u8]) {
        (self.sink)(Fed::Message {
            channel: channel.to_string(),
            payload: Bytes::copy_from_slice(payload),
        });
    }

    fn counted_channels(&self) -> Vec<String> {
        // Not a server: it counts nothing, and is counted nowhere (it
        // subscribes no request channel).
        Vec::new()
    }

    fn set_counts(&self, _: &HashMap<String, usize>) {}
}

impl StreamReader for HostReader {
    fn link(&self) -> &Link {
        &self.link
    }

    fn config(&self) -> &RedisStreamsConfig {
        &self.streams
    }

    /// Takes the reply's buffers as they are (no copy): the entries are only
    /// handed on.
    fn on_entries(&self, _stream: &str, list: Value) -> Option<String> {
        let Value::Array(list) = list else {
            return None;
        };
        let mut last = None;
        for entry in list {
            let Value::Array(pair) = entry else { continue };
            let mut pair = pair.into_iter();
            let id = match pair.next() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                Some(Value::SimpleString(s)) => s,
                _ => continue,
            };
            let fields = match pair.next() {
                Some(Value::Array(f)) => f
                    .into_iter()
                    .map(|v| match v {
                        Value::BulkString(b) => Bytes::from(b),
                        // Kept in place, so that names and values stay paired.
                        _ => Bytes::new(),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            (self.sink)(Fed::Entry {
                id: id.clone(),
                fields,
            });
            last = Some(id);
        }
        last
    }

    fn on_entry(
        &self,
        _stream: &str,
        fields: &[(&[u8], &[u8])],
        id: &str,
    ) -> Result<(), CodecError> {
        let mut flat = Vec::with_capacity(fields.len() * 2);
        for (k, v) in fields {
            flat.push(Bytes::copy_from_slice(k));
            flat.push(Bytes::copy_from_slice(v));
        }
        (self.sink)(Fed::Entry {
            id: id.to_string(),
            fields: flat,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn the_classic_reader_takes_the_channels_of_the_served_namespaces_by_pattern() {
        let reader = HostReader::classic(
            &["redis://127.0.0.1:1"],
            &RedisClassicConfig::default(),
            |_| {},
        )
        .unwrap();
        assert!(reader.link.subscriptions_for_test().is_empty());
        reader.watch("/");
        reader.watch("/a*[b]?");
        reader.watch("/");
        assert_eq!(
            reader.link.subscriptions_for_test(),
            vec![
                Sub::Pattern("socket.io#/#*".into()),
                Sub::Pattern("socket.io-request#/#".into()),
                Sub::Pattern("socket.io#/a\\*\\[b\\]\\?#*".into()),
                Sub::Pattern("socket.io-request#/a\\*\\[b\\]\\?#".into()),
            ]
        );
        let streams =
            HostReader::streams("redis://127.0.0.1:1", RedisStreamsConfig::default(), |_| {})
                .unwrap();
        streams.watch("/");
        assert!(streams.link.subscriptions_for_test().is_empty());
        assert!(Member::counted_channels(&*reader).is_empty());
    }

    #[test]
    fn entries_and_messages_are_handed_on_as_read() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let into = got.clone();
        let reader = HostReader::streams(
            "redis://127.0.0.1:1",
            RedisStreamsConfig::default(),
            move |f| into.lock().unwrap().push(f),
        )
        .unwrap();
        let fields: [(&[u8], &[u8]); 2] = [(b"uid", b"u1"), (b"type", b"3")];
        StreamReader::on_entry(&*reader, "socket.io", &fields, "1-2").unwrap();
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("1-3"),
            Value::Array(vec![bulk("uid"), bulk("u2")]),
        ])]);
        assert_eq!(reader.on_entries("s", reply), Some("1-3".to_string()));
        reader.on_pubsub("socket.io#/#", b"\x93");
        let b = |s: &[u8]| Bytes::copy_from_slice(s);
        assert_eq!(
            *got.lock().unwrap(),
            vec![
                Fed::Entry {
                    id: "1-2".into(),
                    fields: vec![b(b"uid"), b(b"u1"), b(b"type"), b(b"3")],
                },
                Fed::Entry {
                    id: "1-3".into(),
                    fields: vec![b(b"uid"), b(b"u2")],
                },
                Fed::Message {
                    channel: "socket.io#/#".into(),
                    payload: b(b"\x93"),
                },
            ]
        );
    }
}
