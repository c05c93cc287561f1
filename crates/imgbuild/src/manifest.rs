//! The LinuxKit image definition (linuxkit/*.yml) and the builder's mapping of it (rootfs/packages.toml).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    pub image: String,
    #[serde(default)]
    pub cmdline: String,
}

/// An onboot step or a service. LinuxKit's container options (capabilities, binds, net, ...) are
/// accepted; the builder runs every entry privileged in the host namespaces, as EVE's are.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Entry {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    #[serde(default)]
    pub contents: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub directory: bool,
    #[serde(default)]
    pub symlink: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub kernel: Option<Kernel>,
    #[serde(default)]
    pub init: Vec<String>,
    #[serde(default)]
    pub onboot: Vec<Entry>,
    #[serde(default)]
    pub onshutdown: Vec<Entry>,
    #[serde(default)]
    pub services: Vec<Entry>,
    #[serde(default)]
    pub files: Vec<File>,
    /// Where each file's `source:` is relative to (the yml's directory); not part of the YAML.
    #[serde(skip)]
    pub source_dirs: Vec<PathBuf>,
}

/// Parses one yml; errors carry the file, and serde's line/column and field.
pub fn parse(path: &Path, text: &str) -> Result<Manifest> {
    let mut m: Manifest = serde_yaml::from_str(text).map_err(|e| Error::Manifest {
        path: path.into(),
        msg: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    m.source_dirs = vec![dir; m.files.len()];
    Ok(m)
}

/// Merges several ymls the way `linuxkit build a.yml b.yml` does: later kernel/init replace,
/// lists append. A name used twice is an error rather than a silent override.
pub fn merge(parts: Vec<(PathBuf, Manifest)>) -> Result<Manifest> {
    let mut out = Manifest::default();
    let mut names = BTreeSet::new();
    for (path, m) in parts {
        if m.kernel.is_some() {
            out.kernel = m.kernel;
        }
        if !m.init.is_empty() {
            out.init = m.init;
        }
        for e in m.onboot.iter().chain(&m.onshutdown).chain(&m.services) {
            if !names.insert(e.name.clone()) {
                return Err(Error::Manifest {
                    path,
                    msg: format!("entry name `{}` is used twice", e.name),
                });
            }
        }
        out.onboot.extend(m.onboot);
        out.onshutdown.extend(m.onshutdown);
        out.services.extend(m.services);
        out.files.extend(m.files);
        out.source_dirs.extend(m.source_dirs);
    }
    Ok(out)
}

/// `org/name:tag` -> `org/name`.
pub fn repo_of(image: &str) -> &str {
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].find([':', '@']) {
        Some(i) => &image[..last_slash + i],
        None => image,
    }
}

// ---- rootfs/packages.toml -------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub apt: AptConfig,
    pub kernel: KernelConfig,
    pub zfs: ZfsConfig,
    pub secure_boot: SecureBootConfig,
    pub base: Base,
    pub images: BTreeMap<String, ImageMap>,
    /// Workspace binaries that run on the build host only and are never shipped.
    #[serde(default)]
    pub build_only: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptConfig {
    pub suites: Vec<String>,
    pub backports: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    pub package: String,
    pub headers: String,
    pub series: String,
    pub modules: Vec<String>,
    pub initramfs_modules: Vec<String>,
}

/// Where the stock boot binaries come from: shim (signed here with the project's db key) and the
/// signed package of the host's GRUB, whose SBAT lines our GRUB declares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureBootConfig {
    pub shim_package: String,
    pub grub_host_package: String,
    pub grub_signed_package: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZfsConfig {
    pub dkms_package: String,
    pub userland: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMap {
    #[serde(default)]
    pub bin: Option<String>,
    /// More workspace binaries the image carries (CLIs next to its daemon or step).
    #[serde(default)]
    pub extra_bins: Vec<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub console: bool,
    /// A service that finishes its job: exit 0 ends it, only a failure restarts it.
    #[serde(default)]
    pub oneshot: bool,
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub kernel: bool,
}

pub fn parse_config(path: &Path, text: &str) -> Result<Config> {
    toml::from_str(text).map_err(|e| Error::Parse {
        path: path.into(),
        msg: e.to_string(),
    })
}

/// Everything wrong with the manifest against the mapping, the pkg/ tree and the workspace's
/// binaries, so one run reports all problems at once.
/// (who, image) for the init and every onboot, onshutdown and service entry.
fn images_of(m: &Manifest) -> impl Iterator<Item = (&str, &str)> {
    m.init.iter().map(|i| ("init", i.as_str())).chain(
        m.onboot
            .iter()
            .chain(&m.onshutdown)
            .chain(&m.services)
            .map(|e| (e.name.as_str(), e.image.as_str())),
    )
}

pub fn validate(
    m: &Manifest,
    cfg: &Config,
    pkg_dir: &Path,
    workspace_bins: &BTreeSet<String>,
) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(kernel) = &m.kernel else {
        return vec!["no `kernel:` section".into()];
    };
    let mut used_images: Vec<(&str, &str)> = vec![("kernel", kernel.image.as_str())];
    used_images.extend(images_of(m));
    let mut referenced_pkgs = BTreeSet::new();
    for (who, image) in &used_images {
        let repo = repo_of(image);
        let Some(map) = cfg.images.get(repo) else {
            errs.push(format!(
                "`{who}` uses image `{image}`, which rootfs/packages.toml does not map"
            ));
            continue;
        };
        if let Some(name) = repo.strip_prefix("eve-storage/") {
            referenced_pkgs.insert(name.to_string());
            let dir = pkg_dir.join(name);
            for f in ["Dockerfile", "build.yml"] {
                if !dir.join(f).is_file() {
                    errs.push(format!(
                        "`{who}` uses image `{image}` but {} does not exist",
                        dir.join(f).display()
                    ));
                }
            }
        }
        if let Some(bin) = &map.bin {
            if !workspace_bins.contains(bin) {
                errs.push(format!(
                    "image `{repo}` ships binary `{bin}`, which no workspace crate builds"
                ));
            }
        }
    }
    if !m
        .init
        .iter()
        .any(|i| cfg.images.get(repo_of(i)).is_some_and(|x| x.init))
    {
        errs.push("no `init:` image provides the init (an image with `init = true`)".into());
    }
    for e in m.onboot.iter().chain(&m.services) {
        let map = cfg
            .images
            .get(repo_of(&e.image))
            .cloned()
            .unwrap_or_default();
        if e.command.is_none() && map.command.is_none() && map.bin.is_none() {
            errs.push(format!(
                "`{}` has no command and image `{}` gives no default",
                e.name, e.image
            ));
        }
        if e.command
            .as_ref()
            .is_some_and(|c| c.first().is_none_or(|p| p.trim().is_empty()))
        {
            errs.push(format!("`{}` has an empty command", e.name));
        }
    }
    errs
}

/// The whole repository's manifests (base + dev) use every package in pkg/ and ship every
/// workspace binary not declared build-only. Not asked of the production set alone, which leaves
/// the dev-only images out on purpose.
pub fn validate_complete(
    m: &Manifest,
    cfg: &Config,
    pkg_dir: &Path,
    workspace_bins: &BTreeSet<String>,
) -> Vec<String> {
    let mut errs = Vec::new();
    let used_images: Vec<&str> = images_of(m).map(|(_, i)| i).collect();
    let referenced_pkgs: BTreeSet<String> = used_images
        .iter()
        .filter_map(|i| repo_of(i).strip_prefix("eve-storage/"))
        .map(String::from)
        .collect();
    if let Ok(rd) = std::fs::read_dir(pkg_dir) {
        let mut names: Vec<String> = rd
            .filter_map(|d| d.ok())
            .filter(|d| d.path().is_dir())
            .map(|d| d.file_name().to_string_lossy().into())
            .collect();
        names.sort();
        for name in names {
            if !referenced_pkgs.contains(&name) {
                errs.push(format!(
                    "pkg/{name} is not named by any image in the manifest"
                ));
            }
        }
    } else {
        errs.push(format!(
            "{}: cannot read the package directory",
            pkg_dir.display()
        ));
    }
    let shipped: BTreeSet<&String> = cfg
        .images
        .iter()
        .filter(|(repo, _)| used_images.iter().any(|i| repo_of(i) == repo.as_str()))
        .flat_map(|(_, m)| m.bin.iter().chain(&m.extra_bins))
        .collect();
    for bin in workspace_bins {
        if !shipped.contains(bin) && !cfg.build_only.contains(bin) {
            errs.push(format!(
                "workspace binary `{bin}` is neither in the manifest nor listed as build_only"
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_all(
        m: &Manifest,
        cfg: &Config,
        pkg_dir: &Path,
        bins: &BTreeSet<String>,
    ) -> Vec<String> {
        let mut e = validate(m, cfg, pkg_dir, bins);
        e.extend(validate_complete(m, cfg, pkg_dir, bins));
        e
    }

    const BASE: &str = r#"
kernel:
  image: linuxkit/kernel:6.12.59
  cmdline: "console=ttyS0"
init:
  - eve-storage/eve-init:dev
onboot:
  - name: modules
    image: linuxkit/modprobe:v1
    command: ["modprobe", "zfs"]
files:
  - path: etc/x
    contents: "y"
"#;
    const DEV: &str = r#"
services:
  - name: agent
    image: eve-storage/eve-agent:dev
    capabilities: [all]
"#;

    fn cfg() -> Config {
        parse_config(
            Path::new("packages.toml"),
            r#"
build_only = ["eve-imgbuild"]
[apt]
suites = ["bookworm"]
backports = []
exclude = []
[kernel]
package = "linux-image-6.12-amd64"
headers = "linux-headers-6.12-amd64"
series = "6.12"
modules = []
initramfs_modules = []
[zfs]
dkms_package = "zfs-dkms"
userland = []
[secure_boot]
shim_package = "shim-unsigned"
grub_host_package = "grub-efi-amd64-bin"
grub_signed_package = "grub-efi-amd64-signed"
[base]
packages = []
[images."linuxkit/kernel"]
kernel = true
[images."linuxkit/modprobe"]
packages = ["kmod"]
[images."eve-storage/eve-init"]
bin = "eve-init"
init = true
[images."eve-storage/eve-agent"]
bin = "eve-agent"
"#,
        )
        .unwrap()
    }

    fn merged() -> Manifest {
        let a = parse(Path::new("l/a.yml"), BASE).unwrap();
        let b = parse(Path::new("l/b.yml"), DEV).unwrap();
        merge(vec![("l/a.yml".into(), a), ("l/b.yml".into(), b)]).unwrap()
    }

    fn pkg_tree(names: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for n in names {
            std::fs::create_dir_all(d.path().join(n)).unwrap();
            std::fs::write(d.path().join(n).join("Dockerfile"), "FROM scratch\n").unwrap();
            std::fs::write(d.path().join(n).join("build.yml"), format!("image: {n}\n")).unwrap();
        }
        d
    }

    fn bins(b: &[&str]) -> BTreeSet<String> {
        b.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_and_merge_keep_order_and_extra_options() {
        let m = merged();
        assert_eq!(m.kernel.as_ref().unwrap().cmdline, "console=ttyS0");
        assert_eq!(m.onboot[0].command.as_deref().unwrap(), ["modprobe", "zfs"]);
        assert_eq!(m.services[0].name, "agent");
        assert!(m.services[0].other.contains_key("capabilities"));
        assert_eq!(m.source_dirs, [PathBuf::from("l")]);
    }

    #[test]
    fn unknown_top_level_field_is_named_with_its_line() {
        let e = parse(
            Path::new("x.yml"),
            "kernel:\n  image: a\nservice:\n  - name: b\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("x.yml") && e.contains("service") && e.contains("line 3"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let a = parse(Path::new("a.yml"), DEV).unwrap();
        let e = merge(vec![("a.yml".into(), a.clone()), ("b.yml".into(), a)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.yml") && e.contains("agent"), "{e}");
    }

    #[test]
    fn image_repo_strips_tag_and_digest() {
        assert_eq!(repo_of("linuxkit/kernel:6.12"), "linuxkit/kernel");
        assert_eq!(repo_of("eve-storage/x@sha256:ab"), "eve-storage/x");
        assert_eq!(repo_of("localhost:5000/a/b:1"), "localhost:5000/a/b");
    }

    #[test]
    fn a_consistent_tree_validates() {
        let p = pkg_tree(&["eve-init", "eve-agent"]);
        let errs = validate_all(
            &merged(),
            &cfg(),
            p.path(),
            &bins(&["eve-init", "eve-agent", "eve-imgbuild"]),
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn missing_package_directory_is_reported() {
        let p = pkg_tree(&["eve-init"]);
        let errs = validate_all(
            &merged(),
            &cfg(),
            p.path(),
            &bins(&["eve-init", "eve-agent", "eve-imgbuild"]),
        );
        assert!(
            errs.iter().any(|e| e.contains("eve-agent/Dockerfile")),
            "{errs:?}"
        );
    }

    #[test]
    fn unmapped_image_and_missing_binary_are_reported() {
        let mut m = merged();
        m.services[0].image = "eve-storage/nosuch:dev".into();
        let p = pkg_tree(&["eve-init", "eve-agent"]);
        let errs = validate_all(&m, &cfg(), p.path(), &bins(&["eve-init", "eve-imgbuild"]));
        assert!(
            errs.iter()
                .any(|e| e.contains("eve-storage/nosuch:dev") && e.contains("does not map")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("pkg/eve-agent is not named")),
            "{errs:?}"
        );
        let mut c = cfg();
        c.images.get_mut("eve-storage/eve-agent").unwrap().bin = Some("gone".into());
        let errs = validate_all(
            &merged(),
            &c,
            p.path(),
            &bins(&["eve-init", "eve-imgbuild"]),
        );
        assert!(errs.iter().any(|e| e.contains("`gone`")), "{errs:?}");
    }

    #[test]
    fn an_empty_command_is_an_error_not_a_panic() {
        for cmd in [vec![], vec![String::new()]] {
            let mut m = merged();
            m.services[0].command = Some(cmd);
            let p = pkg_tree(&["eve-init", "eve-agent"]);
            let errs = validate_all(
                &m,
                &cfg(),
                p.path(),
                &bins(&["eve-init", "eve-agent", "eve-imgbuild"]),
            );
            assert!(errs.iter().any(|e| e.contains("empty command")), "{errs:?}");
        }
    }

    #[test]
    fn a_shipped_binary_missing_from_the_manifest_is_reported() {
        let a = parse(Path::new("a.yml"), BASE).unwrap();
        let m = merge(vec![("a.yml".into(), a)]).unwrap();
        let p = pkg_tree(&["eve-init"]);
        let errs = validate_all(
            &m,
            &cfg(),
            p.path(),
            &bins(&["eve-init", "eve-agent", "eve-imgbuild"]),
        );
        assert!(
            errs.iter().any(|e| e.contains("`eve-agent` is neither")),
            "{errs:?}"
        );
    }
}
