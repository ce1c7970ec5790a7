//! Periodic proof that the key provider still wraps and unwraps: a remote KMS or Vault can go
//! away after start-up, and operators should see that in `/ready` before an enrollment or a
//! new formation fails on it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{random_secret32, KeyError, Keyring, RecordIdentity};

/// The identity probes are sealed for; no stored record uses it.
const PROBE: RecordIdentity<'static> = RecordIdentity {
    org: "",
    app: "",
    kind: "key-probe",
    codec_version: 1,
    uid: [0; 16],
};

/// The last probe's outcome.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// `None` until the first probe ran.
    pub ok: Option<bool>,
    pub checked_at_ms: Option<u64>,
    pub round_trip_ms: Option<u64>,
    /// Why the last probe failed; never contains key material.
    pub error: Option<String>,
    pub consecutive_failures: u32,
}

/// Shared between the probe task and the readiness handler. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct KeyHealth(Arc<Mutex<ProbeReport>>);

impl KeyHealth {
    pub fn report(&self) -> ProbeReport {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, outcome: &Result<Duration, KeyError>) {
        let mut r = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        r.checked_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok());
        match outcome {
            Ok(rtt) => {
                r.ok = Some(true);
                r.round_trip_ms = Some(u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX));
                r.error = None;
                r.consecutive_failures = 0;
            }
            Err(e) => {
                r.ok = Some(false);
                r.round_trip_ms = None;
                r.error = Some(e.to_string());
                r.consecutive_failures = r.consecutive_failures.saturating_add(1);
            }
        }
    }
}

/// Wraps a throwaway DEK and unwraps it again through the provider.
pub async fn probe(keyring: &Keyring) -> Result<Duration, KeyError> {
    let started = Instant::now();
    let dek = random_secret32()?;
    let sealed = keyring.seal(PROBE, dek.as_ref()).await?;
    let opened = keyring.open(PROBE, &sealed).await?;
    if opened.as_slice() != dek.as_ref() {
        return Err(KeyError::Authentication);
    }
    Ok(started.elapsed())
}

/// Probes every `every` until `stop` turns true; `on_result` sees each outcome (for metrics).
pub async fn watch(
    keyring: Keyring,
    health: KeyHealth,
    every: Duration,
    timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    on_result: impl Fn(bool),
) {
    loop {
        let outcome = match tokio::time::timeout(timeout, probe(&keyring)).await {
            Ok(r) => r,
            Err(_) => Err(KeyError::Remote {
                what: "reach the key provider",
                detail: format!("no answer within {} s", timeout.as_secs()),
            }),
        };
        if let Err(e) = &outcome {
            let failures = health.report().consecutive_failures;
            // Logged on the first failure and then every tenth, not every probe.
            if failures % 10 == 0 {
                tracing::warn!(provider = %keyring.provider_kind(), error = %e, "key provider probe failed");
            }
        } else if health.report().ok == Some(false) {
            tracing::info!(provider = %keyring.provider_kind(), "key provider reachable again");
        }
        on_result(outcome.is_ok());
        health.record(&outcome);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::LocalKek;
    use zeroize::Zeroizing;

    #[tokio::test]
    async fn a_probe_round_trips_and_records_failures() {
        let ring = Keyring::new(Arc::new(LocalKek::new(Zeroizing::new([7; 32]))));
        assert!(probe(&ring).await.is_ok());
        let h = KeyHealth::default();
        assert_eq!(h.report().ok, None);
        h.record(&Err(KeyError::Authentication));
        h.record(&Err(KeyError::Authentication));
        let r = h.report();
        assert_eq!((r.ok, r.consecutive_failures), (Some(false), 2));
        assert!(r.error.is_some());
        h.record(&Ok(Duration::from_millis(3)));
        let r = h.report();
        assert_eq!(
            (r.ok, r.consecutive_failures, r.round_trip_ms),
            (Some(true), 0, Some(3))
        );
        assert!(r.error.is_none());
    }
}
