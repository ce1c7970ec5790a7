//! Errors of the tenancy rules.

use crate::keys::KeyError;
use crate::mesh::MeshError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("the token is not allowed to {action}")]
    Forbidden { action: &'static str },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// Something only the gateway admin may grant, and has not.
    #[error("{reason}")]
    NotGranted { reason: String },
    #[error("{what} already exists")]
    Conflict { what: &'static str },
    #[error("quota {quota} reached (limit {limit})")]
    QuotaExceeded { quota: &'static str, limit: u32 },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("too many {what}; retry in {retry_after_secs} s")]
    RateLimited {
        what: &'static str,
        retry_after_secs: u32,
    },
    #[error("sealed key material could not be opened")]
    Key(#[from] KeyError),
    #[error("stored genesis is malformed")]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TenantError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// A refusal by the rules (worth an audit record), as opposed to a failure of the gateway.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Forbidden { .. }
                | Self::NotGranted { .. }
                | Self::NotFound { .. }
                | Self::Conflict { .. }
                | Self::QuotaExceeded { .. }
                | Self::Invalid { .. }
                | Self::RateLimited { .. }
        )
    }

    /// Short machine-readable outcome for the audit log.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden { .. } => "forbidden",
            Self::NotGranted { .. } => "not_granted",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Invalid { .. } => "invalid",
            Self::RateLimited { .. } => "rate_limited",
            Self::Key(_) => "key_error",
            Self::Mesh(_) => "mesh_error",
            Self::Store(_) => "store_error",
        }
    }
}
