//! Errors of the CDC pipeline.

use crate::store::StoreError;
use crate::tenant::TenantError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdcError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the outbox is full ({used} of {quota} bytes); retry after sinks drain")]
    Full { used: u64, quota: u64 },
    #[error("quota max_documents_per_formation reached (limit {limit}): delete documents or raise the org's quota")]
    DocumentQuota { limit: u64 },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tenant(#[from] TenantError),
}

impl CdcError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
