//! The storage policy (`/etc/storage.toml`, overridable from the CONFIG partition): pool layout,
//! encryption, per-service datasets with quotas and reservations, and the reserved share.
//!
//! Every error names the file, the line and the field. A policy that fails to load is never fatal
//! to the box: the caller falls back to the last good policy kept on the pool, or the built-in one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError {
    pub file: PathBuf,
    /// 1-based; 0 when no line is to blame (the file could not be read at all).
    pub line: usize,
    pub field: String,
    pub msg: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}: {}", self.file.display(), self.field, self.msg),
            n => write!(
                f,
                "{}:{n}: {}: {}",
                self.file.display(),
                self.field,
                self.msg
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

pub use platform::units::{human, interval_label, parse_interval, size_cell, utc_stamp, Size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    #[default]
    Stripe,
    Mirror,
    Raidz1,
    Raidz2,
}

impl Topology {
    /// Fewest drives the layout needs.
    pub fn min_drives(self) -> usize {
        match self {
            Topology::Stripe => 1,
            Topology::Mirror => 2,
            Topology::Raidz1 => 3,
            Topology::Raidz2 => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WithoutTpm {
    /// Stop and report: no vault without a TPM.
    #[default]
    Require,
    /// Create the vault unencrypted, with a loud warning.
    AllowUnencrypted,
    /// Development: the key comes from `encryption.keyfile`.
    Keyfile,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[serde(default = "default_pool_name")]
    pub name: String,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default = "default_ashift")]
    pub ashift: u8,
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Drives smaller than this are not pooled.
    #[serde(default = "default_min_drive")]
    pub min_drive_size: Spanned<Size>,
    /// Add blank drives found on later boots (when the topology allows).
    #[serde(default)]
    pub add_new_drives: bool,
    /// storaged replaces a missing or faulted member of a redundant group with a blank eligible
    /// drive found in the box, without being asked.
    #[serde(default)]
    pub autoreplace: bool,
    /// Stable ids of drives with foreign data that may be wiped and pooled.
    #[serde(default)]
    pub wipe: Vec<String>,
    /// ARC ceiling; default: a quarter of RAM, at least 256M (the rest is for VMs).
    #[serde(default)]
    pub arc_max: Option<Spanned<Size>>,
}

fn default_pool_name() -> String {
    "persist".into()
}
fn default_ashift() -> u8 {
    12
}
fn default_compression() -> String {
    "zstd".into()
}
fn default_min_drive() -> Spanned<Size> {
    Spanned::new(0..0, Size::Bytes(1 << 30))
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    #[serde(default)]
    pub without_tpm: WithoutTpm,
    #[serde(default)]
    pub keyfile: Option<PathBuf>,
    /// PCRs the sealed key is bound to besides PCR 7 (below). Default: none, so an OS update
    /// (new kernel and initramfs) does not lock the vault.
    #[serde(default)]
    pub pcrs: Vec<u8>,
    /// With Secure Boot on, also bind to PCR 7 (Secure Boot state and enrolled keys): the vault
    /// then stays locked when the box boots with Secure Boot off or other keys, while signed
    /// updates keep unlocking it. Default true.
    #[serde(default = "yes")]
    pub bind_secure_boot: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub mountpoint: Option<String>,
    pub quota: Option<Spanned<Size>>,
    pub reservation: Option<Spanned<Size>>,
    pub compression: Option<String>,
    pub recordsize: Option<Spanned<Size>>,
    /// Under persist/vault (encrypted) rather than directly under the pool.
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reserved {
    pub share: Spanned<Size>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub pool: Pool,
    #[serde(default = "default_encryption")]
    pub encryption: Encryption,
    #[serde(default = "default_reserved")]
    pub reserved: Reserved,
    #[serde(default)]
    pub datasets: BTreeMap<String, Dataset>,
    #[serde(default)]
    pub maintenance: Maintenance,
    #[serde(default)]
    pub health: Health,
}

/// How storaged watches the drives and the pool: how often it looks, and the capacity tiers
/// (percent full) at which a pool, or a dataset against its quota, raises a notice, a warning
/// and a critical alert.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "default_health_every")]
    pub every: String,
    #[serde(default = "default_capacity_tiers")]
    pub capacity_tiers: Vec<u64>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            every: default_health_every(),
            capacity_tiers: default_capacity_tiers(),
        }
    }
}

fn default_health_every() -> String {
    "5m".into()
}
fn default_capacity_tiers() -> Vec<u64> {
    vec![80, 90, 95]
}

impl Health {
    /// Seconds between looks (checked by [`Policy::parse`]).
    pub fn every_secs(&self) -> u64 {
        parse_interval(&self.every, MIN_MAINTENANCE_EVERY).unwrap_or(300)
    }
    /// The notice, warning and critical tiers (checked by [`Policy::parse`]).
    pub fn tiers(&self) -> [u64; 3] {
        match self.capacity_tiers[..] {
            [a, b, c] => [a, b, c],
            _ => [80, 90, 95],
        }
    }
}

/// Why capacity tiers are unusable, if they are: three percentages, each above the last.
fn check_tiers(t: &[u64]) -> Result<(), String> {
    if t.len() != 3 {
        return Err(format!(
            "{} values; give three percentages (notice, warning, critical), e.g. [80, 90, 95]",
            t.len()
        ));
    }
    if t.iter().any(|&v| v == 0 || v > 100) || !(t[0] < t[1] && t[1] < t[2]) {
        return Err(format!(
            "{t:?}: each must be 1-100 and above the one before"
        ));
    }
    Ok(())
}

/// Scheduled pool maintenance, run by storaged one operation at a time. Intervals are like
/// `35d` or `off`; a scrub is due that long after the last one finished (TrueNAS's threshold
/// rule), a trim that long after each device's last trim.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Maintenance {
    #[serde(default = "default_scrub_every")]
    pub scrub_every: String,
    #[serde(default = "default_trim_every")]
    pub trim_every: String,
    /// The drives' own self-tests (SMART, NVMe Device Self-test) on the pool's drives.
    #[serde(default = "default_selftest_every")]
    pub selftest_every: String,
    /// `short` (minutes) or `long` (reads the whole medium: hours).
    #[serde(default = "default_selftest")]
    pub selftest: String,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            scrub_every: default_scrub_every(),
            trim_every: default_trim_every(),
            selftest_every: default_selftest_every(),
            selftest: default_selftest(),
        }
    }
}

fn default_scrub_every() -> String {
    "35d".into()
}
fn default_trim_every() -> String {
    "7d".into()
}
fn default_selftest_every() -> String {
    "7d".into()
}
fn default_selftest() -> String {
    "short".into()
}

/// The shortest maintenance interval accepted (short ones are for tests).
pub const MIN_MAINTENANCE_EVERY: u64 = 10;

impl Maintenance {
    /// Seconds between scrubs, `None` when `off` (checked by [`Policy::parse`]).
    pub fn scrub_secs(&self) -> Option<u64> {
        interval_or_off(&self.scrub_every).ok().flatten()
    }
    pub fn trim_secs(&self) -> Option<u64> {
        interval_or_off(&self.trim_every).ok().flatten()
    }
    pub fn selftest_secs(&self) -> Option<u64> {
        interval_or_off(&self.selftest_every).ok().flatten()
    }
    /// `true` for the long (extended) test.
    pub fn selftest_long(&self) -> bool {
        matches!(self.selftest.trim(), "long" | "extended")
    }
}

fn interval_or_off(s: &str) -> Result<Option<u64>, String> {
    if s.trim() == "off" {
        return Ok(None);
    }
    parse_interval(s, MIN_MAINTENANCE_EVERY).map(Some)
}

fn default_encryption() -> Encryption {
    Encryption {
        without_tpm: WithoutTpm::Require,
        keyfile: None,
        pcrs: vec![],
        bind_secure_boot: true,
    }
}
fn default_reserved() -> Reserved {
    Reserved {
        share: Spanned::new(0..0, Size::Percent(20.0)),
    }
}

/// The policy the image ships; used on first boot when no valid policy can be read.
pub const BUILTIN: &str = r#"
[pool]
name = "persist"
topology = "stripe"

[encryption]
without_tpm = "require"

[reserved]
share = "20%"

[datasets.newlog]
mountpoint = "/persist/newlog"
quota = "10%"

[datasets.containerd]
mountpoint = "/persist/containerd"
quota = "40%"

[datasets.volumes]
mountpoint = "none"
encrypted = true

[datasets.config]
mountpoint = "/persist/config"
quota = "1G"
reservation = "64M"
encrypted = true

# Volume sources (VM images, zfs send streams): `storagectl volume create --import` reads
# only files here, on the encrypted vault.
[datasets.import]
mountpoint = "/persist/import"
quota = "20%"
encrypted = true

# An update uploaded through the management API is kept here until its checksum is checked,
# so a broken or forged upload never reaches the inactive slot. Not secret: signed, public. No
# quota: mgmtd writes only a signed update's payload here, never more than a slot holds.
[datasets.update]
mountpoint = "/persist/update"
"#;

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A mount point without `.`/`..` components, empty components or a trailing slash, under `root`.
fn clean_under(m: &str, root: &str) -> bool {
    m.starts_with(root)
        && m.len() > root.len()
        && !m.ends_with('/')
        && m[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The line of `key` inside the table `[table]`, or 0 when it cannot be found.
fn line_of_key(text: &str, table: &str, key: &str) -> usize {
    let mut in_table = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').replace('"', "");
            in_table = name.trim() == table;
        } else if in_table
            && t.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
        {
            return i + 1;
        }
    }
    0
}

/// The line of the table header `[table]` (quoted or not), or 0.
fn line_of_table(text: &str, table: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim();
            t.starts_with('[')
                && t.trim_matches(|c| c == '[' || c == ']')
                    .replace('"', "")
                    .trim()
                    == table
        })
        .map_or(0, |i| i + 1)
}

/// What is wrong with a policy, before it gets its file: (line, field, message).
type Bad = (usize, String, String);

/// Where a TOML error is and which field it names: the key on the offending line (for bad
/// values and unknown keys alike), else the name in toml's message.
fn toml_error(text: &str, e: &toml::de::Error) -> Bad {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    // toml names unknown and missing fields in its message; keep only its first line.
    let msg = e
        .message()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .to_string();
    // The key on the offending line names the field (for bad values and unknown keys alike).
    let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    // A line that starts with `=` has no key: the message's name, or `-`, stands in.
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| line > 0 && !k.is_empty());
    let field = key
        .or_else(|| msg.split('`').nth(1).filter(|n| !n.is_empty()))
        .unwrap_or("-")
        .to_string();
    (line, field, msg)
}

/// No dataset may mount on or inside another's mount point, nor on the vault's or the pool's
/// own directories: one dataset mounted over another (the volume spool on the vault, say) would
/// hide it and make what is read there something else.
fn check_mountpoints(p: &Policy, text: &str) -> Result<(), Bad> {
    let pool = &p.pool.name;
    let reserved = [
        format!("/{pool}/vault"),
        format!("/{pool}/.storage"),
        "/persist/vault".to_string(),
        "/persist/log".to_string(),
    ];
    let mps = p.mountpoints();
    let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
    for (name, m) in &mps {
        let field = format!("datasets.{name}.mountpoint");
        let line = line_of_key(text, &format!("datasets.{name}"), "mountpoint");
        if let Some(r) = reserved.iter().find(|r| inside(m, r) || inside(r, m)) {
            return Err((
                line,
                field,
                format!("`{m}` would mount over {r}, which is the appliance's own"),
            ));
        }
        for (other, om) in &mps {
            if other != name && (inside(m, om) || (m == om)) {
                return Err((
                    line,
                    field,
                    format!("`{m}` is on or inside `{om}`, the mount point of datasets.{other}; mount points must not overlap"),
                ));
            }
        }
    }
    Ok(())
}

/// A ZFS dataset name component: letters, digits, `_-.:`, not starting with a dot.
pub fn valid_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
}

impl Policy {
    /// Parses and validates policy text. `pool_size` (usable bytes), when known, also checks that
    /// quotas and reservations fit.
    pub fn parse(file: &Path, text: &str, pool_size: Option<u64>) -> Result<Policy, PolicyError> {
        let err = |(line, field, msg): Bad| PolicyError {
            file: file.into(),
            line,
            field,
            msg,
        };
        let p: Policy = toml::from_str(text).map_err(|e| err(toml_error(text, &e)))?;
        p.check_settings(text).map_err(err)?;
        p.check_datasets(text, pool_size).map_err(err)?;
        check_mountpoints(&p, text).map_err(err)?;
        Ok(p)
    }

    /// Pool, encryption, maintenance and health settings: (line, field, message) of the first
    /// that is out of range.
    fn check_settings(&self, text: &str) -> Result<(), Bad> {
        let p = self;
        let fail = |line: usize, field: &str, msg: String| (line, field.to_string(), msg);
        if !valid_component(&p.pool.name) {
            return Err(fail(
                line_of_key(text, "pool", "name"),
                "pool.name",
                format!("`{}` is not a valid pool name", p.pool.name),
            ));
        }
        if !(9..=16).contains(&p.pool.ashift) {
            return Err(fail(
                line_of_key(text, "pool", "ashift"),
                "pool.ashift",
                format!("{} is outside 9..=16", p.pool.ashift),
            ));
        }
        if p.encryption.without_tpm == WithoutTpm::Keyfile && p.encryption.keyfile.is_none() {
            return Err(fail(
                line_of_key(text, "encryption", "without_tpm"),
                "encryption.keyfile",
                "without_tpm = \"keyfile\" needs a keyfile path".into(),
            ));
        }
        if let Some(pcr) = p.encryption.pcrs.iter().find(|&&n| n > 23) {
            return Err(fail(
                line_of_key(text, "encryption", "pcrs"),
                "encryption.pcrs",
                format!("PCR {pcr} does not exist (0-23)"),
            ));
        }
        if !matches!(p.maintenance.selftest.trim(), "short" | "long" | "extended") {
            return Err(fail(
                line_of_key(text, "maintenance", "selftest"),
                "maintenance.selftest",
                format!(
                    "`{}` is not a self-test: `short` or `long`",
                    p.maintenance.selftest
                ),
            ));
        }
        for (key, v) in [
            ("scrub_every", &p.maintenance.scrub_every),
            ("trim_every", &p.maintenance.trim_every),
            ("selftest_every", &p.maintenance.selftest_every),
        ] {
            if let Err(m) = interval_or_off(v) {
                return Err(fail(
                    line_of_key(text, "maintenance", key),
                    &format!("maintenance.{key}"),
                    format!("{m}, or `off`"),
                ));
            }
        }
        if let Err(m) = parse_interval(&p.health.every, MIN_MAINTENANCE_EVERY) {
            return Err(fail(
                line_of_key(text, "health", "every"),
                "health.every",
                m,
            ));
        }
        if let Err(m) = check_tiers(&p.health.capacity_tiers) {
            return Err(fail(
                line_of_key(text, "health", "capacity_tiers"),
                "health.capacity_tiers",
                m,
            ));
        }
        Ok(())
    }

    /// The reserved share, quotas and reservations (against the pool's size when it is known)
    /// and each dataset's name, mountpoint and record size.
    fn check_datasets(&self, text: &str, pool_size: Option<u64>) -> Result<(), Bad> {
        let p = self;
        let fail = |line: usize, field: &str, msg: String| (line, field.to_string(), msg);
        let at = |s: &Spanned<Size>| line_of(text, s.span().start);
        let mut reserved_pct = p.reserved.share.get_ref().percent_of(pool_size);
        if reserved_pct >= 100.0 {
            return Err(fail(
                at(&p.reserved.share),
                "reserved.share",
                "must leave room for data".into(),
            ));
        }
        let mut quota_pct = 0.0;
        for (name, d) in &p.datasets {
            if let Some(q) = &d.quota {
                quota_pct += q.get_ref().percent_of(pool_size);
                if quota_pct > 100.0 {
                    return Err(fail(
                        at(q),
                        &format!("datasets.{name}.quota"),
                        format!("quotas add up to {quota_pct:.0}% of the pool"),
                    ));
                }
            }
        }
        for (name, d) in &p.datasets {
            let f = |k: &str| format!("datasets.{name}.{k}");
            if !valid_component(name) || name == "vault" || name == "reserved" {
                return Err(fail(
                    line_of_table(text, &format!("datasets.{name}")),
                    &format!("datasets.{name}"),
                    format!("`{name}` is not allowed as a dataset name"),
                ));
            }
            if let Some(m) = &d.mountpoint {
                if m != "none" && !clean_under(m, "/persist/") {
                    return Err(fail(
                        line_of_key(text, &format!("datasets.{name}"), "mountpoint"),
                        &f("mountpoint"),
                        format!("`{m}` must be `none` or a plain path under /persist/"),
                    ));
                }
            }
            if let Some(rs) = &d.recordsize {
                let b = rs.get_ref().bytes(0);
                if matches!(rs.get_ref(), Size::Percent(_))
                    || !b.is_power_of_two()
                    || !(512..=(16 << 20)).contains(&b)
                {
                    return Err(fail(
                        at(rs),
                        &f("recordsize"),
                        "must be a power of two from 512 to 16M".into(),
                    ));
                }
            }
            if let (Some(q), Some(r)) = (&d.quota, &d.reservation) {
                if let Some(size) = pool_size.or(Some(u64::MAX).filter(|_| {
                    matches!((q.get_ref(), r.get_ref()), (Size::Bytes(_), Size::Bytes(_)))
                })) {
                    if r.get_ref().bytes(size) > q.get_ref().bytes(size) {
                        return Err(fail(
                            at(r),
                            &f("reservation"),
                            "is larger than the quota".into(),
                        ));
                    }
                }
            }
            if let Some(r) = &d.reservation {
                reserved_pct += r.get_ref().percent_of(pool_size);
                if reserved_pct > 100.0 {
                    return Err(fail(at(r), &f("reservation"), format!("reservations and the reserved share add up to {reserved_pct:.0}% of the pool")));
                }
            }
            if let (Some(q), Some(size)) = (&d.quota, pool_size) {
                if q.get_ref().bytes(size) > size {
                    return Err(fail(
                        at(q),
                        &f("quota"),
                        format!(
                            "{} bytes is more than the pool's {size}",
                            q.get_ref().bytes(size)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where each dataset mounts (`none` left out): the policy's path or `/<pool>/<name>`.
    pub fn mountpoints(&self) -> Vec<(String, String)> {
        self.datasets
            .iter()
            .filter_map(|(name, d)| {
                let m = d
                    .mountpoint
                    .clone()
                    .unwrap_or_else(|| format!("/{}/{name}", self.pool.name));
                (m != "none").then(|| (name.clone(), m))
            })
            .collect()
    }

    pub fn builtin() -> Policy {
        #[allow(clippy::expect_used)] // the built-in text is tested below
        Policy::parse(Path::new("<built-in>"), BUILTIN, None).expect("built-in policy is valid")
    }
}

/// How the vault was made: fixed for the life of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VaultKind {
    /// Encrypted, key sealed to the TPM.
    Tpm,
    /// Encrypted, key from `encryption.keyfile`.
    Keyfile,
    /// Made unencrypted (no TPM, `without_tpm = "allow-unencrypted"`).
    Unencrypted,
}

/// What an existing pool already is; a policy may not ask for anything else. `None` is unknown
/// (not observed, or no pool yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolFacts {
    pub name: Option<String>,
    pub topology: Option<Topology>,
    pub ashift: Option<u8>,
    pub vault: Option<VaultKind>,
}

impl Policy {
    /// Refuses, naming the field, its line and the pool's actual value, a policy that changes
    /// what cannot change once the pool exists: its name, topology, ashift (a larger one than
    /// the pool has; the pool's may exceed the policy's when the drives' sectors asked for it)
    /// and how the vault is encrypted.
    pub fn check_facts(&self, file: &Path, text: &str, f: &PoolFacts) -> Result<(), PolicyError> {
        let err = |line: usize, field: &str, msg: String| PolicyError {
            file: file.into(),
            line,
            field: field.into(),
            msg,
        };
        if let Some(n) = &f.name {
            if *n != self.pool.name {
                return Err(err(
                    line_of_key(text, "pool", "name"),
                    "pool.name",
                    format!(
                        "`{}`, but this box's pool is `{n}`; a pool cannot be renamed by policy",
                        self.pool.name
                    ),
                ));
            }
        }
        if let Some(t) = f.topology {
            if t != self.pool.topology {
                return Err(err(
                    line_of_key(text, "pool", "topology"),
                    "pool.topology",
                    format!(
                        "{:?}, but the pool is {t:?}; a pool's layout cannot change",
                        self.pool.topology
                    )
                    .to_lowercase(),
                ));
            }
        }
        if let Some(a) = f.ashift {
            if self.pool.ashift > a {
                return Err(err(
                    line_of_key(text, "pool", "ashift"),
                    "pool.ashift",
                    format!(
                        "{}, but the pool was made with ashift {a}; it cannot change",
                        self.pool.ashift
                    ),
                ));
            }
        }
        let choice = self.encryption.without_tpm;
        let clash = match f.vault {
            Some(VaultKind::Unencrypted) => choice != WithoutTpm::AllowUnencrypted,
            Some(VaultKind::Keyfile) => choice != WithoutTpm::Keyfile,
            _ => false,
        };
        if clash {
            return Err(err(
                line_of_key(text, "encryption", "without_tpm"),
                "encryption.without_tpm",
                format!(
                    "{choice:?}, but the vault was made {:?}; how the vault is encrypted cannot change",
                    f.vault.unwrap_or(VaultKind::Tpm)
                ),
            ));
        }
        Ok(())
    }

    /// This policy with the name of the pool that exists (for importing it before the last good
    /// policy, kept on it, can be read).
    pub fn for_pool(mut self, f: &PoolFacts) -> Policy {
        if let Some(n) = &f.name {
            self.pool.name = n.clone();
        }
        if let Some(t) = f.topology {
            self.pool.topology = t;
        }
        self
    }
}

/// Pure: `p` with the image's `[encryption]` section in place of its own, and, when they differed,
/// what was ignored. The sealing policy (PCRs, Secure Boot binding, what happens without a TPM)
/// comes from the signed image only: the CONFIG partition is not signed, and a policy there that
/// unbound PCR 7 would let the next seal be made without it.
pub fn pin_encryption(mut p: Policy, image: &Encryption) -> (Policy, Option<String>) {
    if p.encryption == *image {
        return (p, None);
    }
    let why = format!(
        "[encryption] ({}) ignored: how the vault is sealed comes from the signed image ({})",
        describe_encryption(&p.encryption),
        describe_encryption(image)
    );
    p.encryption = image.clone();
    (p, Some(why))
}

fn describe_encryption(e: &Encryption) -> String {
    format!(
        "without_tpm = {:?}, pcrs = {:?}, bind_secure_boot = {}{}",
        e.without_tpm,
        e.pcrs,
        e.bind_secure_boot,
        e.keyfile
            .as_ref()
            .map(|k| format!(", keyfile = {}", k.display()))
            .unwrap_or_default()
    )
}

/// Which policy is in force and why.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(PathBuf),
    LastGood { rejected: PolicyError },
    Builtin { rejected: Option<PolicyError> },
}

/// A policy file in force and its text, or why it could not be read (with the line at fault,
/// 0 when none is).
pub type Candidate = (PathBuf, Result<String, (usize, String)>);

/// Picks the policy: the first candidate if it validates, else the last good one kept on the pool,
/// else the built-in one. Never fails.
pub fn choose(
    candidates: &[Candidate],
    last_good: Option<&str>,
    pool_size: Option<u64>,
    facts: &PoolFacts,
) -> (Policy, Source, Option<String>) {
    // Only the highest-priority file present counts: a bad override must not silently fall
    // through to the image's default.
    let mut first_err = None;
    if let Some((path, text)) = candidates.first() {
        let parsed = text
            .as_ref()
            .map_err(|(line, msg)| PolicyError {
                file: path.clone(),
                line: *line,
                field: "-".into(),
                msg: msg.clone(),
            })
            .and_then(|t| {
                let p = Policy::parse(path, t, pool_size)?;
                p.check_facts(path, t, facts)?;
                Ok((p, t.clone()))
            });
        match parsed {
            Ok((p, t)) => return (p, Source::File(path.clone()), Some(t)),
            Err(e) => first_err = Some(e),
        }
    }
    if let (Some(text), Some(rejected)) = (last_good, first_err.clone()) {
        let lg = Path::new("<last good>");
        if let Ok(p) = Policy::parse(lg, text, pool_size) {
            if p.check_facts(lg, text, facts).is_ok() {
                return (p, Source::LastGood { rejected }, None);
            }
        }
    }
    (
        Policy::builtin().for_pool(facts),
        Source::Builtin {
            rejected: first_err,
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_defaults_to_five_minutes_and_80_90_95_and_names_a_bad_field() {
        let p = parse("[pool]\n").unwrap();
        assert_eq!(
            (p.health.every_secs(), p.health.tiers()),
            (300, [80, 90, 95])
        );
        let p =
            parse("[pool]\n[health]\nevery = \"30s\"\ncapacity_tiers = [50, 60, 100]\n").unwrap();
        assert_eq!(
            (p.health.every_secs(), p.health.tiers()),
            (30, [50, 60, 100])
        );
        for (t, line, field) in [
            ("[pool]\n[health]\nevery = \"soon\"\n", 3, "health.every"),
            ("[pool]\n[health]\nevery = \"1s\"\n", 3, "health.every"),
            (
                "[pool]\n[health]\ncapacity_tiers = [90, 80, 95]\n",
                3,
                "health.capacity_tiers",
            ),
            (
                "[pool]\n[health]\ncapacity_tiers = [80, 90]\n",
                3,
                "health.capacity_tiers",
            ),
            (
                "[pool]\n[health]\ncapacity_tiers = [80, 90, 101]\n",
                3,
                "health.capacity_tiers",
            ),
            (
                "[pool]\n[health]\ncapacity_tiers = [0, 90, 95]\n",
                3,
                "health.capacity_tiers",
            ),
        ] {
            let e = parse(t).unwrap_err();
            assert_eq!((e.line, e.field.as_str()), (line, field), "{t}: {e}");
        }
        let e = parse("[pool]\n[health]\ncapacity_tiers = [80, -1, 95]\n").unwrap_err();
        assert!(e.field.contains("capacity_tiers"), "{e}");
        let e = parse("[pool]\n[health]\nalert = 1\n").unwrap_err();
        assert!(e.field.contains("alert") || e.msg.contains("alert"), "{e}");
    }

    #[test]
    fn maintenance_defaults_to_35_and_7_days_and_names_a_bad_interval() {
        use super::*;
        let p = Policy::parse(Path::new("s.toml"), "[pool]\n", None).unwrap();
        assert_eq!(p.maintenance.scrub_secs(), Some(35 * 86_400));
        assert_eq!(p.maintenance.trim_secs(), Some(7 * 86_400));
        let p = Policy::parse(
            Path::new("s.toml"),
            "[pool]\n[maintenance]\nscrub_every = \"off\"\ntrim_every = \"90m\"\n",
            None,
        )
        .unwrap();
        assert_eq!(p.maintenance.scrub_secs(), None);
        assert_eq!(p.maintenance.trim_secs(), Some(5400));
        assert_eq!(p.maintenance.selftest_secs(), Some(7 * 86_400));
        assert!(!p.maintenance.selftest_long());
        let p = Policy::parse(
            Path::new("s.toml"),
            "[pool]\n[maintenance]\nselftest_every = \"30d\"\nselftest = \"long\"\n",
            None,
        )
        .unwrap();
        assert_eq!(p.maintenance.selftest_secs(), Some(30 * 86_400));
        assert!(p.maintenance.selftest_long());
        for (text, line) in [
            ("[pool]\n[maintenance]\nscrub_every = \"often\"\n", 3),
            ("[pool]\n[maintenance]\ntrim_every = \"5s\"\n", 3),
            ("[pool]\n[maintenance]\nselftest = \"weekly\"\n", 3),
            ("[pool]\n[maintenance]\nselftest_every = \"soon\"\n", 3),
        ] {
            let e = Policy::parse(Path::new("s.toml"), text, None).unwrap_err();
            assert!(e.field.starts_with("maintenance."), "{e}");
            assert_eq!(e.line, line, "{e}");
        }
        let e = Policy::parse(
            Path::new("s.toml"),
            "[pool]\n[maintenance]\nscrub = 1\n",
            None,
        )
        .unwrap_err();
        assert!(e.msg.contains("scrub"), "{e}");
        assert_eq!(interval_label(3600), "1h");
        assert_eq!(interval_label(45), "45s");
        assert!(parse_interval("99999999999999999999w", 1).is_err());
    }

    #[test]
    fn a_line_without_a_key_still_names_a_field() {
        let e = super::Policy::parse(
            std::path::Path::new("s.toml"),
            "[pool]\n[datasets.a]\n=ountpoint = \"/persist/a\"\n",
            None,
        )
        .unwrap_err();
        assert!(!e.field.is_empty() && e.line == 3, "{e}");
    }

    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("/config/storage.toml"), text, Some(100 << 30))
    }

    #[test]
    fn builtin_policy_is_valid_and_complete() {
        let p = Policy::builtin();
        assert_eq!(p.pool.name, "persist");
        assert_eq!(*p.reserved.share.get_ref(), Size::Percent(20.0));
        assert!(p.datasets.contains_key("newlog") && p.datasets.contains_key("containerd"));
        assert!(p.datasets["volumes"].encrypted);
        assert_eq!(p.encryption.without_tpm, WithoutTpm::Require);
    }

    #[test]
    fn bad_value_names_its_key() {
        let e = parse("[pool]\ntopology = \"raid5\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "topology"), "{e}");
        assert!(
            e.to_string()
                .starts_with("/config/storage.toml:2: topology: "),
            "{e}"
        );
    }

    #[test]
    fn bad_toml_names_file_and_line() {
        let e = parse("[pool]\nname = \"persist\"\ntopology = \n").unwrap_err();
        assert_eq!(e.file, Path::new("/config/storage.toml"));
        assert_eq!(e.line, 3, "{e}");
        assert!(e.to_string().starts_with("/config/storage.toml:3:"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = parse("[pool]\nname = \"persist\"\n\n[datasets.newlog]\nquotaa = \"1G\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "quotaa"), "{e}");
    }

    #[test]
    fn negative_size_is_refused_at_its_line() {
        let e = parse("[pool]\n[datasets.newlog]\nmountpoint = \"/persist/newlog\"\nquota = -5\n")
            .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.msg.contains("negative"), "{e}");
        let e = parse("[pool]\n[datasets.newlog]\nquota = \"-5G\"\n").unwrap_err();
        assert!(e.msg.contains("negative") && e.line == 3, "{e}");
    }

    #[test]
    fn quotas_together_must_fit_the_pool() {
        let e = parse("[pool]\n[datasets.a]\nquota = \"60%\"\n[datasets.b]\nquota = \"50G\"\n")
            .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "datasets.b.quota"), "{e}");
        assert!(e.msg.contains("110%"), "{e}");
    }

    #[test]
    fn quotas_and_reservations_must_fit_the_pool() {
        let e = parse("[pool]\n[datasets.a]\nquota = \"200G\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "datasets.a.quota"), "{e}");
        let e = parse("[pool]\n[reserved]\nshare = \"20%\"\n[datasets.a]\nreservation = \"50G\"\n[datasets.b]\nreservation = \"40%\"\n").unwrap_err();
        assert_eq!(e.field, "datasets.b.reservation", "{e}");
        assert!(e.msg.contains("110%"), "{e}");
        let e = parse("[pool]\n[datasets.a]\nquota = \"1G\"\nreservation = \"2G\"\n").unwrap_err();
        assert!(e.msg.contains("larger than the quota"), "{e}");
        assert!(Policy::parse(
            Path::new("x"),
            "[pool]\n[datasets.a]\nquota = \"1G\"\nreservation = \"2G\"\n",
            None
        )
        .is_err());
    }

    #[test]
    fn the_encryption_section_is_the_image_s_whatever_config_says() {
        let image = Policy::builtin().encryption;
        let (p, why) = pin_encryption(Policy::builtin(), &image);
        assert_eq!((p.encryption, why), (image.clone(), None));
        for text in [
            "[pool]\n[encryption]\nbind_secure_boot = false\n",
            "[pool]\n[encryption]\npcrs = [0]\n",
            "[pool]\n[encryption]\nwithout_tpm = \"allow-unencrypted\"\n",
            "[pool]\n[encryption]\nwithout_tpm = \"keyfile\"\nkeyfile = \"/persist/k\"\n",
        ] {
            let config = parse(text).unwrap();
            let (p, why) = pin_encryption(config, &image);
            assert_eq!(p.encryption, image, "{text}");
            assert!(why.unwrap().contains("ignored"), "{text}");
        }
    }

    #[test]
    fn names_mountpoints_recordsize_pcrs_keyfile() {
        assert!(parse("[pool]\n[datasets.\"a/b\"]\n")
            .unwrap_err()
            .field
            .contains("a/b"));
        assert!(parse("[pool]\n[datasets.vault]\n").is_err());
        assert_eq!(
            parse("[pool]\n[datasets.a]\nmountpoint = \"/etc\"\n")
                .unwrap_err()
                .field,
            "datasets.a.mountpoint"
        );
        assert!(parse("[pool]\n[datasets.a]\nmountpoint = \"/persist/../etc\"\n").is_err());
        assert_eq!(
            parse("[pool]\n[datasets.a]\nrecordsize = \"100K\"\n")
                .unwrap_err()
                .field,
            "datasets.a.recordsize"
        );
        assert!(parse("[pool]\n[datasets.a]\nrecordsize = \"1M\"\n").is_ok());
        assert_eq!(
            parse("[pool]\n[encryption]\npcrs = [7, 24]\n")
                .unwrap_err()
                .field,
            "encryption.pcrs"
        );
        assert_eq!(
            parse("[pool]\n[encryption]\nwithout_tpm = \"keyfile\"\n")
                .unwrap_err()
                .field,
            "encryption.keyfile"
        );
        assert!(parse("[pool]\ntopology = \"raid5\"\n").is_err());
    }

    #[test]
    fn a_policy_that_changes_what_the_pool_already_is_is_rejected_whole() {
        let facts = PoolFacts {
            name: Some("persist".into()),
            topology: Some(Topology::Mirror),
            ashift: Some(12),
            vault: Some(VaultKind::Tpm),
        };
        let f = Path::new("/config/storage.toml");
        let check = |t: &str| parse(t).unwrap().check_facts(f, t, &facts);
        assert!(check("[pool]\ntopology = \"mirror\"\n").is_ok());
        let e = check("[pool]\nname = \"tank\"\ntopology = \"mirror\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "pool.name"), "{e}");
        assert!(e.msg.contains("`persist`"), "{e}");
        let e = check("[pool]\ntopology = \"stripe\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "pool.topology"), "{e}");
        assert!(e.msg.contains("mirror"), "{e}");
        let e = check("[pool]\ntopology = \"mirror\"\nashift = 13\n").unwrap_err();
        assert_eq!(e.field, "pool.ashift", "{e}");
        assert!(
            check("[pool]\ntopology = \"mirror\"\nashift = 9\n").is_ok(),
            "a pool raised above the policy's ashift by its drives"
        );
        let unenc = PoolFacts {
            vault: Some(VaultKind::Unencrypted),
            ..facts.clone()
        };
        let t = "[pool]\ntopology = \"mirror\"\n[encryption]\nwithout_tpm = \"require\"\n";
        let e = parse(t).unwrap().check_facts(f, t, &unenc).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (4, "encryption.without_tpm"),
            "{e}"
        );
        // choose(): the rejected file gives way to the last good one, or to the built-in one
        // made to fit the pool that exists.
        let good = "[pool]\ntopology = \"mirror\"\n[datasets.x]\nquota = \"1G\"\n".to_string();
        let renamed = "[pool]\nname = \"tank\"\ntopology = \"mirror\"\n".to_string();
        let (p, src, keep) = choose(
            &[(f.into(), Ok(renamed.clone()))],
            Some(&good),
            None,
            &facts,
        );
        assert!(p.datasets.contains_key("x") && keep.is_none());
        assert!(
            matches!(src, Source::LastGood { ref rejected } if rejected.field == "pool.name"),
            "{src:?}"
        );
        let (p, src, _) = choose(&[(f.into(), Ok(renamed))], None, None, &facts);
        assert_eq!(
            (p.pool.name.as_str(), p.pool.topology),
            ("persist", Topology::Mirror)
        );
        assert!(matches!(src, Source::Builtin { rejected: Some(_) }));
    }

    #[test]
    fn every_refusal_points_at_a_line() {
        for (text, field) in [
            ("[pool]\nname = \"a/b\"\n", "pool.name"),
            ("[pool]\nashift = 30\n", "pool.ashift"),
            (
                "[pool]\n[encryption]\nwithout_tpm = \"keyfile\"\n",
                "encryption.keyfile",
            ),
            ("[pool]\n[encryption]\npcrs = [30]\n", "encryption.pcrs"),
            (
                "[pool]\n[datasets.\"a/b\"]\nquota = \"1G\"\n",
                "datasets.a/b",
            ),
            ("[pool]\n[datasets.vault]\n", "datasets.vault"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.line > 1, "{text}: {e}");
            assert!(!e.to_string().contains(":0:"), "{e}");
        }
    }

    #[test]
    fn mount_points_are_unique_plain_and_never_over_another_dataset() {
        let e = parse("[pool]\n[datasets.config]\nencrypted = true\n[datasets.a]\nmountpoint = \"/persist/config/volumes/specs\"\n")
            .unwrap_err();
        assert_eq!(e.field, "datasets.a.mountpoint", "{e}");
        assert!(
            e.msg.contains("datasets.config") || e.msg.contains("overlap"),
            "{e}"
        );
        let e = parse("[pool]\n[datasets.a]\nquota = \"1G\"\nmountpoint = \"/persist/newlog\"\n[datasets.newlog]\n")
            .unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (4, "datasets.a.mountpoint"),
            "{e}"
        );
        for bad in [
            "/persist/vault",
            "/persist/vault/x",
            "/persist/a/../b",
            "/persist/a/",
            "/persist//a",
            "/persist/./a",
            "/persist/",
            "/etc/x",
            "/persistx/a",
        ] {
            let e = parse(&format!("[pool]\n[datasets.a]\nmountpoint = \"{bad}\"\n")).unwrap_err();
            assert_eq!(e.field, "datasets.a.mountpoint", "{bad}: {e}");
            assert_eq!(e.line, 3, "{bad}: {e}");
        }
        // A dataset whose default mount point another one takes.
        let e = parse(
            "[pool]\n[datasets.b]\nmountpoint = \"/persist/a\"\n[datasets.a]\nquota = \"1G\"\n",
        )
        .unwrap_err();
        assert!(e.field.ends_with(".mountpoint"), "{e}");
        assert!(parse("[pool]\n[datasets.a]\nmountpoint = \"/persist/a\"\n[datasets.b]\nmountpoint = \"/persist/ab\"\n").is_ok());
        assert!(parse(
            "[pool]\n[datasets.a]\nmountpoint = \"none\"\n[datasets.b]\nmountpoint = \"none\"\n"
        )
        .is_ok());
    }

    #[test]
    fn choose_falls_back_to_last_good_then_builtin_and_says_why() {
        let good = "[pool]\n[datasets.x]\nquota = \"1G\"\n".to_string();
        let bad = "[pool]\nnope = 1\n".to_string();
        let (p, src, keep) = choose(
            &[("/config/storage.toml".into(), Ok(good.clone()))],
            None,
            None,
            &PoolFacts::default(),
        );
        assert!(p.datasets.contains_key("x"));
        assert_eq!(src, Source::File("/config/storage.toml".into()));
        assert_eq!(
            keep.as_deref(),
            Some(good.as_str()),
            "a valid file becomes the new last good"
        );
        let (p, src, keep) = choose(
            &[("/config/storage.toml".into(), Ok(bad.clone()))],
            Some(&good),
            None,
            &PoolFacts::default(),
        );
        assert!(p.datasets.contains_key("x"));
        assert!(
            matches!(src, Source::LastGood { ref rejected } if rejected.field == "nope"),
            "{src:?}"
        );
        assert!(keep.is_none());
        let (p, src, _) = choose(
            &[("/config/storage.toml".into(), Ok(bad))],
            None,
            None,
            &PoolFacts::default(),
        );
        assert_eq!(p, Policy::builtin());
        assert!(matches!(src, Source::Builtin { rejected: Some(_) }));
        let (_, src, _) = choose(&[], None, None, &PoolFacts::default());
        assert_eq!(src, Source::Builtin { rejected: None });
        // An override that cannot be read falls back to the last good, with the reason.
        let (p, src, _) = choose(
            &[(
                "/config/storage.toml".into(),
                Err((0, "cannot be read: EIO".into())),
            )],
            Some(&good),
            None,
            &PoolFacts::default(),
        );
        assert!(p.datasets.contains_key("x"));
        assert!(
            matches!(src, Source::LastGood { ref rejected } if rejected.msg.contains("EIO")),
            "{src:?}"
        );
        if let Source::LastGood { rejected } = src {
            assert_eq!(
                rejected.to_string(),
                "/config/storage.toml: -: cannot be read: EIO"
            );
        }
    }
}

#[cfg(test)]
mod image_policy {
    /// The policy file the image ships must parse, and say what the built-in fallback says.
    #[test]
    fn rootfs_storage_toml_matches_the_builtin() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../rootfs/etc/storage.toml"
        ));
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            super::Policy::parse(path, &text, None).unwrap(),
            super::Policy::builtin()
        );
    }
}
