//! The Admin UI page under `/admin/`, from the npm package's `ui/dist` (installed
//! pinned by `scripts/setup`, never vendored). The files are read once, at start:
//! only those are served, so no request path reaches the file system.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    extract::Path as UrlPath,
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Router,
};
use bytes::Bytes;
use http::{header, StatusCode};

/// Where the page is looked for without `--admin-ui-dist`, in order: a
/// `node_modules` in the working directory (`npm install @socket.io/admin-ui@0.5.1`
/// there), the `admin-ui/` of a checkout run from its root (what `scripts/setup`
/// installs), and that of the checkout this binary was built from.
pub const DEFAULT_DIRS: [&str; 3] = [
    "node_modules/@socket.io/admin-ui/ui/dist",
    "admin-ui/node_modules/@socket.io/admin-ui/ui/dist",
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/admin-ui/node_modules/@socket.io/admin-ui/ui/dist"
    ),
];

/// Why the page's files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No `index.html` in any of the directories tried.
    #[error("no Admin UI files (index.html) in {0}: run scripts/setup, or `npm install @socket.io/admin-ui@0.5.1` and pass --admin-ui-dist <node_modules/@socket.io/admin-ui/ui/dist>")]
    NotFound(String),
    /// A file or directory of the page could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
}

/// The directory to serve: `dir` if given, else the first of [`DEFAULT_DIRS`]
/// that has an `index.html`.
pub fn find_dist(dir: Option<&Path>) -> Result<PathBuf, UiError> {
    let candidates: Vec<PathBuf> = match dir {
        Some(d) => vec![d.to_path_buf()],
        None => DEFAULT_DIRS.iter().map(PathBuf::from).collect(),
    };
    candidates
        .iter()
        .find(|d| d.join("index.html").is_file())
        .cloned()
        .ok_or_else(|| {
            UiError::NotFound(
                candidates
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// The page's files by path under `/admin/`, with their content types.
pub type Files = Arc<HashMap<String, (Bytes, &'static str)>>;

/// Reads every file under `dir` but source maps (they are not needed to run it).
pub fn load(dir: &Path) -> Result<Files, UiError> {
    let mut files = HashMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&path).map_err(|e| UiError::Read(path.clone(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| UiError::Read(path.clone(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let full = entry.path();
            let rel = format!("{prefix}{name}");
            if full.is_dir() {
                stack.push((full, format!("{rel}/")));
            } else if !name.ends_with(".map") {
                let body = std::fs::read(&full).map_err(|e| UiError::Read(full.clone(), e))?;
                files.insert(rel, (Bytes::from(body), content_type(&name)));
            }
        }
    }
    Ok(Arc::new(files))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// `/admin` (a redirect), `/admin/` (the page) and `/admin/<file>`.
pub fn router(files: Files) -> Router {
    let index = files.clone();
    Router::new()
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route(
            "/admin/",
            get(move || {
                let files = index.clone();
                async move { serve(&files, "index.html") }
            }),
        )
        .route(
            "/admin/{*path}",
            get(move |UrlPath(path): UrlPath<String>| {
                let files = files.clone();
                async move { serve(&files, &path) }
            }),
        )
}

fn serve(files: &Files, path: &str) -> Response {
    match files.get(path) {
        Some((body, kind)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get_path(app: Router, path: &str) -> (StatusCode, String, Vec<u8>) {
        let res = app
            .oneshot(
                http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = res.status();
        let kind = res
            .headers()
            .get(header::CONTENT_TYPE)
            .or_else(|| res.headers().get(header::LOCATION))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, kind, body.to_vec())
    }

    #[tokio::test]
    async fn serves_the_loaded_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("js")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<html>").unwrap();
        std::fs::write(dir.path().join("js/app.js"), "x()").unwrap();
        std::fs::write(dir.path().join("js/app.js.map"), "{}").unwrap();
        assert_eq!(find_dist(Some(dir.path())).unwrap(), dir.path());
        assert!(matches!(
            find_dist(Some(&dir.path().join("js"))),
            Err(UiError::NotFound(_))
        ));
        let app = router(load(dir.path()).unwrap());
        let (s, kind, body) = get_path(app.clone(), "/admin/").await;
        assert_eq!(
            (s, kind.as_str(), body.as_slice()),
            (StatusCode::OK, "text/html; charset=utf-8", &b"<html>"[..])
        );
        let (s, kind, _) = get_path(app.clone(), "/admin/js/app.js").await;
        assert_eq!(
            (s, kind.as_str()),
            (StatusCode::OK, "text/javascript; charset=utf-8")
        );
        let (s, loc, _) = get_path(app.clone(), "/admin").await;
        assert_eq!(
            (s, loc.as_str()),
            (StatusCode::PERMANENT_REDIRECT, "/admin/")
        );
        for missing in [
            "/admin/js/app.js.map",
            "/admin/../Cargo.toml",
            "/admin/js/../../x",
        ] {
            assert_eq!(
                get_path(app.clone(), missing).await.0,
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
    }
}
