//! Fuzzing on stable Rust: each decoder of untrusted or stored bytes is fed its committed seed
//! corpus (`tests/fuzz/<target>/`, one file a seed) mutated by proptest: bits flipped, bytes
//! set, inserted, deleted, runs repeated, inputs cut short and spliced with other seeds. The
//! check is the decoder's own: it must never panic, and whatever it accepts must survive the
//! target's round trip.
//!
//! `PEAT_FUZZ_CASES` sets the cases per target (2,000 by default, as `.ci/run` runs them); a
//! long run is `PEAT_FUZZ_CASES=1000000 cargo test --lib --all-features fuzz_`. A failure prints
//! the input in hex; proptest shrinks it first.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// One mutation of an input.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Repeat(usize, usize),
    Truncate(usize),
    Splice(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        // Boundary values are where length prefixes and varints go wrong.
        (
            any::<usize>(),
            prop::sample::select(vec![0u8, 1, 0x7f, 0x80, 0xff])
        )
            .prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, v)| Edit::Insert(at, v)),
        (any::<usize>(), 1usize..32).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Repeat(at, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(s, from, at)| Edit::Splice(s, from, at)),
    ]
}

fn apply(mut input: Vec<u8>, edits: &[Edit], seeds: &[Vec<u8>]) -> Vec<u8> {
    for e in edits {
        let len = input.len();
        let pos = |at: usize| if len == 0 { 0 } else { at % (len + 1) };
        match e {
            Edit::Flip(at, bit) if len > 0 => input[at % len] ^= 1 << bit,
            Edit::Set(at, b) if len > 0 => input[at % len] = *b,
            Edit::Insert(at, v) => {
                let p = pos(*at);
                input.splice(p..p, v.iter().copied());
            }
            Edit::Delete(at, n) if len > 0 => {
                let p = at % len;
                input.drain(p..(p + n).min(len));
            }
            Edit::Repeat(at, n) if len > 0 => {
                let p = at % len;
                let run: Vec<u8> = input[p..(p + n).min(len)].to_vec();
                input.splice(p..p, run);
            }
            Edit::Truncate(at) => input.truncate(pos(*at)),
            Edit::Splice(s, from, at) if !seeds.is_empty() => {
                let other = &seeds[s % seeds.len()];
                let tail = &other[from % (other.len() + 1)..];
                input.truncate(pos(*at));
                input.extend_from_slice(tail);
            }
            _ => {}
        }
    }
    input
}

/// The committed seeds of `target` (`tests/fuzz/<target>/*`) and those the target builds;
/// `PEAT_FUZZ_WRITE=1` writes the built ones into the corpus (named by their hash), so the
/// corpus is what gets committed and a regression input can be added beside them by hand.
fn corpus(target: &str, built: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target);
    if std::env::var_os("PEAT_FUZZ_WRITE").is_some() {
        use sha2::Digest;
        let _ = std::fs::create_dir_all(&dir);
        for seed in &built {
            let name = hex::encode(&sha2::Sha256::digest(seed)[..8]);
            let _ = std::fs::write(dir.join(name), seed);
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut seeds: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    seeds.extend(built);
    assert!(
        !seeds.is_empty(),
        "no seeds for {target} in {}",
        dir.display()
    );
    seeds
}

fn cases() -> u32 {
    std::env::var("PEAT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Runs `check` on every seed as it is, then on `PEAT_FUZZ_CASES` mutations of them and on
/// as many inputs of random bytes. `check` panics or returns an error on a defect.
pub(crate) fn run(target: &str, built: Vec<Vec<u8>>, check: impl Fn(&[u8]) -> Result<(), String>) {
    let seeds = corpus(target, built);
    for (i, s) in seeds.iter().enumerate() {
        if let Err(e) = check(s) {
            panic!("{target}: seed {i} fails its own check: {e}");
        }
    }
    // A runner counts its cases over every run: one each.
    let runner = || {
        TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        })
    };
    let n = seeds.len();
    let mutated =
        (0..n, prop::collection::vec(edit(), 1..6)).prop_map(move |(i, edits)| (i, edits));
    let outcome = runner().run(&mutated, |(i, edits)| {
        let input = apply(seeds[i].clone(), &edits, &seeds);
        check(&input)
            .map_err(|e| TestCaseError::fail(format!("{e}; input {}", hex::encode(&input))))
    });
    if let Err(e) = outcome {
        panic!("{target}: {e}");
    }
    let outcome = runner().run(&prop::collection::vec(any::<u8>(), 0..512), |input| {
        check(&input)
            .map_err(|e| TestCaseError::fail(format!("{e}; input {}", hex::encode(&input))))
    });
    if let Err(e) = outcome {
        panic!("{target}: {e}");
    }
}

/// A decoder with an encoder: whatever decodes re-encodes to bytes that decode again and
/// encode the same (the input itself may differ where the format has two spellings).
pub(crate) fn round_trip<T, E, F>(
    input: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Result<F, E>,
) -> Result<(), String>
where
    F: AsRef<[u8]>,
    E: std::fmt::Debug,
{
    let Ok(v) = decode(input) else {
        return Ok(());
    };
    let once = encode(&v).map_err(|e| format!("accepted, then not encodable: {e:?}"))?;
    let w = decode(once.as_ref())
        .map_err(|e| format!("accepted, but its encoding does not decode: {e:?}"))?;
    let twice = encode(&w).map_err(|e| format!("re-decoded, then not encodable: {e:?}"))?;
    if once.as_ref() == twice.as_ref() {
        Ok(())
    } else {
        Err("the encoding changes on a second round".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{
        decode_challenge, encode_challenge, EnrollmentRequest, EnrollmentResponse, MeshCertificate,
        MeshCredentials, MeshGenesis,
    };
    use crate::store::*;

    /// Every `…encoded_hex` / `…_hex` value under `section` of the peat-mesh vectors whose key
    /// names `field`.
    fn vectors(section: &str, field: &str) -> Vec<Vec<u8>> {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../tests/vectors/peat-mesh-0.6.0.json"))
                .unwrap_or_default();
        let mut out = Vec::new();
        let mut stack = vec![&v[section]];
        while let Some(x) = stack.pop() {
            match x {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match v.as_str().and_then(|h| hex::decode(h).ok()) {
                            Some(b) if k == field => out.push(b),
                            _ => stack.push(v),
                        }
                    }
                }
                serde_json::Value::Array(a) => stack.extend(a),
                _ => {}
            }
        }
        assert!(!out.is_empty(), "no {field} under {section}");
        out
    }

    #[test]
    fn fuzz_mesh_certificate() {
        let mut seeds = vectors("certificates", "encoded_hex");
        seeds.extend(vectors("genesis", "encoded_hex"));
        run("mesh-certificate", seeds, |b| {
            round_trip(b, MeshCertificate::decode, MeshCertificate::encode)
        });
    }

    #[test]
    fn fuzz_mesh_enrollment_request() {
        run(
            "mesh-enrollment-request",
            vectors("enrollment", "encoded_hex"),
            |b| round_trip(b, EnrollmentRequest::decode, EnrollmentRequest::encode),
        );
    }

    #[test]
    fn fuzz_mesh_enrollment_response() {
        run(
            "mesh-enrollment-response",
            vectors("enrollment", "encoded_hex"),
            |b| round_trip(b, EnrollmentResponse::decode, EnrollmentResponse::encode),
        );
    }

    #[test]
    fn fuzz_mesh_genesis_and_credentials() {
        run(
            "mesh-genesis",
            vectors("genesis", "genesis_encoded_hex"),
            |b| round_trip(b, MeshGenesis::decode, MeshGenesis::encode),
        );
        run(
            "mesh-credentials",
            vectors("genesis", "credentials_encoded_hex"),
            |b| round_trip(b, MeshCredentials::decode, MeshCredentials::encode),
        );
    }

    #[test]
    fn fuzz_mesh_formation_challenge() {
        run(
            "mesh-challenge",
            vectors("formation_keys", "challenge_bytes_hex"),
            |b| {
                round_trip(b, decode_challenge, |(id, nonce)| {
                    encode_challenge(id, nonce)
                })
            },
        );
    }

    fn record<R: Record + PartialEq + std::fmt::Debug>(b: &[u8]) -> Result<(), String> {
        round_trip(b, R::decode, R::encode)
    }

    #[test]
    fn fuzz_stored_records_of_every_kind_and_version() {
        let event = EventRecord {
            org_id: "acme".into(),
            app_id: "mesh".into(),
            collection: "tracks".into(),
            doc_id: "t-1".into(),
            op: 1,
            data: Some(br#"{"a":[1,2.50,"x"]}"#.to_vec()),
            encrypted: false,
            content_hash: [7; 32],
            observed_ms: 1_700_000_000_000,
            org_uid: [3; 16],
        };
        let sink = SinkRecord {
            org_id: "acme".into(),
            sink_id: "s-1".into(),
            sink_uid: [9; 16],
            spec: vec![1, 4, b'p', b'e', b'a', b't', 0, 0, 0],
            enabled: true,
            formations: vec!["mesh".into()],
            collections: vec![],
            rate_limit_bytes_per_sec: 1 << 20,
            start: 1,
            created_at_ms: 1_700_000_000_000,
            content_mode: 2,
        };
        let source = SourceRecord {
            endpoint: "http://127.0.0.1:50051".into(),
            collections: vec!["tracks".into()],
            has_token: true,
            tls_ca_pem: None,
            client_cert_pem: None,
            reconcile_secs: 300,
            full_policy: 2,
            updated_at_ms: 1,
            node_id: Some("node-1".into()),
        };
        let mut seeds = Vec::new();
        let mut put = |r: Result<Vec<u8>, StoreError>| seeds.extend(r.ok());
        put(event.encode());
        put(DocRecord {
            content_hash: Some([1; 32]),
            lsn: 42,
        }
        .encode());
        put(DeadLetterRecord {
            reason: "refused".into(),
            parked_at_ms: 5,
            event: event.clone(),
        }
        .encode());
        put(sink.encode());
        put(source.encode());
        put(EgressRecord::default().encode());
        put(SourceGrantRecord::default().encode());
        // An older version of each: version skew is what a store written before meets.
        let older: Vec<Vec<u8>> = seeds
            .iter()
            .filter(|s| s.first().is_some_and(|v| *v > 1))
            .map(|s| [&[s[0] - 1], &s[1..]].concat())
            .collect();
        seeds.extend(older);
        run("store-records", seeds, |b| {
            record::<EventRecord>(b)?;
            record::<DocRecord>(b)?;
            record::<DeadLetterRecord>(b)?;
            record::<SinkRecord>(b)?;
            record::<SourceRecord>(b)?;
            record::<OrgRecord>(b)?;
            record::<FormationRecord>(b)?;
            record::<ApiTokenRecord>(b)?;
            record::<AdminTokenRecord>(b)?;
            record::<AuditRecord>(b)?;
            record::<AuditHeadRecord>(b)?;
            record::<BootTokenRecord>(b)?;
            record::<CertRecord>(b)?;
            record::<RevocationRecord>(b)?;
            record::<PendingRecord>(b)?;
            record::<EnrollSettingsRecord>(b)?;
            record::<IdpRecord>(b)?;
            record::<IdpKeysRecord>(b)?;
            record::<RuleRecord>(b)?;
            record::<IdentitySettingsRecord>(b)?;
            record::<OrgNetworkRecord>(b)?;
            record::<EgressRecord>(b)?;
            record::<SourceGrantRecord>(b)
        });
    }

    #[test]
    fn edits_stay_inside_the_input_and_can_reach_every_shape() {
        let seeds = vec![b"abcdef".to_vec(), b"XYZ".to_vec()];
        for (edits, want) in [
            (vec![Edit::Flip(7, 0)], b"accdef".to_vec()),
            (vec![Edit::Truncate(3)], b"abc".to_vec()),
            (vec![Edit::Delete(4, 100)], b"abcd".to_vec()),
            (vec![Edit::Repeat(1, 2)], b"abcbcdef".to_vec()),
            (
                vec![Edit::Insert(100, vec![1])],
                vec![b'a', b'b', 1, b'c', b'd', b'e', b'f'],
            ),
            (vec![Edit::Splice(1, 1, 2)], b"abYZ".to_vec()),
            (
                vec![Edit::Truncate(0), Edit::Flip(3, 1), Edit::Delete(0, 1)],
                vec![],
            ),
        ] {
            assert_eq!(apply(b"abcdef".to_vec(), &edits, &seeds), want, "{edits:?}");
        }
    }

    #[test]
    fn every_case_reaches_the_check() {
        let n = std::sync::atomic::AtomicU32::new(0);
        run("unit", vec![b"seed".to_vec()], |_| {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        });
        // The seed, then the mutations and as many random inputs.
        assert_eq!(n.into_inner(), 1 + 2 * cases());
    }

    #[test]
    fn a_panicking_decoder_is_caught_with_its_input() {
        let caught = std::panic::catch_unwind(|| {
            run("unit", vec![b"seed".to_vec()], |b| {
                if b.len() == 3 {
                    panic!("three bytes");
                }
                Ok(())
            })
        });
        assert!(caught.is_err(), "a decoder that panics on 3 bytes is found");
    }
}
