//! permessage-deflate on the Engine.IO WebSocket (`--per-message-deflate`): negotiation,
//! compressed messages both ways, and the limits on what a client may send compressed.

mod common;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A raw WebSocket on `/engine.io/` offering deflate as browsers do: the
/// `Sec-WebSocket-Extensions` answer (lowercase) and the connection after the open packet.
async fn offer_deflate(srv: &Server) -> (Option<String>, BufReader<TcpStream>) {
    let mut stream = srv.connect().await;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        eio_path("transport=websocket"),
        srv.addr
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut conn = BufReader::new(stream);
    let status = within("101", read_line(&mut conn)).await.unwrap();
    assert!(status.contains(" 101"), "{status}");
    let mut answer = None;
    loop {
        let line = within("headers", read_line(&mut conn)).await.unwrap();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("sec-websocket-extensions:") {
            answer = Some(v.trim().to_owned());
        }
    }
    let (first, open) = read_frame(&mut conn).await.expect("open packet");
    assert_eq!(first & 0x4f, 1, "open packet: a plain text frame");
    parse_open(std::str::from_utf8(&open).unwrap());
    (answer, conn)
}

async fn deflate_server(test: &str, extra: &[&str]) -> Option<Server> {
    let mut flags = vec!["--per-message-deflate"];
    flags.extend_from_slice(extra);
    Server::with_flags(test, &flags).await
}

/// Raw deflate with the sync flush's `00 00 ff ff` removed, as a client sends it.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(4 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// A masked client frame with the first header byte as given (FIN, RSV1, opcode).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = raw_ws_frame_header(first & 0x0f, payload.len());
    f[0] = first;
    let key = [0x12, 0x34, 0x56, 0x78];
    let at = f.len() - 4;
    f[at..].copy_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
    f
}

/// One server frame: its first header byte and its payload; `None` at the end.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await.ok()?;
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7f {
        126 => u64::from(r.read_u16().await.ok()?),
        127 => r.read_u64().await.ok()?,
        n => u64::from(n),
    };
    let mut payload = vec![0; len as usize];
    r.read_exact(&mut payload).await.ok()?;
    Some((h[0], payload))
}

/// The next data frame, heartbeat pings skipped.
async fn next_data(conn: &mut BufReader<TcpStream>) -> (u8, Vec<u8>) {
    within("a frame from the server", async {
        loop {
            match read_frame(conn).await {
                Some((first, p)) if first & 0x0f == 1 && p == b"2" => continue,
                Some(f) => return f,
                None => panic!("connection ended"),
            }
        }
    })
    .await
}

/// The payload of a data frame, inflated if RSV1 is set; and whether it was.
fn message((first, payload): (u8, Vec<u8>)) -> (bool, Vec<u8>) {
    assert_eq!(first & 0x80, 0x80, "final frame");
    let compressed = first & 0x40 != 0;
    (
        compressed,
        if compressed {
            inflate(&payload)
        } else {
            payload
        },
    )
}

/// The close code the server ends with.
async fn close_code(conn: &mut BufReader<TcpStream>) -> Option<u16> {
    loop {
        let (first, p) = next_data(conn).await;
        if first & 0x0f == 8 {
            return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
        }
        assert!(first & 0x0f >= 8, "unexpected data frame before the close");
    }
}

#[tokio::test]
async fn deflate_is_answered_only_when_enabled() {
    let Some(srv) = deflate_server("deflate_is_answered_only_when_enabled", &[]).await else {
        return;
    };
    let (answer, _conn) = offer_deflate(&srv).await;
    assert_eq!(answer.as_deref(), Some(ANSWER));
    let Some(plain) = Server::own("deflate_is_answered_only_when_enabled").await else {
        return;
    };
    let (answer, mut conn) = offer_deflate(&plain).await;
    assert_eq!(answer, None, "off by default");
    let big = format!("4{}", "x".repeat(5000));
    conn.get_mut()
        .write_all(&frame(0x81, big.as_bytes()))
        .await
        .unwrap();
    assert!(message(next_data(&mut conn).await) == (false, big.into_bytes()));
}

#[tokio::test]
async fn compressed_text_and_binary_are_echoed_compressed_over_the_threshold() {
    let Some(srv) = deflate_server("compressed_echo", &[]).await else {
        return;
    };
    let (_, mut conn) = offer_deflate(&srv).await;
    let w = conn.get_mut();
    let big = format!("4{}", "hello deflate ".repeat(2000));
    w.write_all(&frame(0xc1, &deflate(big.as_bytes())))
        .await
        .unwrap();
    let (compressed, echo) = message(next_data(&mut conn).await);
    assert!(compressed, "a 28 KB message goes back compressed");
    assert!(echo == big.as_bytes());

    let bin: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
    conn.get_mut()
        .write_all(&frame(0xc2, &deflate(&bin)))
        .await
        .unwrap();
    let (first, payload) = next_data(&mut conn).await;
    assert_eq!(first & 0x0f, 2, "binary");
    assert!(message((first, payload)) == (true, bin));

    // Small: accepted compressed, answered plain (under the 1024-byte threshold).
    conn.get_mut()
        .write_all(&frame(0xc1, &deflate(b"4small")))
        .await
        .unwrap();
    assert_eq!(
        message(next_data(&mut conn).await),
        (false, b"4small".to_vec())
    );
}

#[tokio::test]
async fn fragmented_and_many_small_compressed_messages_are_read_in_order() {
    let Some(srv) = deflate_server("fragmented_and_many_small", &[]).await else {
        return;
    };
    let (_, mut conn) = offer_deflate(&srv).await;
    let big = format!("4{}", "fragmented ".repeat(3000));
    let z = deflate(big.as_bytes());
    let (a, b) = z.split_at(z.len() / 3);
    let mut out = frame(0x41, a); // RSV1, text, not final
    out.extend(frame(0x89, b"")); // a ping in between
    out.extend(frame(0x80, b)); // final continuation
    for i in 0..200 {
        out.extend(frame(0xc1, &deflate(format!("4m{i}").as_bytes())));
    }
    conn.get_mut().write_all(&out).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 201 {
        let (first, p) = next_data(&mut conn).await;
        if first & 0x0f == 0xa {
            continue; // the pong
        }
        got.push(message((first, p)).1);
    }
    assert!(
        got[0] == big.as_bytes(),
        "the fragmented message ({} bytes back)",
        got[0].len()
    );
    for (i, m) in got[1..].iter().enumerate() {
        assert_eq!(String::from_utf8_lossy(m), format!("4m{i}"));
    }
}

#[tokio::test]
async fn a_zip_bomb_is_closed_with_1009() {
    let Some(srv) = deflate_server("zip_bomb", &["--max-http-buffer-size", "100000"]).await else {
        return;
    };
    // 20 MB of one byte: about 20 KB compressed. Made before connecting: the
    // server's ping timeout is short.
    let bomb = deflate(&vec![b'4'; 20 << 20]);
    assert!(bomb.len() < 100_000);
    let ok = vec![b'4'; 100_000];
    let ok_z = deflate(&ok);
    let (_, mut conn) = offer_deflate(&srv).await;
    let _ = conn.get_mut().write_all(&frame(0xc1, &bomb)).await;
    assert_eq!(within("close", close_code(&mut conn)).await, Some(1009));
    // Exactly at the limit is still accepted.
    let (_, mut conn) = offer_deflate(&srv).await;
    conn.get_mut().write_all(&frame(0xc1, &ok_z)).await.unwrap();
    assert!(message(next_data(&mut conn).await).1 == ok);
}

#[tokio::test]
async fn misused_rsv1_and_bad_compressed_data_are_closed() {
    let Some(srv) = deflate_server("misused_rsv1", &[]).await else {
        return;
    };
    for (bad, code) in [
        (frame(0xc9, b""), 1002),                 // RSV1 on a ping
        (frame(0xc0, b"x"), 1002),                // RSV1 on a lone continuation
        (frame(0xc1, &[0xff, 0xff, 0xff]), 1007), // not deflate data
    ] {
        let (_, mut conn) = offer_deflate(&srv).await;
        let _ = conn.get_mut().write_all(&bad).await;
        assert_eq!(close_code(&mut conn).await, Some(code), "{bad:02x?}");
    }
}
