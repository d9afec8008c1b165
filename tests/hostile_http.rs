//! Hostile HTTP / Engine.IO inputs: each is answered by a clear error, and the server keeps
//! serving fresh clients afterwards. WebSocket frame-level inputs are in `hostile_ws.rs`,
//! Socket.IO packets in `hostile_sio.rs`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A fresh WebSocket session on `/engine.io/` still echoes.
async fn assert_still_serving(srv: &Server) {
    let (mut ws, _) = srv.ws_session().await;
    ws.send_text("4still serving").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4still serving");
}

/// A polling GET/POST on `sid` with an arbitrary query (EIO/transport as given).
fn sid_path(query: &str, sid: &str) -> String {
    eio_raw_path(&format!("{query}&sid={sid}"))
}

/// The answer to a raw request whose response may be a `101` (which `read_response` would
/// skip as informational): status and body (Content-Length framed, if any).
struct Answer {
    status: u16,
    body: Vec<u8>,
}

async fn read_answer(reader: &mut BufReader<TcpStream>) -> std::io::Result<Answer> {
    let status_line = read_line(reader).await?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader).await?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap_or((&line, ""));
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut body = Vec::new();
    if status != 101 {
        if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
            body.resize(len.parse().expect("content-length"), 0);
            reader.read_exact(&mut body).await?;
        }
    }
    Ok(Answer { status, body })
}

/// Sends a WebSocket upgrade request for `/engine.io/?<query>` with `extra` headers.
async fn upgrade(
    srv: &Server,
    query: &str,
    extra: &[(&str, &str)],
) -> (Answer, BufReader<TcpStream>) {
    let mut stream = srv.connect().await;
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        eio_raw_path(query),
        srv.addr
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .expect("write upgrade");
    let mut reader = BufReader::new(stream);
    let answer = within("upgrade answer", read_answer(&mut reader))
        .await
        .expect("an HTTP answer to the upgrade");
    (answer, reader)
}

/// A refused upgrade: HTTP 400 whose JSON body has one of `codes` (Node answers a refused
/// upgrade with the bare message as text; accepted against an external server only).
fn assert_upgrade_refused(srv: &Server, query: &str, ans: &Answer, codes: &[u64]) {
    let body = String::from_utf8_lossy(&ans.body).into_owned();
    assert_eq!(
        ans.status, 400,
        "upgrade ?{query} answered {} {body}",
        ans.status
    );
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => assert!(
            v["code"].as_u64().is_some_and(|c| codes.contains(&c)),
            "upgrade ?{query}: error code in {body}, expected one of {codes:?}"
        ),
        Err(_) => assert!(srv.is_external(), "error body is not JSON: {body:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. session ids
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_sids_are_code_1() {
    let srv = Server::start().await;
    let long = "A".repeat(2048);
    // Node treats an empty `sid=` as no sid (a new handshake); rsio refuses it as unknown.
    let mut sids = vec![
        "AAAAAAAAAAAAAAAAAAA.",
        "AAAAAAAAAAAAAAAAAA~!",
        "AAAAAAAAAAAAAAAAA%2F",
        "AAAAAAAAAAAAAAAAAA%00",
        long.as_str(),
    ];
    if !srv.is_external() {
        sids.push("");
    }
    for sid in sids {
        let short = &sid[..sid.len().min(24)];
        let res = srv.get(&polling_path(sid)).await;
        assert_eq!(res.status, 400, "GET sid={short}…: {}", res.text());
        assert_eio_error(&res, 400, 1, "Session ID unknown");
        let res = srv.post(&polling_path(sid), b"4x").await;
        assert_eq!(res.status, 400, "POST sid={short}…: {}", res.text());
        assert_eio_error(&res, 400, 1, "Session ID unknown");
    }
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn expired_sid_is_code_1() {
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    // no GET, so no ping is ever answered: closed after pingInterval + pingTimeout
    sleep_ms(PING_INTERVAL + PING_TIMEOUT + 400).await;
    assert_eio_error(&srv.poll(&sid).await, 400, 1, "Session ID unknown");
    assert_eio_error(&srv.push(&sid, "4late").await, 400, 1, "Session ID unknown");
    srv.assert_ws_refused(&format!("EIO=4&transport=websocket&sid={sid}"))
        .await;
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 2. EIO / transport on an existing session
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn eio_on_an_existing_sid_is_ignored_like_node() {
    // Node's `verify()` checks EIO only for handshakes: requests with a sid are served.
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    let res = srv
        .post(&sid_path("EIO=3&transport=polling", &sid), b"4eio3")
        .await;
    assert_eq!(res.status, 200, "POST with EIO=3: {}", res.text());
    assert_eq!(res.text(), "ok");
    let res = srv.get(&sid_path("EIO=abc&transport=polling", &sid)).await;
    assert_eq!(res.status, 200, "GET with EIO=abc: {}", res.text());
    let data: Vec<_> = res.text().split('\x1e').map(str::to_owned).collect();
    assert!(
        data.iter()
            .filter(|p| *p != "2")
            .eq(["4eio3".to_string()].iter()),
        "GET with EIO=abc delivered {data:?}"
    );
    let res = srv.post(&sid_path("transport=polling", &sid), b"1").await;
    assert_eq!(res.status, 200, "POST without EIO: {}", res.text());
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn wrong_transport_on_an_existing_sid_is_code_3() {
    let srv = Server::start().await;
    // a polling session addressed as websocket, without upgrade headers
    let (sid, _) = srv.handshake().await;
    let res = srv
        .get(&eio_path(&format!("transport=websocket&sid={sid}")))
        .await;
    assert_eio_error(&res, 400, 3, "Bad request");
    let res = srv
        .post(&eio_path(&format!("transport=websocket&sid={sid}")), b"4x")
        .await;
    assert_eio_error(&res, 400, 3, "Bad request");
    // a WebSocket session addressed as polling
    let (mut ws, open) = srv.ws_session().await;
    let ws_sid = open["sid"].as_str().unwrap();
    assert_eio_error(&srv.poll(ws_sid).await, 400, 3, "Bad request");
    assert_eio_error(&srv.push(ws_sid, "4x").await, 400, 3, "Bad request");
    // neither session was harmed
    ws.send_text("4ws alive").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4ws alive");
    srv.push_ok(&sid, "4polling alive").await;
    assert_eq!(srv.poll_data(&sid).await, "4polling alive");
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 3. / 12. oversized POST bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn post_head_over_the_limit_is_413_before_the_body() {
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    let len = MAX_PAYLOAD as usize + 1;
    let head = request_head(srv.addr, "POST", &polling_path(&sid), &[], Some(len));
    // the head and a few bytes only; the rest never comes
    let res = srv
        .send_streaming(
            head.into_bytes(),
            vec![b"4aaa".to_vec()],
            0,
            Duration::from_secs(2),
            "413 for a Content-Length over maxHttpBufferSize, body not sent",
        )
        .await;
    assert_eq!(res.status, 413, "{}", res.text());
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn post_announcing_100_mb_is_413_without_reading_it() {
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    let head = request_head(
        srv.addr,
        "POST",
        &polling_path(&sid),
        &[],
        Some(100 * 1024 * 1024),
    );
    let started = Instant::now();
    let res = srv
        .send_streaming(
            head.into_bytes(),
            Vec::new(),
            0,
            Duration::from_secs(2),
            "413 for a 100 MB Content-Length, head only",
        )
        .await;
    assert_eq!(res.status, 413, "{}", res.text());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn trickled_chunked_post_over_the_limit_is_413_and_the_session_goes_on() {
    let Some(srv) = Server::with_flags(
        "trickled_chunked_post_over_the_limit_is_413_and_the_session_goes_on",
        &[
            "--max-http-buffer-size",
            "10000",
            "--ping-interval",
            "10000",
            "--ping-timeout",
            "10000",
        ],
    )
    .await
    else {
        return;
    };
    let (sid, _) = srv.handshake().await;
    srv.wait_clients(1).await;
    let head = request_head(
        srv.addr,
        "POST",
        &polling_path(&sid),
        &[("Transfer-Encoding", "chunked")],
        None,
    );
    // 15 chunks of 1000 bytes, 20 ms apart: the limit is crossed by the 11th
    let chunks = (0..15)
        .map(|i| {
            let mut c = b"3e8\r\n".to_vec();
            c.push(if i == 0 { b'4' } else { b'a' });
            c.extend(std::iter::repeat_n(b'a', 999));
            c.extend_from_slice(b"\r\n");
            c
        })
        .collect();
    let res = srv
        .send_streaming(
            head.into_bytes(),
            chunks,
            20,
            STEP,
            "413 for a trickled chunked body over the limit",
        )
        .await;
    assert_eq!(res.status, 413, "{}", res.text());
    // As in Node (`onDataRequest` answers 413 and keeps the socket): the refused body
    // is dropped, nothing of it is delivered, and the session goes on.
    srv.push_ok(&sid, "4after").await;
    assert_eq!(srv.poll_data(&sid).await, "4after");
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 6. request heads over hyper's limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ten_thousand_request_headers_are_431() {
    let srv = Server::start().await;
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n",
        eio_path("transport=polling"),
        srv.addr
    );
    for i in 0..10_000 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let res = srv
        .send_streaming(
            head.into_bytes(),
            Vec::new(),
            0,
            STEP,
            "answer to 10 000 headers",
        )
        .await;
    assert_eq!(res.status, 431, "{}", res.text());
    assert_still_serving(&srv).await;
}

/// hyper's cap of 100 header lines: 100 pass, 101 are 431.
#[tokio::test]
async fn a_hundred_and_one_request_headers_are_431() {
    let srv = Server::start().await;
    for (extra, status) in [(99, 200), (100, 431)] {
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n",
            eio_path("transport=polling"),
            srv.addr
        );
        for i in 0..extra {
            head.push_str(&format!("X-H{i}: v\r\n"));
        }
        head.push_str("\r\n");
        let what = format!("answer to {} headers", extra + 1);
        let res = srv
            .send_streaming(head.into_bytes(), Vec::new(), 0, STEP, &what)
            .await;
        assert_eq!(res.status, status, "{what}: {}", res.text());
    }
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn hundred_kb_header_line_is_431() {
    let srv = Server::start().await;
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\n\r\n",
        eio_path("transport=polling"),
        srv.addr,
        "a".repeat(100 * 1024)
    );
    let res = srv
        .send_streaming(
            head.into_bytes(),
            Vec::new(),
            0,
            STEP,
            "answer to a 100 KB header",
        )
        .await;
    assert_eq!(res.status, 431, "{}", res.text());
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 8. bogus transport on upgrade requests (CVE-2023-31125)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upgrade_with_duplicate_transport_is_refused() {
    // Node's query parser makes `transport` an array, an unknown transport (code 0).
    let srv = Server::start().await;
    for query in [
        "EIO=4&transport=websocket&transport=polling",
        "EIO=4&transport=polling&transport=websocket",
    ] {
        let (ans, _conn) = upgrade(&srv, query, &[]).await;
        assert_upgrade_refused(&srv, query, &ans, &[0, 3]);
    }
    srv.wait_clients(0).await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn upgrade_with_unknown_transport_is_code_0() {
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    for query in [
        "EIO=4&transport=xyz".to_string(),
        format!("EIO=4&transport=xyz&sid={sid}"),
        format!("EIO=4&transport=WebSocket&sid={sid}"),
    ] {
        let (ans, _conn) = upgrade(&srv, &query, &[]).await;
        assert_upgrade_refused(&srv, &query, &ans, &[0]);
    }
    // the polling session named in the refused upgrades is unharmed
    srv.push_ok(&sid, "4still polling").await;
    assert_eq!(srv.poll_data(&sid).await, "4still polling");
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 9. / 10. / 13. broken POSTs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tcp_reset_mid_post_closes_the_session() {
    let Some(srv) = Server::own("tcp_reset_mid_post_closes_the_session").await else {
        return;
    };
    let (sid, _) = srv.handshake().await;
    srv.wait_clients(1).await;
    let mut stream = srv.connect().await;
    let head = request_head(srv.addr, "POST", &polling_path(&sid), &[], Some(100));
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'4'; 50]).await.unwrap();
    sleep_ms(50).await;
    stream.set_zero_linger().expect("SO_LINGER 0");
    drop(stream); // RST, not FIN
    srv.wait_clients(0).await;
    assert_eio_error(&srv.poll(&sid).await, 400, 1, "Session ID unknown");
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_polling_post_is_400_and_closes_the_session() {
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    srv.wait_clients(1).await;
    let res = srv.post(&polling_path(&sid), b"4ok\x1e4\xff\xfe bad").await;
    assert_eq!(res.status, 400, "{}", res.text());
    srv.wait_clients(0).await;
    assert_eio_error(&srv.poll(&sid).await, 400, 1, "Session ID unknown");
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn unknown_packet_type_9_in_a_polling_post_is_400_and_closes_the_session() {
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    srv.wait_clients(1).await;
    let res = srv.post(&polling_path(&sid), b"9x").await;
    if srv.is_external() {
        // Node 6.6 closes the session while parsing and still answers `200 ok`
        assert!([200, 400].contains(&res.status), "{}", res.text());
    } else {
        assert_eq!(res.status, 400, "{}", res.text());
    }
    srv.wait_clients(0).await;
    assert_eio_error(&srv.poll(&sid).await, 400, 1, "Session ID unknown");
    assert_still_serving(&srv).await;
}

/// Starts the conformance server with `flags`, expecting it to refuse its config:
/// its exit status and stderr (bounded: a server that starts fails the test).
async fn refused_at_startup(flags: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(conformance_bin())
        .args(["--port", "0", "--host", "127.0.0.1"])
        .args(flags)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = within_for(
        Duration::from_secs(20),
        "a refused config ends the process",
        out,
    )
    .await
    .expect("spawning the conformance server");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// CVE-2020-28481 (socket.io < 2.4.0 echoed every origin): CORS `*` with
/// credentials is refused when the server is built, so `https://evil.example`
/// is never echoed with `Access-Control-Allow-Credentials: true` under `Any`;
/// without credentials `Any` answers `*`, which browsers never combine with
/// cookies. Reflecting the origin is its own option (`--cors-origin true`).
#[tokio::test]
async fn cors_any_with_credentials_is_refused_when_the_server_is_built() {
    if std::env::var_os("RSIO_TEST_URL").is_some() {
        eprintln!("SKIPPED: spawns its own servers (RSIO_TEST_URL is set)");
        return;
    }
    let (code, stderr) = refused_at_startup(&["--cors-origin", "*", "--cors-credentials"]).await;
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("cannot be combined with credentials"),
        "the error says why: {stderr}"
    );

    let evil = [("Origin", "https://evil.example")];
    let handshake = eio_path("transport=polling");
    let any = Server::with_flags("cors_any", &["--cors-origin", "*"])
        .await
        .expect("spawned");
    let res = any.request("GET", &handshake, &evil, None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(res.header("access-control-allow-credentials"), None);

    let reflect = Server::with_flags(
        "cors_reflect",
        &["--cors-origin", "true", "--cors-credentials"],
    )
    .await
    .expect("spawned");
    let res = reflect.request("GET", &handshake, &evil, None).await;
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://evil.example")
    );
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
}

/// One Socket.IO connection to `/handshake` over polling with `headers` on every
/// request; the handshake's JSON view the server emits.
async fn handshake_seen(srv: &Server, headers: &[(&str, &str)]) -> serde_json::Value {
    let open = srv
        .request("GET", "/socket.io/?EIO=4&transport=polling", headers, None)
        .await;
    assert_eq!(open.status, 200, "{}", open.text());
    let sid = parse_open(&open.text())["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let res = srv
        .request("POST", &path, headers, Some(b"40/handshake,"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    within("the handshake event", async {
        loop {
            let res = srv.request("GET", &path, headers, None).await;
            assert_eq!(res.status, 200, "{}", res.text());
            for packet in res.text().split('\x1e') {
                if let Some(json) = packet.strip_prefix("42/handshake,") {
                    let event: serde_json::Value = serde_json::from_str(json).unwrap();
                    assert_eq!(event[0], "handshake");
                    return event[1].clone();
                }
            }
        }
    })
    .await
}

/// `handshake.address()` and `secure()` believe `X-Forwarded-For` and
/// `X-Forwarded-Proto` only from a trusted proxy (`--trust-proxy`); otherwise
/// any client could claim another address.
#[tokio::test]
async fn x_forwarded_for_and_proto_count_only_with_trust_proxy() {
    let test = "x_forwarded_for_and_proto_count_only_with_trust_proxy";
    let Some(direct) = Server::with_flags(test, &[]).await else {
        return;
    };
    let Some(proxied) = Server::with_flags(test, &["--trust-proxy"]).await else {
        return;
    };
    let forged = [
        ("X-Forwarded-For", "6.6.6.6, 203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
    ];
    let seen = handshake_seen(&direct, &forged).await;
    assert_eq!(seen["address"], "127.0.0.1", "{seen}");
    assert_eq!(seen["secure"], false, "{seen}");

    // Behind the proxy: the entry it wrote (the last), not one the client sent.
    let seen = handshake_seen(&proxied, &forged).await;
    assert_eq!(seen["address"], "203.0.113.7", "{seen}");
    assert_eq!(seen["secure"], true, "{seen}");
    // A proxy that names no address leaves the peer's.
    let seen = handshake_seen(&proxied, &[]).await;
    assert_eq!(seen["address"], "127.0.0.1", "{seen}");
    assert_eq!(seen["secure"], false, "{seen}");
}
