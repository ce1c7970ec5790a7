//! Test harness: real processes on ephemeral loopback ports, each in its own temp dir.

pub mod browser;
pub mod gateway;
pub mod pki;
pub mod service;

pub use gateway::{Gateway, GatewayOpts};

use std::net::TcpListener;

/// A free loopback port, chosen by the kernel; the harness keeps it across restarts.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A fixed test KEK (never used outside tests).
pub const KEK_A: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
pub const KEK_B: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf";
pub const ADMIN: &str = "test-admin-token-0123456789";
