//! Restart policy for services: exponential back-off on crash loops, reset after a healthy run.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long counts as healthy and resets the delay.
    pub healthy_after: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            failures: 0,
        }
    }
}

impl Backoff {
    /// The delay before restarting a service that just exited after running for `ran`.
    pub fn next_delay(&mut self, ran: Duration) -> Duration {
        if ran >= self.healthy_after {
            self.failures = 0;
        }
        let shift = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        self.initial.saturating_mul(1 << shift).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_then_resets_after_a_healthy_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        let d: Vec<u64> = (0..8)
            .map(|_| b.next_delay(quick).as_millis() as u64)
            .collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(
            b.next_delay(Duration::from_secs(120)),
            Duration::from_millis(500)
        );
        assert_eq!(b.next_delay(quick), Duration::from_millis(1000));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::default();
        for _ in 0..1000 {
            assert!(b.next_delay(Duration::ZERO) <= b.max);
        }
    }
}
