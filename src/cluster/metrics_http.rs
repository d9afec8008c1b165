//! The primary's small HTTP server on `--metrics ADDR`: `GET /metrics` (OpenMetrics
//! when the scraper asks for it, as Prometheus does; the Prometheus text format
//! otherwise) and `GET /health`. It runs on the primary's own runtime and only
//! reads [`ClusterMetrics`], so it never holds up the relay.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::body::Body;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::metrics::ClusterMetrics;

/// How long one scrape connection may stay open.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` and serves `/metrics` and `/health` from the current (primary's) runtime.
pub(super) fn serve(addr: SocketAddr, metrics: ClusterMetrics) -> std::io::Result<()> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    info!(target: "cluster", "metrics on http://{}/metrics", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(target: "cluster", "metrics accept: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let res = respond(&metrics, &req);
                    async move { Ok::<_, Infallible>(res) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                    Ok(Err(err)) => debug!(target: "cluster", "metrics connection: {err}"),
                    Err(_) => debug!(target: "cluster", "metrics connection: deadline"),
                    Ok(Ok(())) => {}
                }
            });
        }
    });
    Ok(())
}

/// The Prometheus text format (0.0.4) of an OpenMetrics text, for scrapers and tools
/// that do not ask for OpenMetrics (`promtool check metrics`, `curl`): counter
/// families are named with their `_total` suffix, and there is no `# EOF`.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn respond(metrics: &ClusterMetrics, req: &Request<Incoming>) -> Response<Body> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let openmetrics = req.headers().get_all(header::ACCEPT).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.contains("application/openmetrics-text"))
            });
            let text = metrics.render();
            if openmetrics {
                (StatusCode::OK, OPENMETRICS, text)
            } else {
                (StatusCode::OK, PROMETHEUS_TEXT, to_prometheus_text(&text))
            }
        }
        (&Method::GET, "/health") => {
            let (status, body) = metrics.health();
            (status, "text/plain; charset=utf-8", body)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
    };
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_with_their_total_suffix() {
        let m = ClusterMetrics::new(1);
        let text = m.render();
        assert!(
            text.contains("# TYPE rsio_packets_received counter\n"),
            "{text}"
        );
        let plain = to_prometheus_text(&text);
        assert!(plain.contains("# TYPE rsio_packets_received_total counter\n"));
        assert!(plain.contains("# HELP rsio_packets_received_total "));
        assert!(plain.contains("# TYPE rsio_connections gauge\n"));
        assert!(!plain.contains("# EOF"));
    }
}
