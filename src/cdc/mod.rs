//! Change data capture: changes in → durable outbox → one delivery loop per sink → sinks.
//!
//! Invariants:
//! - A change is acknowledged only after its outbox append committed (fsync'd, group commit).
//! - The outbox append and the document's content-hash cursor update are one transaction, so
//!   a duplicate notification after a crash is still suppressed.
//! - Each sink has its own cursor in the outbox, advanced only after that sink acknowledged;
//!   events are removed only when every sink has passed them (or by the drop-oldest policy,
//!   which is counted and audited).
//! - A sink knows nothing of sources; a slow or dead sink blocks neither ingest nor other sinks.
//!
//! Entry points: [`Outbox`], [`Dispatcher`].

mod canon;
pub mod ce_binary;
mod ce_json;
mod dispatch;
mod error;
mod event;
mod outbox;
pub mod sink;
pub mod source;

pub use canon::{canonicalize, CanonError};
pub use dispatch::{Command, Dispatcher, SinkState, SinkStatus};
pub use error::CdcError;
pub use event::{canonical, cloud_event, event_id, rfc3339_ms, Change, CloudEvent, DocState, Op};
pub use outbox::{
    AppendReport, Appended, FormationRef, FullPolicy, Outbox, OutboxConfig, OutboxStats,
};
