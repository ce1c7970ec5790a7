//! peat-gateway: an edge gateway for Peat meshes.
//!
//! See `docs/ARCHITECTURE.md` for the bird's-eye view and the code map.

pub mod config;
pub mod keys;
pub mod mesh;
pub mod store;
pub mod tenant;
