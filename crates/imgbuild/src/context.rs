//! What every build step shares: the build's options and profile, and the small helpers the
//! steps all use (progress bars, finding a workspace binary, hashing a file, unpacking a cached
//! .deb, making a reproducible FAT image). The orchestrator ([`crate::build`]) and the steps
//! (`step/`) both use it; it uses neither.

use crate::apt::Package;
use crate::cmd;
use crate::error::{Error, IoContext, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How an image is built: the inputs, the outputs and the keys (the command line of
/// `eve-imgbuild build`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub repo: PathBuf,
    pub manifests: Vec<PathBuf>,
    pub config: PathBuf,
    /// Where cargo put the workspace's release binaries (searched in order).
    pub bins: Vec<PathBuf>,
    pub out: PathBuf,
    pub cache: PathBuf,
    pub apt_lists: PathBuf,
    pub version: String,
    pub slot_size_mib: u64,
    pub profile: Profile,
    /// The vendor's signing key; without it the cache's development key signs (not with
    /// `release`).
    pub signing_key: Option<PathBuf>,
    pub release: bool,
    /// The vendor's Secure Boot key set (`secureboot`); without it the cache's development set.
    pub boot_keys: Option<PathBuf>,
    pub security_epoch: u32,
    /// Public keys the image trusts besides its signing key (the next key, for a rotation).
    pub trusted_keys: Vec<PathBuf>,
    pub key_serial: u32,
    /// A key rotation (`eve-imgbuild rotate-keys`) the update artifact carries.
    pub rotation: Option<PathBuf>,
    /// Older boot loaders this release revokes (a signed `dbx` append in the image).
    pub revoke_loaders: Vec<PathBuf>,
    /// The management API's operator CAs (`admin-ca.pem`, `reader-ca.pem`); without it the
    /// cache's development CAs (not with `release`).
    pub mgmt_ca: Option<PathBuf>,
    /// Trees copied into the root as they are (`eve-manuals`' man pages and completions).
    pub overlays: Vec<PathBuf>,
}

/// What an image is for: `prod` has no shell and no test agent, and root is locked; `dev` adds
/// linuxkit/dev.yml's console shell and agent, for `make run` and the VM tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Prod,
    #[default]
    Dev,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Prod => "prod",
            Profile::Dev => "dev",
        }
    }
    /// Output files are `<stem>.raw`, `<stem>.update`, `<stem>.build.json`.
    pub fn stem(self) -> &'static str {
        match self {
            Profile::Prod => "eve-storage",
            Profile::Dev => "eve-storage-dev",
        }
    }
}

/// A progress bar for `len` items of `what`, on stderr.
pub(crate) fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template("      {msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b
}

/// The first of `dirs` holding binary `name`.
pub(crate) fn find_bin(dirs: &[PathBuf], name: &str) -> Result<PathBuf> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let first = dirs.first().cloned().unwrap_or_default().join(name);
            let e = platform::io("find (build the workspace first: make binaries)", &first);
            Error::Io(e(std::io::ErrorKind::NotFound.into()))
        })
}

/// The SHA-256 of a file, in hex.
pub fn sha256_file(p: &Path) -> Result<String> {
    let mut f = fs::File::open(p).at("open", p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at("read", p)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Where a package's .deb is kept in the download cache.
pub(crate) fn deb_path(cache: &Path, p: &Package) -> PathBuf {
    let base = p.filename.rsplit('/').next().unwrap_or(&p.filename);
    cache.join("debs").join(base)
}

/// A fresh private directory under `parent` (a leftover one of this process is removed).
pub(crate) fn tempfile_dir(parent: &Path, what: &str) -> Result<PathBuf> {
    let d = parent.join(format!(".{what}.{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).at("mkdir", &d)?;
    Ok(d)
}

/// Unpacks a .deb's files (not its scripts) into `dest`.
pub(crate) fn extract_plain(deb: &Path, dest: &Path) -> Result<()> {
    cmd::run(
        cmd::DPKG_DEB,
        &[
            std::ffi::OsStr::new("-x"),
            deb.as_os_str(),
            dest.as_os_str(),
        ],
        None,
    )
    .map(|_| ())
}

/// A FAT image holding `files`, byte-identical for the same inputs: mkfs.fat's `--invariant`
/// fixes its random and time-based fields, mlabel then sets our volume id, and mtools stamps every
/// entry with `epoch` (SOURCE_DATE_EPOCH).
pub(crate) fn vfat(
    path: &Path,
    size_mib: u64,
    label: &str,
    volume_id: &str,
    epoch: u64,
    files: &[(&Path, &str)],
    dirs: &[&str],
) -> Result<()> {
    let _ = fs::remove_file(path);
    let env = [("SOURCE_DATE_EPOCH", epoch.to_string())];
    let img = path.to_string_lossy().into_owned();
    cmd::run_env(
        cmd::MKFS_VFAT,
        &[
            format!("-n{label}"),
            "--invariant".into(),
            "-C".into(),
            img.clone(),
            (size_mib * 1024).to_string(),
        ],
        &env,
    )?;
    cmd::run_env(
        cmd::MLABEL,
        &[
            "-i".to_string(),
            img.clone(),
            "-N".into(),
            volume_id.into(),
            format!("::{label}"),
        ],
        &env,
    )?;
    for d in dirs {
        cmd::run_env(
            cmd::MMD,
            &["-i".to_string(), img.clone(), format!("::{d}")],
            &env,
        )?;
    }
    for (src, dst) in files {
        cmd::run_env(
            cmd::MCOPY,
            &[
                "-i".to_string(),
                img.clone(),
                src.to_string_lossy().into_owned(),
                format!("::{dst}"),
            ],
            &env,
        )?;
    }
    Ok(())
}
