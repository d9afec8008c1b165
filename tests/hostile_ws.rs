//! Hostile WebSocket inputs on the Engine.IO endpoint (raw frames, odd handshake headers,
//! a second WebSocket for a session): each is answered by a clear error, and the server keeps
//! serving fresh clients afterwards. HTTP-level inputs are in `hostile_http.rs`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A fresh WebSocket session on `/engine.io/` still echoes.
async fn assert_still_serving(srv: &Server) {
    let (mut ws, _) = srv.ws_session().await;
    ws.send_text("4still serving").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4still serving");
}

/// A raw WebSocket session: the connection after `101`, its open packet read.
async fn raw_session(srv: &Server) -> BufReader<TcpStream> {
    let mut conn = raw_ws_connect(srv, "EIO=4&transport=websocket").await;
    let (op, open) = within("open packet", raw_ws_read_frame(&mut conn))
        .await
        .expect("open packet frame");
    assert_eq!(op, 1, "open packet is a text frame");
    parse_open(std::str::from_utf8(&open).unwrap());
    conn
}

/// A masked client frame (all-zero mask) with the first header byte given as is
/// (FIN, RSV bits, opcode).
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = raw_ws_frame_header(first & 0x0f, payload.len());
    f[0] = first;
    f.extend_from_slice(payload);
    f
}

/// How the server ended a raw WebSocket.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// close frame with this status code (`None`: a close frame without a code)
    Close(Option<u16>),
    /// EOF or reset without a close frame
    Dropped,
}

/// Reads until the server closes, skipping Engine.IO heartbeat pings and control frames;
/// any other data frame is unexpected.
async fn raw_wait_closed<R: AsyncRead + Unpin>(rd: &mut R, limit: Duration) -> Ended {
    within_for(limit, "server closes the WebSocket", async {
        loop {
            match raw_ws_read_frame(rd).await {
                None => return Ended::Dropped,
                Some((8, p)) if p.len() >= 2 => {
                    return Ended::Close(Some(u16::from_be_bytes([p[0], p[1]])))
                }
                Some((8, _)) => return Ended::Close(None),
                Some((1, p)) if p == b"2" => continue,
                Some((9 | 10, _)) => continue,
                Some((op, p)) => panic!(
                    "unexpected frame (opcode {op}) before the close: {:?}",
                    String::from_utf8_lossy(&p)
                ),
            }
        }
    })
    .await
}

/// Sends one raw frame on a fresh session and returns how the server ended it.
async fn send_bad_frame(srv: &Server, frame: &[u8]) -> Ended {
    let mut conn = raw_session(srv).await;
    // the server may close before reading all of it
    let _ = conn.get_mut().write_all(frame).await;
    raw_wait_closed(&mut conn, Duration::from_secs(2)).await
}

// ---------------------------------------------------------------------------------------------
// 4. reserved bits (CVE-2022-21676)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn frames_with_rsv2_or_rsv3_are_closed_with_1002() {
    let srv = Server::start().await;
    for (name, first) in [("RSV2", 0x80 | 0x20 | 1), ("RSV3", 0x80 | 0x10 | 1)] {
        let ended = send_bad_frame(&srv, &raw_frame(first, b"4hello")).await;
        assert!(
            matches!(ended, Ended::Close(Some(1002)) | Ended::Dropped),
            "{name}: {ended:?}"
        );
    }
    srv.wait_clients(0).await;
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 5. fragmentation (CVE-2026-48779)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn many_tiny_continuation_frames_over_the_limit_are_closed_with_1009() {
    let Some(srv) = Server::with_flags(
        "many_tiny_continuation_frames_over_the_limit_are_closed_with_1009",
        &["--max-http-buffer-size", "10000"],
    )
    .await
    else {
        return;
    };
    let conn = raw_session(&srv).await;
    let (mut rd, mut wr) = conn.into_inner().into_split();
    // a text frame without FIN, then 20 000 one-byte continuation frames (never FIN)
    let mut data = raw_frame(0x01, b"4");
    for _ in 0..20_000 {
        data.extend(raw_frame(0x00, b"a"));
    }
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(4096) {
            wr.write_all(chunk).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let started = Instant::now();
    let ended = raw_wait_closed(&mut rd, STEP).await;
    writer.abort();
    assert_eq!(
        ended,
        Ended::Close(Some(1009)),
        "after {:?}",
        started.elapsed()
    );
    srv.wait_clients(0).await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn fragments_within_the_limit_and_one_byte_writes_are_echoed() {
    let srv = Server::start().await;
    let mut conn = raw_session(&srv).await;
    // "4hello" as 6 one-byte fragments, every byte of it written on its own
    let mut data = Vec::new();
    for (i, b) in b"4hello".iter().enumerate() {
        let fin = if i == 5 { 0x80 } else { 0 };
        let op = if i == 0 { 1 } else { 0 };
        data.extend(raw_frame(fin | op, &[*b]));
    }
    for b in data {
        conn.get_mut().write_all(&[b]).await.unwrap();
        conn.get_mut().flush().await.unwrap();
        sleep_ms(1).await;
    }
    let echo = within("echo of the fragmented message", async {
        loop {
            match raw_ws_read_frame(&mut conn).await {
                Some((1, p)) if p == b"2" => continue,
                other => return other,
            }
        }
    })
    .await;
    assert_eq!(echo, Some((1, b"4hello".to_vec())));
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 7. handshake headers (CVE-2021-32640)
// ---------------------------------------------------------------------------------------------

/// Upgrade request with `extra` headers; returns the status line, headers and connection.
async fn upgrade_with(srv: &Server, extra: &str) -> (String, Vec<String>, BufReader<TcpStream>) {
    let mut stream = srv.connect().await;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
        eio_path("transport=websocket"),
        srv.addr
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let status = within("upgrade status", read_line(&mut reader))
        .await
        .expect("status line");
    let mut headers = Vec::new();
    loop {
        let line = within("upgrade headers", read_line(&mut reader))
            .await
            .expect("header line");
        if line.is_empty() {
            break;
        }
        headers.push(line.to_ascii_lowercase());
    }
    (status, headers, reader)
}

/// After a `101`: the open packet comes and a message is echoed.
async fn assert_raw_session_works(mut conn: BufReader<TcpStream>) {
    let (op, open) = within("open packet", raw_ws_read_frame(&mut conn))
        .await
        .expect("open packet frame");
    assert_eq!(op, 1);
    parse_open(std::str::from_utf8(&open).unwrap());
    conn.get_mut()
        .write_all(&raw_frame(0x81, b"4echo"))
        .await
        .unwrap();
    let echo = within("echo", async {
        loop {
            match raw_ws_read_frame(&mut conn).await {
                Some((1, p)) if p == b"2" => continue,
                other => return other,
            }
        }
    })
    .await;
    assert_eq!(echo, Some((1, b"4echo".to_vec())));
}

#[tokio::test]
async fn long_sec_websocket_protocol_is_answered_quickly() {
    let srv = Server::start().await;
    // 8 KB of empty list elements and whitespace, then a token
    let protocols = format!("{}chat", ", \t,".repeat(2048));
    let started = Instant::now();
    let (status, headers, conn) =
        upgrade_with(&srv, &format!("Sec-WebSocket-Protocol: {protocols}\r\n")).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "answered after {elapsed:?}"
    );
    if srv.is_external() {
        // Node (ws) parses the list and may refuse it with 400; rsio's answer is below.
        assert!(
            status.contains(" 101") || status.contains(" 400"),
            "{status:?}"
        );
        return;
    }
    // Engine.IO uses no subprotocol, so rsio never parses the header: the
    // upgrade succeeds and no protocol is chosen (RFC 6455 4.2.2: the server
    // sends no `Sec-WebSocket-Protocol`).
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert!(
        !headers
            .iter()
            .any(|h| h.starts_with("sec-websocket-protocol")),
        "{headers:?}"
    );
    assert_raw_session_works(conn).await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn malformed_sec_websocket_extensions_is_ignored() {
    let srv = Server::start().await;
    let (status, headers, conn) = upgrade_with(
        &srv,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=abc,,;;;\r\n\
         Sec-WebSocket-Extensions: ;=;permessage-deflate;server_no_context_takeover=\"\r\n",
    )
    .await;
    assert!(status.contains(" 101"), "status line {status:?}");
    // no compression is negotiated from garbage
    assert!(
        !headers
            .iter()
            .any(|h| h.starts_with("sec-websocket-extensions")),
        "{headers:?}"
    );
    assert_raw_session_works(conn).await;
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 8. a second WebSocket for a session
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn second_websocket_for_an_upgraded_session_is_refused() {
    // Node answers `101` and closes the socket at once ("transport had already been
    // upgraded"); a plain 400 would do as well: `assert_ws_refused` takes either.
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    let query = format!("EIO=4&transport=websocket&sid={sid}");
    let mut ws = srv.ws(&query).await;
    ws.send_text("2probe").await;
    assert_eq!(ws.recv_text().await, "3probe");
    ws.send_text("5").await;
    ws.send_text("4upgraded").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4upgraded");

    srv.assert_ws_refused(&query).await;
    ws.send_text("4first still works").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4first still works");
    assert_eio_error(&srv.poll(&sid).await, 400, 3, "Bad request");
    ws.send_text("4and again").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4and again");
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn second_websocket_for_a_websocket_session_is_refused() {
    let srv = Server::start().await;
    let (mut ws, open) = srv.ws_session().await;
    let query = format!(
        "EIO=4&transport=websocket&sid={}",
        open["sid"].as_str().unwrap()
    );
    // the second socket must not take the session over, even with a probe
    match srv.try_ws(&query).await {
        Err(_) => {}
        Ok(mut second) => {
            second.send_text_lossy("2probe").await;
            match second.recv_any().await {
                None | Some(Frame::Close(_)) => {}
                Some(other) => panic!("second WebSocket answered {other:?}"),
            }
        }
    }
    ws.send_text("4first still works").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4first still works");
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 10. invalid UTF-8, 11. control frames (CVE-2016-10518), 13. unknown packet type
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_the_session() {
    let srv = Server::start().await;
    let ended = send_bad_frame(&srv, &raw_frame(0x81, b"4\xff\xfe")).await;
    // RFC 6455 7.4.1: 1007, data inconsistent with the message type
    assert!(matches!(ended, Ended::Close(Some(1007))), "{ended:?}");
    srv.wait_clients(0).await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn ping_frame_with_125_bytes_gets_the_same_payload_back() {
    let srv = Server::start().await;
    let mut conn = raw_session(&srv).await;
    let payload: Vec<u8> = (0..125u8).map(|i| i.wrapping_mul(7)).collect();
    conn.get_mut()
        .write_all(&raw_frame(0x89, &payload))
        .await
        .unwrap();
    let pong = within("pong", async {
        loop {
            match raw_ws_read_frame(&mut conn).await {
                Some((1, p)) if p == b"2" => continue,
                other => return other,
            }
        }
    })
    .await;
    assert_eq!(pong, Some((10, payload)));
    // the session goes on
    conn.get_mut()
        .write_all(&raw_frame(0x81, b"4after ping"))
        .await
        .unwrap();
    let echo = within("echo after ping", async {
        loop {
            match raw_ws_read_frame(&mut conn).await {
                Some((1, p)) if p == b"2" => continue,
                other => return other,
            }
        }
    })
    .await;
    assert_eq!(echo, Some((1, b"4after ping".to_vec())));
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn ping_frame_over_125_bytes_is_closed_with_1002() {
    let srv = Server::start().await;
    let ended = send_bad_frame(&srv, &raw_frame(0x89, &[b'p'; 126])).await;
    assert_eq!(ended, Ended::Close(Some(1002)));
    // a fragmented ping is a protocol error too
    let ended = send_bad_frame(&srv, &raw_frame(0x09, b"ping")).await;
    assert_eq!(ended, Ended::Close(Some(1002)));
    srv.wait_clients(0).await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn unknown_packet_type_9_over_websocket_closes_the_session() {
    let srv = Server::start().await;
    let (mut ws, _) = srv.ws_session().await;
    srv.wait_clients(1).await;
    ws.send_text("9x").await;
    ws.expect_closed().await;
    srv.wait_clients(0).await;
    assert_still_serving(&srv).await;
}
