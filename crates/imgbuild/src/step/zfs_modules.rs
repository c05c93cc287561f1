//! Step "zfs-modules": spl.ko and zfs.ko built from the zfs-dkms source against the resolved
//! kernel's headers, once per (kernel, ZFS) version; later builds take them from the cache.

use crate::apt::Package;
use crate::cmd;
use crate::context::*;
use crate::error::{IoContext, Result};
use std::fs;
use std::path::PathBuf;

/// Builds spl.ko and zfs.ko from the zfs-dkms source for `kver`, cached by (kernel, zfs) version.
pub(crate) fn zfs_modules(
    opts: &Options,
    kver: &str,
    zfs_version: &str,
    build_pkgs: &[Package],
) -> Result<PathBuf> {
    let dir = opts
        .cache
        .join("zfs-kmod")
        .join(format!("{kver}-zfs-{zfs_version}"));
    if dir.join("zfs.ko").exists() && dir.join("spl.ko").exists() {
        eprintln!("      cached: {}", dir.display());
        return Ok(dir);
    }
    let work = tempfile_dir(&opts.cache, "zfs-build")?;
    for p in build_pkgs {
        extract_plain(&deb_path(&opts.cache, p), &work)?;
    }
    let src = work.join("usr/src");
    let obj = src.join(format!("linux-headers-{kver}"));
    let common = src.join(format!(
        "linux-headers-{}-common",
        kver.trim_end_matches("-amd64")
    ));
    // The headers' Makefile includes the common tree by absolute /usr/src path; point it here.
    let mk = obj.join("Makefile");
    let text = fs::read_to_string(&mk).at("read", &mk)?;
    fs::write(
        &mk,
        text.replace("include /usr/src/", &format!("include {}/", src.display())),
    )
    .at("write", &mk)?;
    let zsrc = src.join(format!("zfs-{zfs_version}"));
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    eprintln!("      configure (about 2 min)");
    cmd::run_logged(
        cmd::SH,
        &[
            "./configure".to_string(),
            "--with-config=kernel".into(),
            format!("--with-linux={}", common.display()),
            format!("--with-linux-obj={}", obj.display()),
        ],
        &zsrc,
        &work.join("configure.log"),
    )?;
    eprintln!("      make -j{nproc} (about 3-10 min)");
    cmd::run_logged(
        cmd::MAKE,
        &[format!("-j{nproc}")],
        &zsrc,
        &work.join("make.log"),
    )?;
    let staged = opts
        .cache
        .join("zfs-kmod")
        .join(format!(".{kver}-zfs-{zfs_version}.tmp"));
    let _ = fs::remove_dir_all(&staged);
    fs::create_dir_all(&staged).at("mkdir", &staged)?;
    for m in ["spl.ko", "zfs.ko"] {
        let from = zsrc.join("module").join(m);
        let to = staged.join(m);
        // Debug info is 95% of zfs.ko; the image does not need it.
        cmd::run(
            cmd::STRIP,
            &[
                std::ffi::OsStr::new("--strip-debug"),
                from.as_os_str(),
                std::ffi::OsStr::new("-o"),
                to.as_os_str(),
            ],
            None,
        )?;
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&staged, &dir).at("rename", &dir)?;
    let _ = fs::remove_dir_all(&work);
    Ok(dir)
}
