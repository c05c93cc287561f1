//! Debian package index parsing and dependency resolution (pure: no network, no apt state).
//!
//! The builder resolves the image's package set itself instead of asking apt, so the set is a
//! deterministic function of the index files and the policy, and each entry carries the sha256 that
//! goes into the build manifest.

use crate::error::{Error, Result};
use debversion::Version;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One binary package from a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub suite: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    #[serde(skip)]
    pub depends: Vec<Vec<Dep>>,
    #[serde(skip)]
    pub provides: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

/// One alternative of a dependency: `name (op version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub constraint: Option<(Op, String)>,
}

/// Splits deb822 text into paragraphs of field -> value (continuation lines joined with '\n').
pub fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = last.as_ref().and_then(|k| cur.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.to_string(), v.trim().to_string());
            last = Some(k.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses a `Depends:` value: comma-separated groups of `|`-separated alternatives.
pub fn parse_depends(s: &str) -> Result<Vec<Vec<Dep>>> {
    let mut groups = Vec::new();
    for group in s.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let mut alts = Vec::new();
        for alt in group.split('|').map(str::trim) {
            alts.push(parse_dep(alt)?);
        }
        groups.push(alts);
    }
    Ok(groups)
}

fn parse_dep(s: &str) -> Result<Dep> {
    let bad = || Error::Resolve(format!("malformed dependency `{s}`"));
    let (name_part, rest) = match s.find('(') {
        Some(i) => (s[..i].trim(), Some(&s[i + 1..])),
        None => (s.trim(), None),
    };
    // Drop arch qualifiers (`:any`) and restriction lists (`[amd64]`, `<!nocheck>`).
    let name = name_part
        .split([':', ' ', '[', '<'])
        .next()
        .ok_or_else(bad)?
        .to_string();
    if name.is_empty() {
        return Err(bad());
    }
    let constraint = match rest {
        None => None,
        Some(r) => {
            let inner = r.split(')').next().ok_or_else(bad)?.trim();
            let (op, ver) = if let Some(v) = inner.strip_prefix("<<") {
                (Op::Lt, v)
            } else if let Some(v) = inner.strip_prefix("<=") {
                (Op::Le, v)
            } else if let Some(v) = inner.strip_prefix(">>") {
                (Op::Gt, v)
            } else if let Some(v) = inner.strip_prefix(">=") {
                (Op::Ge, v)
            } else if let Some(v) = inner.strip_prefix('=') {
                (Op::Eq, v)
            } else {
                return Err(bad());
            };
            Some((op, ver.trim().to_string()))
        }
    };
    Ok(Dep { name, constraint })
}

fn cmp_versions(a: &str, b: &str) -> Ordering {
    match (a.parse::<Version>(), b.parse::<Version>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

impl Dep {
    pub fn satisfied_by(&self, version: &str) -> bool {
        match &self.constraint {
            None => true,
            Some((op, want)) => {
                let o = cmp_versions(version, want);
                match op {
                    Op::Lt => o == Ordering::Less,
                    Op::Le => o != Ordering::Greater,
                    Op::Eq => o == Ordering::Equal,
                    Op::Ge => o != Ordering::Less,
                    Op::Gt => o == Ordering::Greater,
                }
            }
        }
    }
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob_match(pat: &str, s: &str) -> bool {
    match pat.split_once('*') {
        None => pat == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob_match(tail, &rest[i..]))
        }
    }
}

/// Every package of every suite, by name.
#[derive(Debug, Default)]
pub struct Index {
    by_name: HashMap<String, Vec<Package>>,
    providers: HashMap<String, BTreeSet<String>>,
}

impl Index {
    /// Adds one `Packages` file's contents, from `suite`, keeping amd64 and arch-all entries.
    pub fn add(&mut self, suite: &str, text: &str) -> Result<()> {
        for p in paragraphs(text) {
            let get = |k: &str| p.get(k).cloned().unwrap_or_default();
            let arch = get("Architecture");
            if arch != "amd64" && arch != "all" {
                continue;
            }
            let mut depends = parse_depends(&get("Pre-Depends"))?;
            depends.extend(parse_depends(&get("Depends"))?);
            let provides: Vec<String> = parse_depends(&get("Provides"))?
                .into_iter()
                .flatten()
                .map(|d| d.name)
                .collect();
            let pkg = Package {
                name: get("Package"),
                version: get("Version"),
                arch,
                suite: suite.to_string(),
                filename: get("Filename"),
                sha256: get("SHA256"),
                size: get("Size").parse().unwrap_or(0),
                depends,
                provides,
            };
            for v in &pkg.provides {
                self.providers
                    .entry(v.clone())
                    .or_default()
                    .insert(pkg.name.clone());
            }
            self.by_name.entry(pkg.name.clone()).or_default().push(pkg);
        }
        Ok(())
    }

    pub fn versions(&self, name: &str) -> &[Package] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Which suite wins, and which names are never installed.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub backports_suite: String,
    pub backports: Vec<String>,
    pub exclude: Vec<String>,
}

impl Policy {
    fn excluded(&self, name: &str) -> bool {
        self.exclude.iter().any(|p| glob_match(p, name))
    }
    fn prefers_backports(&self, name: &str) -> bool {
        self.backports.iter().any(|p| glob_match(p, name))
    }
}

/// Picks the version of `name` to install: the highest that satisfies `dep`, from stable unless
/// the policy sends the name to backports (or only backports satisfies the constraint).
pub fn candidate<'a>(
    index: &'a Index,
    policy: &Policy,
    name: &str,
    dep: Option<&Dep>,
) -> Option<&'a Package> {
    let ok: Vec<&Package> = index
        .versions(name)
        .iter()
        .filter(|p| dep.is_none_or(|d| d.satisfied_by(&p.version)))
        .collect();
    let best = |it: &mut dyn Iterator<Item = &&'a Package>| -> Option<&'a Package> {
        it.max_by(|a, b| cmp_versions(&a.version, &b.version).then_with(|| b.suite.cmp(&a.suite)))
            .copied()
    };
    if policy.prefers_backports(name) {
        return best(&mut ok.iter());
    }
    best(&mut ok.iter().filter(|p| p.suite != policy.backports_suite))
        .or_else(|| best(&mut ok.iter()))
}

/// Resolves `roots` and their dependency closure to one version per package, sorted by name.
pub fn resolve(index: &Index, policy: &Policy, roots: &[String]) -> Result<Vec<Package>> {
    let mut chosen: BTreeMap<String, Package> = BTreeMap::new();
    let mut queue: Vec<(String, Dep)> = roots
        .iter()
        .map(|r| {
            (
                "(image)".to_string(),
                Dep {
                    name: r.clone(),
                    constraint: None,
                },
            )
        })
        .collect();
    queue.reverse();
    // Groups are revisited after everything is queued, so an alternative chosen by another path wins.
    let mut groups: Vec<(String, Vec<Dep>)> = Vec::new();
    loop {
        while let Some((from, dep)) = queue.pop() {
            if policy.excluded(&dep.name) {
                continue;
            }
            if let Some(have) = chosen.get(&dep.name) {
                if !dep.satisfied_by(&have.version) {
                    return Err(Error::Resolve(format!(
                        "{from} needs {} {:?} but {} {} was already chosen",
                        dep.name, dep.constraint, have.name, have.version
                    )));
                }
                continue;
            }
            let pkg = match candidate(index, policy, &dep.name, Some(&dep)) {
                Some(p) => p.clone(),
                None => {
                    return Err(Error::Resolve(format!(
                        "{from} needs `{}`{}, which no configured suite provides",
                        dep.name,
                        dep.constraint
                            .as_ref()
                            .map(|(o, v)| format!(" ({o:?} {v})"))
                            .unwrap_or_default()
                    )))
                }
            };
            for g in &pkg.depends {
                groups.push((format!("{} {}", pkg.name, pkg.version), g.clone()));
            }
            chosen.insert(pkg.name.clone(), pkg);
        }
        let Some((from, group)) = groups.pop() else {
            break;
        };
        if group.iter().any(|d| policy.excluded(&d.name)) {
            continue;
        }
        let already = group.iter().any(|d| {
            chosen
                .get(&d.name)
                .is_some_and(|p| d.satisfied_by(&p.version))
                || index
                    .providers
                    .get(&d.name)
                    .is_some_and(|ps| ps.iter().any(|p| chosen.contains_key(p)))
        });
        if already {
            continue;
        }
        let pick = group.iter().find_map(|d| {
            if candidate(index, policy, &d.name, Some(d)).is_some() {
                return Some(d.clone());
            }
            let prov = index.providers.get(&d.name)?;
            let name = prov.iter().find(|p| !policy.excluded(p))?;
            Some(Dep {
                name: name.clone(),
                constraint: None,
            })
        });
        match pick {
            Some(d) => queue.push((from, d)),
            None => {
                let names: Vec<&str> = group.iter().map(|d| d.name.as_str()).collect();
                return Err(Error::Resolve(format!(
                    "{from} depends on {}, which no configured suite provides",
                    names.join(" | ")
                )));
            }
        }
    }
    Ok(chosen.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STABLE: &str = "\
Package: app
Version: 1.0-1
Architecture: amd64
Depends: libfoo (>= 1.2), libc6 (>= 2.34), mta | exim4
Filename: pool/main/a/app/app_1.0-1_amd64.deb
SHA256: aa
Size: 10

Package: libfoo
Version: 1.2-1
Architecture: amd64
Depends: libc6
Filename: pool/main/libf/libfoo_1.2-1_amd64.deb
SHA256: bb
Size: 20

Package: libc6
Version: 2.36-9
Architecture: amd64
Pre-Depends: debconf
Description: GNU C
 Library, continued.
Filename: pool/main/g/glibc/libc6_2.36-9_amd64.deb
SHA256: cc
Size: 30

Package: postfix
Version: 3.7
Architecture: amd64
Provides: mta, default-mta
Filename: pool/main/p/postfix.deb
SHA256: dd
Size: 1

Package: armonly
Version: 1
Architecture: arm64
";

    const BACKPORTS: &str = "\
Package: libfoo
Version: 2.0-1~bpo12+1
Architecture: amd64
Filename: pool/main/libf/libfoo_2.0.deb
SHA256: ee
Size: 1

Package: zfs
Version: 2.3.2-2~bpo12+2
Architecture: amd64
Depends: libfoo (>= 2.0)
Filename: pool/contrib/z/zfs.deb
SHA256: ff
Size: 1
";

    fn index() -> Index {
        let mut i = Index::default();
        i.add("bookworm", STABLE).unwrap();
        i.add("bookworm-backports", BACKPORTS).unwrap();
        i
    }

    fn policy() -> Policy {
        Policy {
            backports_suite: "bookworm-backports".into(),
            backports: vec!["zfs*".into()],
            exclude: vec!["debconf".into()],
        }
    }

    #[test]
    fn paragraphs_join_continuations_and_skip_blank_lines() {
        let p = paragraphs(STABLE);
        assert_eq!(p.len(), 5);
        assert_eq!(p[2]["Description"], "GNU C\nLibrary, continued.");
    }

    #[test]
    fn depends_parse_alternatives_constraints_and_qualifiers() {
        let d = parse_depends("a (>= 1.0), b:any | c (<< 2), d [amd64], e (= 1:2.0-1)").unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(
            d[0][0],
            Dep {
                name: "a".into(),
                constraint: Some((Op::Ge, "1.0".into()))
            }
        );
        assert_eq!(d[1][0].name, "b");
        assert_eq!(d[1][1].constraint, Some((Op::Lt, "2".into())));
        assert_eq!(d[2][0].name, "d");
        assert_eq!(d[3][0].constraint, Some((Op::Eq, "1:2.0-1".into())));
        assert!(parse_depends("x (~ 1)").is_err());
    }

    #[test]
    fn debian_version_ordering_is_used() {
        let d = Dep {
            name: "x".into(),
            constraint: Some((Op::Ge, "2.3.2".into())),
        };
        assert!(d.satisfied_by("2.3.2-2~bpo12+2"));
        assert!(!d.satisfied_by("2.3.1-1"));
        assert!(Dep {
            name: "x".into(),
            constraint: Some((Op::Gt, "1.0~rc1".into()))
        }
        .satisfied_by("1.0"));
        assert!(Dep {
            name: "x".into(),
            constraint: Some((Op::Lt, "1:0".into()))
        }
        .satisfied_by("9.9"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("libzfs*", "libzfs6linux"));
        assert!(glob_match(
            "linux-image-6.12.*-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64-unsigned"
        ));
        assert!(!glob_match("libzfs*", "zfs"));
        assert!(glob_match("exact", "exact"));
    }

    #[test]
    fn stable_is_preferred_unless_policy_says_backports() {
        let i = index();
        let p = policy();
        assert_eq!(candidate(&i, &p, "libfoo", None).unwrap().version, "1.2-1");
        assert_eq!(
            candidate(&i, &p, "zfs", None).unwrap().suite,
            "bookworm-backports"
        );
        assert!(candidate(&i, &p, "armonly", None).is_none());
    }

    #[test]
    fn closure_follows_depends_providers_and_exclusions() {
        let got = resolve(&index(), &policy(), &["app".into()]).unwrap();
        let names: Vec<(&str, &str)> = got
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("app", "1.0-1"),
                ("libc6", "2.36-9"),
                ("libfoo", "1.2-1"),
                ("postfix", "3.7")
            ]
        );
    }

    #[test]
    fn a_constraint_only_backports_meets_pulls_from_backports() {
        let got = resolve(&index(), &policy(), &["zfs".into()]).unwrap();
        let foo = got.iter().find(|p| p.name == "libfoo").unwrap();
        assert_eq!(foo.version, "2.0-1~bpo12+1");
        assert_eq!(foo.sha256, "ee");
    }

    #[test]
    fn conflicting_versions_and_missing_packages_are_named() {
        let mut i = index();
        i.add(
            "bookworm",
            "Package: old\nVersion: 1\nArchitecture: all\nDepends: libfoo (= 1.2-1)\n",
        )
        .unwrap();
        let e = resolve(&i, &policy(), &["zfs".into(), "old".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("libfoo") && e.contains("already chosen"), "{e}");
        let e = resolve(&index(), &policy(), &["nosuch".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nosuch`"), "{e}");
    }

    #[test]
    fn resolution_is_deterministic() {
        let a = resolve(&index(), &policy(), &["app".into(), "postfix".into()]).unwrap();
        let b = resolve(&index(), &policy(), &["postfix".into(), "app".into()]).unwrap();
        assert_eq!(a, b);
    }
}
