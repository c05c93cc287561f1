//! What one client can cost: a token bucket per client certificate (requests per second with a
//! burst), so a script gone wrong slows down instead of starving other operators.

use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request bodies (specs, snapshot names) above this are refused with 413.
    pub max_body: usize,
    /// Time for a client to send its request headers, and then its body.
    pub request_secs: u64,
    /// Time a read (status, lists) may take before 504.
    pub read_secs: u64,
    /// A streamed body (an update) that brings nothing for this long is cut off (408).
    pub stream_idle_secs: u64,
    /// What is read and discarded of a streamed body after its operation refused it, so the
    /// client gets to read the answer instead of a reset connection: at most this many bytes,
    /// for at most `request_secs`.
    pub drain_max: u64,
    /// A streamed body (an update) must arrive whole within this.
    pub stream_total_secs: u64,
    /// Connections served at once; more are closed unanswered.
    pub connections: usize,
    /// Connections from one address at once, so one host cannot hold every slot.
    pub per_address: usize,
    /// Per client: a steady rate and a burst.
    pub per_second: f64,
    pub burst: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 64 << 10,
            request_secs: 10,
            read_secs: 60,
            stream_idle_secs: 30,
            drain_max: 1 << 30,
            stream_total_secs: 3600,
            connections: 64,
            per_address: 16,
            per_second: 20.0,
            burst: 40.0,
        }
    }
}

/// Token buckets by client key. Buckets idle long enough to be full again are forgotten, so the
/// map stays as small as the set of clients active in the last few seconds.
#[derive(Debug)]
pub struct Rate {
    per_second: f64,
    burst: f64,
    buckets: HashMap<String, (f64, Instant)>,
}

impl Rate {
    pub fn new(per_second: f64, burst: f64) -> Rate {
        Rate {
            per_second,
            burst,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key` at `now`; false when the client is over its rate.
    pub fn allow(&mut self, key: &str, now: Instant) -> bool {
        let refill = |tokens: f64, at: Instant| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second)
                .min(self.burst)
        };
        if self.buckets.len() > 1024 {
            let burst = self.burst;
            self.buckets.retain(|_, (t, at)| refill(*t, *at) < burst);
        }
        let (tokens, at) = self.buckets.get(key).copied().unwrap_or((self.burst, now));
        let tokens = refill(tokens, at);
        let ok = tokens >= 1.0;
        self.buckets.insert(
            key.to_string(),
            (if ok { tokens - 1.0 } else { tokens }, now),
        );
        ok
    }
}

/// Connections open per peer address; a [`Slot`] counts one until it is dropped.
#[derive(Debug, Default)]
pub struct PerAddress {
    open: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place in [`PerAddress`].
#[derive(Debug)]
pub struct Slot {
    owner: std::sync::Arc<PerAddress>,
    addr: std::net::IpAddr,
}

impl PerAddress {
    /// A slot for `addr`, unless it already holds `max`.
    pub fn take(self: &std::sync::Arc<Self>, addr: std::net::IpAddr, max: usize) -> Option<Slot> {
        let mut m = self.open.lock().ok()?;
        let n = m.entry(addr).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: self.clone(),
            addr,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.owner.open.lock() {
            if let Some(n) = m.get_mut(&self.addr) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.addr);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_address_holds_at_most_its_share_of_connections() {
        let p = std::sync::Arc::new(PerAddress::default());
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held: Vec<_> = (0..3).map(|_| p.take(a, 3).unwrap()).collect();
        assert!(p.take(a, 3).is_none());
        assert!(p.take(b, 3).is_some());
        drop(held);
        assert!(p.take(a, 3).is_some());
        assert!(p.open.lock().unwrap().len() <= 1);
    }

    #[test]
    fn a_burst_then_the_steady_rate_per_client() {
        let mut r = Rate::new(2.0, 5.0);
        let t = Instant::now();
        assert!((0..5).all(|_| r.allow("a", t)));
        assert!(!r.allow("a", t));
        // Another client has its own bucket.
        assert!(r.allow("b", t));
        // Half a second refills one token.
        assert!(r.allow("a", t + Duration::from_millis(500)));
        assert!(!r.allow("a", t + Duration::from_millis(500)));
        // A long idle fills the bucket to the burst, not beyond.
        let later = t + Duration::from_secs(100);
        assert!((0..5).all(|_| r.allow("a", later)));
        assert!(!r.allow("a", later));
    }
}
