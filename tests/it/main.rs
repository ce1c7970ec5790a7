//! Integration tests: the real binary on loopback, driven over HTTP and its CLI.

mod harness;

mod activity;
mod architecture;
mod auth;
mod backup;
mod bad_input;
mod capture;
mod cdc;
mod cli;
mod crash;
mod crud;
mod demo;
mod docs;
mod egress;
mod enroll;
mod enroll_admin;
mod events;
mod flood;
mod full_disk;
mod isolation;
mod kms;
mod listener;
mod monitoring;
mod oidc;
mod secrets;
#[cfg(feature = "kafka")]
mod sink_kafka;
mod sink_mqtt;
mod sink_nats;
#[cfg(feature = "redis")]
mod sink_redis;
mod sink_webhook;
mod source;
mod systemd;
mod tls;
#[cfg(feature = "tpm")]
mod tpm;
mod ui;
mod ui_browser;
mod ui_operate;
mod ui_sso;
mod vault;

use serde_json::Value;

/// Asserts the house error shape and returns the code.
pub fn error_code(body: &Value) -> &str {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error body: {body}"));
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
    code
}
