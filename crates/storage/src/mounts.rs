//! Which filesystems a boot mounts, and where. Whoever holds the disks can create a dataset and
//! give it any mountpoint (`/usr/sbin`, `/persist/vault/config`); `zfs mount -a` would honour it
//! and run their files or take the vault's writes. So only the pool's root, the vault and the
//! policy's datasets are mounted, each only when its mountpoint is the one the policy gives it,
//! never with device nodes or set-uid files, and never executable outside the encrypted vault.

use crate::datasets;
use crate::host::Host;
use crate::policy::Policy;
use platform::log;

/// One line of `zfs list -H -o name,mountpoint,canmount,mounted -t filesystem -r <pool>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub mountpoint: String,
    pub canmount: String,
    pub mounted: bool,
}

/// The columns [`parse_list`] reads, in order.
pub const LIST_COLUMNS: &str = "name,mountpoint,canmount,mounted";

pub fn parse_list(out: &str) -> Vec<Listed> {
    out.lines()
        .filter_map(|l| match l.split('\t').collect::<Vec<_>>().as_slice() {
            [name, mp, canmount, mounted] => Some(Listed {
                name: name.to_string(),
                mountpoint: mp.to_string(),
                canmount: canmount.to_string(),
                mounted: *mounted == "yes",
            }),
            _ => None,
        })
        .collect()
}

/// A filesystem the boot may mount: its name, the only path it may mount at, and whether it is
/// in the vault's subtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub name: String,
    pub path: String,
    pub in_vault: bool,
}

/// The pool's root, the vault and the policy's datasets that have a mountpoint.
pub fn expected(policy: &Policy) -> Vec<Expected> {
    let pool = &policy.pool.name;
    let vault = format!("{pool}/vault");
    let mut v = vec![Expected {
        name: pool.clone(),
        path: format!("/{pool}"),
        in_vault: false,
    }];
    // Quotas do not matter here, only names and mountpoints.
    for d in datasets::desired(policy, 0) {
        let Some(path) = d.props.get("mountpoint") else {
            continue;
        };
        if path == "none" || path == "legacy" {
            continue;
        }
        let in_vault = d.name == vault || d.name.starts_with(&format!("{vault}/"));
        v.push(Expected {
            name: d.name,
            path: path.clone(),
            in_vault,
        });
    }
    v
}

/// What to do with one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `zfs mount -o <options> <name>`.
    Mount { name: String, options: String },
    /// A policy dataset left unmounted because its mountpoint is not the policy's: tampering
    /// (or a policy change not yet applied). The line the console, log and outcome get.
    Refuse { name: String, why: String },
    /// A filesystem the policy does not name, left unmounted; only logged.
    Skip { why: String },
}

/// Pure: what to mount of `listed`, parents first. `vault_usable` is false while the vault is
/// unchecked or refused: nothing in its subtree is mounted then. Filesystems the policy does not
/// name are left alone (said once each, only when they ask to be mounted).
pub fn decide(listed: &[Listed], expected: &[Expected], vault_usable: bool) -> Vec<Step> {
    let mut steps: Vec<(usize, Step)> = Vec::new();
    for l in listed {
        if l.mounted || l.canmount != "on" || l.mountpoint == "none" || l.mountpoint == "legacy" {
            continue;
        }
        let Some(e) = expected.iter().find(|e| e.name == l.name) else {
            steps.push((
                usize::MAX,
                Step::Skip {
                    why: format!(
                        "{}: not mounted at {}: not a dataset of the storage policy",
                        l.name, l.mountpoint
                    ),
                },
            ));
            continue;
        };
        if e.in_vault && !vault_usable {
            continue;
        }
        if l.mountpoint != e.path {
            steps.push((
                usize::MAX,
                Step::Refuse {
                    name: l.name.clone(),
                    why: format!(
                        "{}: NOT MOUNTED: its mountpoint is {}, the policy says {} (changed on the disk?)",
                        l.name, l.mountpoint, e.path
                    ),
                },
            ));
            continue;
        }
        // Outside the vault the disk's holder can write anything: nothing there runs.
        let options = if e.in_vault {
            "nodev,nosuid"
        } else {
            "nodev,nosuid,noexec"
        };
        let depth = e.path.split('/').filter(|c| !c.is_empty()).count();
        steps.push((
            depth,
            Step::Mount {
                name: l.name.clone(),
                options: options.into(),
            },
        ));
    }
    steps.sort_by_key(|(depth, _)| *depth);
    steps.into_iter().map(|(_, s)| s).collect()
}

/// The first component of the absolute `path` that is a symbolic link, if any: mount(2) follows
/// one, and the pool's root (where `/persist/newlog` lives) is writable by whoever holds the
/// disks. A missing component is fine: zfs makes it as a directory.
fn symlink_in(host: &dyn Host, path: &str) -> Option<String> {
    let mut cur = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        cur.push('/');
        cur.push_str(c);
        match std::fs::symlink_metadata(host.host_path(&cur)) {
            Ok(m) if m.file_type().is_symlink() => return Some(cur),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Lists `policy`'s pool, decides and mounts; logs what it leaves unmounted. Returns the
/// refusals (policy datasets whose mountpoint is not the policy's) and a list that cannot be
/// read.
pub fn apply(host: &mut dyn Host, policy: &Policy, vault_usable: bool) -> Vec<String> {
    let pool = &policy.pool.name;
    let args = [
        "list",
        "-H",
        "-o",
        LIST_COLUMNS,
        "-t",
        "filesystem",
        "-r",
        pool,
    ]
    .map(String::from);
    let list = match host.zfs(&args, None) {
        Ok(l) => l,
        Err(e) => {
            let why = format!("listing {pool}'s filesystems: {e}");
            log(&why);
            return vec![why];
        }
    };
    let mut refused = Vec::new();
    let listed = parse_list(&list);
    for step in decide(&listed, &expected(policy), vault_usable) {
        match step {
            Step::Mount { name, options } => {
                let path = listed
                    .iter()
                    .find(|l| l.name == name)
                    .map(|l| l.mountpoint.clone())
                    .unwrap_or_default();
                if let Some(link) = symlink_in(host, &path) {
                    let why = format!(
                        "{name}: NOT MOUNTED: {link} is a symbolic link (made on the disk?); mounting would follow it"
                    );
                    log(&why);
                    refused.push(why);
                    continue;
                }
                let args = ["mount", "-o", &options, &name].map(String::from);
                if let Err(e) = host.zfs(&args, None) {
                    log(format!("zfs mount {name}: {e}"));
                }
            }
            Step::Refuse { why, .. } => {
                log(&why);
                refused.push(why);
            }
            Step::Skip { why } => log(why),
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const LIST: &str = "persist\t/persist\ton\tno\n\
        persist/newlog\t/persist/newlog\ton\tno\n\
        persist/vault\t/persist/vault\ton\tno\n\
        persist/vault/config\t/persist/config\ton\tno\n\
        persist/vault/volumes\tnone\ton\tno\n\
        persist/reserved\tnone\toff\tno\n";

    fn mounts(steps: &[Step]) -> Vec<(&str, &str)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Mount { name, options } => Some((name.as_str(), options.as_str())),
                Step::Refuse { .. } | Step::Skip { .. } => None,
            })
            .collect()
    }

    fn refusals(steps: &[Step]) -> Vec<&str> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Refuse { why, .. } | Step::Skip { why } => Some(why.as_str()),
                Step::Mount { .. } => None,
            })
            .collect()
    }

    #[test]
    fn the_policy_datasets_mount_parents_first_and_nothing_runs_outside_the_vault() {
        let p = Policy::builtin();
        let s = decide(&parse_list(LIST), &expected(&p), true);
        assert_eq!(
            mounts(&s),
            [
                ("persist", "nodev,nosuid,noexec"),
                ("persist/newlog", "nodev,nosuid,noexec"),
                ("persist/vault", "nodev,nosuid"),
                ("persist/vault/config", "nodev,nosuid"),
            ]
        );
        assert!(refusals(&s).is_empty(), "{s:?}");
        // Before the vault is checked, nothing of its subtree.
        let s = decide(&parse_list(LIST), &expected(&p), false);
        assert_eq!(
            mounts(&s).iter().map(|m| m.0).collect::<Vec<_>>(),
            ["persist", "persist/newlog"]
        );
    }

    #[test]
    fn a_dataset_made_or_changed_on_the_disk_never_mounts_over_the_system_or_the_vault() {
        let p = Policy::builtin();
        for evil in [
            "persist/sbin\t/usr/sbin\ton\tno",
            "persist/x\t/persist/vault/config\ton\tno",
            "persist/vaulty\t/persist/vaulty\ton\tno",
            // A policy dataset whose mountpoint was changed.
            "persist/newlog\t/etc\ton\tno",
            "persist/vault/config\t/usr/bin\ton\tno",
            // The pool's root moved.
            "persist\t/\ton\tno",
        ] {
            let s = decide(&parse_list(evil), &expected(&p), true);
            assert!(mounts(&s).is_empty(), "{evil}: {s:?}");
            assert_eq!(refusals(&s).len(), 1, "{evil}: {s:?}");
        }
        let s = decide(
            &parse_list("persist/newlog\t/etc\ton\tno"),
            &expected(&p),
            true,
        );
        assert!(
            refusals(&s)[0].contains("/etc") && refusals(&s)[0].contains("/persist/newlog"),
            "{s:?}"
        );
        // Mounted already, noauto, off or legacy: left as they are.
        for quiet in [
            "persist/sbin\t/usr/sbin\ton\tyes",
            "persist/sbin\t/usr/sbin\tnoauto\tno",
            "persist/sbin\t/usr/sbin\toff\tno",
            "persist/sbin\tlegacy\ton\tno",
        ] {
            assert!(
                decide(&parse_list(quiet), &expected(&p), true).is_empty(),
                "{quiet}"
            );
        }
    }

    #[test]
    fn applying_mounts_through_the_host_and_reports_refusals() {
        let mut h = FakeHost::default();
        h.answer(
            "zfs list -H -o name,mountpoint,canmount,mounted",
            Ok(&format!("{LIST}persist/sbin\t/usr/sbin\ton\tno\n")),
        );
        let refused = apply(&mut h, &Policy::builtin(), false);
        assert!(
            refused.is_empty(),
            "not the policy's: logged only: {refused:?}"
        );
        // A policy dataset moved on the disk is reported.
        h.answer(
            "zfs list -H -o name,mountpoint,canmount,mounted",
            Ok("persist\t/persist\ton\tyes\npersist/newlog\t/usr/sbin\ton\tno\n"),
        );
        assert_eq!(apply(&mut h, &Policy::builtin(), false).len(), 1);
        h.calls.clear();
        h.answer(
            "zfs list -H -o name,mountpoint,canmount,mounted",
            Ok(&format!("{LIST}persist/sbin\t/usr/sbin\ton\tno\n")),
        );
        apply(&mut h, &Policy::builtin(), false);
        assert_eq!(
            h.calls_to("zfs mount"),
            [
                "zfs mount -o nodev,nosuid,noexec persist",
                "zfs mount -o nodev,nosuid,noexec persist/newlog"
            ]
        );
        // A symbolic link planted where a dataset mounts (on the pool's root, offline).
        let t = tempfile::tempdir().unwrap();
        let mut h = FakeHost::under(t.path());
        std::fs::create_dir_all(t.path().join("persist")).unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("persist/newlog")).unwrap();
        h.answer(
            "zfs list -H -o name,mountpoint,canmount,mounted",
            Ok("persist\t/persist\ton\tyes\npersist/newlog\t/persist/newlog\ton\tno\n"),
        );
        let refused = apply(&mut h, &Policy::builtin(), false);
        assert!(
            refused.len() == 1 && refused[0].contains("/persist/newlog is a symbolic link"),
            "{refused:?}"
        );
        assert!(h.calls_to("zfs mount").is_empty(), "{:?}", h.calls);
        // An unreadable list mounts nothing.
        h.answer(
            "zfs list -H -o name,mountpoint,canmount,mounted",
            Err("pool I/O is currently suspended"),
        );
        h.calls.clear();
        assert_eq!(apply(&mut h, &Policy::builtin(), true).len(), 1);
        assert!(h.calls_to("zfs mount").is_empty());
    }
}
