//! LIO (the kernel's SCSI target) as data, for the vhost-scsi guest path: iblock backstores on
//! zvols in one HBA this reconciler owns, and vhost targets (`naa.` WWPNs with our prefix) whose
//! LUN 0 is such a backstore. Other HBAs, fabrics (tcm_loop, iSCSI) and targets are left alone.

use crate::cfs::{run_plan, Cfs, CfsError, Ops, PlanError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lio {
    pub backstores: BTreeMap<String, Backstore>,
    /// By WWPN.
    pub vhost: BTreeMap<String, VhostTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Backstore {
    pub udev_path: String,
    /// The unit serial number (VPD page 0x80) the guest sees.
    pub serial: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VhostTarget {
    /// The I_T nexus' initiator WWN.
    pub nexus: String,
    /// Backstore name behind LUN 0.
    pub lun0: String,
}

#[derive(Debug, Clone)]
pub struct Tree {
    pub target: PathBuf,
    /// `iblock_<n>`, the HBA whose backstores we own.
    pub hba: String,
    pub wwpn_prefix: String,
}

impl Tree {
    pub fn new(configfs: &Path, hba_index: u32, wwpn_prefix: &str) -> Tree {
        Tree {
            target: configfs.join("target"),
            hba: format!("iblock_{hba_index}"),
            wwpn_prefix: wwpn_prefix.into(),
        }
    }
    fn bs(&self, name: &str) -> PathBuf {
        self.target.join("core").join(&self.hba).join(name)
    }
    fn tpg(&self, wwpn: &str) -> PathBuf {
        self.target.join("vhost").join(wwpn).join("tpgt_1")
    }
    fn lun0(&self, wwpn: &str) -> PathBuf {
        self.tpg(wwpn).join("lun").join("lun_0")
    }
    pub fn available(&self) -> bool {
        self.target.join("core").is_dir()
    }
}

pub fn observe<F: Cfs + ?Sized>(fs: &F, t: &Tree) -> Result<Lio, CfsError> {
    let o = Ops { fs };
    let mut l = Lio::default();
    let opt = |p: PathBuf| o.get(&p).ok().filter(|s| !s.is_empty());
    for name in o.list(&t.target.join("core").join(&t.hba))? {
        let d = t.bs(&name);
        if !o.fs.list(&d).map(|v| !v.is_empty()).unwrap_or(false) {
            continue; // not a backstore directory
        }
        l.backstores.insert(
            name,
            Backstore {
                udev_path: opt(d.join("udev_path")).unwrap_or_default(),
                serial: opt(d.join("wwn").join("vpd_unit_serial"))
                    .map(|s| {
                        s.trim_start_matches("T10 VPD Unit Serial Number:")
                            .trim()
                            .to_string()
                    })
                    .unwrap_or_default(),
                enabled: opt(d.join("enable")).as_deref() == Some("1"),
            },
        );
    }
    for wwpn in o.list(&t.target.join("vhost"))? {
        if !wwpn.starts_with(&t.wwpn_prefix) {
            continue;
        }
        let lun = t.lun0(&wwpn);
        let lun0 = o
            .list(&lun)?
            .into_iter()
            .find_map(|e| {
                o.fs.read_link(&lun.join(&e))
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            })
            .unwrap_or_default();
        l.vhost.insert(
            wwpn.clone(),
            VhostTarget {
                nexus: opt(t.tpg(&wwpn).join("nexus")).unwrap_or_default(),
                lun0,
            },
        );
    }
    Ok(l)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    RemoveVhost { wwpn: String },
    RemoveBackstore { name: String },
    AddBackstore { name: String, spec: Backstore },
    AddVhost { wwpn: String, spec: VhostTarget },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::RemoveVhost { wwpn } => write!(f, "remove vhost target {wwpn}"),
            Op::RemoveBackstore { name } => write!(f, "remove iblock backstore {name}"),
            Op::AddBackstore { name, spec } => {
                write!(f, "add iblock backstore {name} on {}", spec.udev_path)
            }
            Op::AddVhost { wwpn, spec } => {
                write!(f, "add vhost target {wwpn} with LUN 0 = {}", spec.lun0)
            }
        }
    }
}

/// Backstores cannot change device while in use, so any difference rebuilds the object (and the
/// targets that use a rebuilt backstore).
pub fn diff(want: &Lio, have: &Lio) -> Vec<Op> {
    let mut ops = Vec::new();
    let want_bs = |n: &str| want.backstores.get(n).map(|b| (b, true));
    let bs_rebuild: Vec<&String> = have
        .backstores
        .iter()
        .filter(|(n, b)| {
            want_bs(n).is_none_or(|(w, _)| {
                w.udev_path != b.udev_path || w.serial != b.serial || !b.enabled
            })
        })
        .map(|(n, _)| n)
        .collect();
    let vh_rebuild: Vec<&String> = have
        .vhost
        .iter()
        .filter(|(w, t)| want.vhost.get(*w) != Some(t) || bs_rebuild.contains(&&t.lun0))
        .map(|(w, _)| w)
        .collect();
    ops.extend(
        vh_rebuild
            .iter()
            .map(|w| Op::RemoveVhost { wwpn: (*w).clone() }),
    );
    ops.extend(
        bs_rebuild
            .iter()
            .map(|n| Op::RemoveBackstore { name: (*n).clone() }),
    );
    for (n, b) in &want.backstores {
        if !have.backstores.contains_key(n) || bs_rebuild.contains(&n) {
            ops.push(Op::AddBackstore {
                name: n.clone(),
                spec: b.clone(),
            });
        }
    }
    for (w, t) in &want.vhost {
        if !have.vhost.contains_key(w) || vh_rebuild.contains(&w) {
            ops.push(Op::AddVhost {
                wwpn: w.clone(),
                spec: t.clone(),
            });
        }
    }
    ops
}

pub fn apply_op<F: Cfs + ?Sized>(fs: &F, t: &Tree, op: &Op) -> Result<bool, CfsError> {
    let o = Ops { fs };
    match op {
        Op::RemoveVhost { wwpn } => {
            let lun = t.lun0(wwpn);
            let mut c = false;
            // Only the link to the backstore; the LUN's attributes (alua_tg_pt_gp...) stay.
            for e in o.list(&lun)? {
                if o.fs.read_link(&lun.join(&e)).is_ok() {
                    c |= o.unlink(&lun.join(e))?;
                }
            }
            c |= o.rmdir(&lun)?;
            c |= o.rmdir(&t.tpg(wwpn))?;
            c |= o.rmdir(&t.target.join("vhost").join(wwpn))?;
            Ok(c)
        }
        Op::RemoveBackstore { name } => o.rmdir(&t.bs(name)),
        Op::AddBackstore { name, spec } => {
            let hba = t.target.join("core").join(&t.hba);
            let mut c = o.mkdir(&hba)?;
            let d = t.bs(name);
            c |= o.mkdir(&d)?;
            if o.get(&d.join("enable")).ok().as_deref() != Some("1") {
                o.fs.write(&d.join("control"), &format!("udev_path={}", spec.udev_path))
                    .map_err(|source| CfsError {
                        op: "write",
                        path: d.join("control"),
                        source,
                    })?;
                c |= o.set(&d.join("udev_path"), &spec.udev_path)?;
                c |= o.set(&d.join("wwn").join("vpd_unit_serial"), &spec.serial)?;
                c |= o.set(&d.join("enable"), "1")?;
            }
            Ok(c)
        }
        Op::AddVhost { wwpn, spec } => {
            // The fabric's directory appears on first mkdir (the kernel registers vhost then).
            let mut c = o.mkdir(&t.target.join("vhost"))?;
            c |= o.mkdir(&t.target.join("vhost").join(wwpn))?;
            let tpg = t.tpg(wwpn);
            c |= o.mkdir(&tpg)?;
            c |= o.set(&tpg.join("nexus"), &spec.nexus)?;
            let lun = t.lun0(wwpn);
            c |= o.mkdir(&lun)?;
            c |= o.symlink(&t.bs(&spec.lun0), &lun.join(&spec.lun0))?;
            Ok(c)
        }
    }
}

/// Applies a plan in order (see [`crate::cfs::run_plan`]).
pub fn apply<F: Cfs + ?Sized>(
    fs: &F,
    t: &Tree,
    ops: &[Op],
) -> Result<Vec<(String, bool)>, PlanError> {
    run_plan("LIO", ops, |op| apply_op(fs, t, op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cfs::fake::FaultyFs;

    fn fake() -> FaultyFs {
        FaultyFs::with_groups(vec![
            ("iblock_100", vec!["attrib", "wwn"]),
            ("naa.*", vec!["lun", "acls"]),
        ])
    }

    fn setup(d: &Path) -> Tree {
        let t = Tree::new(d, 100, "naa.5001405e");
        std::fs::create_dir_all(t.target.join("core")).unwrap();
        std::fs::create_dir_all(t.target.join("vhost")).unwrap();
        t
    }

    fn want(names: &[(&str, &str)]) -> Lio {
        let mut l = Lio::default();
        for (i, (n, dev)) in names.iter().enumerate() {
            l.backstores.insert(
                n.to_string(),
                Backstore {
                    udev_path: dev.to_string(),
                    serial: format!("S{n}"),
                    enabled: true,
                },
            );
            l.vhost.insert(
                format!("naa.5001405e0000000{i}"),
                VhostTarget {
                    nexus: format!("naa.5001405f0000000{i}"),
                    lun0: n.to_string(),
                },
            );
        }
        l
    }

    fn converge(fs: &FaultyFs, t: &Tree, w: &Lio) -> Vec<Op> {
        let ops = diff(w, &observe(fs, t).unwrap());
        apply(fs, t, &ops).unwrap();
        let after = observe(fs, t).unwrap();
        // The fake has no kernel to print the serial's prefix; compare what matters.
        assert_eq!(after.vhost, w.vhost);
        assert_eq!(
            after.backstores.keys().collect::<Vec<_>>(),
            w.backstores.keys().collect::<Vec<_>>()
        );
        assert!(diff(w, &after).is_empty());
        ops
    }

    #[test]
    fn backstores_and_vhost_targets_are_built_rebuilt_and_torn_down_in_order() {
        let d = tempfile::tempdir().unwrap();
        let (fs, t) = (fake(), setup(d.path()));
        let w = want(&[("a", "/dev/zvol/p/a"), ("b", "/dev/zvol/p/b")]);
        let ops = converge(&fs, &t, &w);
        assert!(matches!(ops[0], Op::AddBackstore { .. }) && matches!(ops[3], Op::AddVhost { .. }));
        let bs = t.bs("a");
        assert_eq!(
            std::fs::read_to_string(bs.join("control")).unwrap(),
            "udev_path=/dev/zvol/p/a"
        );
        assert_eq!(std::fs::read_to_string(bs.join("enable")).unwrap(), "1");
        // The kernel's LUN directory has attribute files besides the link; they are not removed.
        std::fs::write(
            t.lun0("naa.5001405e00000000").join("alua_tg_pt_gp"),
            "default",
        )
        .unwrap();
        let link = t.lun0("naa.5001405e00000000").join("a");
        assert_eq!(std::fs::read_link(&link).unwrap(), bs);
        assert_eq!(
            std::fs::read_to_string(t.tpg("naa.5001405e00000000").join("nexus")).unwrap(),
            "naa.5001405f00000000"
        );

        // A tcm_loop target someone made on our backstore is not ours to remove.
        std::fs::create_dir_all(t.target.join("loopback/naa.500140500000001/tpgt_1")).unwrap();

        // A different device rebuilds the backstore and the target that uses it.
        let w2 = want(&[("a", "/dev/zvol/p/a2"), ("b", "/dev/zvol/p/b")]);
        let ops = converge(&fs, &t, &w2);
        let s: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
        assert_eq!(
            s,
            [
                "remove vhost target naa.5001405e00000000",
                "remove iblock backstore a",
                "add iblock backstore a on /dev/zvol/p/a2",
                "add vhost target naa.5001405e00000000 with LUN 0 = a",
            ]
        );

        // Everything goes; a backstore still linked would be ENOTEMPTY/EBUSY in the fake too.
        let ops = converge(&fs, &t, &Lio::default());
        assert_eq!(ops.len(), 4);
        assert!(t
            .target
            .join("loopback/naa.500140500000001/tpgt_1")
            .is_dir());
    }

    #[test]
    fn a_busy_backstore_stops_the_plan_with_its_path_and_the_next_pass_finishes() {
        let d = tempfile::tempdir().unwrap();
        let (fs, t) = (fake(), setup(d.path()));
        converge(&fs, &t, &want(&[("a", "/dev/zvol/p/a")]));
        fs.fail("rmdir", "iblock_100/a", libc::EBUSY);
        let ops = diff(&Lio::default(), &observe(&fs, &t).unwrap());
        let e = apply(&fs, &t, &ops).unwrap_err();
        let chain = format!("{e}: {}", e.source);
        assert!(
            chain.contains("iblock_100/a") && chain.contains("in use"),
            "{chain}"
        );
        fs.clear();
        converge(&fs, &t, &Lio::default());
    }
}
