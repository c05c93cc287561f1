//! What supervision decides, with no syscalls: a service's state from the events the supervisor
//! reports (started, could not start, exited), when one that exited is started again (backoff;
//! a service that finished its work is not), and which processes to stop on shutdown. Each event
//! carries the time it happened, so the whole machine is tested like `abupdate::state`.

use crate::backoff::Backoff;
use platform::status;
use std::time::{Duration, Instant};

/// How long the supervisor sleeps when no restart is due (it wakes on any signal anyway).
pub const IDLE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Svc {
    /// An exit 0 is restarted too (the default); `false` for services that may finish.
    restart_on_success: bool,
    /// Stopped on hangup as well as SIGTERM (interactive shells ignore SIGTERM).
    tty: bool,
    pid: Option<i32>,
    started: Option<Instant>,
    backoff: Backoff,
    restart_at: Option<Instant>,
}

/// Every service's state, and whether the box is shutting down.
#[derive(Debug, Default)]
pub struct Supervision {
    svcs: Vec<Svc>,
    status: Vec<status::Service>,
    stopping: bool,
}

impl Supervision {
    /// The services as `eve-init status` shows them.
    pub fn status(&self) -> &[status::Service] {
        &self.status
    }

    /// A new service, pending: the caller starts it now and reports how that went.
    pub fn add(&mut self, name: &str, restart_on_success: bool, tty: bool) -> usize {
        self.status.push(status::Service {
            name: name.into(),
            state: "pending".into(),
            ..Default::default()
        });
        self.svcs.push(Svc {
            restart_on_success,
            tty,
            pid: None,
            started: None,
            backoff: Backoff::default(),
            restart_at: None,
        });
        self.svcs.len() - 1
    }

    pub fn started(&mut self, i: usize, pid: i32, now: Instant) -> String {
        let (s, st) = (&mut self.svcs[i], &mut self.status[i]);
        s.restart_at = None;
        s.started = Some(now);
        s.pid = Some(pid);
        st.starts += 1;
        st.pid = Some(pid);
        st.state = "running".into();
        format!("service {} started (pid {pid})", st.name)
    }

    /// The service could not be started; it is tried again after its backoff.
    pub fn start_failed(&mut self, i: usize, err: &str, now: Instant) -> String {
        let (s, st) = (&mut self.svcs[i], &mut self.status[i]);
        s.restart_at = None;
        st.starts += 1;
        let delay = s.backoff.next_delay(Duration::ZERO);
        s.restart_at = (!self.stopping).then_some(now + delay);
        st.state = format!("failed to start: {err}");
        format!(
            "service {}: cannot start: {err}; retry in {delay:?}",
            st.name
        )
    }

    /// Process `pid` ended with `code` (exit code, or 128+signal; `how` says it in words).
    /// `None` when it is not one of the services (a one-shot step, an orphan).
    pub fn exited(
        &mut self,
        pid: i32,
        code: Option<i32>,
        how: &str,
        now: Instant,
    ) -> Option<String> {
        let i = self.svcs.iter().position(|s| s.pid == Some(pid))?;
        let (s, st) = (&mut self.svcs[i], &mut self.status[i]);
        s.pid = None;
        st.pid = None;
        st.last_exit = code;
        if self.stopping {
            st.state = "stopped".into();
            return Some(format!("service {} (pid {pid}) stopped: {how}", st.name));
        }
        if code == Some(0) && !s.restart_on_success {
            st.state = "exited".into();
            return Some(format!("service {} (pid {pid}) finished", st.name));
        }
        let ran = s
            .started
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let delay = s.backoff.next_delay(ran);
        s.restart_at = Some(now + delay);
        st.state = "restarting".into();
        Some(format!(
            "service {} (pid {pid}) exited: {how}; restarting in {delay:?}",
            st.name
        ))
    }

    /// The services whose restart is due at `now`, in order; the caller starts each.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        if self.stopping {
            return Vec::new();
        }
        (0..self.svcs.len())
            .filter(|&i| self.svcs[i].restart_at.is_some_and(|t| t <= now))
            .collect()
    }

    /// How long to wait for the next event: until the next restart is due, at most [`IDLE_WAIT`].
    pub fn wait(&self, now: Instant) -> Duration {
        self.svcs
            .iter()
            .filter_map(|s| s.restart_at)
            .min()
            .map_or(IDLE_WAIT, |t| t.saturating_duration_since(now))
            .min(IDLE_WAIT)
    }

    /// Shutdown begins: nothing is restarted from here on. The processes to signal, with whether
    /// each has a terminal (hang up, then terminate).
    pub fn stop(&mut self) -> Vec<(i32, bool)> {
        self.stopping = true;
        for s in &mut self.svcs {
            s.restart_at = None;
        }
        self.live()
    }

    /// The services still running: (pid, tty).
    pub fn live(&self) -> Vec<(i32, bool)> {
        self.svcs
            .iter()
            .filter_map(|s| s.pid.map(|p| (p, s.tty)))
            .collect()
    }

    /// The name of service `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.status[i].name
    }

    pub fn len(&self) -> usize {
        self.svcs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.svcs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_crashing_service_comes_back_after_a_growing_delay_that_a_healthy_run_resets() {
        let t0 = Instant::now();
        let mut m = Supervision::default();
        let i = m.add("agent", true, false);
        assert_eq!(m.status()[i].state, "pending");
        m.started(i, 10, t0);
        assert_eq!(m.wait(t0), IDLE_WAIT);
        let log = m.exited(10, Some(1), "Exited(1)", at(t0, 5)).unwrap();
        assert!(log.contains("restarting in 500ms"), "{log}");
        assert_eq!(m.status()[i].state, "restarting");
        assert!(m.due(at(t0, 504)).is_empty());
        assert_eq!(m.wait(at(t0, 5)), Duration::from_millis(500));
        assert_eq!(m.due(at(t0, 505)), [i]);
        m.started(i, 11, at(t0, 505));
        m.exited(11, Some(139), "Signaled(SIGSEGV)", at(t0, 510));
        assert_eq!(m.wait(at(t0, 510)), Duration::from_millis(1000));
        // A run past the healthy mark resets the delay.
        m.started(i, 12, at(t0, 1510));
        m.exited(12, Some(1), "Exited(1)", at(t0, 1510 + 120_000));
        assert_eq!(m.wait(at(t0, 1510 + 120_000)), Duration::from_millis(500));
        assert_eq!(
            (m.status()[i].starts, m.status()[i].last_exit),
            (3, Some(1))
        );
    }

    #[test]
    fn a_service_that_finished_its_work_stays_finished_and_others_are_restarted_even_on_success() {
        let t0 = Instant::now();
        let mut m = Supervision::default();
        let once = m.add("status", false, false);
        let daemon = m.add("volumed", true, false);
        m.started(once, 20, t0);
        m.started(daemon, 21, t0);
        assert!(m
            .exited(20, Some(0), "Exited(0)", t0)
            .unwrap()
            .contains("finished"));
        assert_eq!(m.status()[once].state, "exited");
        m.exited(21, Some(0), "Exited(0)", t0);
        assert_eq!(m.status()[daemon].state, "restarting");
        assert_eq!(m.due(at(t0, 10_000)), [daemon]);
        // A one-shot that fails is restarted like any other.
        m.started(once, 22, t0);
        m.exited(22, Some(2), "Exited(2)", t0);
        assert_eq!(m.status()[once].state, "restarting");
    }

    #[test]
    fn a_service_that_cannot_start_is_retried_and_unknown_pids_are_not_services() {
        let t0 = Instant::now();
        let mut m = Supervision::default();
        let i = m.add("getty", true, true);
        let log = m.start_failed(i, "No such file", t0);
        assert!(log.contains("retry in 500ms"), "{log}");
        assert!(m.status()[i].state.starts_with("failed to start"));
        assert_eq!(m.due(at(t0, 500)), [i]);
        assert!(m.exited(999, Some(0), "Exited(0)", t0).is_none());
    }

    #[test]
    fn on_shutdown_every_live_service_is_signalled_and_none_is_restarted() {
        let t0 = Instant::now();
        let mut m = Supervision::default();
        let a = m.add("udevd", true, false);
        let b = m.add("getty", true, true);
        let c = m.add("agent", true, false);
        m.started(a, 1, t0);
        m.started(b, 2, t0);
        m.started(c, 3, t0);
        m.exited(3, Some(1), "Exited(1)", t0);
        assert_eq!(m.stop(), [(1, false), (2, true)]);
        assert!(
            m.due(at(t0, 60_000)).is_empty(),
            "a pending restart is dropped"
        );
        let log = m.exited(1, Some(143), "Signaled(SIGTERM)", t0).unwrap();
        assert!(log.contains("stopped"), "{log}");
        assert_eq!(m.status()[a].state, "stopped");
        assert_eq!(m.live(), [(2, true)]);
        m.start_failed(c, "late", t0);
        assert!(m.due(at(t0, 60_000)).is_empty());
    }
}
