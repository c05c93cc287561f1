//! A pass's plan, decided from the spool and what was observed: a pure draft of the zvol steps
//! (what is refused, what is held), the identities of the volumes that go ahead (the one step
//! that reads and writes the identity store), then the pure rest: the exports to tear down and
//! set up, the revalidations and the loop connections.

use crate::config::Config;
use crate::env::{Env, Gate, Observed};
use crate::error::{Error, Result};
use crate::ids::{self, Store};
use crate::spec::{SpecError, Transport};
use crate::spool::Spool;
use crate::target::{self, Conflict, Wanted, ZOp};
use ktarget::lio::{self, Lio};
use ktarget::nvmet::{self, Nvmet};
use std::fmt::Write as _;

#[derive(Debug, Default)]
pub struct Plan {
    pub disconnect: Vec<(String, String)>,
    pub nvmet_down: Vec<nvmet::Op>,
    pub lio_down: Vec<lio::Op>,
    pub zvols: Vec<ZOp>,
    pub lio_up: Vec<lio::Op>,
    pub nvmet_up: Vec<nvmet::Op>,
    pub revalidate: Vec<String>,
    pub connect: Vec<String>,
    pub conflicts: Vec<Conflict>,
    pub invalid: Vec<SpecError>,
    /// Set when a spec is invalid or the spool is not trusted: only explicit deletions remove
    /// anything, so a typo in one file or a lost spool cannot delete a volume.
    pub additive_only: bool,
    /// Volumes with a zvol but no spec, kept with their exports, and why.
    pub held: Vec<(String, String)>,
    pub wanted: Vec<Wanted>,
}

impl Plan {
    pub fn steps(&self) -> usize {
        self.disconnect.len()
            + self.nvmet_down.len()
            + self.lio_down.len()
            + self.zvols.len()
            + self.lio_up.len()
            + self.nvmet_up.len()
            + self.revalidate.len()
            + self.connect.len()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for e in &self.invalid {
            let _ = writeln!(
                s,
                "invalid spec (kept out; nothing is removed meanwhile): {e}"
            );
        }
        for c in &self.conflicts {
            let _ = writeln!(s, "conflict: {}: {}", c.name, c.msg);
        }
        for (name, why) in &self.held {
            let _ = writeln!(s, "kept: {name}: {why}");
        }
        let mut n = 0;
        let mut line = |s: &mut String, what: String| {
            n += 1;
            let _ = writeln!(s, "{n:>3}. {what}");
        };
        for (nqn, c) in &self.disconnect {
            line(&mut s, format!("disconnect host controller {c} from {nqn}"));
        }
        for o in &self.nvmet_down {
            line(&mut s, format!("nvmet: {o}"));
        }
        for o in &self.lio_down {
            line(&mut s, format!("lio: {o}"));
        }
        for o in &self.zvols {
            line(&mut s, format!("zfs: {o}"));
        }
        for o in &self.lio_up {
            line(&mut s, format!("lio: {o}"));
        }
        for o in &self.nvmet_up {
            line(&mut s, format!("nvmet: {o}"));
        }
        for q in &self.revalidate {
            line(&mut s, format!("nvmet: revalidate the size of {q}"));
        }
        for v in &self.connect {
            line(&mut s, format!("connect the host to {v} over loop"));
        }
        if n == 0 {
            s.push_str("nothing to do\n");
        }
        s
    }
}

fn is_teardown_nvmet(o: &nvmet::Op) -> bool {
    use nvmet::Op::*;
    matches!(
        o,
        UnlinkPort { .. }
            | RemovePort { .. }
            | DisallowHost { .. }
            | RemoveNamespace { .. }
            | RemoveSubsystem { .. }
            | RemoveHost { .. }
    )
}

/// Keeps what is exported for a volume in conflict exactly as it is.
fn keep_observed(name: &str, have_n: &Nvmet, have_l: &Lio, n: &mut Nvmet, l: &mut Lio) {
    let nqn = ids::subsystem_nqn(name);
    if let Some(s) = have_n.subsystems.get(&nqn) {
        for h in &s.allowed_hosts {
            if let Some(x) = have_n.hosts.get(h) {
                n.hosts.insert(h.clone(), x.clone());
            }
        }
        n.subsystems.insert(nqn.clone(), s.clone());
        for (id, p) in &have_n.ports {
            if p.subsystems.contains(&nqn) {
                n.ports
                    .entry(*id)
                    .or_insert_with(|| nvmet::Port {
                        subsystems: Default::default(),
                        ..p.clone()
                    })
                    .subsystems
                    .insert(nqn.clone());
            }
        }
    }
    if let Some(b) = have_l.backstores.get(name) {
        l.backstores.insert(name.into(), b.clone());
        for (w, t) in &have_l.vhost {
            if t.lun0 == name {
                l.vhost.insert(w.clone(), t.clone());
            }
        }
    }
}

/// The plan of a pass, in three steps: a pure draft of the zvol steps (what is refused, what is held),
/// the identities of the volumes that go ahead (the one step that reads and writes the store:
/// with `persist`, new ones are made and stored now; a dry run makes throwaway ones), then the
/// pure rest. `gate` decides which spec-less zvols may go.
pub fn for_pass(
    env: &Env,
    spool: Spool,
    have: &Observed,
    gate: &Gate,
    persist: bool,
) -> Result<Plan> {
    let d = draft(&env.cfg, &spool, have, gate);
    let wanted = identities(&env.store(), &spool, &d, persist)?;
    decide(&env.cfg, spool, have, gate, d, wanted)
}

/// The zvol half of a plan, before any identity is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub zops: Vec<ZOp>,
    /// Volumes refused this pass (a conflict with what exists, the free-space floor).
    pub conflicts: Vec<Conflict>,
    /// Spec-less zvols kept, and why.
    pub held: Vec<(String, String)>,
}

impl Draft {
    /// Whether `name` goes ahead this pass (is not refused).
    pub fn goes_ahead(&self, name: &str) -> bool {
        !self.conflicts.iter().any(|c| c.name == name)
    }
}

/// The spool's volumes that go ahead, each with its identities and its VM's: kept ones from the
/// store; for new ones, made and stored when `persist`, throwaway otherwise.
pub fn identities(store: &Store, spool: &Spool, d: &Draft, persist: bool) -> Result<Vec<Wanted>> {
    let mut wanted = Vec::new();
    for (name, v) in spool.volumes.iter().filter(|(n, _)| d.goes_ahead(n)) {
        let vids = match store.volume(name)? {
            Some(x) => x,
            None if persist => store.volume_or_new(name)?,
            None => ids::new_volume_ids(),
        };
        let host = match store.host(&v.vm)? {
            Some(x) => x,
            None if persist => store.host_or_new(&v.vm)?,
            None => ids::new_host_ids(&v.vm),
        };
        wanted.push(Wanted {
            vol: v.clone(),
            ids: vids,
            host,
        });
    }
    Ok(wanted)
}

/// Pure: the zvol steps, the refusals and the held removals.
pub fn draft(cfg: &Config, spool: &Spool, have: &Observed, gate: &Gate) -> Draft {
    let (mut zops, mut conflicts) = target::zvol_diff(&spool.volumes, &have.zvols, &cfg.pool);
    // The free-space floor holds for specs dropped into the spool, not only for the CLI: a new
    // volume that does not fit is reported and left out, the others go ahead.
    if let Some((size, free)) = have.pool {
        let new: Vec<(&str, u64)> = zops
            .iter()
            .filter_map(|z| match z {
                ZOp::Create { name } => {
                    let v = &spool.volumes[name];
                    Some((name.as_str(), if v.thin { 0 } else { v.size }))
                }
                _ => None,
            })
            .collect();
        let refused = target::over_floor(&new, free, cfg.floor_bytes(size));
        zops.retain(
            |z| !matches!(z, ZOp::Create { name } if refused.iter().any(|(n, _)| n == name)),
        );
        conflicts.extend(refused.into_iter().map(|(name, msg)| Conflict {
            name,
            msg: format!("{msg} (free_floor {})", cfg.free_floor),
        }));
    }
    let spool_valid = spool.invalid.is_empty();
    let mut held = Vec::new();
    zops.retain(|o| match o {
        ZOp::Destroy { name, dataset } if !gate.may_remove(name, spool_valid) => {
            let why = if let Some(u) = &gate.untrusted {
                format!("{dataset} has no spec, and the spool is not trusted with deletions: {u}")
            } else if !spool_valid {
                format!("{dataset} has no valid spec; nothing is removed while a spec is invalid")
            } else {
                format!("{dataset} has no spec and this box's state never saw it (not created here, or the state was lost); delete it with `storagectl volume delete {name}`")
            };
            held.push((name.clone(), why));
            false
        }
        _ => true,
    });
    Draft {
        zops,
        conflicts,
        held,
    }
}

/// Pure: the whole plan from the draft and the identities of the volumes that go ahead.
pub fn decide(
    cfg: &Config,
    spool: Spool,
    have: &Observed,
    gate: &Gate,
    d: Draft,
    wanted: Vec<Wanted>,
) -> Result<Plan> {
    let Draft {
        zops,
        conflicts,
        held,
    } = d;
    let spool_valid = spool.invalid.is_empty();
    let (mut want_n, mut want_l) =
        target::targets(&wanted, &cfg.pool, cfg).map_err(Error::Refused)?;
    for name in conflicts
        .iter()
        .map(|c| &c.name)
        .chain(held.iter().map(|h| &h.0))
    {
        keep_observed(name, &have.nvmet, &have.lio, &mut want_n, &mut want_l);
    }
    let additive_only = !spool_valid || gate.untrusted.is_some();
    let nops = nvmet::diff(&want_n, &have.nvmet);
    let lops = lio::diff(&want_l, &have.lio);
    let (nvmet_down, nvmet_up): (Vec<_>, Vec<_>) = nops.into_iter().partition(is_teardown_nvmet);
    let (lio_down, lio_up): (Vec<_>, Vec<_>) = lops.into_iter().partition(|o| {
        matches!(
            o,
            lio::Op::RemoveVhost { .. } | lio::Op::RemoveBackstore { .. }
        )
    });

    // Loop connections: drop those whose subsystem goes away or is rebuilt, make missing ones.
    let rebuilt = |nqn: &str| {
        nvmet_down
            .iter()
            .any(|o| matches!(o, nvmet::Op::RemoveSubsystem { nqn: n } if n == nqn))
    };
    let loop_wanted = |nqn: &str| {
        wanted.iter().any(|w| {
            w.vol.transport == Transport::NvmeLoop && ids::subsystem_nqn(&w.vol.name) == nqn
        })
    };
    let is_held = |nqn: &str| held.iter().any(|(n, _)| ids::subsystem_nqn(n) == nqn);
    let mut disconnect = Vec::new();
    for (nqn, ctrls) in &have.loops {
        let drop_all = (!loop_wanted(nqn) && !is_held(nqn)) || rebuilt(nqn);
        for (i, c) in ctrls.iter().enumerate() {
            // One connection per volume; extra ones (a crash between connect and record) go.
            if drop_all || i > 0 || c.state == "dead" {
                disconnect.push((nqn.clone(), c.name.clone()));
            }
        }
    }
    let connect: Vec<String> = wanted
        .iter()
        .filter(|w| w.vol.transport == Transport::NvmeLoop)
        .filter(|w| {
            let nqn = ids::subsystem_nqn(&w.vol.name);
            let live = have
                .loops
                .get(&nqn)
                .is_some_and(|c| c.first().is_some_and(|c| c.state != "dead"));
            !live || rebuilt(&nqn)
        })
        .map(|w| w.vol.name.clone())
        .collect();
    let revalidate = zops
        .iter()
        .filter_map(|o| match o {
            ZOp::Grow { name, .. }
                if spool
                    .volumes
                    .get(name)
                    .is_some_and(|v| v.transport.is_nvmet()) =>
            {
                Some(ids::subsystem_nqn(name))
            }
            _ => None,
        })
        .collect();
    Ok(Plan {
        disconnect,
        nvmet_down,
        lio_down,
        zvols: zops,
        lio_up,
        nvmet_up,
        revalidate,
        connect,
        conflicts,
        invalid: spool.invalid,
        additive_only,
        held,
        wanted,
    })
}
