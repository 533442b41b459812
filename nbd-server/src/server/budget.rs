//! The per-connection in-flight budget: bytes (request payload plus expected reply
//! data) and requests. The reader acquires before reading a payload; the worker that
//! sent the reply releases. A cost above the whole budget is clamped so that one
//! maximum-size request can always run alone.

use std::sync::{Condvar, Mutex};

#[derive(Debug, Default)]
struct Used {
    bytes: u64,
    requests: usize,
}

/// A counting limit on bytes and requests in flight.
#[derive(Debug)]
pub struct Budget {
    max_bytes: u64,
    max_requests: usize,
    used: Mutex<Used>,
    freed: Condvar,
}

impl Budget {
    /// A budget of `max_bytes` and `max_requests` (both ≥ 1).
    pub fn new(max_bytes: u64, max_requests: usize) -> Self {
        assert!(max_bytes > 0 && max_requests > 0);
        Self { max_bytes, max_requests, used: Mutex::new(Used::default()), freed: Condvar::new() }
    }

    /// The cost actually charged for a request of `cost` bytes.
    pub fn charge(&self, cost: u64) -> u64 {
        cost.min(self.max_bytes)
    }

    /// Blocks until `charge(cost)` bytes and one request slot are free, then takes them.
    /// Returns the charge to pass to `release`.
    pub fn acquire(&self, cost: u64) -> u64 {
        let cost = self.charge(cost);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while used.bytes + cost > self.max_bytes || used.requests >= self.max_requests {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        used.bytes += cost;
        used.requests += 1;
        cost
    }

    /// Returns what `acquire` took.
    pub fn release(&self, charged: u64) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        assert!(used.bytes >= charged && used.requests > 0, "budget released twice");
        used.bytes -= charged;
        used.requests -= 1;
        self.freed.notify_all();
    }

    /// Requests in flight now.
    pub fn requests_in_flight(&self) -> usize {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn oversized_costs_are_clamped_so_one_request_always_fits() {
        let b = Budget::new(100, 4);
        let c = b.acquire(1000);
        assert_eq!(c, 100);
        b.release(c);
        assert_eq!(b.requests_in_flight(), 0);
    }

    #[test]
    fn acquire_waits_for_a_release() {
        let b = Arc::new(Budget::new(100, 4));
        let first = b.acquire(80);
        let b2 = Arc::clone(&b);
        let t = std::thread::spawn(move || {
            let c = b2.acquire(80);
            b2.release(c);
        });
        b.release(first);
        t.join().unwrap();
        assert_eq!(b.requests_in_flight(), 0);
    }
}
