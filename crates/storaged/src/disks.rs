//! Disk lifecycle: which device is which pool member, what a missing or failing one risks, and
//! replacing, offlining and onlining members. The decisions (finding a member by any of its
//! names, judging a replacement, naming the risk) are pure; the steps go through zpool and
//! storage's partitioning.

use crate::cmd;
use crate::error::{Error, Result};
use crate::pool::{Leaf, PoolState};
use serde::Serialize;
use storage::discover::Verdict;

/// The box, as bring-up's partitioning sees it.
fn host() -> storage::realhost::RealHost {
    storage::realhost::RealHost::new(platform::Roots::host())
}

/// A member by any name `disk list` shows: its ZFS name (the partition's uuid), its guid (the
/// only name a missing device keeps), its path, or the disk it is on (`nvme1n1`, `/dev/vdb`).
/// `disk_of` maps a member's path to its disk's kernel name.
pub fn find_member<'a>(
    pool: &'a PoolState,
    name: &str,
    disk_of: impl Fn(&str) -> Option<String>,
) -> Option<&'a Leaf> {
    let bare = name.trim_start_matches("/dev/");
    pool.leaves.iter().find(|l| {
        l.name == name
            || l.guid.to_string() == name
            || l.path.as_deref() == Some(name)
            || l.path
                .as_deref()
                .and_then(&disk_of)
                .is_some_and(|d| d == bare)
    })
}

/// What the pool's members put at risk, worst first.
pub fn risks(pool: &PoolState) -> Vec<String> {
    let mut out = Vec::new();
    let bad = |l: &Leaf| l.state != "ONLINE";
    for l in pool.leaves.iter().filter(|l| bad(l)) {
        match &l.group {
            None => out.push(format!(
                "{} is {}: it is a stripe member (no redundancy), so the pool's data is at risk until it is back",
                l.name, l.state
            )),
            Some(g) => {
                let healthy = pool
                    .leaves
                    .iter()
                    .filter(|x| x.group.as_deref() == Some(g) && !bad(x))
                    .count();
                out.push(format!(
                    "{} in {g} is {}: {g} is {} with {healthy} healthy member{}{}",
                    l.name,
                    l.state,
                    l.group_state,
                    if healthy == 1 { "" } else { "s" },
                    if g.starts_with("mirror") && healthy <= 1 {
                        "; one more failure loses its data: replace it (storagectl disk replace)"
                    } else {
                        "; replace it (storagectl disk replace)"
                    }
                ));
            }
        }
    }
    for l in &pool.leaves {
        let e = l.read_errors + l.write_errors + l.checksum_errors;
        if e > 0 {
            out.push(format!(
                "{} has {} read, {} write and {} checksum errors: watch it, and replace it if they grow",
                l.name, l.read_errors, l.write_errors, l.checksum_errors
            ));
        }
    }
    if pool.error_count > 0 {
        out.push(format!(
            "the pool knows of {} data errors (`zpool status -v {}` names the files)",
            pool.error_count, pool.name
        ));
    }
    out
}

/// Whether a drive with `verdict` may be given to the pool (`ours_pending`: it only holds a
/// partition an interrupted step of ours made); the refusal names the drive and says why.
pub fn check_blank(
    name: &str,
    verdict: &Verdict,
    ours_pending: bool,
    role: &str,
) -> Result<(), String> {
    let ok = *verdict == Verdict::Eligible
        || (ours_pending
            && storage::discover::reusable(verdict)
            && !matches!(verdict, Verdict::PoolMember { .. }));
    if ok {
        return Ok(());
    }
    let why = serde_json::to_value(verdict)
        .ok()
        .map(|v| {
            let word = v["verdict"].as_str().unwrap_or("?").to_string();
            match v["reason"].as_str() {
                Some(r) => format!("{word}: {r}"),
                None => match verdict {
                    Verdict::PoolMember { pool, .. } | Verdict::OtherPool { pool, .. } => {
                        format!("{word} of pool `{pool}`")
                    }
                    _ => word,
                },
            }
        })
        .unwrap_or_default();
    Err(format!(
        "{name} is not eligible ({why}); {role} must be a blank fixed drive"
    ))
}

/// Whether `verdict` (of a whole disk of `size` bytes; `ours_pending`: it only holds a partition
/// an interrupted step of ours made) may replace `old`; the refusal says why.
pub fn check_replacement(
    name: &str,
    verdict: &Verdict,
    ours_pending: bool,
    size: u64,
    old: &Leaf,
) -> Result<(), String> {
    check_blank(name, verdict, ours_pending, "a replacement")?;
    // The partition the new drive gets, exactly as it will be made: a drive of the same size
    // as the member it replaces always qualifies (a fixed 4 MiB allowance once refused it).
    let usable = storage::gptops::whole_partition_bytes(size);
    if usable < old.size {
        return Err(format!(
            "{name} ({size} bytes, a {usable}-byte partition) is too small to replace {} ({} bytes in use by ZFS)",
            old.name, old.size
        ));
    }
    Ok(())
}

/// The pool's disk-operation lock (`{run}/eve/disks-<pool>.lock`), taken without waiting: two
/// replacements or additions at once could both take the same blank drive.
pub fn lock(roots: &platform::Roots, pool: &str) -> Result<platform::lock::Held> {
    let p = roots.run.join("eve").join(format!("disks-{pool}.lock"));
    platform::lock::exclusive(&p, false)?.ok_or_else(|| {
        Error::Refused(format!(
            "another disk operation on pool {pool} is running; nothing was changed, try again when it is done"
        ))
    })
}

/// Replaces `old` (a member, by any name) with the blank disk `new` (`nvme2n1` or a /dev path):
/// partitioned as storage-init would, then `zpool replace`. Returns the new member's path.
pub fn replace(pool_name: &str, old: &str, new: &str) -> Result<String> {
    let _lock = lock(&platform::Roots::host(), pool_name)?;
    let refuse = |m: String| Error::Refused(m);
    let pool = cmd::status(pool_name)?;
    let roots = platform::Roots::host();
    let devs = storage::discover::enumerate(&roots);
    let disk_of = |p: &str| disk_of(p, &devs);
    let old_leaf = find_member(&pool, old, disk_of)
        .ok_or_else(|| refuse(format!("{old} is not a member of pool {pool_name}")))?
        .clone();
    let new_name = kernel_name(new).ok_or_else(|| refuse(format!("{new}: no such device")))?;
    let obs = observe_drives(&crate::views::policy(pool_name))?;
    replace_with(pool_name, &old_leaf, &new_name, &obs)
}

/// The replacement itself, on drives already observed: judge `new_name`, partition it, `zpool
/// replace`, name the partition.
fn replace_with(
    pool_name: &str,
    old_leaf: &Leaf,
    new_name: &str,
    obs: &storage::observe::Observation,
) -> Result<String> {
    let refuse = |m: String| Error::Refused(m);
    let drive = obs
        .observed
        .drives
        .iter()
        .find(|d| d.name == new_name)
        .ok_or_else(|| refuse(format!("{new_name} is not a drive this box could pool (the boot disk, a partition, or not a disk)")))?;
    let (bd, _) = obs
        .devices
        .iter()
        .find(|(b, _)| b.name == new_name)
        .ok_or_else(|| refuse(format!("{new_name}: not found")))?;
    check_replacement(
        new_name,
        &drive.verdict,
        drive.ours_pending,
        bd.size_bytes,
        old_leaf,
    )
    .map_err(refuse)?;
    platform::log(format!(
        "{new_name} ({}): replacing {} ({}) in pool {pool_name}",
        drive.stable_id, old_leaf.name, old_leaf.state
    ));
    let part = storage::apply::partition_for_pool(&mut host(), bd)
        .map_err(|e| refuse(format!("partitioning {new_name}: {}", platform::chain(&e))))?;
    let part = part.display().to_string();
    cmd::replace(pool_name, &old_leaf.guid.to_string(), &part)?;
    storage::apply::finalize_partition(&mut host(), bd).map_err(|e| {
        refuse(format!(
            "naming {new_name}'s partition: {}",
            platform::chain(&e)
        ))
    })?;
    Ok(part)
}

/// A drive offered to `disk add`: its kernel name, verdict and whether only our own pending
/// partition is on it.
#[derive(Debug, Clone)]
pub struct Offered {
    pub name: String,
    pub verdict: Verdict,
    pub ours_pending: bool,
}

/// The pool's data layout: each top-level group's kind (`stripe`, `mirror`, `raidz1`, ...) and
/// width. A replacement or spare in progress hides the layout, so it is refused.
pub fn layout(pool: &PoolState) -> Result<(String, Vec<usize>), String> {
    // (group, kind, width) in the pool's order.
    let mut groups: Vec<(String, String, usize)> = Vec::new();
    for l in &pool.leaves {
        let (id, kind) = match &l.group {
            None => (l.name.clone(), "stripe".to_string()),
            Some(g) if g.starts_with("mirror") || g.starts_with("raidz") => (
                g.clone(),
                g.rsplit_once('-')
                    .map_or(g.as_str(), |(k, _)| k)
                    .to_string(),
            ),
            Some(g) => {
                return Err(format!(
                    "{g} is in the pool (a replacement or spare at work): let it finish first"
                ))
            }
        };
        match groups.iter_mut().find(|(g, _, _)| *g == id) {
            Some((_, _, n)) => *n += 1,
            None => groups.push((id, kind, 1)),
        }
    }
    let kinds: std::collections::BTreeSet<&str> =
        groups.iter().map(|(_, k, _)| k.as_str()).collect();
    match kinds.len() {
        1 => Ok((
            groups[0].1.clone(),
            groups.iter().map(|(_, _, n)| *n).collect(),
        )),
        0 => Err(format!("pool {} has no members", pool.name)),
        _ => Err(format!(
            "the pool mixes layouts ({}); add drives by hand with zpool",
            kinds.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `disk add`'s pure decision: the new groups (each a list of drive names) that grow `pool`
/// within its layout, or why not. A stripe takes drives one by one; a mirror or raidz pool
/// takes whole groups as wide as its narrowest, so no new data has less redundancy than the old.
pub fn plan_add(
    pool: &PoolState,
    offered: &[Offered],
) -> Result<(String, Vec<Vec<String>>), String> {
    if offered.is_empty() {
        return Err("name at least one drive to add".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(d) = offered.iter().find(|d| !seen.insert(d.name.as_str())) {
        return Err(format!("{} is named twice", d.name));
    }
    if pool.state != "ONLINE" || pool.leaves.iter().any(|l| l.state != "ONLINE") {
        return Err(format!(
            "pool {} is {}: bring back or replace its missing members before growing it",
            pool.name, pool.state
        ));
    }
    if pool
        .scan
        .as_ref()
        .is_some_and(|s| s.running() && !s.is_scrub())
    {
        return Err(format!(
            "pool {} is resilvering: wait for it to finish",
            pool.name
        ));
    }
    let (kind, widths) = layout(pool)?;
    let width = if kind == "stripe" {
        1
    } else {
        widths.iter().copied().min().unwrap_or(1)
    };
    if offered.len() % width != 0 {
        return Err(format!(
            "a {kind} pool of {width}-drive groups grows by {width} drives at a time; {} given",
            offered.len()
        ));
    }
    for d in offered {
        check_blank(&d.name, &d.verdict, d.ours_pending, "a drive to add")?;
    }
    let groups = offered
        .chunks(width)
        .map(|c| c.iter().map(|d| d.name.clone()).collect())
        .collect();
    Ok((kind, groups))
}

/// Grows the pool with the blank drives `new` (kernel names or /dev paths), partitioned as
/// storage-init would, in one `zpool add` (all groups or none). Returns the new members' paths.
pub fn add(pool_name: &str, new: &[String]) -> Result<Vec<String>> {
    let _lock = lock(&platform::Roots::host(), pool_name)?;
    let refuse = |m: String| Error::Refused(m);
    let pool = cmd::status(pool_name)?;
    let mut names = Vec::new();
    for n in new {
        names.push(kernel_name(n).ok_or_else(|| refuse(format!("{n}: no such device")))?);
    }
    let obs = observe_drives(&crate::views::policy(pool_name))?;
    let offered: Vec<Offered> = names
        .iter()
        .map(|n| {
            obs.observed
                .drives
                .iter()
                .find(|d| &d.name == n)
                .map(|d| Offered {
                    name: n.clone(),
                    verdict: d.verdict.clone(),
                    ours_pending: d.ours_pending,
                })
                .ok_or_else(|| {
                    let why = obs
                        .report
                        .iter()
                        .find(|r| &r.name == n)
                        .and_then(|r| serde_json::to_value(&r.verdict).ok())
                        .and_then(|v| v["reason"].as_str().map(String::from))
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default();
                    refuse(format!("{n} is not a drive this box could pool{why}"))
                })
        })
        .collect::<Result<_>>()?;
    let (kind, groups) = plan_add(&pool, &offered).map_err(refuse)?;
    let mut args = Vec::new();
    let mut done = Vec::new();
    for g in &groups {
        if kind != "stripe" {
            args.push(kind.clone());
        }
        for n in g {
            let (bd, _) = obs
                .devices
                .iter()
                .find(|(b, _)| &b.name == n)
                .ok_or_else(|| refuse(format!("{n}: not found")))?;
            platform::log(format!("{n}: partitioning to add to pool {pool_name}"));
            let part = storage::apply::partition_for_pool(&mut host(), bd)
                .map_err(|e| refuse(format!("partitioning {n}: {}", platform::chain(&e))))?;
            args.push(part.display().to_string());
            done.push((bd, part.display().to_string()));
        }
    }
    cmd::add(pool_name, &args)?;
    for (bd, _) in &done {
        storage::apply::finalize_partition(&mut host(), bd).map_err(|e| {
            refuse(format!(
                "naming {}'s partition: {}",
                bd.name,
                platform::chain(&e)
            ))
        })?;
    }
    Ok(done.into_iter().map(|(_, p)| p).collect())
}

/// `nvme2n1`, `/dev/nvme2n1` or any link to it, as the kernel names it.
fn kernel_name(dev: &str) -> Option<String> {
    std::fs::canonicalize(if dev.starts_with('/') {
        dev.to_string()
    } else {
        format!("/dev/{dev}")
    })
    .ok()
    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Every drive and what bring-up thinks of it, as storage-init sees them (this process's mount
/// table tells it the boot disk).
fn observe_drives(policy: &storage::policy::Policy) -> Result<storage::observe::Observation> {
    let mut h = host();
    let roots = h.roots.clone();
    let mountinfo = std::fs::read_to_string(roots.mountinfo()).unwrap_or_default();
    storage::observe::drives(&mut h, &roots, policy, &mountinfo)
        .map_err(|e| Error::Refused(format!("looking at the drives: {}", platform::chain(&e))))
}

/// Automatic replacement's pure decision: the member to replace (one not ONLINE, in a redundant
/// group, so the pool still has its data) and the blank drive to take, when the pool is not
/// already resilvering. Members of a stripe are never auto-replaced: the data on them is what is
/// missing, and a new disk cannot bring it back. `blank` is the eligible drives, name and size.
pub fn auto_pick(pool: &PoolState, blank: &[(String, u64)]) -> Option<(Leaf, String)> {
    if pool.scan.as_ref().is_some_and(|s| s.running())
        || pool.leaves.iter().any(|l| {
            l.group
                .as_deref()
                .is_some_and(|g| g.starts_with("replacing"))
        })
    {
        return None;
    }
    let old = pool.leaves.iter().find(|l| {
        l.group.as_deref().is_some_and(|g| !g.starts_with("spare"))
            && matches!(
                l.state.as_str(),
                "UNAVAIL" | "FAULTED" | "REMOVED" | "CANT_OPEN"
            )
    })?;
    let mut fits: Vec<&(String, u64)> = blank
        .iter()
        .filter(|(_, size)| size.saturating_sub(4 << 20) >= old.size)
        .collect();
    // The smallest that fits: bigger drives stay for bigger needs.
    fits.sort_by_key(|(n, size)| (*size, n.clone()));
    fits.first().map(|(n, _)| (old.clone(), n.clone()))
}

/// Runs automatic replacement once, if the policy allows it and something is to be done: returns
/// what was replaced by what.
pub fn autoreplace(
    pool_name: &str,
    policy: &storage::policy::Policy,
    pool: &PoolState,
) -> Result<Option<(String, String)>> {
    if !policy.pool.autoreplace || pool.leaves.iter().all(|l| l.state == "ONLINE") {
        return Ok(None);
    }
    // An operator's replacement in progress goes first; the next look tries again.
    let _lock = lock(&platform::Roots::host(), pool_name)?;
    let obs = observe_drives(policy)?;
    let blank: Vec<(String, u64)> = obs
        .observed
        .drives
        .iter()
        .filter(|d| d.verdict == Verdict::Eligible && !d.ours_pending)
        .filter_map(|d| {
            obs.devices
                .iter()
                .find(|(b, _)| b.name == d.name)
                .map(|(b, _)| (d.name.clone(), b.size_bytes))
        })
        .collect();
    let Some((old, new)) = auto_pick(pool, &blank) else {
        return Ok(None);
    };
    replace_with(pool_name, &old, &new, &obs)?;
    Ok(Some((old.name, new)))
}

/// `/dev/disk/by-partuuid/<x>` (or any device path) to the kernel name of the whole disk.
pub fn disk_of(path: &str, devs: &[storage::discover::BlockDev]) -> Option<String> {
    storage::discover::disk_holding(path, devs).map(|d| d.name.clone())
}

/// One drive's part in `disk selftest`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SelftestRow {
    pub device: String,
    pub stable_id: String,
    /// `started`, `skipped` or `failed`.
    pub outcome: String,
    /// Why it was skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The drives of `pool` (each drive holding a member), or the ones named (kernel name, `/dev`
/// path or stable id: any drive, pool member or not).
fn selftest_targets(
    pool_name: &str,
    named: &[String],
    devs: &[storage::discover::BlockDev],
) -> Result<Vec<storage::discover::BlockDev>> {
    if named.is_empty() {
        let pool = cmd::status(pool_name)
            .ok()
            .or_else(|| cmd::importable(pool_name))
            .ok_or_else(|| {
                Error::Refused(format!(
                    "pool {pool_name} is not here to say which drives are its own; name the drives"
                ))
            })?;
        let mut out: Vec<storage::discover::BlockDev> = Vec::new();
        for l in &pool.leaves {
            if let Some(name) = l.path.as_deref().and_then(|p| disk_of(p, devs)) {
                if let Some(b) = devs.iter().find(|b| b.name == name) {
                    if !out.iter().any(|o| o.name == b.name) {
                        out.push(b.clone());
                    }
                }
            }
        }
        return Ok(out);
    }
    named
        .iter()
        .map(|n| {
            let bare = n.strip_prefix("/dev/").unwrap_or(n);
            devs.iter()
                .find(|b| {
                    b.name == bare
                        || storage::discover::stable_id(b).0 == *n
                        || disk_of(n, devs).as_deref() == Some(b.name.as_str())
                })
                .cloned()
                .ok_or_else(|| {
                    Error::Refused(format!(
                        "no drive {n} (`storagectl disk list` shows the drives)"
                    ))
                })
        })
        .collect()
}

/// Starts a `kind` self-test on the pool's drives (or the ones named): each drive that offers
/// self-tests and runs none starts one; the others say why not. The drive runs it beside normal
/// I/O; `disk list` shows the progress and the result from the drive's own log.
pub fn selftest(
    pool_name: &str,
    named: &[String],
    kind: crate::selftest::Kind,
) -> Result<Vec<SelftestRow>> {
    let devs = storage::discover::enumerate(&platform::Roots::host());
    let mut targets = selftest_targets(pool_name, named, &devs)?;
    // One drive named twice (`sda /dev/sda`) is tested once.
    let mut seen = std::collections::BTreeSet::new();
    targets.retain(|b| seen.insert(b.name.clone()));
    if targets.is_empty() {
        return Err(Error::Refused(format!(
            "pool {pool_name} has no drive present to test"
        )));
    }
    let observed: Vec<(String, Option<crate::selftest::SelfTest>)> = targets
        .iter()
        .map(|b| {
            let st = match crate::gather::read_device(b) {
                crate::smart::Reading::Data(h) => h.selftest,
                _ => None,
            };
            (b.name.clone(), st)
        })
        .collect();
    let plan = crate::selftest::plan(&observed);
    let mut rows = Vec::new();
    for (b, (_, step)) in targets.iter().zip(plan) {
        let (outcome, reason) = match step {
            crate::selftest::Step::Skip { reason } => ("skipped", Some(reason)),
            crate::selftest::Step::Start => match crate::gather::start_selftest(b, kind) {
                Ok(()) => {
                    platform::log(format!("{}: {} self-test started", b.name, kind.as_str()));
                    ("started", None)
                }
                Err(e) => ("failed", Some(platform::chain(&e))),
            },
        };
        rows.push(SelftestRow {
            device: b.name.clone(),
            stable_id: storage::discover::stable_id(b).0,
            outcome: outcome.to_string(),
            reason,
        });
    }
    Ok(rows)
}

/// Takes a member offline (`zpool offline`) or brings it back (`zpool online`).
pub fn set_online(pool_name: &str, member: &str, online: bool) -> Result<String> {
    let _lock = lock(&platform::Roots::host(), pool_name)?;
    let pool = cmd::status(pool_name)?;
    let devs = storage::discover::enumerate(&platform::Roots::host());
    let leaf = find_member(&pool, member, |p| disk_of(p, &devs))
        .ok_or_else(|| Error::Refused(format!("{member} is not a member of pool {pool_name}")))?;
    cmd::online(pool_name, &leaf.guid.to_string(), online)?;
    Ok(leaf.name.clone())
}

/// One device of `disk list`: a drive, what bring-up thinks of it, and its pool role.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DiskRow {
    pub name: String,
    pub stable_id: String,
    pub transport: String,
    pub size: u64,
    pub verdict: Verdict,
    /// The pool member on it, when it is one.
    pub member: Option<Leaf>,
    /// The drive's own report, read now (`storagectl health` has the details).
    pub health: String,
    /// Self-tests: offered or not, running, the last result (the drive's own log).
    pub selftest: Option<crate::selftest::SelfTest>,
    pub alerts: Vec<crate::health::Alert>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DiskList {
    pub disks: Vec<DiskRow>,
    /// Members of the pool no present drive holds.
    pub missing: Vec<Leaf>,
    pub risks: Vec<String>,
}

impl DiskList {
    pub fn render(&self, bytes: bool) -> String {
        let sz = |b: u64| storage::policy::size_cell(b, bytes);
        let mut t = platform::table::Table::new(
            &[
                "DEVICE",
                "BUS",
                "SIZE",
                "VERDICT",
                "ROLE",
                "STATE",
                "ERR R/W/C",
                "HEALTH",
                "SELFTEST",
                "ID",
            ],
            &[2, 6],
        );
        let member_cells = |l: &Leaf| {
            (
                l.group.clone().unwrap_or_else(|| "stripe".into()),
                l.state.clone(),
                format!("{}/{}/{}", l.read_errors, l.write_errors, l.checksum_errors),
            )
        };
        for d in &self.disks {
            let verdict = serde_json::to_value(&d.verdict)
                .ok()
                .and_then(|v| v["verdict"].as_str().map(String::from))
                .unwrap_or_default();
            let (role, state, err) =
                d.member
                    .as_ref()
                    .map(member_cells)
                    .unwrap_or(("-".into(), "-".into(), "-".into()));
            t.row([
                d.name.as_str(),
                &d.transport,
                &sz(d.size),
                &verdict,
                &role,
                &state,
                &err,
                &d.health,
                &d.selftest
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |t| t.cell()),
                &d.stable_id,
            ]);
        }
        for l in &self.missing {
            let (role, state, err) = member_cells(l);
            t.row([
                "(missing)",
                "-",
                &sz(l.size),
                "-",
                &role,
                &state,
                &err,
                "-",
                "-",
                &format!("{} (guid {})", l.name, l.guid),
            ]);
        }
        let mut s = t.render();
        let alerts: Vec<&crate::health::Alert> =
            self.disks.iter().flat_map(|d| &d.alerts).collect();
        if self.risks.is_empty() && alerts.is_empty() {
            s.push_str("no known risk\n");
        }
        for r in &self.risks {
            s.push_str(&format!("RISK: {r}\n"));
        }
        for a in alerts {
            s.push_str(&format!("ALERT ({}): {}\n", a.severity.as_str(), a.message));
        }
        s
    }
}

/// Every drive with its verdict and pool role, the members no drive holds, and the risks.
pub fn list(pool_name: &str) -> Result<DiskList> {
    let obs = observe_drives(&crate::views::policy(pool_name))?;
    // A pool that cannot be imported (a stripe member missing) is read from the import listing.
    let (pool, imported) = match cmd::status(pool_name) {
        Ok(p) => (Some(p), true),
        Err(_) => (cmd::importable(pool_name), false),
    };
    let devs: Vec<_> = obs.devices.iter().map(|(b, _)| b.clone()).collect();
    let member_of = |name: &str| {
        pool.as_ref().and_then(|p| {
            p.leaves
                .iter()
                .find(|l| {
                    l.path.as_deref().and_then(|x| disk_of(x, &devs)).as_deref() == Some(name)
                })
                .cloned()
        })
    };
    let boot = obs.observed.boot_disk.as_deref();
    let mut disks: Vec<DiskRow> = obs
        .devices
        .iter()
        // Loop, device-mapper, zvol and nbd devices are not drives.
        .filter(|(b, _)| {
            !storage::discover::is_virtual_name(&b.name) || Some(b.name.as_str()) == boot
        })
        .map(|(b, _)| {
            let drive = obs.observed.drives.iter().find(|d| d.name == b.name);
            let (health, selftest, alerts) = if b.transport == storage::discover::Transport::Virtual
            {
                ("-".to_string(), None, vec![])
            } else {
                let dev = crate::health::Device {
                    name: b.name.clone(),
                    stable_id: storage::discover::stable_id(b).0,
                    bus: String::new(),
                    size: b.size_bytes,
                    reading: crate::gather::read_device(b),
                };
                let mut a = Vec::new();
                crate::health::device_alerts(&dev, &mut a);
                let selftest = dev.data().and_then(|h| h.selftest.clone());
                (dev.summary(&a), selftest, a)
            };
            DiskRow {
                health,
                selftest,
                alerts,
                name: b.name.clone(),
                stable_id: storage::discover::stable_id(b).0,
                transport: format!("{:?}", b.transport).to_lowercase(),
                size: b.size_bytes,
                verdict: drive.map(|d| d.verdict.clone()).unwrap_or_else(|| {
                    if Some(b.name.as_str()) == boot {
                        Verdict::BootMedia {
                            reason: "the boot disk (its P3 partition may be a member)".into(),
                        }
                    } else {
                        Verdict::Virtual {
                            reason: "not a drive".into(),
                        }
                    }
                }),
                member: member_of(&b.name),
            }
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    let missing = pool
        .as_ref()
        .map(|p| {
            p.leaves
                .iter()
                .filter(|l| !disks.iter().any(|d| d.member.as_ref() == Some(*l)))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut risk = pool.as_ref().map(risks).unwrap_or_default();
    if let (Some(p), false) = (&pool, imported) {
        risk.insert(
            0,
            format!(
                "pool {pool_name} is not imported: `zpool import` lists it {}; nothing is written to its drives until it can be (put back what is missing)",
                p.state
            ),
        );
    }
    Ok(DiskList {
        risks: risk,
        disks,
        missing,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_second_disk_operation_on_a_pool_is_refused_while_one_runs() {
        let d = tempfile::tempdir().unwrap();
        let roots = platform::Roots::under(d.path());
        let held = lock(&roots, "persist").unwrap();
        let e = lock(&roots, "persist").unwrap_err().to_string();
        assert!(e.contains("another disk operation on pool persist"), "{e}");
        assert!(lock(&roots, "other").is_ok());
        drop(held);
        assert!(lock(&roots, "persist").is_ok());
    }
    use super::*;
    use crate::pool::parse_status;

    fn mirror(b_state: &str) -> PoolState {
        let j = format!(
            r#"{{"pools":{{"p":{{"state":"DEGRADED","vdevs":{{"p":{{"vdev_type":"root","vdevs":{{
            "mirror-0":{{"name":"mirror-0","vdev_type":"mirror","state":"DEGRADED","vdevs":{{
              "aaaa":{{"name":"aaaa","guid":11,"vdev_type":"disk","state":"ONLINE","path":"/dev/disk/by-partuuid/aaaa","phys_space":1000000000}},
              "22":{{"name":"22","guid":22,"vdev_type":"disk","state":"{b_state}","path":"/dev/disk/by-partuuid/bbbb","phys_space":1000000000}}}}}},
            "cccc":{{"name":"cccc","guid":33,"vdev_type":"disk","state":"ONLINE","path":"/dev/disk/by-partuuid/cccc","checksum_errors":4}}}}}}}}}}}}}}"#
        );
        parse_status(&j, "p").unwrap()
    }

    #[test]
    fn a_member_is_found_by_any_of_its_names_and_nothing_else() {
        let p = mirror("UNAVAIL");
        let disk_of =
            |path: &str| (path == "/dev/disk/by-partuuid/aaaa").then(|| "nvme0n1".to_string());
        assert_eq!(find_member(&p, "aaaa", disk_of).unwrap().guid, 11);
        assert_eq!(find_member(&p, "22", disk_of).unwrap().guid, 22);
        assert_eq!(find_member(&p, "nvme0n1", disk_of).unwrap().guid, 11);
        assert_eq!(find_member(&p, "/dev/nvme0n1", disk_of).unwrap().guid, 11);
        assert_eq!(
            find_member(&p, "/dev/disk/by-partuuid/cccc", disk_of)
                .unwrap()
                .guid,
            33
        );
        assert!(find_member(&p, "nvme9n1", disk_of).is_none());
        assert!(find_member(&p, "", disk_of).is_none());
    }

    #[test]
    fn risks_say_what_a_missing_member_costs_by_topology() {
        let r = risks(&mirror("UNAVAIL"));
        assert!(
            r[0].contains("22 in mirror-0 is UNAVAIL") && r[0].contains("one more failure"),
            "{r:?}"
        );
        assert!(
            r[1].contains("cccc has 0 read, 0 write and 4 checksum"),
            "{r:?}"
        );
        let mut p = mirror("ONLINE");
        let c = p.leaves.iter().position(|l| l.name == "cccc").unwrap();
        p.leaves[c].state = "UNAVAIL".into();
        p.leaves[c].checksum_errors = 0;
        let r = risks(&p);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].contains("stripe member") && r[0].contains("at risk"),
            "{r:?}"
        );
        p.leaves[c].state = "ONLINE".into();
        assert!(risks(&p).is_empty());
    }

    #[test]
    fn autoreplace_takes_the_smallest_blank_that_fits_for_a_redundant_member_only() {
        let p = mirror("UNAVAIL");
        let blank = vec![
            ("vdd".to_string(), 8u64 << 30),
            ("vdc".to_string(), 2u64 << 30),
            ("vde".to_string(), 900_000_000),
        ];
        let (old, new) = auto_pick(&p, &blank).unwrap();
        assert_eq!((old.guid, new.as_str()), (22, "vdc"));
        assert!(auto_pick(&p, &blank[2..]).is_none(), "too small");
        assert!(auto_pick(&p, &[]).is_none());
        // Not while a resilver runs, and never for a stripe member.
        let mut busy = p.clone();
        busy.scan = Some(crate::record::tests::scan("RESILVER", "SCANNING", 1, 0, 0));
        assert!(auto_pick(&busy, &blank).is_none());
        let mut stripe = mirror("ONLINE");
        let c = stripe.leaves.iter().position(|l| l.name == "cccc").unwrap();
        stripe.leaves[c].state = "UNAVAIL".into();
        assert!(auto_pick(&stripe, &blank).is_none());
        let mut replacing = p.clone();
        replacing.leaves[0].group = Some("replacing-1".into());
        assert!(auto_pick(&replacing, &blank).is_none());
    }

    fn offered(names: &[&str]) -> Vec<Offered> {
        names
            .iter()
            .map(|n| Offered {
                name: n.to_string(),
                verdict: Verdict::Eligible,
                ours_pending: false,
            })
            .collect()
    }

    fn pool_of(vdevs: &str) -> PoolState {
        parse_status(
            &format!(
                r#"{{"pools":{{"p":{{"state":"ONLINE","vdevs":{{"p":{{"vdev_type":"root","vdevs":{{{vdevs}}}}}}}}}}}}}"#
            ),
            "p",
        )
        .unwrap()
    }

    fn leaf(name: &str, guid: u64) -> String {
        format!(r#""{name}":{{"name":"{name}","guid":{guid},"vdev_type":"disk","state":"ONLINE"}}"#)
    }

    #[test]
    fn a_pool_grows_within_its_layout_and_nothing_else_is_added() {
        let stripe = pool_of(&format!("{},{}", leaf("a", 1), leaf("b", 2)));
        assert_eq!(layout(&stripe).unwrap(), ("stripe".into(), vec![1, 1]));
        let (kind, g) = plan_add(&stripe, &offered(&["vdc", "vdd"])).unwrap();
        assert_eq!(
            (kind.as_str(), g),
            (
                "stripe",
                vec![vec!["vdc".to_string()], vec!["vdd".to_string()]]
            )
        );

        let mirror3 = pool_of(&format!(
            r#""mirror-0":{{"name":"mirror-0","vdev_type":"mirror","state":"ONLINE","vdevs":{{{},{},{}}}}}"#,
            leaf("a", 1),
            leaf("b", 2),
            leaf("c", 3)
        ));
        assert_eq!(layout(&mirror3).unwrap(), ("mirror".into(), vec![3]));
        let e = plan_add(&mirror3, &offered(&["vdc"])).unwrap_err();
        assert!(e.contains("grows by 3 drives at a time; 1 given"), "{e}");
        let (kind, g) = plan_add(&mirror3, &offered(&["x", "y", "z"])).unwrap();
        assert_eq!((kind.as_str(), g.len(), g[0].len()), ("mirror", 1, 3));

        let raidz = pool_of(&format!(
            r#""raidz1-0":{{"name":"raidz1-0","vdev_type":"raidz","state":"ONLINE","vdevs":{{{},{},{}}}}}"#,
            leaf("a", 1),
            leaf("b", 2),
            leaf("c", 3)
        ));
        let (kind, g) = plan_add(&raidz, &offered(&["x", "y", "z", "u", "v", "w"])).unwrap();
        assert_eq!((kind.as_str(), g.len()), ("raidz1", 2));
        assert!(plan_add(&raidz, &offered(&["x", "y"])).is_err());

        // Refusals: none named, one named twice, a drive that is not blank, a degraded pool,
        // a replacement at work, mixed layouts.
        assert!(plan_add(&stripe, &[]).unwrap_err().contains("at least one"));
        assert!(plan_add(&stripe, &offered(&["x", "x"]))
            .unwrap_err()
            .contains("named twice"));
        let mut o = offered(&["x"]);
        o[0].verdict = Verdict::ForeignData {
            reason: "ext4 on x1".into(),
        };
        let e = plan_add(&stripe, &o).unwrap_err();
        assert!(
            e.contains("x is not eligible (foreign-data: ext4 on x1)"),
            "{e}"
        );
        let e = plan_add(&mirror("UNAVAIL"), &offered(&["x", "y", "z"])).unwrap_err();
        assert!(e.contains("is DEGRADED") && e.contains("replace"), "{e}");
        let replacing = pool_of(&format!(
            r#""replacing-0":{{"name":"replacing-0","vdev_type":"replacing","state":"ONLINE","vdevs":{{{},{}}}}}"#,
            leaf("a", 1),
            leaf("b", 2)
        ));
        assert!(plan_add(&replacing, &offered(&["x"]))
            .unwrap_err()
            .contains("let it finish"));
        let mut mixed = mirror("ONLINE");
        mixed.state = "ONLINE".into();
        let e = plan_add(&mixed, &offered(&["x"])).unwrap_err();
        assert!(e.contains("mixes layouts (mirror, stripe)"), "{e}");
    }

    #[test]
    fn a_replacement_must_be_blank_fixed_and_big_enough() {
        let p = mirror("UNAVAIL");
        let old = p.leaves.iter().find(|l| l.guid == 22).unwrap();
        let gib = 1u64 << 30;
        assert!(check_replacement("vdc", &Verdict::Eligible, false, gib, old).is_ok());
        let e = check_replacement("vdc", &Verdict::Eligible, false, 900_000_000, old).unwrap_err();
        assert!(e.contains("too small"), "{e}");
        // A drive the size of the one that held the member: its partition is the member's size.
        // Found by the fault campaign: a same-size SCSI drive was refused for a SATA member.
        let same = 6_442_450_944u64;
        let member = Leaf {
            size: storage::gptops::whole_partition_bytes(same),
            ..old.clone()
        };
        assert!(check_replacement("vdc", &Verdict::Eligible, false, same, &member).is_ok());
        assert!(check_replacement("vdc", &Verdict::Eligible, false, same - 512, &member).is_err());
        for (v, word) in [
            (
                Verdict::ForeignData {
                    reason: "ext4 on vdc1".into(),
                },
                "foreign-data: ext4",
            ),
            (
                Verdict::Removable {
                    reason: "USB".into(),
                },
                "removable",
            ),
            (
                Verdict::PoolMember {
                    pool: "p".into(),
                    guid: 1,
                },
                "of pool `p`",
            ),
            (
                Verdict::OtherPool {
                    pool: "tank".into(),
                    guid: 1,
                },
                "of pool `tank`",
            ),
            (
                Verdict::TooSmall {
                    reason: "512 MiB".into(),
                },
                "too-small",
            ),
        ] {
            let e = check_replacement("vdc", &v, false, gib, old).unwrap_err();
            assert!(e.contains(word) && e.contains("not eligible"), "{e}");
        }
        // A drive an interrupted replace left with only our pending partition is taken again.
        assert!(check_replacement("vdc", &Verdict::Eligible, true, gib, old).is_ok());
        assert!(check_replacement(
            "vdc",
            &Verdict::PoolMember {
                pool: "p".into(),
                guid: 1
            },
            true,
            gib,
            old
        )
        .is_err());
    }
}
