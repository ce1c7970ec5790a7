//! Unit tests of the parent module.

use super::*;
use crate::cdc::DocState;

fn cfg(quota: u64) -> OutboxConfig {
    OutboxConfig {
        quota_bytes: quota,
        policy: FullPolicy::Block,
        compact_min_bytes: u64::MAX,
    }
}

/// An event as files written before org uids hold it.
fn v1(org: &str, doc: &str) -> Vec<u8> {
    EventRecord {
        org_id: org.into(),
        app_id: "mesh".into(),
        collection: "tracks".into(),
        doc_id: doc.into(),
        op: 1,
        data: Some(b"{}".to_vec()),
        encrypted: false,
        content_hash: [0; 32],
        observed_ms: 1,
        org_uid: [0; 16],
    }
    .encode_v1()
}

/// A new outbox in a temporary directory (kept as long as the guard).
async fn fresh() -> (tempfile::TempDir, Outbox) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let o = tokio::task::spawn_blocking(move || Outbox::open(&d, 1 << 20, cfg(1 << 30), None))
        .await
        .unwrap()
        .unwrap();
    (dir, o)
}

#[tokio::test]
async fn older_events_are_moved_into_their_orgs_log_and_those_of_deleted_orgs_removed() {
    let (_dir, o) = fresh().await;
    let names = ["alpha", "gone", "bravo", "alpha", "alpha"];
    o.store
        .write(move |t| -> Result<(), CdcError> {
            let mut used = 0;
            for (i, org) in names.iter().enumerate() {
                let raw = v1(org, &format!("d{i}"));
                used += orgs::stored_bytes(raw.len());
                t.put_raw(Table::Events, (i as u64 + 1).to_be_bytes().to_vec(), raw);
            }
            put_u64(t, NEXT_LSN, 6);
            put_u64(t, BYTES, used);
            Ok(())
        })
        .await
        .unwrap();
    let (a, b) = ([1u8; 16], [2u8; 16]);
    let orgs = HashMap::from([("alpha".to_owned(), a), ("bravo".to_owned(), b)]);
    let st = o.stamp_older_events(orgs.clone()).await.unwrap();
    assert_eq!(
        st,
        Stamped {
            moved: 4,
            orphaned: 1
        }
    );
    let got = o.read_org_after(a, 0, 10).await.unwrap();
    let lsns: Vec<(u64, u64)> = got.iter().map(|(l, _, _, s)| (*l, *s)).collect();
    assert_eq!(lsns, [(1, 1), (4, 2), (5, 3)]);
    assert!(got.iter().all(|(_, e, _, _)| e.org_uid == a));
    assert_eq!(o.read_org_after(b, 0, 10).await.unwrap().len(), 1);
    assert_eq!(o.org_fill(&a).events, 3);
    // Bytes held are the orgs' bytes together, and a second run changes nothing.
    let total = o.org_fill(&a).bytes + o.org_fill(&b).bytes;
    assert_eq!(o.stats().bytes, total);
    assert_eq!(
        o.stamp_older_events(orgs).await.unwrap(),
        Stamped::default()
    );
    // New appends continue each org's seq.
    let src = FormationRef {
        org_id: "alpha".into(),
        org_uid: a,
        app_id: "mesh".into(),
        formation_uid: [9; 16],
        max_documents: 100,
    };
    let change = Change {
        collection: "tracks".into(),
        doc_id: "new".into(),
        state: DocState::json(r#"{"v":1}"#).unwrap(),
    };
    o.append(src, vec![change]).await.unwrap();
    assert_eq!(o.org_seq_at(a, 5).await.unwrap(), 3);
    assert_eq!(o.org_fill(&a).seq, 4);
    o.shutdown().await;
}

#[tokio::test]
async fn events_indexed_by_schema_2_move_with_their_seq() {
    let (_dir, o) = fresh().await;
    let (a, b) = ([1u8; 16], [2u8; 16]);
    // Schema 2: the event in `events`, its seq and size in `org_events`, the fill counting it.
    let fill = o
        .store
        .write(move |t| -> Result<OrgFill, CdcError> {
            let mut fill = OrgFill::default();
            for (lsn, seq, uid) in [(1u64, 5u64, a), (2, 1, b), (3, 6, a)] {
                let mut rec = EventRecord::decode(&v1("x", &format!("d{lsn}"))).unwrap();
                rec.org_uid = uid;
                let raw = rec.encode().unwrap();
                let size = orgs::stored_bytes(raw.len());
                let mut index = seq.to_le_bytes().to_vec();
                index.extend_from_slice(&size.to_le_bytes());
                t.put_raw(Table::OrgEvents, orgs::log_key(&uid, lsn), index);
                t.put_raw(Table::Events, lsn.to_be_bytes().to_vec(), raw);
                if uid == a {
                    fill = OrgFill {
                        seq,
                        bytes: fill.bytes + size,
                        events: fill.events + 1,
                        last_lsn: lsn,
                    };
                }
            }
            orgs::put_fill(t, &a, fill);
            put_u64(t, NEXT_LSN, 4);
            Ok(fill)
        })
        .await
        .unwrap();
    let st = o.stamp_older_events(HashMap::new()).await.unwrap();
    assert_eq!(
        st,
        Stamped {
            moved: 3,
            orphaned: 0
        }
    );
    let got = o.read_org_after(a, 0, 10).await.unwrap();
    let seqs: Vec<(u64, u64)> = got.iter().map(|(l, _, _, s)| (*l, *s)).collect();
    assert_eq!(seqs, [(1, 5), (3, 6)]);
    assert_eq!(o.read_org_after(b, 0, 10).await.unwrap()[0].3, 1);
    assert_eq!(o.org_fill(&a), fill, "moved events were counted already");
    let left = o
        .store
        .read(|r| -> Result<_, CdcError> {
            Ok((
                r.scan(Table::Events, b"", None, 10)?.len(),
                r.scan(Table::OrgEvents, b"", None, 10)?.len(),
            ))
        })
        .await
        .unwrap();
    assert_eq!(left, (0, 0), "the old tables are emptied");
    o.shutdown().await;
}

#[tokio::test]
async fn trimming_and_forgetting_touch_only_the_named_org() {
    let (_dir, o) = fresh().await;
    o.stamp_older_events(HashMap::new()).await.unwrap();
    let (a, b) = ([1u8; 16], [2u8; 16]);
    for (org, uid) in [("a", a), ("b", b), ("a", a), ("b", b)] {
        let src = FormationRef {
            org_id: org.into(),
            org_uid: uid,
            app_id: "m".into(),
            formation_uid: uid,
            max_documents: 100,
        };
        let c = Change {
            collection: "t".into(),
            doc_id: format!("{}", o.head()),
            state: DocState::json("{}").unwrap(),
        };
        o.append(src, vec![c]).await.unwrap();
    }
    let sink = [7u8; 16];
    o.set_cursor(sink, 4).await.unwrap();
    assert_eq!(o.trim(vec![(a, vec![sink]), (b, vec![])]).await.unwrap(), 2);
    assert!(o.read_org_after(a, 0, 10).await.unwrap().is_empty());
    assert_eq!(o.read_org_after(b, 0, 10).await.unwrap().len(), 2);
    assert_eq!(o.forget_org(b).await.unwrap(), 2);
    assert_eq!(o.stats().bytes, 0);
    assert!(o.known_orgs().contains(&a) && !o.known_orgs().contains(&b));
    o.shutdown().await;
}

#[test]
fn compaction_waits_for_a_drain_unless_little_is_held() {
    const MIB: u64 = 1 << 20;
    let min = 64 * MIB;
    // Half drained: the file is well past twice what it holds, but a drain is reading it out.
    assert!(compaction_due(540 * MIB, 250 * MIB, min, false));
    assert!(!compaction_due(540 * MIB, 250 * MIB, min, true));
    // Near the end of a drain the copy is small: it goes ahead.
    assert!(compaction_due(540 * MIB, 60 * MIB, min, true));
    // Not grown enough, or under the minimum, whatever the drain.
    assert!(!compaction_due(540 * MIB, 300 * MIB, min, false));
    assert!(!compaction_due(60 * MIB, 0, min, false));
}
