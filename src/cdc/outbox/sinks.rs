//! Each sink's own state in the outbox: its cursor (last acknowledged LSN) and its dead
//! letters (events it refused for good, parked until an operator skips or retries them).

use super::{lsn_of, Outbox};
use crate::cdc::CdcError;
use crate::store::{DeadLetterRecord, EventRecord, Reader, Record, Table};
use crate::tenant::now_ms;

fn dead_key(sink_uid: &[u8; 16], lsn: u64) -> Vec<u8> {
    let mut k = sink_uid.to_vec();
    k.extend_from_slice(&lsn.to_be_bytes());
    k
}

impl Outbox {
    /// A sink's last acknowledged LSN; `None` before its first delivery.
    pub async fn cursor(&self, sink_uid: [u8; 16]) -> Result<Option<u64>, CdcError> {
        self.store
            .read(move |r| {
                Ok(r.get_raw(Table::Cursors, &sink_uid)?
                    .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                    .map(u64::from_be_bytes))
            })
            .await
    }

    pub async fn set_cursor(&self, sink_uid: [u8; 16], lsn: u64) -> Result<(), CdcError> {
        self.store
            .write(move |t| -> Result<(), CdcError> {
                t.put_raw(
                    Table::Cursors,
                    sink_uid.to_vec(),
                    lsn.to_be_bytes().to_vec(),
                );
                Ok(())
            })
            .await
    }

    /// Parks a permanently refused event in the dead-letter table; the sink's cursor stays
    /// before it until an operator skips it.
    pub async fn park(
        &self,
        sink_uid: [u8; 16],
        lsn: u64,
        event: EventRecord,
        reason: String,
    ) -> Result<(), CdcError> {
        let rec = DeadLetterRecord {
            reason,
            parked_at_ms: now_ms(),
            event,
        };
        self.store
            .write(move |t| -> Result<(), CdcError> {
                t.put(Table::DeadLetters, dead_key(&sink_uid, lsn), &rec)?;
                Ok(())
            })
            .await
    }

    /// A sink's parked events, oldest first.
    pub async fn dead_letters(
        &self,
        sink_uid: [u8; 16],
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetterRecord)>, CdcError> {
        self.store
            .read(move |r| {
                r.scan(Table::DeadLetters, &sink_uid, None, limit)?
                    .into_iter()
                    .map(|(k, v)| Ok((lsn_of(&k), DeadLetterRecord::decode(&v)?)))
                    .collect()
            })
            .await
    }

    /// Removes the given dead letters of a sink (delivered by a replay, or discarded).
    pub async fn remove_dead_letters(
        &self,
        sink_uid: [u8; 16],
        lsns: Vec<u64>,
    ) -> Result<(), CdcError> {
        self.store
            .write(move |t| -> Result<(), CdcError> {
                for lsn in lsns {
                    t.delete(Table::DeadLetters, dead_key(&sink_uid, lsn));
                }
                Ok(())
            })
            .await
    }

    /// Removes a sink's cursor and dead letters (the sink was deleted).
    pub async fn forget_sink(&self, sink_uid: [u8; 16]) -> Result<(), CdcError> {
        self.store
            .write(move |t| -> Result<(), CdcError> {
                t.delete(Table::Cursors, sink_uid.to_vec());
                t.delete_prefix(Table::DeadLetters, &sink_uid)?;
                Ok(())
            })
            .await
    }
}
