//! Node's `serveClient`: the browser bundles of `socket.io-client`, served at
//! `<path>socket.io.js` (and `.min.js`, `.esm.min.js`, their source maps) with
//! the client's version as `ETag`, `304 Not Modified` on a matching
//! `If-None-Match`, `Cache-Control: public, max-age=0`, and gzip when the
//! request accepts it.
//!
//! The bundle is not part of rsio: it is read from the `dist/` folder of an
//! installed npm package `socket.io-client` (its version comes from the
//! `package.json` next to `dist/`).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use rsio::http::client_bundle::ClientBundle;
//! let bundle = ClientBundle::from_dir("node_modules/socket.io-client/dist")?;
//! let app = axum::Router::new().merge(bundle.router("/socket.io/"));
//! # let _ = app; Ok(()) }
//! ```

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};

/// The files served, as named in `socket.io-client/dist/`.
pub const FILES: [&str; 6] = [
    "socket.io.js",
    "socket.io.js.map",
    "socket.io.min.js",
    "socket.io.min.js.map",
    "socket.io.esm.min.js",
    "socket.io.esm.min.js.map",
];

/// What a 404 says when the bundle was not installed, unless
/// [`ClientBundle::from_dir_with_hint`] says otherwise.
pub const DEFAULT_MISSING_HINT: &str =
    "install it with `scripts/setup` (npm ci in tests/js installs the pinned socket.io-client)";

struct Asset {
    body: Bytes,
    gzip: OnceLock<Option<Bytes>>,
    is_map: bool,
}

impl Asset {
    fn gzipped(&self) -> Option<&Bytes> {
        self.gzip
            .get_or_init(|| {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&self.body).ok()?;
                enc.finish().ok().map(Bytes::from)
            })
            .as_ref()
    }
}

struct Inner {
    dir: PathBuf,
    assets: HashMap<&'static str, Asset>,
    missing: Vec<&'static str>,
    version: String,
    etag: HeaderValue,
    hint: String,
}

/// The client bundles read from one `dist/` folder, ready to serve. Cheap to clone.
#[derive(Clone)]
pub struct ClientBundle(Arc<Inner>);

impl std::fmt::Debug for ClientBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBundle")
            .field("dir", &self.0.dir)
            .field("version", &self.0.version)
            .field("missing", &self.0.missing)
            .finish()
    }
}

impl ClientBundle {
    /// Reads the bundles from `dir` (the `dist/` folder of `socket.io-client`).
    /// Files that are not there are answered with 404 (a warning is logged
    /// now); any other read error is returned.
    pub fn from_dir(dir: impl AsRef<Path>) -> std::io::Result<ClientBundle> {
        ClientBundle::from_dir_with_hint(dir, DEFAULT_MISSING_HINT)
    }

    /// [`ClientBundle::from_dir`], with `hint` as the advice a 404 (and the
    /// startup warning) gives when files are missing.
    pub fn from_dir_with_hint(
        dir: impl AsRef<Path>,
        hint: impl Into<String>,
    ) -> std::io::Result<ClientBundle> {
        let dir = dir.as_ref().to_path_buf();
        let mut assets = HashMap::new();
        let mut missing = Vec::new();
        for name in FILES {
            match std::fs::read(dir.join(name)) {
                Ok(body) => {
                    assets.insert(
                        name,
                        Asset {
                            body: Bytes::from(body),
                            gzip: OnceLock::new(),
                            is_map: name.ends_with(".map"),
                        },
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(name),
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", dir.join(name).display()),
                    ))
                }
            }
        }
        let version = read_version(&dir).unwrap_or_else(|| content_tag(&assets));
        let etag = HeaderValue::from_str(&format!("\"{version}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"unknown\""));
        let bundle = ClientBundle(Arc::new(Inner {
            dir,
            assets,
            missing,
            version,
            etag,
            hint: hint.into(),
        }));
        if !bundle.0.missing.is_empty() {
            tracing::warn!(
                target: "rsio::http",
                "socket.io client bundle: {} missing in {} ({}); they will be answered with 404",
                bundle.0.missing.join(", "),
                bundle.0.dir.display(),
                bundle.0.hint
            );
        }
        Ok(bundle)
    }

    /// The client's version (from `package.json`; a content hash without one).
    pub fn version(&self) -> &str {
        &self.0.version
    }

    /// The folder the bundles were read from.
    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// The files of [`FILES`] that were not found.
    pub fn missing(&self) -> &[&'static str] {
        &self.0.missing
    }

    /// Whether every file of [`FILES`] was found.
    pub fn is_complete(&self) -> bool {
        self.0.missing.is_empty()
    }

    /// Routes `<path>socket.io.js` etc. (`path` as Node's `path` option, e.g.
    /// `/socket.io/`), to merge into the application's router.
    pub fn router(&self, path: &str) -> Router {
        let mut prefix = path.trim_end_matches('/').to_string();
        if !prefix.starts_with('/') {
            prefix.insert(0, '/');
        }
        let mut router = Router::new();
        for name in FILES {
            let bundle = self.clone();
            router = router.route(
                &format!("{}/{name}", prefix.trim_end_matches('/')),
                get(move |headers: HeaderMap| {
                    let bundle = bundle.clone();
                    async move { bundle.respond(name, &headers) }
                }),
            );
        }
        router
    }

    /// The response to a GET of `name` (one of [`FILES`]) with these request headers.
    pub fn respond(&self, name: &str, headers: &HeaderMap) -> Response {
        let Some(asset) = self.0.assets.get(name) else {
            let body = format!(
                "socket.io client bundle not found: {} does not exist; {}\n",
                self.0.dir.join(name).display(),
                self.0.hint
            );
            return (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                body,
            )
                .into_response();
        };
        if etag_matches(headers, &self.0.version) {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, self.0.etag.clone())
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::NOT_MODIFIED.into_response());
        }
        let content_type = if asset.is_map {
            "application/json; charset=utf-8"
        } else {
            "application/javascript; charset=utf-8"
        };
        let builder = Response::builder()
            .status(StatusCode::OK)
            .header(header::CACHE_CONTROL, "public, max-age=0")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ETAG, self.0.etag.clone())
            .header(header::VARY, "Accept-Encoding");
        let (builder, body) = match accepts_gzip(headers).then(|| asset.gzipped()).flatten() {
            Some(gz) => (builder.header(header::CONTENT_ENCODING, "gzip"), gz.clone()),
            None => (builder, asset.body.clone()),
        };
        builder
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

/// The `version` of the `package.json` next to `dist/`.
fn read_version(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.parent()?.join("package.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let version = json.get("version")?.as_str()?;
    // A version goes inside a quoted ETag: keep it to safe characters.
    let ok = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+_".contains(c));
    ok.then(|| version.to_string())
}

/// A stand-in version when there is no `package.json`: a hash of the contents.
fn content_tag(assets: &HashMap<&'static str, Asset>) -> String {
    // FNV-1a, stable across runs and processes (every worker gives the same tag).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in FILES {
        if let Some(a) = assets.get(name) {
            for b in name.bytes().chain(a.body.iter().copied()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    format!("{h:016x}")
}

/// Node's check: `If-None-Match` is `"<version>"` or `W/"<version>"` (rsio also
/// accepts it inside a list, and `*`).
fn etag_matches(headers: &HeaderMap, version: &str) -> bool {
    let strong = format!("\"{version}\"");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == strong)
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if !coding.eq_ignore_ascii_case("gzip") && coding != "*" {
                return false;
            }
            !parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            })
        })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// A fresh folder `<tmp>/rsio-bundle-<n>/{package.json, dist/…}`.
    fn fake_package(version: Option<&str>, files: &[&str]) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "rsio-bundle-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let dist = root.join("dist");
        std::fs::create_dir_all(&dist).unwrap();
        if let Some(v) = version {
            std::fs::write(
                root.join("package.json"),
                format!(r#"{{"name":"socket.io-client","version":"{v}"}}"#),
            )
            .unwrap();
        }
        for f in files {
            std::fs::write(dist.join(f), format!("/* {f} */ var io = 1;\n").repeat(20)).unwrap();
        }
        dist
    }

    async fn get(
        router: &Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = http::Request::builder().uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    #[tokio::test]
    async fn serves_the_bundle_with_its_version_as_etag() {
        let dist = fake_package(Some("4.8.4"), &FILES);
        let bundle = ClientBundle::from_dir(&dist).unwrap();
        assert!(bundle.is_complete());
        assert_eq!(bundle.version(), "4.8.4");
        let router = bundle.router("/socket.io/");
        let (status, h, body) = get(&router, "/socket.io/socket.io.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::ETAG], "\"4.8.4\"");
        assert_eq!(h[header::CACHE_CONTROL], "public, max-age=0");
        assert_eq!(
            h[header::CONTENT_TYPE],
            "application/javascript; charset=utf-8"
        );
        assert!(h.get(header::CONTENT_ENCODING).is_none());
        assert_eq!(body, std::fs::read(dist.join("socket.io.js")).unwrap());

        let (status, h, _) = get(&router, "/socket.io/socket.io.min.js.map?x=1", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "application/json; charset=utf-8");
        let (status, _, _) = get(&router, "/socket.io/socket.io.esm.min.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = get(&router, "/socket.io/other.js", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let _ = std::fs::remove_dir_all(dist.parent().unwrap());
    }

    #[tokio::test]
    async fn answers_304_to_a_matching_if_none_match() {
        let dist = fake_package(Some("4.8.4"), &FILES);
        let router = ClientBundle::from_dir(&dist).unwrap().router("/socket.io");
        for tag in ["\"4.8.4\"", "W/\"4.8.4\"", "\"x\", \"4.8.4\""] {
            let (status, h, body) = get(
                &router,
                "/socket.io/socket.io.min.js",
                &[("if-none-match", tag)],
            )
            .await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{tag}");
            assert_eq!(h[header::ETAG], "\"4.8.4\"");
            assert!(body.is_empty());
        }
        for tag in ["\"4.8.3\"", "4.8.4", "W/\"4.8.5\""] {
            let (status, _, body) = get(
                &router,
                "/socket.io/socket.io.min.js",
                &[("if-none-match", tag)],
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{tag}");
            assert!(!body.is_empty());
        }
        let _ = std::fs::remove_dir_all(dist.parent().unwrap());
    }

    #[tokio::test]
    async fn gzips_when_accepted() {
        let dist = fake_package(Some("1.2.3"), &FILES);
        let router = ClientBundle::from_dir(&dist).unwrap().router("/io/");
        let (status, h, body) = get(
            &router,
            "/io/socket.io.js",
            &[("accept-encoding", "br, gzip;q=0.8")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, std::fs::read(dist.join("socket.io.js")).unwrap());
        let (_, h, _) = get(
            &router,
            "/io/socket.io.js",
            &[("accept-encoding", "gzip;q=0")],
        )
        .await;
        assert!(h.get(header::CONTENT_ENCODING).is_none());
        let _ = std::fs::remove_dir_all(dist.parent().unwrap());
    }

    #[tokio::test]
    async fn missing_files_are_404_with_advice() {
        let dist = fake_package(Some("4.8.4"), &["socket.io.js"]);
        let bundle = ClientBundle::from_dir(&dist).unwrap();
        assert!(!bundle.is_complete());
        assert!(bundle.missing().contains(&"socket.io.min.js"));
        let router = bundle.router("/socket.io/");
        let (status, _, _) = get(&router, "/socket.io/socket.io.js", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let (status, h, body) = get(&router, "/socket.io/socket.io.min.js", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("socket.io.min.js"), "{body}");
        assert!(body.contains("scripts/setup"), "{body}");

        // No folder at all: every file is a 404, nothing fails.
        let none =
            ClientBundle::from_dir_with_hint(dist.join("nowhere"), "run `make client`").unwrap();
        assert_eq!(none.missing().len(), FILES.len());
        let (status, _, body) =
            get(&none.router("/socket.io/"), "/socket.io/socket.io.js", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(String::from_utf8_lossy(&body).contains("make client"));
        let _ = std::fs::remove_dir_all(dist.parent().unwrap());
    }

    #[tokio::test]
    async fn without_package_json_the_etag_is_a_stable_content_hash() {
        let a = fake_package(None, &FILES);
        let b = fake_package(None, &FILES);
        let (va, vb) = (
            ClientBundle::from_dir(&a).unwrap().version().to_string(),
            ClientBundle::from_dir(&b).unwrap().version().to_string(),
        );
        assert_eq!(va, vb);
        assert_eq!(va.len(), 16);
        let _ = std::fs::remove_dir_all(a.parent().unwrap());
        let _ = std::fs::remove_dir_all(b.parent().unwrap());
    }
}
