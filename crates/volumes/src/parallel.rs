//! Runs independent jobs on a few threads and returns their results in the jobs' order, so a
//! pass can overlap slow external commands (each `zfs create` waits for a pool sync) while its
//! report stays in plan order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// `f` over every item, at most `workers` at a time; every item runs even when some fail.
pub fn each<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                out.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every index is taken by exactly one worker"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn results_keep_the_input_order_and_no_more_than_workers_run_at_once() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<u64> = (0..40).collect();
        let out = each(&items, 4, |&i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Later items finish first, so completion order differs from input order.
            std::thread::sleep(Duration::from_millis(40 - i));
            running.fetch_sub(1, Ordering::SeqCst);
            if i % 7 == 3 {
                Err(i)
            } else {
                Ok(i * 2)
            }
        });
        assert_eq!(out.len(), 40);
        for (i, r) in out.iter().enumerate() {
            let i = i as u64;
            assert_eq!(*r, if i % 7 == 3 { Err(i) } else { Ok(i * 2) });
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak > 1 && peak <= 4, "peak concurrency {peak}");
        assert!(each(&[] as &[u8], 8, |_| 0).is_empty());
        assert_eq!(each(&[1, 2], 0, |x| x + 1), vec![2, 3]);
    }
}
