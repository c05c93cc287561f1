//! The end-of-boot health check that decides whether a slot on trial becomes good: storage-init
//! succeeded, the pool is imported, the vault is unlocked, and every service has stayed up.
//! `evaluate` is pure; `Watch` feeds it observations over time.

use std::collections::BTreeMap;
use std::time::Duration;

/// eve-init's `/run/eve-init/status.json`, the schema eve-init writes.
pub use platform::status::{Service, Status as InitStatus, Step};

#[derive(Debug, Clone)]
pub struct Rules {
    /// Onboot steps that must have exited 0.
    pub required_onboot: Vec<String>,
    pub pool: String,
    pub vault: String,
    /// The policy let storage-init make the vault unencrypted (no TPM): its key status is `-`.
    pub vault_unencrypted_ok: bool,
    /// How long each service must stay up with the same pid.
    pub settle: Duration,
    /// More starts than this is a crash loop.
    pub max_starts: u32,
    /// Services not judged (this check itself).
    pub ignore: Vec<String>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            required_onboot: vec!["storage-init".into()],
            pool: "persist".into(),
            vault: "persist/vault".into(),
            vault_unencrypted_ok: false,
            settle: Duration::from_secs(15),
            max_starts: 3,
            ignore: vec!["ab-health".into()],
        }
    }
}

/// What storage-init reports at the end of its run (`/run/eve/storage.json`): the pool and vault
/// it brought up under the policy in force, and what became of the vault.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StorageOutcome {
    pub pool: String,
    pub vault: String,
    /// `unlocked`, `unencrypted`, `locked` or `absent`.
    pub vault_state: String,
    /// `on`, `off`, `setup-mode` or `unknown`.
    #[serde(default)]
    pub secure_boot: Option<String>,
    /// The same in words (`off (setup mode: ...)`).
    #[serde(default)]
    pub secure_boot_text: Option<String>,
    /// What the vault key is sealed to, in words.
    #[serde(default)]
    pub vault_bound_to: Option<String>,
}

impl Rules {
    /// The rules for this box: names and what the vault may be come from storage-init's outcome
    /// (so from the policy), not from literals; without one, the defaults.
    pub fn for_storage(mut self, outcome: Option<&StorageOutcome>) -> Rules {
        if let Some(o) = outcome {
            self.pool = o.pool.clone();
            self.vault = o.vault.clone();
            self.vault_unencrypted_ok = o.vault_state == "unencrypted";
        }
        self
    }
}

/// What was seen at one moment.
#[derive(Debug, Clone)]
pub struct Observation {
    pub init: InitStatus,
    /// `zpool list -H -o health <pool>`, or the error.
    pub pool_health: Result<String, String>,
    /// `zfs get -H -o value keystatus <vault>`, or the error.
    pub vault_key: Result<String, String>,
    /// Per service: how long it has been running with its current pid.
    pub up_for: BTreeMap<String, Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Not yet; what is still awaited.
    Waiting(String),
    Failed(String),
}

pub fn evaluate(r: &Rules, o: &Observation) -> Verdict {
    for name in &r.required_onboot {
        match o.init.onboot.iter().find(|s| &s.name == name) {
            None => return Verdict::Failed(format!("onboot {name} did not run")),
            Some(s) if s.exit == Some(0) => {}
            Some(s) => {
                let why = s.error.clone().unwrap_or_else(|| match s.exit {
                    Some(c) => format!("exit {c}"),
                    None => "no exit status".into(),
                });
                return Verdict::Failed(format!("onboot {name} failed: {why}"));
            }
        }
    }
    if let Some(e) = o.init.errors.first() {
        return Verdict::Failed(format!("init: {e}"));
    }
    match &o.pool_health {
        Ok(h) if matches!(h.trim(), "ONLINE" | "DEGRADED") => {}
        Ok(h) => return Verdict::Failed(format!("pool {} is {}", r.pool, h.trim())),
        Err(e) => return Verdict::Failed(format!("pool {} is not imported: {e}", r.pool)),
    }
    match &o.vault_key {
        Ok(k) if k.trim() == "available" => {}
        Ok(k) if k.trim() == "-" && r.vault_unencrypted_ok => {}
        Ok(k) => return Verdict::Failed(format!("vault {} key is {}", r.vault, k.trim())),
        Err(e) => return Verdict::Failed(format!("vault {}: {e}", r.vault)),
    }
    let mut waiting = Vec::new();
    for s in o
        .init
        .services
        .iter()
        .filter(|s| !r.ignore.contains(&s.name))
    {
        if s.starts > r.max_starts {
            return Verdict::Failed(format!(
                "service {} is crash-looping ({} starts, now {})",
                s.name, s.starts, s.state
            ));
        }
        // A one-shot service (the console status summary) that finished cleanly is done.
        if s.state == "exited" && s.last_exit == Some(0) {
            continue;
        }
        let up = o.up_for.get(&s.name).copied().unwrap_or_default();
        if s.state != "running" || up < r.settle {
            // Names and states only, so the message changes (and is logged) only on real change.
            waiting.push(format!("{} ({})", s.name, s.state));
        }
    }
    if waiting.is_empty() {
        Verdict::Healthy
    } else {
        Verdict::Waiting(format!("services settling: {}", waiting.join(", ")))
    }
}

/// Tracks how long each service has kept its pid across observations.
#[derive(Debug, Default)]
pub struct Uptimes {
    seen: BTreeMap<String, (i32, Duration)>,
}

impl Uptimes {
    /// `now` is time since the watch began.
    pub fn observe(&mut self, st: &InitStatus, now: Duration) -> BTreeMap<String, Duration> {
        let mut out = BTreeMap::new();
        for s in &st.services {
            match (s.state.as_str(), s.pid) {
                ("running", Some(pid)) => {
                    let since = match self.seen.get(&s.name) {
                        Some((p, t)) if *p == pid => *t,
                        _ => now,
                    };
                    self.seen.insert(s.name.clone(), (pid, since));
                    out.insert(s.name.clone(), now - since);
                }
                _ => {
                    self.seen.remove(&s.name);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        services: &[(&str, &str, Option<i32>, u32)],
        storage_exit: Option<i32>,
    ) -> InitStatus {
        InitStatus {
            onboot: vec![Step {
                name: "storage-init".into(),
                exit: storage_exit,
                ..Step::default()
            }],
            services: services
                .iter()
                .map(|(n, st, pid, starts)| Service {
                    name: (*n).into(),
                    pid: *pid,
                    state: (*st).into(),
                    starts: *starts,
                    last_exit: (*st == "exited").then_some(0),
                })
                .collect(),
            ..InitStatus::default()
        }
    }

    fn obs(init: InitStatus, up: &[(&str, u64)]) -> Observation {
        Observation {
            init,
            pool_health: Ok("ONLINE\n".into()),
            vault_key: Ok("available\n".into()),
            up_for: up
                .iter()
                .map(|(n, s)| ((*n).to_string(), Duration::from_secs(*s)))
                .collect(),
        }
    }

    #[test]
    fn healthy_once_every_service_has_settled() {
        let r = Rules::default();
        let st = status(
            &[
                ("zed", "running", Some(10), 1),
                ("ab-health", "running", Some(11), 1),
            ],
            Some(0),
        );
        assert!(matches!(
            evaluate(&r, &obs(st.clone(), &[("zed", 3)])),
            Verdict::Waiting(w) if w.contains("zed")
        ));
        assert_eq!(evaluate(&r, &obs(st, &[("zed", 15)])), Verdict::Healthy);
        // A one-shot service that finished with 0 is done; one that failed is not.
        let mut st = status(
            &[
                ("zed", "running", Some(10), 1),
                ("status", "exited", None, 1),
            ],
            Some(0),
        );
        assert_eq!(
            evaluate(&r, &obs(st.clone(), &[("zed", 15)])),
            Verdict::Healthy
        );
        st.services[1].last_exit = Some(1);
        assert!(matches!(
            evaluate(&r, &obs(st, &[("zed", 15)])),
            Verdict::Waiting(w) if w.contains("status (exited)")
        ));
    }

    #[test]
    fn a_box_the_policy_lets_run_without_a_tpm_is_healthy_with_its_own_names() {
        let out: StorageOutcome = serde_json::from_str(
            r#"{"pool":"tank","vault":"tank/vault","vault_state":"unencrypted"}"#,
        )
        .unwrap();
        let r = Rules::default().for_storage(Some(&out));
        assert_eq!((r.pool.as_str(), r.vault.as_str()), ("tank", "tank/vault"));
        let st = status(&[("zed", "running", Some(10), 1)], Some(0));
        let mut o = obs(st, &[("zed", 30)]);
        o.vault_key = Ok("-\n".into());
        assert_eq!(evaluate(&r, &o), Verdict::Healthy);
        // Without that outcome an unencrypted vault is a failure.
        assert!(matches!(
            evaluate(&Rules::default(), &o),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn each_failure_is_named() {
        let r = Rules::default();
        let ok = status(&[("zed", "running", Some(10), 1)], Some(0));
        let f = |o: Observation| match evaluate(&r, &o) {
            Verdict::Failed(m) => m,
            v => panic!("{v:?}"),
        };
        assert!(f(obs(status(&[], Some(1)), &[])).contains("onboot storage-init failed: exit 1"));
        assert!(f(obs(InitStatus::default(), &[])).contains("did not run"));
        let mut o = obs(ok.clone(), &[("zed", 20)]);
        o.pool_health = Err("cannot open 'persist': no such pool".into());
        assert!(f(o).contains("pool persist is not imported"));
        let mut o = obs(ok.clone(), &[("zed", 20)]);
        o.pool_health = Ok("FAULTED".into());
        assert!(f(o).contains("FAULTED"));
        let mut o = obs(ok.clone(), &[("zed", 20)]);
        o.vault_key = Ok("unavailable".into());
        assert!(f(o).contains("key is unavailable"));
        let looping = status(&[("broken", "restarting", None, 4)], Some(0));
        assert!(f(obs(looping, &[])).contains("service broken is crash-looping (4 starts"));
    }

    #[test]
    fn uptime_restarts_with_a_new_pid() {
        let mut u = Uptimes::default();
        let s = |pid| status(&[("zed", "running", Some(pid), 1)], Some(0));
        u.observe(&s(5), Duration::from_secs(0));
        assert_eq!(u.observe(&s(5), Duration::from_secs(9))["zed"].as_secs(), 9);
        assert_eq!(
            u.observe(&s(6), Duration::from_secs(10))["zed"].as_secs(),
            0
        );
        let down = status(&[("zed", "restarting", None, 2)], Some(0));
        assert!(u.observe(&down, Duration::from_secs(11)).is_empty());
    }
}
