//! LinuxKit's on-disk layout for onboot steps and services: `/containers/{onboot,services}/<name>/`
//! each holding an OCI `config.json` and a `rootfs`. `linuxkit build` writes it; so does our builder
//! (with `rootfs` pointing at `/`), and init reads only this, so both build paths run the same way.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Annotation naming a terminal for the process's stdio (`console` = the primary console).
pub const ANNOTATION_TTY: &str = "org.lfedge.eve.tty";
/// Annotation for a service's restart policy; `on-failure` means a clean exit ends it.
pub const ANNOTATION_RESTART: &str = "org.lfedge.eve.restart";
pub const RESTART_ON_FAILURE: &str = "on-failure";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Process {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default = "root_dir")]
    pub cwd: String,
}

fn root_dir() -> String {
    "/".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Root {
    pub path: String,
    #[serde(default)]
    pub readonly: bool,
}

/// The subset of an OCI runtime config that init acts on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default = "oci_version")]
    pub oci_version: String,
    pub process: Process,
    pub root: Root,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn oci_version() -> String {
    "1.0.2".into()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// Name without the numeric order prefix LinuxKit adds to onboot entries (`001-modules`).
    pub name: String,
    pub dir: PathBuf,
    pub config: Config,
}

impl Bundle {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(&self.config.root.path)
    }
    /// Services restart whenever they exit unless they ask to restart only on failure.
    pub fn restart_on_success(&self) -> bool {
        self.config
            .annotations
            .get(ANNOTATION_RESTART)
            .map(String::as_str)
            != Some(RESTART_ON_FAILURE)
    }
    pub fn tty(&self) -> Option<&str> {
        self.config
            .annotations
            .get(ANNOTATION_TTY)
            .map(String::as_str)
    }
}

/// `001-modules` -> `modules`; `getty` -> `getty`.
pub fn display_name(dir_name: &str) -> String {
    match dir_name.split_once('-') {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            rest.to_string()
        }
        _ => dir_name.to_string(),
    }
}

/// Loads every bundle under `dir`, in directory-name order (which is manifest order for onboot).
/// A bundle that cannot be read is returned as an error string naming it; the others still load.
pub fn load_dir(dir: &Path) -> (Vec<Bundle>, Vec<String>) {
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (ok, errs);
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        let d = dir.join(&n);
        let cfg = d.join("config.json");
        match std::fs::read(&cfg)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Config>(&b).map_err(|e| e.to_string()))
        {
            Ok(config) if !config.process.args.is_empty() => ok.push(Bundle {
                name: display_name(&n),
                dir: d,
                config,
            }),
            Ok(_) => errs.push(format!("{}: process.args is empty", cfg.display())),
            Err(e) => errs.push(format!("{}: {e}", cfg.display())),
        }
    }
    (ok, errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("config.json"), body).unwrap();
    }

    #[test]
    fn loads_in_name_order_and_reports_broken_bundles() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "001-modules",
            r#"{"process":{"args":["modprobe","zfs"]},"root":{"path":"rootfs"},"annotations":{"org.lfedge.eve.restart":"on-failure"}}"#,
        );
        write(
            t.path(),
            "000-sysctl",
            r#"{"process":{"args":["sysctl"],"env":["A=1"]},"root":{"path":"rootfs"},"annotations":{"org.lfedge.eve.tty":"console"}}"#,
        );
        write(t.path(), "002-bad", "{not json");
        write(
            t.path(),
            "003-empty",
            r#"{"process":{"args":[]},"root":{"path":"rootfs"}}"#,
        );
        let (b, errs) = load_dir(t.path());
        let names: Vec<&str> = b.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["sysctl", "modules"]);
        assert_eq!(b[0].tty(), Some("console"));
        assert!(b[0].restart_on_success());
        assert!(!b[1].restart_on_success());
        assert_eq!(b[0].config.process.cwd, "/");
        assert_eq!(b[1].rootfs(), t.path().join("001-modules/rootfs"));
        assert_eq!(errs.len(), 2);
        assert!(errs[0].contains("002-bad/config.json"), "{errs:?}");
        assert!(errs[1].contains("args is empty"), "{errs:?}");
    }

    #[test]
    fn names_drop_order_prefix_only() {
        assert_eq!(display_name("007-storage-init"), "storage-init");
        assert_eq!(display_name("zed"), "zed");
        assert_eq!(display_name("nvme-tcp"), "nvme-tcp");
    }

    #[test]
    fn a_missing_directory_is_empty() {
        let (b, e) = load_dir(Path::new("/nonexistent/containers/onboot"));
        assert!(b.is_empty() && e.is_empty());
    }
}
