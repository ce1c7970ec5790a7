//! Errors of the state store.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("state database {path} is in use by another peat-gateway process; stop it first")]
    Locked { path: PathBuf },
    #[error("state database {path} was written by a newer peat-gateway (schema {found}); this build reads schema {supported} or older")]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("state database: {op} failed")]
    Redb {
        op: &'static str,
        #[source]
        source: redb::Error,
    },
    #[error("stored {kind} record is unreadable: {reason}")]
    Decode {
        kind: &'static str,
        reason: &'static str,
    },
    #[error("could not encode {kind} record")]
    Encode { kind: &'static str },
    #[error(
        "the store refuses writes after a failed commit; it reopens the file at a later write"
    )]
    Poisoned,
    #[error("the data directory's file system is full: writes are refused until space is freed")]
    Full,
    #[error("the state store is shut down")]
    Closed,
}

impl StoreError {
    pub(crate) fn redb(op: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
        move |source| StoreError::Redb { op, source }
    }
}

/// Converts any redb error type into [`StoreError::Redb`] with the operation's name.
pub(crate) trait RedbResultExt<T> {
    fn op(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> RedbResultExt<T> for Result<T, E> {
    fn op(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::redb(op)(e.into()))
    }
}
