//! `GET /backup`: a consistent snapshot of the running gateway (both stores and the sealed
//! KEK file), streamed to the admin; `peat-gateway backup` calls it.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::book::{doc, Access, RouteBook};
use super::extract::Caller;
use super::{ApiError, AppState};

pub(crate) fn routes(book: RouteBook) -> RouteBook {
    book.get(
        "/backup",
        backup,
        doc(
            "A consistent snapshot of both stores (and the TPM-sealed KEK file) while the gateway runs, as one file for `peat-gateway restore`; audited",
            Access::GatewayAdmin,
            None,
            200,
        ),
    )
}

async fn backup(State(s): State<AppState>, Caller(p): Caller) -> Result<Response, ApiError> {
    let actor = s.tenancy.authorize_admin(&p, "take a backup").await?;
    let dir = s.tenancy.store().dir().to_path_buf();
    let id = crate::tenant::random_token_id()?;
    let work = dir.join(format!(".backup-{id}"));
    let dest = dir.join(format!(".backup-{id}.pgbk"));
    let (state, outbox, kek_id) = (
        s.tenancy.store().clone(),
        s.cdc.outbox().clone(),
        s.keys.kek_id.clone(),
    );
    let d2 = dest.clone();
    let made = tokio::task::spawn_blocking(move || {
        crate::backup::write(&state, &outbox, &kek_id, &work, &d2)
    })
    .await
    .map_err(|e| ApiError::internal("the backup task failed", e.to_string()))?;
    let header = match made {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(&dest);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backup_failed",
                format!("{e}; check the data directory's free space"),
            ));
        }
    };
    let file = tokio::fs::File::open(&dest)
        .await
        .map_err(|e| ApiError::internal("opening the backup failed", e.to_string()))?;
    // The open file streams on; its name goes now, so nothing is left behind.
    let _ = std::fs::remove_file(&dest);
    let total: u64 = header.parts.iter().map(|p| p.bytes).sum();
    let _ = s
        .tenancy
        .record_event(
            &actor,
            None,
            "gateway.backup",
            "gateway/backup".into(),
            format!(
                "ok: {} parts, {total} bytes, state schema {}, outbox schema {}",
                header.parts.len(),
                header.state_schema,
                header.outbox_schema
            ),
        )
        .await;
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let name = format!(
        "attachment; filename=\"peat-gateway-{}.pgbk\"",
        header.created_at.replace(':', "")
    );
    let mut res = Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}
