//! peat-gateway: an edge gateway for Peat meshes.
//!
//! See `docs/ARCHITECTURE.md` for the bird's-eye view and the code map.

pub mod api;
pub mod backup;
pub mod cdc;
pub mod config;
pub mod egress;
pub mod identity;
pub mod keys;
pub mod listen;
pub mod mesh;
pub mod metrics;
pub mod peer_read;
pub mod secret;
pub mod store;
pub mod tenant;
pub mod time;
pub mod tls;
