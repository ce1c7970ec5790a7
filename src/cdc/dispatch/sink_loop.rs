//! One sink's delivery loop: read a batch after the cursor, filter, deliver, then commit;
//! transient errors back off and retry the same batch, a refusal stalls until an operator acts.

use super::*;
use crate::store::EventRecord;

pub(super) struct Loop {
    pub(super) outbox: Outbox,
    pub(super) def: SinkDef,
    pub(super) status: Arc<Mutex<SinkStatus>>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) commands: mpsc::Receiver<Command>,
    /// (lsn, org seq) of the batch being delivered, so a committed cursor knows its seq.
    pub(super) seqs: Vec<(u64, u64)>,
}

/// One read of the outbox made ready for the sink: what its filter wants, as deliveries.
struct Batch {
    deliveries: Vec<Delivery>,
    /// (lsn, org seq) of every event the batch passes, delivered or filtered out.
    seqs: Vec<(u64, u64)>,
    bytes: usize,
    /// The last LSN the batch covers; `None` when the read found nothing.
    upto: Option<u64>,
}

impl Batch {
    fn build(def: &SinkDef, gateway_id: &str, read: Vec<(u64, EventRecord, usize, u64)>) -> Self {
        let mut b = Batch {
            deliveries: Vec::new(),
            seqs: Vec::with_capacity(read.len()),
            bytes: 0,
            upto: read.last().map(|r| r.0),
        };
        for (lsn, ev, _, seq) in read {
            if ev.org_uid != def.org_uid {
                continue;
            }
            if !def.wants(&ev.app_id, &ev.collection) {
                b.seqs.push((lsn, seq));
                continue;
            }
            let d = Delivery::new(gateway_id, lsn, ev, def.content_mode);
            if !b.deliveries.is_empty() && b.bytes + d.body.len() > BATCH_BYTES {
                // The rest is read again after this batch.
                b.upto = Some(lsn - 1);
                break;
            }
            b.bytes += d.body.len();
            b.seqs.push((lsn, seq));
            b.deliveries.push(d);
        }
        b
    }
}

/// Reads the org's events after `after` and builds them into a batch for the sink `def`.
async fn read_batch(outbox: &Outbox, def: &SinkDef, after: u64) -> Result<Batch, CdcError> {
    let read = outbox
        .read_org_after(def.org_uid, after, BATCH_EVENTS)
        .await?;
    Ok(Batch::build(def, outbox.gateway_id(), read))
}

/// Full jitter over an exponential step, capped.
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_FIRST.saturating_mul(1u32 << attempt.min(6));
    let cap = exp.min(BACKOFF_CAP);
    let mut r = [0u8; 2];
    let frac = if getrandom::fill(&mut r).is_ok() {
        f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX)
    } else {
        1.0
    };
    cap.mul_f64(0.5 + frac / 2.0)
}

impl Loop {
    fn set(&self, f: impl FnOnce(&mut SinkStatus)) {
        f(&mut lock(&self.status));
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps unless stopped first; `false` when stopped.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopped(),
            _ = self.stop.changed() => false,
        }
    }

    /// Sleeps `d` or until the sink's link, seen down meanwhile, is up again; `false` when
    /// stopped.
    async fn pause_or_link(&mut self, sink: &mut dyn Sink, d: Duration) -> bool {
        let until = std::time::Instant::now() + d;
        let mut was_down = !sink.link_up();
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return !self.stopped();
            }
            if !self.pause(left.min(LINK_POLL)).await {
                return false;
            }
            let up = sink.link_up();
            if up && was_down {
                return true;
            }
            was_down |= !up;
        }
    }

    async fn start_cursor(&mut self) -> Option<u64> {
        let uid = self.def.sink_uid;
        let mut attempt = 0;
        loop {
            let r = match self.outbox.cursor(uid).await {
                Ok(Some(c)) => Ok(c),
                Ok(None) => {
                    let c = match self.def.start {
                        SinkStart::Latest => self.outbox.head(),
                        SinkStart::Earliest => 0,
                    };
                    self.outbox.set_cursor(uid, c).await.map(|()| c)
                }
                Err(e) => Err(e),
            };
            match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    self.set(|s| s.last_error = Some(e.to_string()));
                    attempt += 1;
                    if !self.pause(backoff(attempt)).await {
                        return None;
                    }
                }
            }
        }
    }

    pub(super) async fn run(mut self, mut sink: Box<dyn Sink>) {
        let Some(mut cursor) = self.start_cursor().await else {
            return;
        };
        let org = self.def.org_uid;
        let seq = self.outbox.org_seq_at(org, cursor).await.unwrap_or(0);
        self.set(|s| {
            s.cursor = cursor;
            s.cursor_seq = seq;
            s.cursor_loaded = true;
            s.rate.record(std::time::Instant::now(), s.delivered);
        });
        let mut head = self.outbox.watch();
        // Delivered up to `cursor`; the stored cursor follows within COMMIT_EVERY, and at once
        // when the loop idles or stops. A crash redelivers the rest with the same ids.
        let mut committed = cursor;
        let mut last_commit = std::time::Instant::now();
        // The batch after the one being delivered, read and built while it is.
        let mut next = None;
        while !self.stopped() {
            if !self.def.enabled {
                self.commit_if(&mut committed, cursor).await;
                self.set(|s| s.state = SinkState::Paused);
                let _ = self.stop.changed().await;
                return;
            }
            let read = match next.take() {
                Some(r) => r,
                None => read_batch(&self.outbox, &self.def, cursor).await,
            };
            let batch = match read {
                Ok(b) => b,
                Err(e) => {
                    self.set(|s| s.last_error = Some(e.to_string()));
                    if !self.pause(BACKOFF_CAP).await {
                        break;
                    }
                    continue;
                }
            };
            let Some(upto) = batch.upto else {
                if !self.commit_if(&mut committed, cursor).await {
                    return;
                }
                self.set(|s| s.state = SinkState::Idle);
                tokio::select! {
                    r = head.changed() => if r.is_err() { return; },
                    _ = self.stop.changed() => return,
                }
                continue;
            };
            self.seqs = batch.seqs;
            if !batch.deliveries.is_empty() {
                self.set(|s| s.state = SinkState::Delivering);
                // The next batch is read and built while this one waits for its
                // acknowledgements, so the sink is handed it without a gap.
                let outbox = self.outbox.clone();
                let def = self.def.clone();
                let prefetch = async move { read_batch(&outbox, &def, upto).await };
                let (delivered, fetched) =
                    tokio::join!(self.deliver_all(sink.as_mut(), &batch.deliveries), prefetch);
                if delivered.is_none() {
                    break;
                }
                next = Some(fetched);
                self.throttle(batch.bytes).await;
            }
            cursor = upto;
            if last_commit.elapsed() >= COMMIT_EVERY {
                if !self.commit_if(&mut committed, cursor).await {
                    return;
                }
                last_commit = std::time::Instant::now();
            }
        }
        // Stopping: what was delivered is not delivered again.
        self.commit_if(&mut committed, cursor).await;
    }

    /// Stores `cursor` unless it is stored already; `false` (with the error shown) when the
    /// store refused.
    async fn commit_if(&mut self, committed: &mut u64, cursor: u64) -> bool {
        if *committed == cursor {
            return true;
        }
        match self.commit(cursor).await {
            Ok(()) => {
                *committed = cursor;
                true
            }
            Err(e) => {
                self.set(|s| s.last_error = Some(e.to_string()));
                false
            }
        }
    }

    async fn commit(&mut self, cursor: u64) -> Result<(), CdcError> {
        self.outbox.set_cursor(self.def.sink_uid, cursor).await?;
        let seq = self
            .seqs
            .iter()
            .rev()
            .find(|(lsn, _)| *lsn <= cursor)
            .map(|(_, seq)| *seq);
        self.set(|s| {
            s.cursor = cursor;
            if let Some(seq) = seq {
                s.cursor_seq = seq;
            }
        });
        Ok(())
    }

    /// Delivers until every event is acknowledged or parked; `None` when stopped.
    async fn deliver_all(&mut self, sink: &mut dyn Sink, all: &[Delivery]) -> Option<()> {
        let mut rest = all;
        let mut attempt = 0u32;
        while !rest.is_empty() {
            match sink.deliver(rest).await {
                Ok(()) => {
                    self.delivered(rest);
                    return Some(());
                }
                Err(SinkError::Transient(reason)) => {
                    attempt += 1;
                    tracing::debug!(sink = %self.def.sink_id, %reason, attempt, "delivery failed, retrying");
                    self.set(|s| {
                        s.state = SinkState::Disconnected;
                        s.last_error = Some(reason);
                        s.retried += 1;
                    });
                    if !self.pause_or_link(&mut *sink, backoff(attempt)).await {
                        return None;
                    }
                }
                Err(SinkError::Busy {
                    retry_after,
                    reason,
                }) => {
                    tracing::debug!(sink = %self.def.sink_id, %reason, ?retry_after, "receiver busy");
                    self.set(|s| {
                        s.state = SinkState::Disconnected;
                        s.last_error = Some(format!(
                            "{reason}; retrying after {}s",
                            retry_after.as_secs()
                        ));
                        s.retried += 1;
                    });
                    if !self.pause(retry_after).await {
                        return None;
                    }
                }
                Err(SinkError::Rejected { index, reason }) => {
                    let index = index.min(rest.len() - 1);
                    let (done, tail) = rest.split_at(index);
                    if let Some(d) = done.last() {
                        self.delivered(done);
                        if self.commit(d.lsn).await.is_err() {
                            return None;
                        }
                    }
                    let bad = &tail[0];
                    // Parked at once, so operators see it; the cursor stays before it.
                    if self
                        .outbox
                        .park(
                            self.def.sink_uid,
                            bad.lsn,
                            bad.event.clone(),
                            reason.clone(),
                        )
                        .await
                        .is_err()
                    {
                        return None;
                    }
                    self.set(|s| s.dead_lettered += 1);
                    match self.stall(bad, &reason).await? {
                        Command::Retry => {
                            // Delivered, it is no dead letter; refused again, it is parked again.
                            let _ = self
                                .outbox
                                .remove_dead_letters(self.def.sink_uid, vec![bad.lsn])
                                .await;
                            self.set(|s| s.dead_lettered = s.dead_lettered.saturating_sub(1));
                            rest = tail;
                        }
                        Command::Skip => {
                            if self.commit(bad.lsn).await.is_err() {
                                return None;
                            }
                            rest = &tail[1..];
                        }
                    }
                    attempt = 0;
                }
            }
        }
        Some(())
    }

    async fn stall(&mut self, bad: &Delivery, reason: &str) -> Option<Command> {
        tracing::warn!(sink = %self.def.sink_id, org = %self.def.org_id, lsn = bad.lsn, %reason,
            "sink refused an event; stalled until an operator retries or skips it");
        self.set(|s| {
            s.state = SinkState::Stalled;
            s.stalled_lsn = Some(bad.lsn);
            s.last_error = Some(reason.to_owned());
        });
        let cmd = tokio::select! {
            c = self.commands.recv() => c?,
            _ = self.stop.changed() => return None,
        };
        self.set(|s| {
            s.state = SinkState::Delivering;
            s.stalled_lsn = None;
        });
        Some(cmd)
    }

    fn delivered(&self, batch: &[Delivery]) {
        let n = batch.len() as u64;
        let bytes: usize = batch.iter().map(|d| d.body.len()).sum();
        self.set(|s| {
            s.delivered += n;
            s.delivered_bytes += bytes as u64;
            s.last_delivery_ms = Some(now_ms());
            s.last_error = None;
            s.rate.record(std::time::Instant::now(), s.delivered);
        });
    }

    /// Holds delivery to the sink's byte-rate cap.
    async fn throttle(&mut self, bytes: usize) {
        let cap = self.def.rate_limit_bytes_per_sec;
        if cap > 0 {
            let d = Duration::from_secs_f64(bytes as f64 / cap as f64);
            self.pause(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_caps_at_five_seconds() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_CAP, "{d:?}");
            assert!(d >= BACKOFF_FIRST / 2, "{d:?}");
        }
        assert!(backoff(10) >= BACKOFF_CAP / 2);
    }
}
