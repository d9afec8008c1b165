//! Black-box test harness for the Engine.IO server of `examples/conformance`.
//!
//! Every test talks raw HTTP/1.1 (a small hand-written client over `TcpStream`, so that
//! slow, chunked and cancelled requests can be made) and WebSocket (tokio-tungstenite, plus a
//! tiny raw frame codec for oversized frames) to a server:
//!
//! * `RSIO_TEST_URL=http://127.0.0.1:3900`: an already running server (e.g. the Node reference
//!   `shared/scripts/conformance-node-ref.mjs`) with the conformance defaults. Tests that need
//!   other flags or `/stats` are skipped (with a message on stderr).
//! * otherwise each test spawns `target/debug/examples/conformance --port 0 <flags>` (or
//!   `$RSIO_CONFORMANCE_BIN`), waits for its `listening on http://…` line and kills it on drop.
//!   `RSIO_TEST_SERVER_LOG=1` passes the server's stderr through.
//!
//! `http` is the HTTP/1.1 client, `ws` the WebSocket clients.
//!
//! Every wait is bounded by [`STEP`] (or an explicit timeout), so a hung server fails a test
//! instead of hanging the suite.
#![allow(dead_code)]

mod http;
mod ws;

// not every test file uses every part
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use ws::*;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Upper bound for any single wait (one HTTP exchange, one WebSocket frame, ...).
pub const STEP: Duration = Duration::from_secs(5);
/// How long a spawned server may take to print its `listening on` line.
const STARTUP: Duration = Duration::from_secs(20);

/// Conformance defaults (what the Node reference uses too).
pub const PING_INTERVAL: u64 = 300;
pub const PING_TIMEOUT: u64 = 200;
pub const MAX_PAYLOAD: u64 = 1_000_000;

/// Runs `fut` under `STEP`, panicking with `what` on timeout.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(STEP, what, fut).await
}

/// Runs `fut` under `limit`, panicking with `what` on timeout.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// ---------------------------------------------------------------------------------------------
// Server under test
// ---------------------------------------------------------------------------------------------

pub struct Server {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

fn external_url() -> Option<String> {
    std::env::var("RSIO_TEST_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

fn parse_loopback(url: &str) -> SocketAddr {
    let rest = url
        .trim()
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("expected an http:// URL, got {url:?}"));
    let hostport = rest.split('/').next().unwrap_or_default();
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = hostport
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse host:port of {url:?}: {e}"));
    assert!(
        addr.ip().is_loopback(),
        "refusing non-loopback target {url}"
    );
    addr
}

/// The `conformance` example binary (`RSIO_CONFORMANCE_BIN` overrides it).
pub fn conformance_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RSIO_CONFORMANCE_BIN") {
        return PathBuf::from(p);
    }
    // tests run from target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    profile_dir.join("examples").join("conformance")
}

impl Server {
    /// The server with the conformance defaults: the external one if `RSIO_TEST_URL` is set,
    /// a freshly spawned `conformance` otherwise.
    pub async fn start() -> Server {
        match external_url() {
            Some(url) => Server {
                addr: parse_loopback(&url),
                child: None,
            },
            None => Server::spawn(&[]).await,
        }
    }

    /// A spawned server with `flags`; `None` (test skipped) when running against
    /// `RSIO_TEST_URL`, which cannot be reconfigured.
    pub async fn with_flags(test: &str, flags: &[&str]) -> Option<Server> {
        if external_url().is_some() {
            eprintln!("SKIPPED {test}: needs server flags {flags:?} (RSIO_TEST_URL is set)");
            return None;
        }
        Some(Server::spawn(flags).await)
    }

    /// A spawned server with the defaults (for tests that need `/stats`); `None` (test
    /// skipped) against `RSIO_TEST_URL`.
    pub async fn own(test: &str) -> Option<Server> {
        if external_url().is_some() {
            eprintln!("SKIPPED {test}: needs GET /stats (RSIO_TEST_URL is set)");
            return None;
        }
        Some(Server::spawn(&[]).await)
    }

    async fn spawn(flags: &[&str]) -> Server {
        let bin = conformance_bin();
        assert!(
            bin.exists(),
            "server binary {} not found: build it with `cargo build --example conformance` \
             (cargo test does), set RSIO_CONFORMANCE_BIN, or set RSIO_TEST_URL",
            bin.display()
        );
        let log = std::env::var_os("RSIO_TEST_SERVER_LOG").is_some();
        let mut child = Command::new(&bin)
            .args(["--port", "0", "--host", "127.0.0.1"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if log { Stdio::inherit() } else { Stdio::null() })
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = within_for(STARTUP, "server startup (`listening on` line)", async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if log {
                            eprintln!("[server] {line}");
                        }
                        if let Some(i) = line.find("listening on ") {
                            let url = line[i + "listening on ".len()..].trim();
                            return url.split_whitespace().next().unwrap_or("").to_string();
                        }
                    }
                    Ok(None) | Err(_) => {
                        panic!("server {} {flags:?} exited before listening", bin.display())
                    }
                }
            }
        })
        .await;
        // keep draining stdout so the server never blocks on a full pipe
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if log {
                    eprintln!("[server] {line}");
                }
            }
        });
        Server {
            addr: parse_loopback(&url),
            child: Some(child),
        }
    }

    pub fn is_external(&self) -> bool {
        self.child.is_none()
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    // ---- raw HTTP --------------------------------------------------------------------------

    /// One request on a fresh connection (`Connection: close`), bounded by `STEP`.
    pub async fn try_request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let fut = async {
            let mut stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let head = request_head(self.addr, method, target, headers, body.map(|b| b.len()));
            let mut msg = head.into_bytes();
            if let Some(b) = body {
                msg.extend_from_slice(b);
            }
            stream.write_all(&msg).await?;
            let mut reader = BufReader::new(stream);
            read_response(&mut reader, method == "HEAD").await
        };
        match tokio::time::timeout(STEP, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{method} {target}: no response within {STEP:?}"),
            )),
        }
    }

    /// Sends `head` and then `chunks` (with `pause_ms` before each) on a writer
    /// task while reading the response, within `limit`: the server may answer
    /// (and stop reading) before the body is complete. The write half stays
    /// open: shutting it down could look like a cancelled request.
    pub async fn send_streaming(
        &self,
        head: impl Into<Vec<u8>>,
        chunks: Vec<Vec<u8>>,
        pause_ms: u64,
        limit: Duration,
        what: &str,
    ) -> Response {
        let head = head.into();
        let (rd, mut wr) = self.connect().await.into_split();
        let writer = tokio::spawn(async move {
            wr.write_all(&head).await?;
            for chunk in chunks {
                sleep_ms(pause_ms).await;
                wr.write_all(&chunk).await?;
            }
            Ok::<_, std::io::Error>(wr)
        });
        let mut reader = BufReader::new(rd);
        let res = within_for(limit, what, read_response(&mut reader, false))
            .await
            .unwrap_or_else(|e| panic!("{what}: no HTTP response: {e}"));
        writer.abort();
        res
    }

    pub async fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        self.try_request(method, target, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    pub async fn get(&self, target: &str) -> Response {
        self.request("GET", target, &[], None).await
    }

    pub async fn post(&self, target: &str, body: &[u8]) -> Response {
        self.request("POST", target, &[], Some(body)).await
    }

    /// A fresh TCP connection to the server (for hand-made requests).
    pub async fn connect(&self) -> TcpStream {
        let s = within("TCP connect", TcpStream::connect(self.addr))
            .await
            .expect("TCP connect");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    // ---- Engine.IO polling -------------------------------------------------------------------

    /// Polling handshake; returns the sid and the open packet's JSON.
    pub async fn handshake(&self) -> (String, Value) {
        let res = self.get(&eio_path("transport=polling")).await;
        assert_eq!(res.status, 200, "handshake: {}", res.text());
        let open = parse_open(&res.text());
        (open["sid"].as_str().unwrap().to_string(), open)
    }

    pub async fn poll(&self, sid: &str) -> Response {
        self.get(&polling_path(sid)).await
    }

    pub async fn try_poll(&self, sid: &str) -> io::Result<Response> {
        self.try_request("GET", &polling_path(sid), &[], None).await
    }

    pub async fn push(&self, sid: &str, body: &str) -> Response {
        self.post(&polling_path(sid), body.as_bytes()).await
    }

    /// GET that must be answered 200; heartbeat pings (`2`) in the payload are answered with
    /// a pong and removed, polling again if nothing else came. Returns the rest of the
    /// payload unchanged, so tests stay exact about the data but not about heartbeat timing on
    /// a loaded machine.
    pub async fn poll_data(&self, sid: &str) -> String {
        for _ in 0..10 {
            let res = self.poll(sid).await;
            assert_eq!(res.status, 200, "GET: {}", res.text());
            let body = res.text();
            let parts = body.split('\x1e').collect::<Vec<_>>();
            let rest = parts
                .iter()
                .filter(|p| **p != "2")
                .copied()
                .collect::<Vec<_>>();
            if rest.len() != parts.len() {
                self.push_ok(sid, "3").await;
            }
            if !rest.is_empty() {
                return rest.join("\x1e");
            }
        }
        panic!("ten polls brought nothing but pings");
    }

    /// POST that must be answered `200 ok`.
    pub async fn push_ok(&self, sid: &str, body: &str) {
        let res = self.push(sid, body).await;
        assert_eq!(res.status, 200, "POST {body:?}: {}", res.text());
        assert_eq!(res.text(), "ok");
    }

    // ---- /stats (spawned servers only) ----------------------------------------------------------

    /// `GET /stats`, `None` against an external server.
    pub async fn stats(&self) -> Option<Stats> {
        if self.is_external() {
            return None;
        }
        let res = self.get("/stats").await;
        assert_eq!(res.status, 200, "GET /stats: {}", res.text());
        let v = res.json();
        let errors = v["connectionErrors"]
            .as_array()
            .unwrap_or_else(|| panic!("/stats without connectionErrors: {v}"))
            .iter()
            .map(|n| n.as_u64().expect("counter"))
            .collect::<Vec<_>>();
        assert_eq!(errors.len(), 6, "connectionErrors has 6 counters: {v}");
        Some(Stats {
            clients_count: v["clientsCount"].as_u64().expect("clientsCount"),
            connection_errors: errors,
        })
    }

    /// Waits (bounded) until `/stats` reports `n` live sessions; no-op against an external
    /// server.
    pub async fn wait_clients(&self, n: u64) {
        if self.is_external() {
            return;
        }
        let mut last = None;
        let ok = tokio::time::timeout(STEP, async {
            loop {
                let s = self.stats().await.unwrap();
                if s.clients_count == n {
                    return;
                }
                last = Some(s.clients_count);
                sleep_ms(20).await;
            }
        })
        .await;
        assert!(ok.is_ok(), "clientsCount stayed {last:?}, expected {n}");
    }

    /// Asserts that `connectionErrors[code]` grew by exactly `by` since `before`.
    pub async fn assert_errors_grew(&self, before: &Option<Stats>, code: usize, by: u64) {
        let (Some(before), Some(after)) = (before, self.stats().await) else {
            return;
        };
        for (c, (b, a)) in before
            .connection_errors
            .iter()
            .zip(&after.connection_errors)
            .enumerate()
        {
            let expected = if c == code { b + by } else { *b };
            assert_eq!(
                *a, expected,
                "connectionErrors[{c}]: before {:?}, after {:?} (expected +{by} on code {code})",
                before.connection_errors, after.connection_errors
            );
        }
    }
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub clients_count: u64,
    pub connection_errors: Vec<u64>,
}

// ---------------------------------------------------------------------------------------------
// Paths and payloads
// ---------------------------------------------------------------------------------------------

/// `/engine.io/?EIO=4&<query>`
pub fn eio_path(query: &str) -> String {
    format!("/engine.io/?EIO=4&{query}")
}

/// `/engine.io/?<query>` (no EIO added)
pub fn eio_raw_path(query: &str) -> String {
    format!("/engine.io/?{query}")
}

pub fn polling_path(sid: &str) -> String {
    eio_path(&format!("transport=polling&sid={sid}"))
}

/// Parses an open packet `0{...}` and checks its shape (the five keys of Engine.IO v4).
pub fn parse_open(packet: &str) -> Value {
    let json = packet
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("open packet must start with 0: {packet:?}"));
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json:?}: {e}"));
    let obj = v.as_object().expect("open packet data is an object");
    let mut keys = obj.keys().map(String::as_str).collect::<Vec<_>>();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ],
        "open packet keys: {packet}"
    );
    let sid = v["sid"].as_str().expect("sid is a string");
    assert!(sid.len() >= 20, "sid {sid:?} shorter than 20 chars");
    assert!(
        sid.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "sid {sid:?} is not base64url"
    );
    v
}

/// One decoded Engine.IO packet of a polling payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// type char + data, e.g. ('4', "hello")
    Text(char, String),
    /// a binary message (`b<base64>`)
    Binary(Vec<u8>),
}

/// Splits a polling payload on `\x1e` and decodes each packet.
pub fn decode_payload(body: &str) -> Vec<Packet> {
    if body.is_empty() {
        return Vec::new();
    }
    body.split('\x1e')
        .map(|p| {
            if let Some(b64) = p.strip_prefix('b') {
                Packet::Binary(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap_or_else(|e| panic!("bad base64 in {p:?}: {e}")),
                )
            } else {
                let mut chars = p.chars();
                let ty = chars
                    .next()
                    .unwrap_or_else(|| panic!("empty packet in {body:?}"));
                Packet::Text(ty, chars.as_str().to_string())
            }
        })
        .collect()
}

/// Asserts an Engine.IO error response: status and `{"code":N,"message":...}`.
pub fn assert_eio_error(res: &Response, status: u16, code: u64, message: &str) {
    assert_eq!(
        res.status,
        status,
        "expected HTTP {status} (code {code}), got {} {}",
        res.status,
        res.text()
    );
    let v = res.json();
    assert_eq!(
        v,
        serde_json::json!({"code": code, "message": message}),
        "error body"
    );
    let ct = res.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error content-type {ct:?}"
    );
}
