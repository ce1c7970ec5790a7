//! peat-gateway: an edge gateway for Peat meshes.
//!
//! See `docs/ARCHITECTURE.md` for the bird's-eye view and the code map.

pub mod api;
pub mod backup;
pub mod cdc;
pub mod config;
pub mod egress;
#[cfg(test)]
mod fuzz;
pub mod identity;
pub mod keys;
pub mod listen;
pub mod mesh;
pub mod metrics;
pub mod peer_read;
pub mod secret;
pub mod store;
pub mod tenant;
pub mod tls;

/// A Unix time in milliseconds as a UTC date (the `time` crate, which x509-parser links anyway);
/// the epoch for an instant beyond its range.
pub fn utc(ms: u64) -> ::time::OffsetDateTime {
    ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH)
}
