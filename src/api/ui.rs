//! The operator UI at `/_/`: embedded in the binary (feature `ui`), or read from
//! `PEAT_UI_DIR` when set (development). Single-page-app fallback for extension-less paths.
//!
//! Public like `/health`: the UI holds no data of its own and calls the authenticated API.
//! Every answer carries a strict Content-Security-Policy; embedded files carry strong ETags
//! and a gzip variant chosen by `Accept-Encoding`.

use std::path::{Component, Path, PathBuf};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

/// One file of the UI as the build script embedded it.
pub(crate) struct EmbeddedAsset {
    pub path: &'static str,
    pub mime: &'static str,
    /// Quoted-less hex of the content hash; also the `?v=` the page links assets with.
    pub etag: &'static str,
    /// The file, gzip-compressed when `gzipped`.
    pub body: &'static [u8],
    pub gzipped: bool,
}

impl EmbeddedAsset {
    /// The file as written: inflated when it is embedded compressed.
    pub(crate) fn raw(&self) -> std::borrow::Cow<'static, [u8]> {
        if !self.gzipped {
            return std::borrow::Cow::Borrowed(self.body);
        }
        // The build writes a bare gzip member: a 10-byte header, deflate, an 8-byte trailer.
        let deflate = self
            .body
            .get(10..self.body.len().saturating_sub(8))
            .unwrap_or_default();
        std::borrow::Cow::Owned(
            miniz_oxide::inflate::decompress_to_vec(deflate).unwrap_or_default(),
        )
    }
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// Scripts, styles and connections from this origin only; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    if state.ui_dir.is_none() && ASSETS.is_empty() {
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

/// What the build embedded: (files, bytes as served to a gzip-capable browser).
pub(crate) fn embedded_payload() -> (usize, usize) {
    let bytes = ASSETS.iter().map(|a| a.body.len()).sum();
    (ASSETS.len(), bytes)
}

async fn serve(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let rel = uri.path().trim_start_matches("/_/");
    let Some(rel) = safe_relative(rel) else {
        return not_found();
    };
    let mut res = match state.ui_dir.as_deref() {
        Some(root) => from_dir(root, &rel).await,
        None => embedded(&rel, uri.query(), &headers),
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

fn embedded(rel: &Path, query: Option<&str>, headers: &HeaderMap) -> Response {
    let rel = rel.to_string_lossy();
    let wanted = if rel.is_empty() { "index.html" } else { &rel };
    let asset = match ASSETS.iter().find(|a| a.path == wanted) {
        Some(a) => a,
        // Client-side routes have no extension; missing assets stay 404.
        None if !wanted.contains('.') => match ASSETS.iter().find(|a| a.path == "index.html") {
            Some(a) => a,
            None => return not_found(),
        },
        None => return not_found(),
    };
    let etag = format!("\"{}\"", asset.etag);
    // A URL that names this exact version never changes; anything else revalidates.
    let versioned = query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("v=")))
        .is_some_and(|v| v == asset.etag);
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut out = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, cache)
        .header(header::VARY, "Accept-Encoding");
    if matches_etag(headers, &etag) {
        return out
            .status(StatusCode::NOT_MODIFIED)
            .body(axum::body::Body::empty())
            .unwrap_or_else(|_| not_found());
    }
    out = out.header(header::CONTENT_TYPE, asset.mime);
    let body = if asset.gzipped && accepts_gzip(headers) {
        out = out.header(header::CONTENT_ENCODING, "gzip");
        axum::body::Body::from(asset.body)
    } else {
        axum::body::Body::from(asset.raw())
    };
    out.body(body).unwrap_or_else(|_| not_found())
}

async fn from_dir(root: &Path, rel: &Path) -> Response {
    let file = root.join(rel);
    let target = match tokio::fs::metadata(&file).await {
        Ok(m) if m.is_file() => file,
        Ok(m) if m.is_dir() => file.join("index.html"),
        _ if rel.extension().is_none() => root.join("index.html"),
        _ => return not_found(),
    };
    match tokio::fs::read(&target).await {
        Ok(bytes) => {
            let tag = Sha256::digest(&bytes);
            let etag = format!("\"{}\"", hex8(&tag));
            (
                [
                    (
                        header::CONTENT_TYPE,
                        super::ui_mime::for_name(
                            &target.file_name().unwrap_or_default().to_string_lossy(),
                        )
                        .to_string(),
                    ),
                    (header::CACHE_CONTROL, "no-cache".to_string()),
                    (header::ETAG, etag),
                ],
                bytes,
            )
                .into_response()
        }
        Err(_) => not_found(),
    }
}

fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into_response()
}

fn hex8(d: &[u8]) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `If-None-Match` with this ETag (or `*`) among its entries.
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

/// `gzip` listed in `Accept-Encoding` without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Only plain, downward path segments; anything else could leave the UI directory.
fn safe_relative(rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| p.to_path_buf())
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

    fn with(name: header::HeaderName, v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn gzip_is_chosen_only_when_acceptable() {
        let ae = header::ACCEPT_ENCODING;
        assert!(accepts_gzip(&with(ae.clone(), "gzip, deflate, br")));
        assert!(accepts_gzip(&with(ae.clone(), "br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with(ae.clone(), "*")));
        assert!(!accepts_gzip(&with(ae.clone(), "gzip;q=0")));
        assert!(!accepts_gzip(&with(ae.clone(), "identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn if_none_match_lists_and_weak_forms_match() {
        let inm = header::IF_NONE_MATCH;
        assert!(matches_etag(&with(inm.clone(), "\"a\", \"b\""), "\"b\""));
        assert!(matches_etag(&with(inm.clone(), "W/\"b\""), "\"b\""));
        assert!(matches_etag(&with(inm.clone(), "*"), "\"b\""));
        assert!(!matches_etag(&with(inm.clone(), "\"a\""), "\"b\""));
    }

    #[cfg(feature = "ui")]
    #[test]
    fn the_embedded_ui_fits_its_budget_and_links_versioned_assets() {
        let (files, bytes) = embedded_payload();
        assert!(files >= 3, "index, script and style are embedded");
        assert!(bytes < 150 * 1024, "UI payload {bytes} B over 150 KB");
        let index = ASSETS.iter().find(|a| a.path == "index.html");
        let index = index.map(EmbeddedAsset::raw).unwrap_or_default();
        let index = String::from_utf8_lossy(&index);
        assert!(
            !index.contains("?v=@"),
            "every ?v=@ marker names an embedded asset"
        );
        let script = ASSETS.iter().find(|a| a.path == "app.js");
        assert!(script.is_some_and(|s| index.contains(&format!("app.js?v={}", s.etag))));
    }

    #[cfg(feature = "ui")]
    #[test]
    fn every_embedded_file_comes_back_whole_for_clients_without_gzip() {
        use sha2::{Digest, Sha256};
        assert!(ASSETS.iter().any(|a| a.gzipped));
        for a in ASSETS {
            let raw = a.raw();
            assert!(!raw.is_empty(), "{}", a.path);
            // The ETag is the hash of the file as written (the page's after its ?v= links).
            assert_eq!(hex8(&Sha256::digest(&raw)), &a.etag[..16], "{}", a.path);
        }
    }
}
