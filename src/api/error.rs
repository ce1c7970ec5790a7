//! [`ApiError`]: the one error type that becomes an HTTP response.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::tenant::TenantError;

/// The cause of a 5xx, carried to the logging middleware; never sent to the client.
#[derive(Clone, Debug)]
pub(crate) struct InternalCause(pub String);

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    cause: Option<String>,
    retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            cause: None,
            retry_after_secs: None,
        }
    }

    /// Adds `Retry-After` (seconds) to the answer.
    pub(crate) fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 507: the data directory's file system is full; nothing of the request was stored.
    fn full(what: &str) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            format!(
                "the {what}'s file system is full: nothing of this request was stored; free \
                 space in the data directory (writes resume by themselves, see /ready)"
            ),
        )
        .retry_after(5)
    }

    pub(crate) fn internal(message: &str, cause: String) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
            cause: Some(cause),
            retry_after_secs: None,
        }
    }

    pub(crate) fn from_json(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
            _ => "bad_request",
        };
        let message = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "expected Content-Type: application/json".to_owned()
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                "request body is larger than the configured limit".to_owned()
            }
            _ => r.body_text(),
        };
        Self::new(status, code, message)
    }

    pub(crate) fn from_query(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
    }

    pub(crate) fn from_path(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        match &e {
            TenantError::Unauthenticated => Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is required (Authorization: Bearer <token>)",
            ),
            TenantError::Forbidden { .. } => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            TenantError::NotFound { what } => Self::not_found(what),
            TenantError::NotGranted { .. } => {
                Self::new(StatusCode::FORBIDDEN, "not_granted", e.to_string())
            }
            TenantError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            TenantError::QuotaExceeded { .. } => {
                Self::new(StatusCode::CONFLICT, "quota_exceeded", e.to_string())
            }
            TenantError::Invalid { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                e.to_string(),
            ),
            TenantError::RateLimited {
                retry_after_secs, ..
            } => Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
                .retry_after(*retry_after_secs),
            TenantError::Key(k) => Self::internal(
                "sealed key material could not be opened; see the gateway log",
                k.to_string(),
            ),
            TenantError::Mesh(m) => Self::internal("stored genesis is unreadable", m.to_string()),
            TenantError::Store(crate::store::StoreError::Poisoned) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the state store refuses writes after a failed commit; see /ready for why",
            )
            .retry_after(5),
            TenantError::Store(crate::store::StoreError::Full) => Self::full("state store"),
            TenantError::Store(s) => Self::internal(
                "state store failure",
                format!("{s}: {:?}", std::error::Error::source(s)),
            ),
        }
    }
}

impl From<crate::cdc::CdcError> for ApiError {
    fn from(e: crate::cdc::CdcError) -> Self {
        use crate::cdc::CdcError;
        match e {
            CdcError::Invalid { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                e.to_string(),
            ),
            CdcError::DocumentQuota { .. } => {
                Self::new(StatusCode::CONFLICT, "quota_exceeded", e.to_string())
            }
            CdcError::Full { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outbox_full",
                e.to_string(),
            )
            .retry_after(5),
            CdcError::NotFound { what } => Self::not_found(what),
            CdcError::Tenant(t) => t.into(),
            CdcError::Store(crate::store::StoreError::Poisoned) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the outbox refuses writes after a failed commit; see /ready for why",
            )
            .retry_after(5),
            CdcError::Store(crate::store::StoreError::Full) => Self::full("outbox"),
            CdcError::Store(s) => Self::internal(
                "outbox failure",
                format!("{s}: {:?}", std::error::Error::source(&s)),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut resp = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(cause) = self.cause {
            resp.extensions_mut().insert(InternalCause(cause));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    /// Both stores' full file systems answer 507 with a retry hint; other failed commits 503.
    #[test]
    fn a_latched_store_answers_507_when_full_and_503_otherwise() {
        let answers = [
            ApiError::from(crate::tenant::TenantError::Store(StoreError::Full)),
            ApiError::from(crate::cdc::CdcError::Store(StoreError::Full)),
            ApiError::from(crate::tenant::TenantError::Store(StoreError::Poisoned)),
            ApiError::from(crate::cdc::CdcError::Store(StoreError::Poisoned)),
        ];
        let got: Vec<_> = answers
            .iter()
            .map(|a| (a.status.as_u16(), a.code, a.retry_after_secs))
            .collect();
        assert_eq!(
            got,
            [
                (507, "insufficient_storage", Some(5)),
                (507, "insufficient_storage", Some(5)),
                (503, "unavailable", Some(5)),
                (503, "unavailable", Some(5)),
            ]
        );
        assert!(answers[0].message.contains("state store"));
        assert!(answers[1].message.contains("outbox"));
    }
}
