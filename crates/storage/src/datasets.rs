//! Dataset reconciliation: the datasets the policy wants, as ZFS properties; what exists; and a
//! pure, ordered diff between the two. Datasets the policy does not name are reported, never touched.

use crate::policy::Policy;
use crate::zfs::Props;
use std::collections::BTreeMap;

/// Properties storage-init manages on its datasets. Anything else is left as it is.
pub const MANAGED: &[&str] = &[
    "mountpoint",
    "quota",
    "reservation",
    "refreservation",
    "compression",
    "recordsize",
    "canmount",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    pub props: BTreeMap<String, String>,
    /// Created with the vault's encryption root as parent (inherits its key).
    pub encrypted: bool,
}

/// The datasets for `policy` on a pool of `pool_size` usable bytes. `vault` is the encryption
/// root; whether it is really encrypted is decided when it is created.
pub fn desired(policy: &Policy, pool_size: u64) -> Vec<Desired> {
    let pool = &policy.pool.name;
    let mut v = vec![
        Desired {
            name: format!("{pool}/reserved"),
            props: [
                ("mountpoint", "none".to_string()),
                ("canmount", "off".into()),
                (
                    "refreservation",
                    policy.reserved.share.get_ref().bytes(pool_size).to_string(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            encrypted: false,
        },
        Desired {
            name: format!("{pool}/vault"),
            props: [("mountpoint".to_string(), format!("/{pool}/vault"))].into(),
            encrypted: true,
        },
    ];
    for (name, d) in &policy.datasets {
        let full = if d.encrypted {
            format!("{pool}/vault/{name}")
        } else {
            format!("{pool}/{name}")
        };
        let mut props = BTreeMap::new();
        props.insert(
            "mountpoint".into(),
            d.mountpoint
                .clone()
                .unwrap_or_else(|| format!("/{pool}/{name}")),
        );
        // Unset limits are "none" so removing one from the policy removes it from the dataset.
        props.insert(
            "quota".into(),
            d.quota
                .as_ref()
                .map_or("none".into(), |q| q.get_ref().bytes(pool_size).to_string()),
        );
        props.insert(
            "reservation".into(),
            d.reservation
                .as_ref()
                .map_or("none".into(), |r| r.get_ref().bytes(pool_size).to_string()),
        );
        if let Some(c) = &d.compression {
            props.insert("compression".into(), c.clone());
        }
        if let Some(r) = &d.recordsize {
            props.insert("recordsize".into(), r.get_ref().bytes(0).to_string());
        }
        v.push(Desired {
            name: full,
            props,
            encrypted: d.encrypted,
        });
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create {
        name: String,
        props: BTreeMap<String, String>,
        encrypted: bool,
    },
    Set {
        name: String,
        prop: String,
        from: String,
        to: String,
    },
    /// Exists on the pool, not in the policy: reported, left alone.
    Unmanaged { name: String },
}

/// `zfs get -p` prints 0 for an unset quota or reservation; the policy says "none".
fn same(prop: &str, want: &str, have: &str) -> bool {
    want == have
        || (want == "none"
            && have == "0"
            && ["quota", "reservation", "refreservation", "refquota"].contains(&prop))
}

/// The ordered changes: creations parent-first, then property changes, then reports.
pub fn diff(want: &[Desired], have: &Props, pool: &str) -> Vec<Action> {
    let mut creates = Vec::new();
    let mut sets = Vec::new();
    for d in want {
        match have.get(&d.name) {
            None => creates.push(Action::Create {
                name: d.name.clone(),
                props: d.props.clone(),
                encrypted: d.encrypted,
            }),
            Some(cur) => {
                for (k, v) in &d.props {
                    let now = cur.get(k).map(|(v, _)| v.as_str()).unwrap_or("");
                    if !same(k, v, now) {
                        sets.push(Action::Set {
                            name: d.name.clone(),
                            prop: k.clone(),
                            from: now.to_string(),
                            to: v.clone(),
                        });
                    }
                }
            }
        }
    }
    creates.sort_by_key(|a| match a {
        Action::Create { name, .. } => (name.matches('/').count(), name.clone()),
        _ => (0, String::new()),
    });
    let known: Vec<&str> = want.iter().map(|d| d.name.as_str()).collect();
    let unmanaged = have
        .keys()
        .filter(|n| n.as_str() != pool && !known.contains(&n.as_str()))
        // Children of managed datasets (zvols under volumes, service sub-datasets) belong to their owners.
        .filter(|n| !known.iter().any(|k| n.starts_with(&format!("{k}/"))))
        .map(|n| Action::Unmanaged { name: n.clone() });
    creates.into_iter().chain(sets).chain(unmanaged).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const G: u64 = 1 << 30;

    fn policy() -> Policy {
        Policy::parse(
            Path::new("t"),
            "[pool]\n[reserved]\nshare = \"20%\"\n[datasets.newlog]\nmountpoint = \"/persist/newlog\"\nquota = \"10%\"\n[datasets.volumes]\nmountpoint = \"none\"\nencrypted = true\n",
            None,
        )
        .unwrap()
    }

    fn props(list: &[(&str, &[(&str, &str)])]) -> Props {
        list.iter()
            .map(|(n, ps)| {
                (
                    n.to_string(),
                    ps.iter()
                        .map(|(k, v)| (k.to_string(), (v.to_string(), "local".to_string())))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn desired_layout_from_policy() {
        let d = desired(&policy(), 100 * G);
        let names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "persist/newlog",
                "persist/reserved",
                "persist/vault",
                "persist/vault/volumes"
            ]
        );
        assert_eq!(d[0].props["quota"], (10 * G).to_string());
        assert_eq!(d[0].props["reservation"], "none");
        assert_eq!(d[1].props["refreservation"], (20 * G).to_string());
        assert!(d[3].encrypted && d[2].encrypted && !d[0].encrypted);
    }

    #[test]
    fn first_boot_creates_everything_parents_first() {
        let a = diff(
            &desired(&policy(), 100 * G),
            &props(&[("persist", &[])]),
            "persist",
        );
        let names: Vec<&str> = a
            .iter()
            .map(|a| match a {
                Action::Create { name, .. } => name.as_str(),
                _ => panic!("{a:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "persist/newlog",
                "persist/reserved",
                "persist/vault",
                "persist/vault/volumes"
            ]
        );
        let vault = names.iter().position(|n| *n == "persist/vault").unwrap();
        assert!(
            vault
                < names
                    .iter()
                    .position(|n| *n == "persist/vault/volumes")
                    .unwrap()
        );
    }

    #[test]
    fn converged_state_is_a_no_op_and_zero_means_none() {
        let want = desired(&policy(), 100 * G);
        let mut have = props(&[("persist", &[])]);
        for d in &want {
            let ps: BTreeMap<String, (String, String)> = d
                .props
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        (
                            if v == "none" && k != "mountpoint" {
                                "0".into()
                            } else {
                                v.clone()
                            },
                            "local".into(),
                        ),
                    )
                })
                .collect();
            have.insert(d.name.clone(), ps);
        }
        assert_eq!(diff(&want, &have, "persist"), []);
    }

    #[test]
    fn changed_quota_is_set_and_unknown_datasets_are_only_reported() {
        let want = desired(&policy(), 100 * G);
        let mut have = props(&[
            ("persist", &[]),
            ("persist/vault/volumes/vm1", &[]),
            ("persist/manual", &[]),
        ]);
        for d in &want {
            have.insert(
                d.name.clone(),
                d.props
                    .iter()
                    .map(|(k, v)| (k.clone(), (v.clone(), "local".into())))
                    .collect(),
            );
        }
        have.get_mut("persist/newlog")
            .unwrap()
            .insert("quota".into(), ((5 * G).to_string(), "local".into()));
        let a = diff(&want, &have, "persist");
        assert_eq!(
            a,
            [
                Action::Set {
                    name: "persist/newlog".into(),
                    prop: "quota".into(),
                    from: (5 * G).to_string(),
                    to: (10 * G).to_string()
                },
                Action::Unmanaged {
                    name: "persist/manual".into()
                },
            ]
        );
    }
}
