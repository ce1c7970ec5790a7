//! A sink's delivery rate over wall time: events delivered since a base sample at most
//! [`WINDOW`] old, divided by the time since it. Time spent reading, encoding, waiting for
//! acknowledgements and retrying all counts, so the figure is what a backlog drains at.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(10);
/// Deliveries closer together than this share a sample, so a fast sink keeps few.
const GRAIN: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Default)]
pub struct DeliveryRate {
    /// (when, delivered so far), oldest first; the first is the base.
    samples: VecDeque<(Instant, u64)>,
}

impl DeliveryRate {
    /// The count delivered so far at `now`: the loop calls this when it starts and after
    /// every delivery.
    pub fn record(&mut self, now: Instant, delivered: u64) {
        let n = self.samples.len();
        match self.samples.back_mut() {
            Some(last) if n > 1 && now.saturating_duration_since(last.0) < GRAIN => {
                last.1 = delivered
            }
            _ => self.samples.push_back((now, delivered)),
        }
        // Keep the newest sample at or before the window's start as the base.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|s| now.saturating_duration_since(s.0) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Events per second delivered over the window ending `now`; 0 before any sample.
    pub fn per_sec(&self, now: Instant, delivered: u64) -> f64 {
        let base = self
            .samples
            .iter()
            .rev()
            .find(|s| now.saturating_duration_since(s.0) >= WINDOW)
            .or(self.samples.front());
        match base {
            Some(&(at, n)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs <= 0.0 {
                    0.0
                } else {
                    delivered.saturating_sub(n) as f64 / secs
                }
            }
            None => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_the_time_between_deliveries_and_decays_when_idle() {
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        assert_eq!(r.per_sec(t0, 0), 0.0);
        r.record(t0, 0);
        // 100 events a second for 4 s, each batch of 100 delivered in a moment.
        for s in 1..=4u64 {
            r.record(t0 + Duration::from_secs(s), s * 100);
        }
        let at4 = r.per_sec(t0 + Duration::from_secs(4), 400);
        assert!((at4 - 100.0).abs() < 1e-9, "{at4}");
        // Nothing more for 20 s: the window holds no delivery.
        let idle = r.per_sec(t0 + Duration::from_secs(24), 400);
        assert_eq!(idle, 0.0);
        // A long run at 1,000 events a second keeps a bounded number of samples, and its rate
        // is short by at most one grain's worth (the base sample's count is its last merge).
        for ms in (0..120_000u64).step_by(10) {
            r.record(t0 + Duration::from_millis(30_000 + ms), 400 + ms);
        }
        assert!(
            r.samples.len() <= 2 + (WINDOW.as_millis() / GRAIN.as_millis()) as usize,
            "{}",
            r.samples.len()
        );
        let now = t0 + Duration::from_millis(150_000);
        let steady = r.per_sec(now, 400 + 119_990);
        assert!((970.0..=1000.0).contains(&steady), "{steady}");
    }
}
