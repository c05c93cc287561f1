//! Step "resolve": the package set from the manifests and the index, the kernel it leads to, the
//! ZFS module source of the same release as the userland, the headers and kbuild of that exact
//! kernel, and the stock boot binaries' packages.

use crate::apt::{self, Index, Package, Policy};
use crate::cmd;
use crate::context::Options;
use crate::error::IoContext;
use crate::error::{Error, Result};
use crate::manifest::{self, Config, Manifest};
use crate::rootfs;
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

/// What the rest of the build installs and builds against.
#[derive(Debug)]
pub struct Resolved {
    pub pkgs: Vec<Package>,
    /// The ZFS module source first, then the kernel's headers and kbuild.
    pub build_pkgs: Vec<Package>,
    /// The kernel release (`6.12.118+deb12-amd64`).
    pub kver: String,
    pub zfs_version: String,
    pub kernel_pkg: Package,
    pub zfs_user: Package,
    pub boot_pkgs: BootPackages,
}

pub fn resolve(opts: &Options, m: &Manifest, cfg: &Config, policy: &Policy) -> Result<Resolved> {
    let index = load_index(opts, cfg)?;
    let pkgs = apt::resolve(&index, policy, &roots(m, cfg))?;
    let kernel = pkgs
        .iter()
        .find(|p| p.name.starts_with("linux-image-") && p.name != cfg.kernel.package)
        .cloned()
        .ok_or_else(|| {
            Error::Resolve(format!(
                "{} did not lead to a kernel image package",
                cfg.kernel.package
            ))
        })?;
    let kver = kernel.name.trim_start_matches("linux-image-").to_string();
    if !kver.starts_with(&format!("{}.", cfg.kernel.series)) {
        return Err(Error::Resolve(format!(
            "kernel {kver} is not in the {} series",
            cfg.kernel.series
        )));
    }
    let dkms = apt::candidate(&index, policy, &cfg.zfs.dkms_package, None)
        .cloned()
        .ok_or_else(|| Error::Resolve(format!("no {} package", cfg.zfs.dkms_package)))?;
    let zfs_version = rootfs::upstream_version(&dkms.version).to_string();
    let zfs_user = pkgs
        .iter()
        .find(|p| Some(&p.name) == cfg.zfs.userland.first())
        .cloned()
        .ok_or_else(|| Error::Resolve("no ZFS userland package".into()))?;
    if rootfs::upstream_version(&zfs_user.version) != zfs_version {
        return Err(Error::Resolve(format!(
            "ZFS userland {} {} and module source {} {} are different releases",
            zfs_user.name, zfs_user.version, dkms.name, dkms.version
        )));
    }
    let stem = kver.trim_end_matches("-amd64");
    let mut build = vec![dkms];
    for name in [
        format!("linux-headers-{kver}"),
        format!("linux-headers-{stem}-common"),
        format!("linux-kbuild-{stem}"),
    ] {
        let dep = apt::Dep {
            name: name.clone(),
            constraint: Some((apt::Op::Eq, kernel.version.clone())),
        };
        build.push(
            apt::candidate(&index, policy, &name, Some(&dep))
                .cloned()
                .ok_or_else(|| Error::Resolve(format!("no {name} {}", kernel.version)))?,
        );
    }
    let boot_pkgs = boot_packages(&index, policy, cfg)?;
    eprintln!(
        "      {} packages; kernel {kver}; zfs {zfs_version}; {} {}, {} {}",
        pkgs.len(),
        boot_pkgs.shim.name,
        boot_pkgs.shim.version,
        boot_pkgs.grub_signed.name,
        boot_pkgs.grub_signed.version
    );
    Ok(Resolved {
        pkgs,
        build_pkgs: build,
        kver,
        zfs_version,
        kernel_pkg: kernel,
        zfs_user,
        boot_pkgs,
    })
}

fn load_index(opts: &Options, cfg: &Config) -> Result<Index> {
    let mut index = Index::default();
    let rd = fs::read_dir(&opts.apt_lists).at("list", &opts.apt_lists)?;
    let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    let mut seen = BTreeSet::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains("_binary-amd64_Packages") {
            continue;
        }
        let Some(suite) = cfg
            .apt
            .suites
            .iter()
            .find(|s| name.contains(&format!("_dists_{s}_")))
        else {
            continue;
        };
        let text = cmd::run(
            cmd::APT_HELPER,
            &[std::ffi::OsStr::new("cat-file"), f.as_os_str()],
            None,
        )?;
        index.add(suite, &String::from_utf8_lossy(&text))?;
        seen.insert(suite.clone());
    }
    let missing: Vec<&String> = cfg
        .apt
        .suites
        .iter()
        .filter(|s| !seen.contains(*s))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Resolve(format!(
            "no package lists for {missing:?} in {}; run scripts/host-deps.sh (adds the sources and runs apt-get update)",
            opts.apt_lists.display()
        )));
    }
    Ok(index)
}

/// The image's package roots: base, every mapped image's packages, kernel and ZFS userland.
fn roots(m: &Manifest, cfg: &Config) -> Vec<String> {
    let mut r: Vec<String> = cfg.base.packages.clone();
    let images = m.init.iter().cloned().chain(
        m.onboot
            .iter()
            .chain(&m.services)
            .chain(&m.onshutdown)
            .map(|e| e.image.clone()),
    );
    for i in images {
        if let Some(map) = cfg.images.get(manifest::repo_of(&i)) {
            r.extend(map.packages.iter().cloned());
        }
    }
    r.push(cfg.kernel.package.clone());
    r.extend(cfg.zfs.userland.iter().cloned());
    let mut seen = BTreeSet::new();
    r.retain(|x| seen.insert(x.clone()));
    r
}

/// The stock boot binaries' packages.
#[derive(Debug)]
pub struct BootPackages {
    pub shim: Package,
    pub grub_signed: Package,
    /// The host's GRUB version (its grub-mkimage and modules build our GRUB).
    pub host_grub: String,
}

fn boot_packages(index: &Index, policy: &Policy, cfg: &Config) -> Result<BootPackages> {
    let sb = &cfg.secure_boot;
    let out = cmd::run(
        cmd::DPKG_QUERY,
        &["-W", "-f=${Version}", &sb.grub_host_package],
        None,
    )?;
    let host_grub = String::from_utf8_lossy(&out).trim().to_string();
    let shim = apt::candidate(index, policy, &sb.shim_package, None)
        .cloned()
        .ok_or_else(|| Error::Resolve(format!("no {} package", sb.shim_package)))?;
    // Debian's signed GRUB is versioned `1+<upstream>+<debian revision>`.
    let want = format!("1+{}", host_grub.replace('-', "+"));
    let dep = apt::Dep {
        name: sb.grub_signed_package.clone(),
        constraint: Some((apt::Op::Eq, want.clone())),
    };
    let grub_signed = apt::candidate(index, policy, &sb.grub_signed_package, Some(&dep))
        .cloned()
        .ok_or_else(|| {
            Error::Resolve(format!(
                "no {} {want} for the host's {} {host_grub}: upgrade the host's GRUB (apt-get install {})",
                sb.grub_signed_package, sb.grub_host_package, sb.grub_host_package
            ))
        })?;
    Ok(BootPackages {
        shim,
        grub_signed,
        host_grub,
    })
}
