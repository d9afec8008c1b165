//! A small HTTP/1.1 client: request heads and response parsing (Content-Length, chunked,
//! or until close), so that tests can also make slow, chunked and cancelled requests.

use std::io;
use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Request line and headers (`Host`, `Connection: close`, `Content-Length` when `body_len`).
pub fn request_head(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body_len: Option<usize>,
) -> String {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    match body_len {
        Some(n) if !chunked => head.push_str(&format!("Content-Length: {n}\r\n")),
        None if !chunked && (method == "POST" || method == "PUT") => {
            head.push_str("Content-Length: 0\r\n")
        }
        _ => {}
    }
    head.push_str("\r\n");
    head
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

pub async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    if line.len() > 64 * 1024 {
        return Err(bad("header line too long"));
    }
    let s = String::from_utf8(line).map_err(|_| bad("non-UTF-8 header line"))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one HTTP/1.1 response (skipping `1xx`); body framed by Content-Length, chunked
/// transfer encoding, or connection close.
pub async fn read_response<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    head_only: bool,
) -> io::Result<Response> {
    loop {
        let status_line = read_line(r).await?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(r).await?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let mut res = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 {
            return Ok(res);
        }
        let chunked = res
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let size_line = read_line(r).await?;
                let size_hex = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    // trailers
                    while !read_line(r).await?.is_empty() {}
                    break;
                }
                let start = res.body.len();
                res.body.resize(start + size, 0);
                r.read_exact(&mut res.body[start..]).await?;
                let crlf = read_line(r).await?;
                if !crlf.is_empty() {
                    return Err(bad("missing CRLF after chunk"));
                }
            }
        } else if let Some(len) = res.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| bad(format!("bad content-length {len:?}")))?;
            res.body.resize(len, 0);
            r.read_exact(&mut res.body).await?;
        } else {
            r.read_to_end(&mut res.body).await?;
        }
        return Ok(res);
    }
}
