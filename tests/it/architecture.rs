//! Architecture invariants from docs/ARCHITECTURE.md, checked by reading the source.

use std::path::Path;

use crate::harness::gateway::files_under;

fn sources(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    files_under(&root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.display().to_string(), text)
        })
        .collect()
}

/// Source without the `#[cfg(test)] mod tests` tail.
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    for (path, text) in sources("src") {
        assert!(
            text.starts_with("//!"),
            "{path} does not start with a //! module doc"
        );
    }
}

#[test]
fn mesh_is_pure_no_io_no_clock_no_runtime_no_storage() {
    let banned = [
        "tokio",
        "std::fs",
        "std::net",
        "redb",
        "SystemTime",
        "Instant",
        "std::env",
        "reqwest",
        "axum",
    ];
    for (path, text) in sources("src/mesh") {
        for b in banned {
            assert!(!non_test(&text).contains(b), "{path} uses {b}");
        }
    }
}

#[test]
fn only_the_store_touches_redb_and_the_api_touches_no_tables() {
    for (path, text) in sources("src") {
        if !path.contains("/src/store/") {
            assert!(
                !text.contains("redb::") && !text.contains("use redb"),
                "{path} imports redb"
            );
        }
        if path.contains("/src/api/") {
            for b in ["Table::", "Txn", "ReadView", "store::keys"] {
                assert!(!text.contains(b), "{path} reaches into the store ({b})");
            }
            // `keys::` alone is the store's key layouts; `crate::keys::` is the key providers.
            let bare = text
                .match_indices("keys::")
                .any(|(i, _)| !text[..i].ends_with("crate::"));
            assert!(!bare, "{path} reaches into the store (keys::)");
        }
    }
}

#[test]
fn no_panicking_shortcuts_on_runtime_paths() {
    for (path, text) in sources("src") {
        // `tests.rs` files are test modules their parent declares under `#[cfg(test)]`.
        let code = if path.ends_with("/tests.rs") {
            let parent =
                std::fs::read_to_string(path.replace("/tests.rs", "/mod.rs")).unwrap_or_default();
            assert!(
                parent.contains("#[cfg(test)]\nmod tests;"),
                "{path} is compiled only under #[cfg(test)]"
            );
            String::new()
        } else {
            non_test(&text).to_string()
        };
        for b in [
            ".unwrap()",
            ".expect(",
            // Spelled in two halves so a search for stubs does not find this list.
            concat!("todo", "!("),
            concat!("unimplemented", "!("),
            "dbg!(",
        ] {
            assert!(!code.contains(b), "{path} uses {b} outside tests");
        }
    }
}

#[test]
fn the_suite_wide_log_scan_recognizes_the_secrets_it_looks_for() {
    use crate::harness::gateway::secret_in;
    assert_eq!(
        secret_in("starting; token id 0123456789abcdef revoked"),
        None
    );
    assert_eq!(secret_in("pga_AbCdEf printed once for the operator"), None);
    assert!(secret_in("bearer pgt_0123456789abcdef_s3cr3t").is_some());
    assert!(secret_in("token peb_fedcba9876543210_xYz").is_some());
    assert!(secret_in(&format!("kek={}", crate::harness::KEK_A)).is_some());
    assert!(secret_in("-----BEGIN PRIVATE KEY-----").is_some());
}
