//! Durable state in redb: tables, versioned record codecs, schema migrations, and the one
//! writer thread through which every write goes.
//!
//! Invariants:
//! - Only this module imports redb.
//! - Every write runs on the writer thread; a write future resolves only after its commit
//!   (`Durability::Immediate`) returned, so an answer sent after it describes durable state.
//! - An operation that returns `Err` leaves no write behind, even when batched with others.
//! - After a failed commit the writer latches: every later write gets [`StoreError::Full`] (no
//!   space) or [`StoreError::Poisoned`], and nothing is acknowledged, until a write or `/ready` finds room
//!   on the file system (4 MiB, tried at most every 2 s) and the file is reopened at its last
//!   durable commit: the failed transaction is dropped with its handle, never written or
//!   synced again.
//! - A compaction replaces the file only by renaming a complete, durable copy over it; until
//!   then the old file is the database, and an unfinished copy is removed at the next open.
//! - Stored values start with a record version byte; keys use fixed-width integers only.
//!
//! Does not: know business rules (see `tenant/`), encrypt (see `keys/`), or run on the async
//! runtime: reads go through `spawn_blocking`, writes through the writer thread.

mod codec;
mod copy;
mod db;
mod error;
mod migrate;
mod outbox_records;
mod records;
mod seen;
mod tables;
mod txn;
mod writer;

pub use codec::Record;
pub use db::{CommitStats, Store, StoreOptions};
pub use error::StoreError;
pub use migrate::{Schema, OUTBOX, SCHEMA_VERSION, STATE};
pub use outbox_records::{DeadLetterRecord, DocRecord, EventRecord};
pub use records::{
    AdminTokenRecord, ApiTokenRecord, AuditHeadRecord, AuditRecord, BootTokenRecord, CertRecord,
    EgressRecord, EnrollSettingsRecord, FormationRecord, IdentitySettingsRecord, IdpKeysRecord,
    IdpRecord, OrgNetworkRecord, OrgRecord, PendingRecord, QuotasRecord, RevocationRecord,
    RuleRecord, SinkRecord, SourceGrantRecord, SourceRecord,
};
pub use seen::Seen;
pub use tables::{keys, Table};
pub use txn::{ReadView, Reader, Txn};
