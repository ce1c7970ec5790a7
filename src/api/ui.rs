//! The operator UI from `PEAT_UI_DIR`, served at `/_/` with a single-page-app fallback.
//!
//! Public like upstream: the UI holds no data of its own and calls the authenticated API.

use std::path::{Component, Path, PathBuf};

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiError, AppState};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    if state.ui_dir.is_none() {
        return Router::new();
    }
    Router::new()
        .route(
            "/_",
            get(|| async { axum::response::Redirect::permanent("/_/") }),
        )
        .route("/_/", get(serve))
        .route("/_/{*path}", get(serve))
}

async fn serve(State(state): State<AppState>, uri: Uri) -> Response {
    let Some(root) = state.ui_dir.as_deref() else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response();
    };
    let rel = uri.path().trim_start_matches("/_/");
    let Some(rel) = safe_relative(rel) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into_response();
    };
    let file = root.join(&rel);
    let target = match tokio::fs::metadata(&file).await {
        Ok(m) if m.is_file() => file,
        Ok(m) if m.is_dir() => file.join("index.html"),
        // Client-side routes have no extension; missing assets stay 404.
        _ if rel.extension().is_none() => root.join("index.html"),
        _ => {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file")
                .into_response()
        }
    };
    match tokio::fs::read(&target).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&target))], bytes).into_response(),
        Err(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into_response(),
    }
}

/// Only plain, downward path segments; anything else could leave the UI directory.
fn safe_relative(rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| p.to_path_buf())
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_downward_paths_are_served() {
        assert!(safe_relative("app/main.js").is_some());
        assert!(safe_relative("").is_some());
        for bad in ["../etc/passwd", "a/../../b", "/etc/passwd", "./x"] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }
}
