//! Kernel module selection: parse `modules.dep` and compute the closure of the modules we keep.

use crate::error::{Error, Result};
use std::collections::{BTreeSet, HashMap};

/// `nvme_core` and `nvme-core` name the same module.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Module name of a path such as `kernel/drivers/nvme/host/nvme-core.ko.xz`.
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    canonical(file.split(".ko").next().unwrap_or(file))
}

#[derive(Debug, Default)]
pub struct DepMap {
    /// module name -> (path, dependency paths)
    entries: HashMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

impl DepMap {
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Result<DepMap> {
        let mut entries = HashMap::new();
        for (n, line) in modules_dep
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let (path, deps) = line.split_once(':').ok_or_else(|| {
                Error::Modules(format!("modules.dep line {}: no ':' in `{line}`", n + 1))
            })?;
            let deps = deps.split_whitespace().map(str::to_string).collect();
            entries.insert(name_of(path), (path.to_string(), deps));
        }
        let builtin = modules_builtin
            .lines()
            .filter(|l| !l.is_empty())
            .map(name_of)
            .collect();
        Ok(DepMap { entries, builtin })
    }

    /// Paths of `wanted` and everything they depend on, dependencies first, each once.
    /// Built-in modules are satisfied by the kernel; an unknown name is an error.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for w in wanted {
            let name = canonical(w);
            if self.builtin.contains(&name) {
                continue;
            }
            let (path, _) = self.entries.get(&name).ok_or_else(|| {
                Error::Modules(format!(
                    "module `{w}` is neither in modules.dep nor built in"
                ))
            })?;
            self.visit(path, &mut seen, &mut out)?;
        }
        Ok(out)
    }

    fn visit(&self, path: &str, seen: &mut BTreeSet<String>, out: &mut Vec<String>) -> Result<()> {
        if !seen.insert(path.to_string()) {
            return Ok(());
        }
        let (_, deps) = self.entries.get(&name_of(path)).ok_or_else(|| {
            Error::Modules(format!(
                "`{path}` is a dependency but has no modules.dep entry"
            ))
        })?;
        // modules.dep lists a module's dependencies deepest-last; load order is the reverse.
        for d in deps.iter().rev() {
            self.visit(d, seen, out)?;
        }
        out.push(path.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz kernel/drivers/nvme/common/nvme-auth.ko.xz
kernel/drivers/nvme/host/nvme-core.ko.xz: kernel/drivers/nvme/common/nvme-auth.ko.xz
kernel/drivers/nvme/common/nvme-auth.ko.xz:
kernel/drivers/nvme/target/nvme-loop.ko.xz: kernel/drivers/nvme/target/nvmet.ko.xz kernel/drivers/nvme/host/nvme-fabrics.ko.xz kernel/drivers/nvme/host/nvme-core.ko.xz kernel/drivers/nvme/common/nvme-auth.ko.xz
kernel/drivers/nvme/target/nvmet.ko.xz: kernel/drivers/nvme/common/nvme-auth.ko.xz
kernel/drivers/nvme/host/nvme-fabrics.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz kernel/drivers/nvme/common/nvme-auth.ko.xz
";

    #[test]
    fn names_are_canonical() {
        assert_eq!(
            name_of("kernel/drivers/nvme/host/nvme-core.ko.xz"),
            "nvme_core"
        );
        assert_eq!(name_of("extra/zfs.ko"), "zfs");
        assert_eq!(canonical("nvme-loop"), "nvme_loop");
    }

    #[test]
    fn closure_puts_dependencies_first_once() {
        let m = DepMap::parse(DEP, "kernel/fs/configfs/configfs.ko\n").unwrap();
        let c = m
            .closure(&["nvme".into(), "nvme-loop".into(), "configfs".into()])
            .unwrap();
        let names: Vec<String> = c.iter().map(|p| name_of(p)).collect();
        assert_eq!(
            names,
            [
                "nvme_auth",
                "nvme_core",
                "nvme",
                "nvme_fabrics",
                "nvmet",
                "nvme_loop"
            ]
        );
        for (i, p) in c.iter().enumerate() {
            for d in &m.entries[&name_of(p)].1 {
                assert!(c[..i].contains(d), "{d} must load before {p}");
            }
        }
    }

    #[test]
    fn unknown_modules_and_bad_lines_are_errors() {
        let m = DepMap::parse(DEP, "").unwrap();
        assert!(m
            .closure(&["nosuch".into()])
            .unwrap_err()
            .to_string()
            .contains("nosuch"));
        assert!(DepMap::parse("garbage line\n", "").is_err());
    }
}
