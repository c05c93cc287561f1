//! Health: what the drives, the pool and the datasets report, turned into alerts with a
//! severity by one pure function. A reading that could not be taken is never read as healthy:
//! its subject's earlier alerts stand (see [`crate::journal`]), and the failure is an alert itself.

pub use crate::alert::{Alert, Severity};
use crate::iostat::VolumeIo;
use crate::pool::PoolState;
use crate::smart::{warning_bits, DriveHealth, Reading};
use serde::{Deserialize, Serialize};

/// One drive as seen now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Device {
    pub name: String,
    pub stable_id: String,
    pub bus: String,
    pub size: u64,
    #[serde(flatten)]
    pub reading: Reading,
}

impl Device {
    /// One word for how the drive is: its worst alert, else `ok`, `no report` or `unreadable`.
    pub fn summary(&self, alerts: &[Alert]) -> String {
        let key = self.key();
        match (
            &self.reading,
            alerts
                .iter()
                .filter(|a| a.key.starts_with(&key))
                .map(|a| a.severity)
                .max(),
        ) {
            (_, Some(s)) => s.as_str().to_string(),
            (Reading::Data(_), None) => "ok".into(),
            (Reading::NoData { .. }, None) => "no report".into(),
            (Reading::Unreadable { .. }, None) => "unreadable".into(),
        }
    }

    pub fn data(&self) -> Option<&DriveHealth> {
        match &self.reading {
            Reading::Data(h) => Some(h),
            _ => None,
        }
    }
    /// The key prefix of this device's alerts.
    pub fn key(&self) -> String {
        format!("disk:{}:", self.stable_id)
    }
}

/// `zpool list -Hp` figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Space {
    pub size: u64,
    pub allocated: u64,
    pub free: u64,
    pub capacity_pct: u64,
    pub fragmentation_pct: Option<u64>,
}

/// A filesystem dataset with a quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Quota {
    pub dataset: String,
    pub used: u64,
    pub quota: u64,
}

/// Everything one look gathered.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Observed {
    pub at: u64,
    pub pool_name: String,
    pub devices: Vec<Device>,
    /// The pool: from `zpool status` when imported, else as `zpool import` lists it.
    pub pool: Option<PoolState>,
    pub imported: bool,
    /// Why the pool could not be read, when it could not.
    pub pool_error: Option<String>,
    pub space: Option<Space>,
    pub quotas: Vec<Quota>,
    pub volumes: Vec<VolumeIo>,
    /// What storage-init made of the vault this boot (`None`: it wrote no outcome).
    pub vault: Option<VaultSeen>,
}

/// The vault as storage-init's outcome file reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VaultSeen {
    #[serde(rename = "vault_state", default)]
    pub state: String,
    #[serde(rename = "vault_reason", default)]
    pub reason: Option<String>,
    /// `ok`, `missing`, `changed`, `legacy`; `None` when the vault was not unlocked by its seal.
    #[serde(rename = "vault_recovery", default)]
    pub recovery: Option<String>,
    /// Policy datasets left unmounted because their mountpoint was not the policy's.
    #[serde(default)]
    pub mounts_refused: Vec<String>,
}

/// Pure: the vault's alerts. A missing or changed recovery property is tampering (the box never
/// removes or rewrites it by itself); a locked or refused vault holds guest data hostage.
fn vault_alerts(o: &Observed, out: &mut Vec<Alert>) {
    let Some(v) = &o.vault else { return };
    let name = &o.pool_name;
    if !v.mounts_refused.is_empty() {
        out.push(Alert {
            key: format!("mounts:{name}:refused"),
            severity: Severity::Critical,
            message: format!(
                "datasets left unmounted, their mountpoint changed on the disk: {}",
                v.mounts_refused.join("; ")
            ),
        });
    }
    if v.state == "locked" {
        out.push(Alert {
            key: format!("vault:{name}:locked"),
            severity: Severity::Critical,
            message: format!(
                "{name}/vault is locked: {}",
                v.reason.as_deref().unwrap_or("see storage-init's log")
            ),
        });
    }
    let tampered = match v.recovery.as_deref() {
        Some("missing") => "is gone",
        Some("changed") => "is not the one this box wrote",
        _ => return,
    };
    out.push(Alert {
        key: format!("vault:{name}:recovery"),
        severity: Severity::Critical,
        message: format!(
            "{name}/vault's recovery property {tampered}: someone with the disks changed it (the box never does); no new recovery key was made. If your recovery key is safe, `storagectl vault recovery-key` makes a new one and rotates the vault key"
        ),
    });
}

impl Observed {
    /// Key prefixes whose subjects could not be read this time: their earlier alerts stand.
    pub fn unknown(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .devices
            .iter()
            .filter(|d| matches!(d.reading, Reading::Unreadable { .. }))
            .map(|d| d.key())
            .collect();
        if self.pool.is_none() {
            out.push(format!("pool:{}:", self.pool_name));
            out.push("member:".into());
        }
        if self.space.is_none() || !self.imported {
            out.push(format!("pool:{}:capacity", self.pool_name));
            out.push("dataset:".into());
        }
        out
    }
}

/// The tier `pct` has reached, if any.
fn tier(pct: u64, tiers: [u64; 3]) -> Option<Severity> {
    if pct >= tiers[2] {
        Some(Severity::Critical)
    } else if pct >= tiers[1] {
        Some(Severity::Warning)
    } else if pct >= tiers[0] {
        Some(Severity::Notice)
    } else {
        None
    }
}

/// The alerts one drive's reading raises.
pub fn device_alerts(d: &Device, out: &mut Vec<Alert>) {
    // The id comes from the drive's own model and serial strings: no control characters from a
    // hostile device reach the log or the console.
    let who: String = format!("{} ({})", d.name, d.stable_id)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let mut push = |what: &str, severity, message: String| {
        out.push(Alert {
            key: format!("{}{what}", d.key()),
            severity,
            message: format!("{who}: {message}"),
        })
    };
    let h = match &d.reading {
        Reading::Data(h) => h,
        Reading::NoData { .. } => return,
        Reading::Unreadable { reason } => {
            push(
                "unreadable",
                Severity::Warning,
                format!(
                    "its health report could not be read ({reason}); earlier alerts about it stand"
                ),
            );
            return;
        }
    };
    if let Some(l) = h
        .selftest
        .as_ref()
        .and_then(|t| t.last())
        .filter(|l| l.outcome == crate::selftest::Outcome::Failed)
    {
        // A drive that fails its own test is failing, whatever its other counters say.
        push(
            "selftest-failed",
            Severity::Critical,
            format!(
                "its last {} self-test failed ({}); replace the drive",
                l.kind, l.result
            ),
        );
    }
    if let Some(bits) = h.critical_warning.filter(|&b| b != 0) {
        // Temperature alone is a warning; spare, reliability, read-only and backup failures
        // mean the drive is failing.
        let sev = if bits & !0x02 != 0 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        push(
            "critical-warning",
            sev,
            format!(
                "the drive reports a critical warning (0x{bits:02x}: {})",
                warning_bits(bits).join(", ")
            ),
        );
    }
    if h.smart_passed == Some(false) {
        push(
            "smart",
            Severity::Critical,
            "SMART overall assessment FAILED: the drive expects to fail; replace it (storagectl disk replace)".into(),
        );
    }
    if let Some(t) = h.temperature_c {
        let crit = h.temp_critical_c.filter(|&c| t >= c);
        let warn = h.temp_warning_c.filter(|&w| t >= w);
        if let Some(c) = crit {
            push(
                "temperature",
                Severity::Critical,
                format!("{t} °C, at or above its critical {c} °C"),
            );
        } else if let Some(w) = warn {
            push(
                "temperature",
                Severity::Warning,
                format!("{t} °C, at or above its warning {w} °C"),
            );
        }
    }
    if let (Some(a), Some(th)) = (h.available_spare_pct, h.spare_threshold_pct) {
        if th > 0 && a < th {
            push(
                "spare",
                Severity::Critical,
                format!("available spare {a}% is below its threshold {th}%"),
            );
        }
    }
    if let Some(u) = h.percentage_used {
        if u >= 100 {
            push(
                "wear",
                Severity::Warning,
                format!("{u}% of its rated endurance used: plan its replacement"),
            );
        } else if u >= 90 {
            push(
                "wear",
                Severity::Notice,
                format!("{u}% of its rated endurance used"),
            );
        }
    }
    if let Some(n) = h.media_errors.filter(|&n| n > 0) {
        push(
            "media-errors",
            Severity::Warning,
            format!("{n} media errors (unrecovered data integrity errors) on record"),
        );
    }
    for (what, n, words) in [
        ("reallocated", h.reallocated_sectors, "reallocated sectors"),
        ("pending", h.pending_sectors, "sectors pending reallocation"),
        (
            "uncorrectable",
            h.offline_uncorrectable,
            "uncorrectable sectors",
        ),
    ] {
        if let Some(n) = n.filter(|&n| n > 0) {
            push(what, Severity::Warning, format!("{n} {words}"));
        }
    }
}

/// A member's name in alert keys: its guid, or its name when the listing gave no guid.
fn member_id(l: &crate::pool::Leaf) -> String {
    if l.guid != 0 {
        l.guid.to_string()
    } else {
        l.name.clone()
    }
}

fn pool_alerts(o: &Observed, tiers: [u64; 3], out: &mut Vec<Alert>) {
    let name = &o.pool_name;
    let Some(p) = &o.pool else {
        out.push(Alert {
            key: format!("pool:{name}:unavailable"),
            severity: Severity::Critical,
            message: format!(
                "pool {name} cannot be read: {}",
                o.pool_error.as_deref().unwrap_or("not imported")
            ),
        });
        return;
    };
    if !o.imported {
        out.push(Alert {
            key: format!("pool:{name}:unavailable"),
            severity: Severity::Critical,
            message: format!(
                "pool {name} is not imported: `zpool import` lists it {}{}",
                p.state,
                o.pool_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        });
    } else {
        match p.state.as_str() {
            "ONLINE" | "DEGRADED" => {}
            s => out.push(Alert {
                key: format!("pool:{name}:state"),
                severity: Severity::Critical,
                message: format!("pool {name} is {s}"),
            }),
        }
    }
    member_alerts(p, name, out);
    if p.error_count > 0 {
        out.push(Alert {
            key: format!("pool:{name}:data-errors"),
            severity: Severity::Critical,
            message: format!(
                "pool {name} has {} data errors: files with unrecoverable blocks (`zpool status -v {name}` names them)",
                p.error_count
            ),
        });
    }
    space_alerts(o, tiers, out);
}

/// Members that are not ONLINE, by what their group can still lose, and members with errors.
fn member_alerts(p: &PoolState, name: &str, out: &mut Vec<Alert>) {
    for l in &p.leaves {
        let bad = |x: &crate::pool::Leaf| x.state != "ONLINE";
        if bad(l) {
            let (sev, why) = match &l.group {
                None => (
                    Severity::Critical,
                    "a stripe member: the pool's data is at risk until it is back".to_string(),
                ),
                Some(g) => {
                    let in_group = |x: &&crate::pool::Leaf| x.group.as_deref() == Some(g.as_str());
                    let healthy = p.leaves.iter().filter(in_group).filter(|x| !bad(x)).count();
                    let failed = p.leaves.iter().filter(in_group).filter(|x| bad(x)).count();
                    // What the group can still lose: a mirror all but one member, raidzN N.
                    let spare_redundancy = if g.starts_with("mirror") {
                        healthy.saturating_sub(1)
                    } else if let Some(n) = g
                        .strip_prefix("raidz")
                        .and_then(|r| r.split('-').next())
                        .and_then(|n| n.parse::<usize>().ok())
                    {
                        n.saturating_sub(failed)
                    } else {
                        healthy.saturating_sub(1)
                    };
                    (
                        if spare_redundancy == 0 {
                            Severity::Critical
                        } else {
                            Severity::Warning
                        },
                        format!(
                            "{g} has {healthy} healthy member{}; replace it (storagectl disk replace)",
                            if healthy == 1 { "" } else { "s" }
                        ),
                    )
                }
            };
            out.push(Alert {
                key: format!("member:{}:state", member_id(l)),
                severity: sev,
                message: format!("member {} of pool {name} is {}: {why}", l.name, l.state),
            });
        }
        let e = l.read_errors + l.write_errors + l.checksum_errors;
        if e > 0 {
            out.push(Alert {
                key: format!("member:{}:errors", member_id(l)),
                severity: Severity::Warning,
                message: format!(
                    "member {} of pool {name} has {} read, {} write and {} checksum errors",
                    l.name, l.read_errors, l.write_errors, l.checksum_errors
                ),
            });
        }
    }
}

/// The pool and each dataset with a quota against the capacity tiers.
fn space_alerts(o: &Observed, tiers: [u64; 3], out: &mut Vec<Alert>) {
    let name = &o.pool_name;
    if let Some(s) = &o.space {
        if let Some(sev) = tier(s.capacity_pct, tiers) {
            out.push(Alert {
                key: format!("pool:{name}:capacity"),
                severity: sev,
                message: format!(
                    "pool {name} is {}% full ({} of {}); ZFS slows down as it fills",
                    s.capacity_pct,
                    storage::policy::human(s.allocated),
                    storage::policy::human(s.size)
                ),
            });
        }
    }
    for q in &o.quotas {
        let pct = (q.used as u128 * 100 / q.quota.max(1) as u128) as u64;
        if let Some(sev) = tier(pct, tiers) {
            out.push(Alert {
                key: format!("dataset:{}:quota", q.dataset),
                severity: sev,
                message: format!(
                    "{} uses {pct}% of its {} quota{}",
                    q.dataset,
                    storage::policy::human(q.quota),
                    if pct >= 100 {
                        ": writes to it fail until space is freed"
                    } else {
                        ""
                    }
                ),
            });
        }
    }
}

/// Every alert that holds now, worst first.
pub fn assess(o: &Observed, tiers: [u64; 3]) -> Vec<Alert> {
    let mut out = Vec::new();
    for d in &o.devices {
        device_alerts(d, &mut out);
    }
    pool_alerts(o, tiers, &mut out);
    vault_alerts(o, &mut out);
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.key.cmp(&b.key)));
    out
}

/// What `storagectl health` shows: the alerts that hold now (with when each began, from the
/// journal), the drives, the pool and the last events.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HealthView {
    pub observed: Observed,
    pub alerts: Vec<crate::journal::Active>,
    pub events: Vec<crate::journal::Event>,
    /// Why the journal on the pool could not be read, when it could not.
    pub journal_error: Option<String>,
    /// What is wrong, one line each (empty: all is well): what `storagectl health -x` prints.
    pub problems: Vec<String>,
    /// What `storagectl health` exits with: 0 all well, 6 pool not imported, 7 degraded.
    pub exit_code: u8,
}

/// Events `storagectl health` shows.
pub const RECENT_EVENTS: usize = 10;

impl HealthView {
    /// What is wrong, one line each: the pool's state when it is not ONLINE (or not imported)
    /// and every critical alert; empty when all is well.
    /// Fills in `problems` and `exit_code` from the rest.
    pub fn finish(mut self) -> HealthView {
        self.problems = self.find_problems();
        self.exit_code = self.find_exit_code();
        self
    }

    fn find_problems(&self) -> Vec<String> {
        let o = &self.observed;
        let mut v = Vec::new();
        if !o.imported {
            v.push(format!(
                "pool {}: not imported{}",
                o.pool_name,
                o.pool_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        } else if let Some(p) = o.pool.as_ref().filter(|p| p.state != "ONLINE") {
            v.push(format!("pool {}: {}", p.name, p.state));
        } else if let Some(e) = &o.pool_error {
            v.push(format!("pool {}: unreadable ({e})", o.pool_name));
        }
        for a in &self.alerts {
            if a.alert.severity == Severity::Critical {
                v.push(format!("critical: {}", a.alert.message));
            }
        }
        v
    }

    /// The exit code `storagectl health` ends with: 0 when all is well, pool absent's when it is
    /// not imported, else degraded's when anything is wrong. Filled in by [`HealthView::finish`].
    fn find_exit_code(&self) -> u8 {
        if !self.observed.imported {
            platform::exit::Kind::PoolAbsent.exit_code()
        } else if self.find_problems().is_empty() {
            0
        } else {
            platform::exit::DEGRADED
        }
    }

    fn device_state(&self, d: &Device) -> String {
        let alerts: Vec<Alert> = self.alerts.iter().map(|a| a.alert.clone()).collect();
        d.summary(&alerts)
    }

    pub fn render(&self, bytes: bool) -> String {
        use storage::policy::size_cell;
        let when = |t: u64| platform::units::when(t, self.observed.at);
        let mut s = String::new();
        let count = |sev| {
            self.alerts
                .iter()
                .filter(|a| a.alert.severity == sev)
                .count()
        };
        if self.alerts.is_empty() {
            s.push_str("ALERTS: none\n");
        } else {
            s.push_str(&format!(
                "ALERTS: {} critical, {} warning, {} notice\n",
                count(Severity::Critical),
                count(Severity::Warning),
                count(Severity::Notice)
            ));
            for a in &self.alerts {
                s.push_str(&format!(
                    "  {:<8}  since {}  {}\n",
                    a.alert.severity.as_str(),
                    when(a.since),
                    a.alert.message
                ));
            }
        }
        if let Some(e) = &self.journal_error {
            s.push_str(&format!("(the alert journal could not be read: {e})\n"));
        }
        s.push('\n');
        let row = |c: [&str; 8]| {
            format!(
                "{:<10} {:<7} {:>7}  {:<10} {:>6} {:>5} {:>9} {:>9}\n",
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
            )
        };
        s.push_str(&row([
            "DEVICE",
            "BUS",
            "SIZE",
            "HEALTH",
            "TEMP",
            "WEAR",
            "MEDIA-ERR",
            "POWER-ON",
        ]));
        let dash = || "-".to_string();
        let mut notes = Vec::new();
        for d in &self.observed.devices {
            let h = d.data();
            let temp = h
                .and_then(|h| h.temperature_c)
                .map(|t| format!("{t}°C"))
                .unwrap_or_else(dash);
            let wear = h
                .and_then(|h| h.percentage_used)
                .map(|u| format!("{u}%"))
                .unwrap_or_else(dash);
            let media = h
                .and_then(|h| h.media_errors.or(h.reallocated_sectors))
                .map(|n| n.to_string())
                .unwrap_or_else(dash);
            let hours = h
                .and_then(|h| h.power_on_hours)
                .map(|n| format!("{n} h"))
                .unwrap_or_else(dash);
            s.push_str(&row([
                &d.name,
                &d.bus,
                &size_cell(d.size, bytes),
                &self.device_state(d),
                &temp,
                &wear,
                &media,
                &hours,
            ]));
            match &d.reading {
                Reading::NoData { reason } => {
                    notes.push(format!("{}: no health report: {reason}", d.name))
                }
                Reading::Unreadable { reason } => {
                    notes.push(format!("{}: unreadable: {reason}", d.name))
                }
                Reading::Data(_) => {}
            }
        }
        for n in notes {
            s.push_str(&format!("  {n}\n"));
        }
        s.push('\n');
        let o = &self.observed;
        match (&o.pool, &o.space) {
            (Some(p), Some(sp)) => s.push_str(&format!(
                "pool {}: {}, {}% full ({} of {}){}\n",
                o.pool_name,
                p.state,
                sp.capacity_pct,
                size_cell(sp.allocated, bytes),
                size_cell(sp.size, bytes),
                sp.fragmentation_pct
                    .map(|f| format!(", fragmentation {f}%"))
                    .unwrap_or_default()
            )),
            (Some(p), None) => s.push_str(&format!("pool {}: {}\n", o.pool_name, p.state)),
            (None, _) => s.push_str(&format!(
                "pool {}: cannot be read: {}\n",
                o.pool_name,
                o.pool_error.as_deref().unwrap_or("-")
            )),
        }
        for q in &o.quotas {
            s.push_str(&format!(
                "  {}: {} of {} quota ({}%)\n",
                q.dataset,
                size_cell(q.used, bytes),
                size_cell(q.quota, bytes),
                q.used as u128 * 100 / q.quota.max(1) as u128
            ));
        }
        if !self.events.is_empty() {
            s.push_str("\nRECENT EVENTS\n");
            for e in &self.events {
                s.push_str(&format!(
                    "  {}  {:<9} {:<8}  {}\n",
                    when(e.at),
                    e.change.as_str(),
                    e.alert.severity.as_str(),
                    e.alert.message
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::parse_status;

    fn dev(name: &str, h: DriveHealth) -> Device {
        Device {
            name: name.into(),
            stable_id: format!("id-{name}"),
            bus: "nvme".into(),
            size: 1 << 30,
            reading: Reading::Data(Box::new(h)),
        }
    }

    fn healthy_pool() -> Observed {
        let st = std::fs::read_to_string(format!(
            "{}/tests/fixtures/status-new.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let pool = parse_status(&st, "persist").unwrap();
        Observed {
            pool_name: "persist".into(),
            pool: Some(pool),
            imported: true,
            space: Some(Space {
                size: 10 << 30,
                allocated: 1 << 30,
                free: 9 << 30,
                capacity_pct: 10,
                fragmentation_pct: Some(0),
            }),
            ..Observed::default()
        }
    }

    fn keys(a: &[Alert]) -> Vec<(String, Severity)> {
        a.iter().map(|x| (x.key.clone(), x.severity)).collect()
    }

    #[test]
    fn a_healthy_box_has_no_alerts() {
        let mut o = healthy_pool();
        o.devices.push(dev(
            "nvme0n1",
            DriveHealth {
                temperature_c: Some(50),
                temp_warning_c: Some(70),
                temp_critical_c: Some(100),
                critical_warning: Some(0),
                media_errors: Some(0),
                percentage_used: Some(3),
                ..DriveHealth::default()
            },
        ));
        o.devices.push(Device {
            reading: Reading::NoData {
                reason: "virtio".into(),
            },
            ..dev("vda", DriveHealth::default())
        });
        assert!(
            assess(&o, [80, 90, 95]).is_empty(),
            "{:?}",
            assess(&o, [80, 90, 95])
        );
    }

    #[test]
    fn a_tampered_recovery_property_or_a_locked_vault_is_a_critical_alert() {
        let seen = |state: &str, recovery: Option<&str>| VaultSeen {
            state: state.into(),
            reason: Some("its key is sealed to this TPM only".into()),
            recovery: recovery.map(String::from),
            mounts_refused: vec![],
        };
        let mut o = healthy_pool();
        for (v, want) in [
            (seen("unlocked", Some("ok")), vec![]),
            (seen("unlocked", Some("legacy")), vec![]),
            (seen("unlocked", None), vec![]),
            (
                seen("unlocked", Some("missing")),
                vec![("vault:persist:recovery".to_string(), Severity::Critical)],
            ),
            (
                seen("unlocked", Some("changed")),
                vec![("vault:persist:recovery".to_string(), Severity::Critical)],
            ),
            (
                seen("locked", None),
                vec![("vault:persist:locked".to_string(), Severity::Critical)],
            ),
        ] {
            o.vault = Some(v.clone());
            let a = assess(&o, [80, 90, 95]);
            assert_eq!(keys(&a), want, "{v:?}");
            assert!(a.iter().all(|a| !a.message.contains("r2:")), "{a:?}");
        }
        // A dataset whose mountpoint was moved on the disk.
        o.vault = Some(VaultSeen {
            mounts_refused: vec!["persist/newlog: NOT MOUNTED: its mountpoint is /etc".into()],
            ..seen("unlocked", Some("ok"))
        });
        let a = assess(&o, [80, 90, 95]);
        assert_eq!(
            keys(&a),
            [("mounts:persist:refused".to_string(), Severity::Critical)]
        );
        assert!(a[0].message.contains("/etc"), "{a:?}");
        // As storage-init writes it.
        let v: VaultSeen = serde_json::from_str(
            r#"{"pool":"persist","vault_state":"unlocked","vault_reason":null,"vault_recovery":"missing"}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            VaultSeen {
                reason: None,
                ..seen("unlocked", Some("missing"))
            }
        );
    }

    #[test]
    fn drive_reports_become_alerts_by_what_they_mean() {
        let mut o = healthy_pool();
        o.devices.push(dev(
            "nvme0n1",
            DriveHealth {
                critical_warning: Some(0x04),
                temperature_c: Some(75),
                temp_warning_c: Some(70),
                temp_critical_c: Some(80),
                media_errors: Some(3),
                percentage_used: Some(101),
                available_spare_pct: Some(5),
                spare_threshold_pct: Some(10),
                ..DriveHealth::default()
            },
        ));
        o.devices.push(dev(
            "nvme1n1",
            DriveHealth {
                critical_warning: Some(0x02),
                temperature_c: Some(80),
                temp_critical_c: Some(80),
                ..DriveHealth::default()
            },
        ));
        o.devices.push(dev(
            "sda",
            DriveHealth {
                smart_passed: Some(false),
                reallocated_sectors: Some(8),
                pending_sectors: Some(0),
                selftest: Some(crate::selftest::SelfTest::Idle {
                    last: Some(crate::selftest::Last {
                        kind: "long".into(),
                        outcome: crate::selftest::Outcome::Failed,
                        result: "Completed: read failure".into(),
                        hours_ago: Some(1),
                    }),
                }),
                ..DriveHealth::default()
            },
        ));
        // A passed or aborted test is no alert.
        o.devices.push(dev(
            "sdb",
            DriveHealth {
                selftest: Some(crate::selftest::SelfTest::Idle {
                    last: Some(crate::selftest::Last {
                        kind: "short".into(),
                        outcome: crate::selftest::Outcome::Aborted,
                        result: "Aborted by host".into(),
                        hours_ago: None,
                    }),
                }),
                ..DriveHealth::default()
            },
        ));
        let a = assess(&o, [80, 90, 95]);
        let k = keys(&a);
        use Severity::*;
        for want in [
            ("disk:id-nvme0n1:critical-warning", Critical),
            ("disk:id-nvme0n1:temperature", Warning),
            ("disk:id-nvme0n1:media-errors", Warning),
            ("disk:id-nvme0n1:wear", Warning),
            ("disk:id-nvme0n1:spare", Critical),
            ("disk:id-nvme1n1:critical-warning", Warning),
            ("disk:id-nvme1n1:temperature", Critical),
            ("disk:id-sda:smart", Critical),
            ("disk:id-sda:reallocated", Warning),
            ("disk:id-sda:selftest-failed", Critical),
        ] {
            assert!(
                k.contains(&(want.0.to_string(), want.1)),
                "{want:?} not in {k:?}"
            );
        }
        assert_eq!(k.len(), 10, "{k:?}");
        let st = a
            .iter()
            .find(|x| x.key.ends_with("selftest-failed"))
            .unwrap();
        assert!(
            st.message
                .contains("last long self-test failed (Completed: read failure)"),
            "{}",
            st.message
        );
        assert!(a[0].severity == Critical && a.last().unwrap().severity == Warning);
        let cw = a
            .iter()
            .find(|x| x.key.ends_with("nvme0n1:critical-warning"))
            .unwrap();
        assert!(
            cw.message.contains("reliability degraded") && cw.message.contains("nvme0n1"),
            "{}",
            cw.message
        );
    }

    #[test]
    fn a_drive_s_own_strings_cannot_put_control_characters_in_an_alert() {
        let mut d = dev(
            "sda",
            DriveHealth {
                smart_passed: Some(false),
                ..DriveHealth::default()
            },
        );
        d.stable_id = "EVIL\x1b[2J\nfake: all ok".into();
        let mut a = Vec::new();
        device_alerts(&d, &mut a);
        assert!(
            a[0].message
                .starts_with("sda (EVIL?[2J?fake: all ok): SMART"),
            "{}",
            a[0].message
        );
        assert!(!a[0].message.chars().any(|c| c.is_control()));
    }

    #[test]
    fn an_unreadable_drive_is_an_alert_and_its_old_alerts_are_kept_unknown() {
        let mut o = healthy_pool();
        o.devices.push(Device {
            reading: Reading::Unreadable {
                reason: "smartctl timed out after 30 s".into(),
            },
            ..dev("sda", DriveHealth::default())
        });
        let a = assess(&o, [80, 90, 95]);
        assert_eq!(
            keys(&a),
            [("disk:id-sda:unreadable".to_string(), Severity::Warning)]
        );
        assert!(a[0].message.contains("timed out"));
        assert_eq!(o.unknown(), ["disk:id-sda:"]);
    }

    #[test]
    fn capacity_tiers_apply_to_the_pool_and_to_each_quota() {
        let mut o = healthy_pool();
        let tiers = [80, 90, 95];
        for (pct, want) in [
            (79, None),
            (80, Some(Severity::Notice)),
            (90, Some(Severity::Warning)),
            (94, Some(Severity::Warning)),
            (95, Some(Severity::Critical)),
            (100, Some(Severity::Critical)),
        ] {
            o.space.as_mut().unwrap().capacity_pct = pct;
            let a = assess(&o, tiers);
            assert_eq!(a.first().map(|x| x.severity), want, "{pct}%: {a:?}");
            if want.is_some() {
                assert_eq!(a[0].key, "pool:persist:capacity");
                assert!(a[0].message.contains(&format!("{pct}% full")));
            }
        }
        o.space.as_mut().unwrap().capacity_pct = 10;
        o.quotas = vec![
            Quota {
                dataset: "persist/newlog".into(),
                used: 100 << 20,
                quota: 100 << 20,
            },
            Quota {
                dataset: "persist/containerd".into(),
                used: 85,
                quota: 100,
            },
            Quota {
                dataset: "persist/config".into(),
                used: 1,
                quota: 100,
            },
        ];
        let a = assess(&o, tiers);
        assert_eq!(
            keys(&a),
            [
                (
                    "dataset:persist/newlog:quota".to_string(),
                    Severity::Critical
                ),
                (
                    "dataset:persist/containerd:quota".to_string(),
                    Severity::Notice
                ),
            ]
        );
        assert!(a[0].message.contains("100%") && a[0].message.contains("writes to it fail"));
        // Other tiers from the policy.
        assert_eq!(assess(&o, [50, 60, 101])[1].severity, Severity::Warning);
    }

    #[test]
    fn pool_state_members_and_data_errors_are_alerts() {
        let j = r#"{"pools":{"p":{"state":"DEGRADED","error_count":"2","vdevs":{"p":{"vdev_type":"root","vdevs":{
            "mirror-0":{"name":"mirror-0","vdev_type":"mirror","state":"DEGRADED","vdevs":{
              "aaaa":{"name":"aaaa","guid":11,"vdev_type":"disk","state":"ONLINE","read_errors":3},
              "22":{"name":"22","guid":22,"vdev_type":"disk","state":"UNAVAIL"}}},
            "cccc":{"name":"cccc","guid":33,"vdev_type":"disk","state":"ONLINE"}}}}}}}"#;
        let mut o = healthy_pool();
        o.pool_name = "p".into();
        o.pool = Some(parse_status(j, "p").unwrap());
        let a = assess(&o, [80, 90, 95]);
        let k = keys(&a);
        assert!(
            k.contains(&("member:22:state".into(), Severity::Critical)),
            "{k:?}"
        );
        assert!(
            k.contains(&("member:11:errors".into(), Severity::Warning)),
            "{k:?}"
        );
        assert!(
            k.contains(&("pool:p:data-errors".into(), Severity::Critical)),
            "{k:?}"
        );
        let m = a.iter().find(|x| x.key == "member:22:state").unwrap();
        assert!(m.message.contains("1 healthy member;"), "{}", m.message);
        // A pool that cannot be read is critical, and what depends on reading it is unknown.
        o.pool = None;
        o.space = None;
        o.pool_error = Some("no such pool".into());
        let a = assess(&o, [80, 90, 95]);
        assert_eq!(
            keys(&a),
            [("pool:p:unavailable".to_string(), Severity::Critical)]
        );
        assert!(a[0].message.contains("no such pool"));
        assert!(o.unknown().contains(&"member:".to_string()));
        // Not imported, but listed by `zpool import` with a stripe member missing: the
        // missing member is the data risk it is.
        o.pool = crate::pool::parse_import(
            "  pool: p\n state: UNAVAIL\nconfig:\n\n\tp  UNAVAIL  insufficient replicas\n\t  aaaa  ONLINE\n\t  bbbb  UNAVAIL\n",
            "p",
        );
        o.pool_error = Some("cannot open 'p': no such pool".into());
        o.imported = false;
        let a = assess(&o, [80, 90, 95]);
        let k = keys(&a);
        assert_eq!(
            k,
            [
                ("member:bbbb:state".to_string(), Severity::Critical),
                ("pool:p:unavailable".to_string(), Severity::Critical)
            ]
        );
        assert!(
            a[0].message.contains("bbbb") && a[0].message.contains("stripe member"),
            "{}",
            a[0].message
        );
        assert!(
            a[1].message.contains("not imported") && a[1].message.contains("UNAVAIL"),
            "{}",
            a[1].message
        );
        assert!(o.unknown().contains(&"dataset:".to_string()));
    }
}
