//! The budget of live event streams: a stream leaves the connection budget (its connection's
//! slot is given back) and takes one of its caller's few stream slots instead, so streams
//! neither starve ordinary requests nor pile up under one token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct StreamBudget {
    per_caller: usize,
    total: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One stream's slot; given back when the stream ends.
pub struct StreamSlot {
    caller: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut m = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.caller);
            }
        }
    }
}

impl StreamBudget {
    /// `per_caller` streams for each caller, `total` across all.
    pub fn new(per_caller: usize, total: usize) -> Self {
        Self {
            per_caller: per_caller.max(1),
            total: total.max(1),
            held: Arc::default(),
        }
    }

    /// A slot for `caller`, or why not.
    pub fn take(&self, caller: &str) -> Result<StreamSlot, &'static str> {
        let mut m = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.values().sum::<usize>() >= self.total {
            return Err("the gateway serves as many live streams as it allows; retry later");
        }
        let n = m.entry(caller.to_owned()).or_insert(0);
        if *n >= self.per_caller {
            return Err("this caller already holds as many live streams as it may; close one");
        }
        *n += 1;
        Ok(StreamSlot {
            caller: caller.to_owned(),
            held: self.held.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_gets_its_share_and_slots_come_back() {
        let b = StreamBudget::new(2, 3);
        let a1 = b.take("a").unwrap();
        let _a2 = b.take("a").unwrap();
        assert!(b.take("a").is_err());
        let _b1 = b.take("b").unwrap();
        assert!(b.take("c").is_err(), "total reached");
        drop(a1);
        assert!(b.take("c").is_ok());
    }
}
