//! The build: manifest -> resolved packages -> cached downloads and ZFS modules -> rootfs ->
//! initramfs -> squashfs slot -> ESP -> GPT image -> build manifest. Each step reports progress
//! on stderr and a failure names the step and, through the error chain, the command.

use crate::apt::{self, Index, Package, Policy};
use crate::cpio::{Node, Tree};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Config, Manifest};
use crate::secureboot::BootKeys;
use crate::{cmd, disk, grub, keys, kmod, rootfs, secureboot, update, verity, workspace};
use eve_init::bundle;
use platform::layout;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// Images and services that open the box; a production image refuses them.
const DEBUG_ONLY: [&str; 2] = ["linuxkit/getty", "eve-storage/eve-agent"];

/// A production image must not carry a console shell or the test agent, whatever the manifests
/// say: neither the known debug images nor any image mapped onto the console.
pub fn check_profile(m: &Manifest, cfg: &Config, profile: Profile) -> Result<()> {
    if profile == Profile::Dev {
        return Ok(());
    }
    let named = m
        .onboot
        .iter()
        .chain(&m.services)
        .map(|e| (e.name.as_str(), e.image.as_str()))
        .chain(m.init.iter().map(|i| ("init", i.as_str())));
    for (name, image) in named {
        let repo = manifest::repo_of(image);
        let on_console = cfg.images.get(repo).is_some_and(|i| i.console);
        if DEBUG_ONLY.contains(&repo) || on_console {
            return Err(Error::Manifest {
                path: "--profile prod".into(),
                msg: format!(
                    "`{name}` ({image}) opens the box (console shell or test agent); it belongs to the dev profile only"
                ),
            });
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct SigningInfo {
    /// `release` or `dev`.
    pub kind: String,
    pub key_id: String,
    /// Only for a development key (the tests sign variants with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_key_file: Option<String>,
    pub trusted_keys: Vec<String>,
    pub key_serial: u32,
    pub security_epoch: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_to: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct BuildManifest {
    pub version: String,
    pub profile: Profile,
    pub signing: SigningInfo,
    pub git_revision: String,
    pub kernel: KernelInfo,
    pub zfs: ZfsInfo,
    pub cmdline: String,
    pub onboot: Vec<String>,
    pub services: Vec<String>,
    pub packages: Vec<Package>,
    pub build_packages: Vec<Package>,
    pub image: ImageInfo,
    pub update: UpdateInfo,
    pub secure_boot: SecureBootInfo,
}

#[derive(Debug, Serialize)]
pub struct UpdateInfo {
    pub path: String,
    pub size: u64,
    pub payload_sha256: String,
}

#[derive(Debug, Serialize)]
pub struct KernelInfo {
    pub package: String,
    pub version: String,
    pub release: String,
    pub modules: usize,
}

#[derive(Debug, Serialize)]
pub struct ZfsInfo {
    pub version: String,
    pub dkms_package: String,
    pub userland_package: String,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub allocated: u64,
    pub compressed_path: String,
    pub compressed_size: u64,
    pub squashfs_size: u64,
    /// The slot image: squashfs, verity descriptor and hash tree.
    pub slot_size: u64,
    pub initramfs_size: u64,
}

#[derive(Debug, Serialize)]
pub struct SecureBootInfo {
    /// `release` or `dev` boot keys.
    pub boot_keys: String,
    /// Only for development keys (the tests sign variants with them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_boot_keys_dir: Option<String>,
    /// OVMF variables with the keys enrolled, for qemu.
    pub ovmf_vars: String,
    pub shim: String,
    pub grub_sbat_from: String,
    pub verity_root_hash: String,
}

/// Prints `[n/N] step` lines and wraps failures with the step name.
#[derive(Debug)]
struct Progress {
    n: usize,
    total: usize,
    start: Instant,
}

impl Progress {
    fn step<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.n += 1;
        eprintln!("[{}/{}] {name} ...", self.n, self.total);
        let t = Instant::now();
        let r = f().map_err(|e| Error::Step {
            step: name.into(),
            source: Box::new(e),
        });
        if r.is_ok() {
            eprintln!(
                "[{}/{}] {name} done in {:.1} s (total {:.0} s)",
                self.n,
                self.total,
                t.elapsed().as_secs_f32(),
                self.start.elapsed().as_secs_f32()
            );
        }
        r
    }
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template("      {msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b
}

/// The first of `dirs` holding binary `name`.
fn find_bin(dirs: &[PathBuf], name: &str) -> Result<PathBuf> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Io(platform::IoError {
                op: "find (build the workspace first: make binaries)",
                path: dirs.first().cloned().unwrap_or_default().join(name),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        })
}

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

/// Reads and validates the manifests against the mapping, pkg/ and the workspace.
pub fn load(opts: &Options) -> Result<(Manifest, Config)> {
    let mut parts = Vec::new();
    for p in &opts.manifests {
        let text = fs::read_to_string(p).at("read", p)?;
        parts.push((p.clone(), manifest::parse(p, &text)?));
    }
    let m = manifest::merge(parts)?;
    let text = fs::read_to_string(&opts.config).at("read", &opts.config)?;
    let cfg = manifest::parse_config(&opts.config, &text)?;
    let bins = workspace::binaries(&opts.repo)?;
    let mut errs = manifest::validate(&m, &cfg, &opts.repo.join("pkg"), &bins);
    if opts.profile == Profile::Dev {
        errs.extend(manifest::validate_complete(
            &m,
            &cfg,
            &opts.repo.join("pkg"),
            &bins,
        ));
    }
    if !errs.is_empty() {
        let names: Vec<String> = opts
            .manifests
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return Err(Error::Manifest {
            path: names.join(" + ").into(),
            msg: errs.join("; "),
        });
    }
    Ok((m, cfg))
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

fn deb_path(cache: &Path, p: &Package) -> PathBuf {
    let base = p.filename.rsplit('/').next().unwrap_or(&p.filename);
    cache.join("debs").join(base)
}

/// Ensures each package's .deb is in the cache with the index's sha256.
fn fetch(opts: &Options, pkgs: &[Package]) -> Result<()> {
    let debs = opts.cache.join("debs");
    fs::create_dir_all(&debs).at("mkdir", &debs)?;
    let mut missing = Vec::new();
    for p in pkgs {
        let path = deb_path(&opts.cache, p);
        if !path.exists() || sha256_file(&path)? != p.sha256 {
            missing.push(p);
        }
    }
    eprintln!(
        "      {} packages, {} cached, {} to download",
        pkgs.len(),
        pkgs.len() - missing.len(),
        missing.len()
    );
    if missing.is_empty() {
        return Ok(());
    }
    let tmp = tempfile_dir(&debs, "download")?;
    for chunk in missing.chunks(50) {
        let mut args: Vec<String> = vec![
            "download".into(),
            "-q".into(),
            "-o".into(),
            "APT::Sandbox::User=root".into(),
        ];
        args.extend(chunk.iter().map(|p| format!("{}={}", p.name, p.version)));
        cmd::run(cmd::APT_GET, &args, Some(&tmp))?;
    }
    let by_name: BTreeMap<&str, &&Package> = missing.iter().map(|p| (p.name.as_str(), p)).collect();
    for e in fs::read_dir(&tmp).at("list", &tmp)?.filter_map(|e| e.ok()) {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(p) = f.split('_').next().and_then(|n| by_name.get(n)) else {
            continue;
        };
        let actual = sha256_file(&e.path())?;
        if actual != p.sha256 {
            return Err(Error::Checksum {
                path: e.path(),
                expected: p.sha256.clone(),
                actual,
            });
        }
        let dest = deb_path(&opts.cache, p);
        fs::rename(e.path(), &dest).at("rename", &dest)?;
    }
    let _ = fs::remove_dir_all(&tmp);
    for p in missing {
        if !deb_path(&opts.cache, p).exists() {
            return Err(Error::Resolve(format!(
                "apt-get download did not produce {} {}",
                p.name, p.version
            )));
        }
    }
    Ok(())
}

fn tempfile_dir(parent: &Path, what: &str) -> Result<PathBuf> {
    let d = parent.join(format!(".{what}.{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).at("mkdir", &d)?;
    Ok(d)
}

fn extract_plain(deb: &Path, dest: &Path) -> Result<()> {
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

/// Builds spl.ko and zfs.ko from the zfs-dkms source for `kver`, cached by (kernel, zfs) version.
fn zfs_modules(
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

/// Unpacks a .deb's data into the merged-/usr root, dropping docs and init scripts.
fn unpack_deb(deb: &Path, root: &Path) -> Result<()> {
    let tarball = cmd::run(
        cmd::DPKG_DEB,
        &[std::ffi::OsStr::new("--fsys-tarfile"), deb.as_os_str()],
        None,
    )?;
    let mut ar = tar::Archive::new(&tarball[..]);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    for e in ar.entries().at("read tar of", deb)? {
        let mut e = e.at("read tar of", deb)?;
        let raw = e
            .path()
            .at("read tar of", deb)?
            .to_string_lossy()
            .into_owned();
        let Some(rel) = rootfs::map_path(&raw) else {
            continue;
        };
        let dest = root.join(&rel);
        let kind = e.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&dest).at("mkdir", &dest)?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).at("mkdir", parent)?;
        }
        if dest.symlink_metadata().is_ok() && !dest.is_dir() {
            fs::remove_file(&dest).at("replace", &dest)?;
        }
        if kind.is_hard_link() {
            let target = e
                .link_name()
                .at("read tar of", deb)?
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(t) = rootfs::map_path(&target) else {
                continue;
            };
            fs::hard_link(root.join(&t), &dest).at("link", &dest)?;
            continue;
        }
        e.unpack(&dest).at("unpack", &dest)?;
    }
    Ok(())
}

/// Follows symlinks inside `root` (not the host) and says whether `path` ends at a file.
fn exists_in(root: &Path, path: &str) -> bool {
    let mut cur = path.trim_start_matches('/').to_string();
    for _ in 0..40 {
        let p = root.join(&cur);
        match p.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                let Ok(t) = fs::read_link(&p) else {
                    return false;
                };
                let t = t.to_string_lossy().into_owned();
                cur = if t.starts_with('/') {
                    t.trim_start_matches('/').to_string()
                } else {
                    let parent = Path::new(&cur)
                        .parent()
                        .map(|x| x.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    normalize(&format!("{parent}/{t}"))
                };
            }
            Ok(m) => return m.is_file(),
            Err(_) => {
                // A parent component may itself be a symlink (e.g. /bin -> usr/bin).
                let parts: Vec<&str> = cur.split('/').collect();
                for i in 1..parts.len() {
                    let prefix = parts[..i].join("/");
                    if root
                        .join(&prefix)
                        .symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink())
                    {
                        let Ok(t) = fs::read_link(root.join(&prefix)) else {
                            return false;
                        };
                        let t = t.to_string_lossy().into_owned();
                        let base = if t.starts_with('/') {
                            t.trim_start_matches('/').to_string()
                        } else {
                            let parent = Path::new(&prefix)
                                .parent()
                                .map(|x| x.to_string_lossy().into_owned())
                                .unwrap_or_default();
                            normalize(&format!("{parent}/{t}"))
                        };
                        return exists_in(root, &format!("{base}/{}", parts[i..].join("/")));
                    }
                }
                return false;
            }
        }
    }
    false
}

fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn write(root: &Path, rel: &str, data: impl AsRef<[u8]>) -> Result<()> {
    let p = root.join(rel.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).at("mkdir", d)?;
    }
    Ok(fs::write(&p, data).at("write", &p)?)
}

fn symlink(target: &str, root: &Path, rel: &str) -> Result<()> {
    let p = root.join(rel.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).at("mkdir", d)?;
    }
    if p.symlink_metadata().is_ok() {
        fs::remove_file(&p).at("replace", &p)?;
    }
    Ok(std::os::unix::fs::symlink(target, &p).at("symlink", &p)?)
}

/// The OCI bundles init runs, in LinuxKit's layout.
fn bundles(m: &Manifest, cfg: &Config, root: &Path) -> Result<()> {
    let groups: [(&str, &Vec<manifest::Entry>, bool); 3] = [
        ("onboot", &m.onboot, true),
        ("onshutdown", &m.onshutdown, true),
        ("services", &m.services, false),
    ];
    for (kind, entries, numbered) in groups {
        for (i, e) in entries.iter().enumerate() {
            let map = cfg
                .images
                .get(manifest::repo_of(&e.image))
                .cloned()
                .unwrap_or_default();
            let args = e
                .command
                .clone()
                .or(map.command.clone())
                .or(map.bin.as_ref().map(|b| vec![format!("/usr/bin/{b}")]))
                .filter(|a| a.first().is_some_and(|c| !c.is_empty()))
                .ok_or_else(|| Error::Manifest {
                    path: "manifest".into(),
                    msg: format!("{kind} `{}` has no command (or an empty one)", e.name),
                })?;
            let prog = args[0].clone();
            let resolvable = if prog.starts_with('/') {
                exists_in(root, &prog)
            } else {
                ["usr/sbin", "usr/bin", "sbin", "bin"]
                    .iter()
                    .any(|d| exists_in(root, &format!("{d}/{prog}")))
            };
            if !resolvable {
                return Err(Error::Manifest {
                    path: "manifest".into(),
                    msg: format!(
                        "{kind} `{}` runs `{}`, which is not in the image",
                        e.name, args[0]
                    ),
                });
            }
            let mut annotations = BTreeMap::new();
            if map.console {
                annotations.insert(bundle::ANNOTATION_TTY.to_string(), "console".to_string());
            }
            if map.oneshot {
                annotations.insert(
                    bundle::ANNOTATION_RESTART.to_string(),
                    bundle::RESTART_ON_FAILURE.to_string(),
                );
            }
            let c = bundle::Config {
                oci_version: "1.0.2".into(),
                process: bundle::Process {
                    args,
                    env: e.env.clone(),
                    cwd: "/".into(),
                },
                root: bundle::Root {
                    path: "rootfs".into(),
                    readonly: true,
                },
                annotations,
            };
            let dir = if numbered {
                format!("containers/{kind}/{i:03}-{}", e.name)
            } else {
                format!("containers/{kind}/{}", e.name)
            };
            write(
                root,
                &format!("{dir}/config.json"),
                serde_json::to_vec_pretty(&c).unwrap_or_default(),
            )?;
            symlink("/", root, &format!("{dir}/rootfs"))?;
        }
    }
    Ok(())
}

fn manifest_files(m: &Manifest, root: &Path) -> Result<()> {
    for (f, dir) in m.files.iter().zip(&m.source_dirs) {
        let rel = f.path.trim_start_matches('/');
        let dest = root.join(rel);
        if f.directory {
            fs::create_dir_all(&dest).at("mkdir", &dest)?;
        } else if let Some(t) = &f.symlink {
            symlink(t, root, rel)?;
        } else if let Some(c) = &f.contents {
            write(root, rel, c)?;
        } else if let Some(s) = &f.source {
            let src = dir.join(s);
            let data = fs::read(&src).at("read (files: source)", &src)?;
            write(root, rel, data)?;
        } else {
            return Err(Error::Manifest {
                path: "manifest".into(),
                msg: format!(
                    "file {} has no contents, source, symlink or directory",
                    f.path
                ),
            });
        }
        if let Some(mode) = &f.mode {
            let bits = u32::from_str_radix(mode.trim_start_matches("0o"), 8).map_err(|_| {
                Error::Manifest {
                    path: "manifest".into(),
                    msg: format!("file {}: mode `{mode}` is not octal", f.path),
                }
            })?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dest, fs::Permissions::from_mode(bits)).at("chmod", &dest)?;
        }
    }
    Ok(())
}

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\ndisk:x:6:\nlp:x:7:\nkmem:x:15:\ndialout:x:20:\ncdrom:x:24:\ntape:x:26:\naudio:x:29:\nvideo:x:44:\nutmp:x:43:\nplugdev:x:46:\nstaff:x:50:\ninput:x:101:\nkvm:x:102:\nrender:x:103:\nsgx:x:104:\nnogroup:x:65534:\n";
const PROFILE: &str = "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w# '\nexport TERM=${TERM:-vt100}\n";

/// Scratch space per profile, so both images can be built into one --out.
fn work_dir(opts: &Options) -> PathBuf {
    opts.out.join(format!("work-{}", opts.profile.name()))
}

/// Assembles the root filesystem tree; returns the kernel release and module count.
fn build_rootfs(
    opts: &Options,
    m: &Manifest,
    cfg: &Config,
    pkgs: &[Package],
    kernel: &KernelParts,
    release: &abupdate::release::Release,
) -> Result<usize> {
    let (kver, zfs_dir, signer) = (kernel.release, kernel.zfs_dir, kernel.signer);
    let root = work_dir(opts).join("rootfs");
    if root.exists() {
        fs::remove_dir_all(&root).at("clean", &root)?;
    }
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "usr/lib64",
        "etc",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var",
        "root",
        "mnt",
        "persist",
        "config",
        "boot",
    ] {
        fs::create_dir_all(root.join(d)).at("mkdir", root.join(d))?;
    }
    for (l, t) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        symlink(t, &root, l)?;
    }
    let kernel_pkgs: Vec<&Package> = pkgs
        .iter()
        .filter(|p| p.name.starts_with("linux-image-"))
        .collect();
    let b = bar(pkgs.len() as u64, "unpack");
    for p in pkgs.iter().filter(|p| !p.name.starts_with("linux-image-")) {
        unpack_deb(&deb_path(&opts.cache, p), &root)?;
        b.inc(1);
    }
    b.finish_and_clear();
    // Kernel: unpack aside, keep vmlinuz and the module closure only.
    let kdir = tempfile_dir(&work_dir(opts), "kernel")?;
    for p in &kernel_pkgs {
        extract_plain(&deb_path(&opts.cache, p), &kdir)?;
    }
    let kmods = kdir.join("lib/modules").join(kver);
    cmd::run(
        cmd::DEPMOD,
        &[
            std::ffi::OsStr::new("-b"),
            kdir.as_os_str(),
            std::ffi::OsStr::new(kver),
        ],
        None,
    )?;
    let dep =
        fs::read_to_string(kmods.join("modules.dep")).at("read", kmods.join("modules.dep"))?;
    let builtin = fs::read_to_string(kmods.join("modules.builtin"))
        .at("read", kmods.join("modules.builtin"))?;
    let map = kmod::DepMap::parse(&dep, &builtin)?;
    let closure = map.closure(&cfg.kernel.modules)?;
    let dst_mods = root.join("usr/lib/modules").join(kver);
    for rel in &closure {
        let to = dst_mods.join(rel);
        fs::create_dir_all(to.parent().unwrap_or(&dst_mods)).at("mkdir", &to)?;
        fs::copy(kmods.join(rel), &to).at("copy", &to)?;
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        fs::copy(kmods.join(f), dst_mods.join(f)).at("copy", dst_mods.join(f))?;
    }
    for f in ["spl.ko", "zfs.ko"] {
        let to = dst_mods.join("updates").join(f);
        fs::create_dir_all(dst_mods.join("updates")).at("mkdir", dst_mods.join("updates"))?;
        fs::copy(zfs_dir.join(f), &to).at("copy", &to)?;
        // Under Secure Boot the kernel is locked down and loads only signed modules.
        signer.keys.sign_module(&signer.sign_file, &to)?;
    }
    let vmlinuz = kdir.join("boot").join(format!("vmlinuz-{kver}"));
    signer
        .keys
        .sign_pe(&vmlinuz, &root.join("boot/vmlinuz"), signer.epoch)?;
    cmd::run(
        cmd::DEPMOD,
        &[
            std::ffi::OsStr::new("-b"),
            root.as_os_str(),
            std::ffi::OsStr::new(kver),
        ],
        None,
    )?;
    // Initramfs modules, decompressed, in load order, from the same closure logic.
    let init_closure = map.closure(&cfg.kernel.initramfs_modules)?;
    let mut tree = Tree::default();
    let mut order = String::new();
    for rel in &init_closure {
        let mut data = Vec::new();
        let src = kmods.join(rel);
        let raw = fs::read(&src).at("read", &src)?;
        if rel.ends_with(".xz") {
            xz2::read::XzDecoder::new(&raw[..])
                .read_to_end(&mut data)
                .at("decompress", &src)?;
        } else {
            data = raw;
        }
        let path = format!(
            "lib/modules/{}",
            rel.trim_end_matches(".xz").trim_end_matches(".zst")
        );
        order.push_str(&format!("/{path}\n"));
        tree.insert(&path, Node::File { data, mode: 0o644 });
    }
    fs::remove_dir_all(&kdir).at("clean", &kdir)?;
    let modules = closure.len() + 2;

    // Busybox applets where no real tool exists.
    let bb = root.join("usr/bin/busybox");
    let list = cmd::run(bb.to_string_lossy().as_ref(), &["--list-full"], None)?;
    for applet in String::from_utf8_lossy(&list).lines() {
        let Some(rel) = rootfs::map_path(applet) else {
            continue;
        };
        if root.join(&rel).symlink_metadata().is_err() {
            symlink("/usr/bin/busybox", &root, &rel)?;
        }
    }
    // Workspace binaries.
    let bins: BTreeSet<String> = cfg
        .images
        .iter()
        .filter(|(repo, _)| {
            m.init
                .iter()
                .chain(m.onboot.iter().chain(&m.services).map(|e| &e.image))
                .any(|i| manifest::repo_of(i) == repo.as_str())
        })
        .flat_map(|(_, i)| {
            i.bin
                .iter()
                .chain(&i.extra_bins)
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    for bin in &bins {
        let from = find_bin(&opts.bins, bin)?;
        let to = root.join("usr/bin").join(bin);
        fs::copy(&from, &to).at("copy", &from)?;
    }
    symlink("/usr/bin/eve-init", &root, "usr/sbin/init")?;
    // Base /etc the packages' maintainer scripts would have made.
    write(&root, "etc/passwd", PASSWD)?;
    write(&root, "etc/group", GROUP)?;
    // dev: root with no password on the console shell; prod: root cannot log in at all.
    let shadow = match opts.profile {
        Profile::Dev => "root::0:0:99999:7:::\n",
        Profile::Prod => "root:!*:0:0:99999:7:::\n",
    };
    write(&root, "etc/shadow", shadow)?;
    write(
        &root,
        &format!("etc/{}", abupdate::release::RELEASE),
        serde_json::to_vec_pretty(release).unwrap_or_default(),
    )?;
    write(&root, "etc/hostname", "eve-storage\n")?;
    write(
        &root,
        "etc/hosts",
        "127.0.0.1 localhost eve-storage\n::1 localhost\n",
    )?;
    write(&root, "etc/profile", PROFILE)?;
    write(
        &root,
        "etc/ld.so.conf",
        "include /etc/ld.so.conf.d/*.conf\n",
    )?;
    write(
        &root,
        "etc/os-release",
        format!(
            "NAME=\"EVE storage\"\nID=eve-storage\nVERSION_ID={}\nPRETTY_NAME=\"EVE storage {}\"\n",
            opts.version, opts.version
        ),
    )?;
    symlink("../proc/self/mounts", &root, "etc/mtab")?;
    manifest_files(m, &root)?;
    bundles(m, cfg, &root)?;
    cmd::run(
        cmd::LDCONFIG,
        &[std::ffi::OsStr::new("-r"), root.as_os_str()],
        None,
    )?;

    // The initramfs: eve-init (static) and the drivers to reach the slot.
    let init_path = find_bin(&opts.bins, "eve-init")?;
    let init_bin = fs::read(&init_path).at("read", &init_path)?;
    tree.insert(
        "init",
        Node::File {
            data: init_bin,
            mode: 0o755,
        },
    );
    tree.insert(
        "eve-initramfs",
        Node::File {
            data: Vec::new(),
            mode: 0o644,
        },
    );
    // The keys stage 1 checks the slot's verity descriptor with.
    tree.insert(
        eve_init::verity::BOOT_KEYS,
        Node::File {
            data: serde_json::to_vec_pretty(&release.update_keys).unwrap_or_default(),
            mode: 0o644,
        },
    );
    tree.insert(
        "lib/modules/load-order",
        Node::File {
            data: order.into_bytes(),
            mode: 0o644,
        },
    );
    tree.insert("dev/console", Node::CharDev { major: 5, minor: 1 });
    for d in ["proc", "sys", "newroot"] {
        tree.insert(d, Node::Dir);
    }
    let cpio_path = work_dir(opts).join("initrd.cpio");
    let f = fs::File::create(&cpio_path).at("create", &cpio_path)?;
    tree.write(std::io::BufWriter::new(f))
        .at("write", &cpio_path)?;
    let initrd = root.join("boot/initrd.img");
    cmd::run(
        cmd::ZSTD,
        &[
            std::ffi::OsStr::new("-q"),
            std::ffi::OsStr::new("-f"),
            std::ffi::OsStr::new("-19"),
            cpio_path.as_os_str(),
            std::ffi::OsStr::new("-o"),
            initrd.as_os_str(),
        ],
        None,
    )?;
    Ok(modules)
}

/// A FAT image holding `files`, byte-identical for the same inputs: mkfs.fat's `--invariant`
/// fixes its random and time-based fields, mlabel then sets our volume id, and mtools stamps every
/// entry with `epoch` (SOURCE_DATE_EPOCH).
fn vfat(
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

/// Time stamps in the image: $SOURCE_DATE_EPOCH if set, else the commit's time, so two builds of
/// one commit agree.
fn source_date_epoch(repo: &Path) -> u64 {
    if let Some(t) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return t;
    }
    cmd::run(
        cmd::GIT,
        &["-C", &repo.to_string_lossy(), "log", "-1", "--format=%ct"],
        None,
    )
    .ok()
    .and_then(|o| String::from_utf8_lossy(&o).trim().parse().ok())
    .unwrap_or(0)
}

fn git_revision(repo: &Path) -> String {
    let rev = cmd::run(
        cmd::GIT,
        &["-C", &repo.to_string_lossy(), "rev-parse", "HEAD"],
        None,
    )
    .map(|o| String::from_utf8_lossy(&o).trim().to_string())
    .unwrap_or_else(|_| "unknown".into());
    let dirty = cmd::run(
        cmd::GIT,
        &[
            "-C",
            &repo.to_string_lossy(),
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
        None,
    )
    .map(|o| !o.is_empty())
    .unwrap_or(false);
    if dirty {
        format!("{rev}-dirty")
    } else {
        rev
    }
}

/// Signs a root tree's boot files for GRUB with the key set in `keys_dir` (`pack-update
/// --boot-keys`), dated now.
pub fn sign_boot_files(keys_dir: &Path, root: &Path) -> Result<()> {
    let keys = BootKeys::open(keys_dir, "release")?;
    let gpg = keys.gpg(&root.join(".."))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for f in grub::SIGNED_FILES {
        gpg.sign(&root.join(f), now)?;
    }
    Ok(())
}

/// What signs the kernel and its out-of-tree modules.
#[derive(Debug)]
struct KernelSigner {
    keys: BootKeys,
    /// The kernel's `sign-file`, from the linux-kbuild package of the same kernel.
    sign_file: PathBuf,
    epoch: u64,
}

/// The kernel release, its ZFS modules and what signs them.
#[derive(Debug)]
struct KernelParts<'a> {
    release: &'a str,
    zfs_dir: &'a Path,
    signer: &'a KernelSigner,
}

/// `scripts/sign-file` of the kernel's linux-kbuild package, unpacked once into the cache.
fn kbuild_sign_file(opts: &Options, build_pkgs: &[Package]) -> Result<PathBuf> {
    let kb = build_pkgs
        .iter()
        .find(|p| p.name.starts_with("linux-kbuild-"))
        .ok_or_else(|| Error::Resolve("no linux-kbuild package".into()))?;
    let dir = opts
        .cache
        .join("tools")
        .join(format!("{}_{}", kb.name, kb.version));
    let find = |d: &Path| -> Option<PathBuf> {
        let lib = d.join("usr/lib");
        fs::read_dir(&lib).ok()?.flatten().find_map(|e| {
            let p = e.path().join("scripts/sign-file");
            p.is_file().then_some(p)
        })
    };
    if let Some(p) = find(&dir) {
        return Ok(p);
    }
    let tmp = tempfile_dir(&opts.cache, "kbuild")?;
    extract_plain(&deb_path(&opts.cache, kb), &tmp)?;
    if let Some(d) = dir.parent() {
        fs::create_dir_all(d).at("mkdir", d)?;
    }
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir).at("rename", &dir)?;
    find(&dir).ok_or_else(|| Error::Parse {
        path: deb_path(&opts.cache, kb),
        msg: "no scripts/sign-file in it".into(),
    })
}

/// The stock boot binaries' packages.
#[derive(Debug)]
struct BootPackages {
    shim: Package,
    grub_signed: Package,
    /// The host's GRUB version (its grub-mkimage and modules build our GRUB).
    host_grub: String,
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

pub fn build(opts: &Options) -> Result<BuildManifest> {
    let mut pr = Progress {
        n: 0,
        total: 10,
        start: Instant::now(),
    };
    abupdate::state::validate_version(&opts.version).map_err(|msg| Error::Parse {
        path: "--version".into(),
        msg,
    })?;
    let (m, cfg) = pr.step("manifest", || {
        let (m, cfg) = load(opts)?;
        check_profile(&m, &cfg, opts.profile)?;
        Ok((m, cfg))
    })?;
    // Keys before the long steps, so a missing or bad key fails in a second.
    let signing = keys::for_build(opts.signing_key.as_deref(), opts.release, &opts.cache)?;
    let trusted = keys::trusted(&signing, &opts.trusted_keys, opts.key_serial)?;
    let rotation = opts
        .rotation
        .as_deref()
        .map(keys::read_rotation)
        .transpose()?;
    let boot = BootKeys::for_build(opts.boot_keys.as_deref(), opts.release, &opts.cache)?;
    eprintln!(
        "      Secure Boot: {} boot keys ({})",
        boot.kind,
        boot.dir.display()
    );
    let release = abupdate::release::Release {
        version: opts.version.clone(),
        security_epoch: opts.security_epoch,
        profile: opts.profile.name().into(),
        signing: signing.kind.into(),
        update_keys: trusted.clone(),
    };
    eprintln!(
        "      {} profile, {}-signed by key {} ({}), security epoch {}",
        opts.profile.name(),
        signing.kind,
        signing.key.id(),
        signing.key_file.display(),
        opts.security_epoch
    );
    let policy = Policy {
        backports_suite: "bookworm-backports".into(),
        backports: cfg.apt.backports.clone(),
        exclude: cfg.apt.exclude.clone(),
    };
    let (pkgs, build_pkgs, kver, zfs_version, kernel_pkg, zfs_user, boot_pkgs) =
        pr.step("resolve", || {
            let index = load_index(opts, &cfg)?;
            let pkgs = apt::resolve(&index, &policy, &roots(&m, &cfg))?;
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
            let dkms = apt::candidate(&index, &policy, &cfg.zfs.dkms_package, None)
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
                    apt::candidate(&index, &policy, &name, Some(&dep))
                        .cloned()
                        .ok_or_else(|| Error::Resolve(format!("no {name} {}", kernel.version)))?,
                );
            }
            let boot_pkgs = boot_packages(&index, &policy, &cfg)?;
            eprintln!(
                "      {} packages; kernel {kver}; zfs {zfs_version}; {} {}, {} {}",
                pkgs.len(),
                boot_pkgs.shim.name,
                boot_pkgs.shim.version,
                boot_pkgs.grub_signed.name,
                boot_pkgs.grub_signed.version
            );
            Ok((pkgs, build, kver, zfs_version, kernel, zfs_user, boot_pkgs))
        })?;
    pr.step("fetch", || {
        fetch(opts, &pkgs)
            .and_then(|_| fetch(opts, &build_pkgs))
            .and_then(|_| {
                fetch(
                    opts,
                    &[boot_pkgs.shim.clone(), boot_pkgs.grub_signed.clone()],
                )
            })
    })?;
    let zfs_dir = pr.step("zfs-modules", || {
        zfs_modules(opts, &kver, &zfs_version, &build_pkgs)
    })?;
    let epoch = source_date_epoch(&opts.repo);
    let signer = KernelSigner {
        keys: boot.clone(),
        sign_file: kbuild_sign_file(opts, &build_pkgs)?,
        epoch,
    };
    let nmods = pr.step("rootfs+initramfs", || {
        let k = KernelParts {
            release: &kver,
            zfs_dir: &zfs_dir,
            signer: &signer,
        };
        build_rootfs(opts, &m, &cfg, &pkgs, &k, &release)
    })?;
    let work = work_dir(opts);
    let sqfs = work.join("slot.squashfs");
    let slot_img = work.join("slot.img");
    let cmdline = m
        .kernel
        .as_ref()
        .map(|k| k.cmdline.clone())
        .unwrap_or_default();
    let descriptor = pr.step("sign+squashfs+verity", || {
        let root = work.join("rootfs");
        let slot_cfg = root.join(grub::SIGNED_FILES[0]);
        fs::write(&slot_cfg, grub::slot_cfg(&opts.version, &cmdline)?).at("write", &slot_cfg)?;
        let gpg = boot.gpg(&work)?;
        for f in grub::SIGNED_FILES {
            gpg.sign(&root.join(f), epoch)?;
        }
        update::squash(&root, &sqfs)?;
        verity::slot_image(
            &sqfs,
            &slot_img,
            &signing.key,
            &opts.version,
            opts.security_epoch,
        )
    })?;
    let (esp, config) = (work.join("esp.img"), work.join("config.img"));
    let git_rev = git_revision(&opts.repo);
    let seed = format!("{}/{}/{git_rev}", opts.version, opts.profile.name());
    let guid = disk::disk_guid(&seed).simple().to_string();
    let (esp_id, config_id) = (guid[..8].to_string(), guid[8..16].to_string());
    let vars = opts.out.join(format!("{}.vars.fd", opts.profile.stem()));
    pr.step("esp+config+firmware", || {
        let bp = work.join("boot-pkgs");
        let _ = fs::remove_dir_all(&bp);
        extract_plain(&deb_path(&opts.cache, &boot_pkgs.shim), &bp)?;
        extract_plain(&deb_path(&opts.cache, &boot_pkgs.grub_signed), &bp)?;
        let shim_in = bp.join("usr/lib/shim/shimx64.efi");
        let distro_grub = bp.join("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed");
        let sbat_path = work.join("sbat.csv");
        let distro_sbat =
            secureboot::sbat_text(&secureboot::pe_section(&distro_grub, ".sbat", &work)?);
        fs::write(&sbat_path, grub::sbat(&distro_sbat, &boot_pkgs.host_grub))
            .at("write", &sbat_path)?;
        let cfg_text = grub::embedded_cfg(&grub::esp_label(&esp_id), opts.profile == Profile::Prod);
        let cfgp = work.join("grub.cfg");
        fs::write(&cfgp, &cfg_text).at("write", &cfgp)?;
        let grub_raw = work.join("grubx64.unsigned.efi");
        grub::efi(&cfg_text, &boot.grub_public(), &sbat_path, &grub_raw)?;
        let grub_efi = work.join("grubx64.efi");
        boot.sign_pe(&grub_raw, &grub_efi, epoch)?;
        let shim = work.join("BOOTX64.EFI");
        boot.sign_pe(&shim_in, &shim, epoch)?;
        // The stock shim trusts its distribution's certificate by itself: revoke it in dbx so
        // nothing but the project's signatures boots.
        let vendor =
            secureboot::shim_vendor_cert(&secureboot::pe_section(&shim_in, ".vendor_cert", &work)?)
                .ok_or_else(|| Error::Parse {
                    path: shim_in.clone(),
                    msg: "no vendor certificate in .vendor_cert".into(),
                })?;
        boot.ovmf_vars(&vars, &[vendor], &work)?;
        let _ = fs::remove_dir_all(&bp);
        // The factory slot state: this build in A, proven by the build; B empty.
        let state = work.join("state.env");
        let block =
            abupdate::grubenv::serialize(&abupdate::state::Slots::factory(&opts.version).to_env())
                .map_err(|e| Error::Parse {
                    path: state.clone(),
                    msg: e.to_string(),
                })?;
        fs::write(&state, block).at("write", &state)?;
        let [env1, env2] = abupdate::esp::COPIES;
        vfat(
            &esp,
            32,
            "EFI",
            &esp_id,
            epoch,
            &[
                (&shim, "EFI/BOOT/BOOTX64.EFI"),
                (&grub_efi, "EFI/BOOT/grubx64.efi"),
                (&state, env1),
                (&state, env2),
            ],
            &["EFI", "EFI/BOOT", "EFI/eve"],
        )?;
        let readme = work.join("config-readme.txt");
        fs::write(
            &readme,
            "Drop overrides here, e.g. storage.toml; the appliance reads this partition at boot.\n",
        )
        .at("write", &readme)?;
        vfat(
            &config,
            16,
            "CONFIG",
            &config_id,
            epoch,
            &[(&readme, "README.txt")],
            &[],
        )
    })?;
    let image = opts.out.join(format!("{}.raw", opts.profile.stem()));
    pr.step("disk", || {
        let slot = opts.slot_size_mib << 20;
        let spec = |name: &str, t: &str, size: u64, c: Option<&PathBuf>| disk::PartSpec {
            name: name.into(),
            type_guid: t.into(),
            size,
            content: c.cloned(),
        };
        let specs = [
            spec(layout::EFI, disk::EFI_TYPE, 32 << 20, Some(&esp)),
            spec(layout::IMGA, disk::LINUX_TYPE, slot, Some(&slot_img)),
            spec(layout::IMGB, disk::LINUX_TYPE, slot, None),
            spec(
                layout::CONFIG,
                disk::BASIC_DATA_TYPE,
                16 << 20,
                Some(&config),
            ),
        ];
        let (parts, total) = disk::layout(&specs, &seed)?;
        disk::assemble(&image, &parts, disk::disk_guid(&seed), total)
    })?;
    let upd = opts.out.join(format!("{}.update", opts.profile.stem()));
    let upd_manifest = pr.step("update", || {
        let build = BTreeMap::from([
            ("git_revision".to_string(), git_rev.clone()),
            ("kernel".to_string(), kver.clone()),
            ("zfs".to_string(), zfs_version.clone()),
        ]);
        let info = abupdate::artifact::BuildInfo {
            security_epoch: opts.security_epoch,
            signing: signing.kind.into(),
            keys: rotation.clone(),
            build,
        };
        update::pack_slot(&slot_img, &opts.version, info, &signing.key, &upd)
    })?;
    pr.step("build-manifest", || {
        let zst = opts.out.join(format!("{}.raw.zst", opts.profile.stem()));
        cmd::run(
            cmd::ZSTD,
            &[
                std::ffi::OsStr::new("-q"),
                std::ffi::OsStr::new("-f"),
                std::ffi::OsStr::new("-T0"),
                image.as_os_str(),
                std::ffi::OsStr::new("-o"),
                zst.as_os_str(),
            ],
            None,
        )?;
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(&image).at("stat", &image)?;
        let bm = BuildManifest {
            version: opts.version.clone(),
            profile: opts.profile,
            signing: SigningInfo {
                kind: signing.kind.into(),
                key_id: signing.key.id(),
                dev_key_file: (signing.kind == "dev")
                    .then(|| signing.key_file.display().to_string()),
                trusted_keys: abupdate::trust::Trust::from_list(&trusted)
                    .map(|t| t.ids())
                    .unwrap_or_default(),
                key_serial: trusted.serial,
                security_epoch: opts.security_epoch,
                rotation_to: rotation
                    .as_ref()
                    .and_then(|r| abupdate::trust::KeyList::parse(r.list.as_bytes()).ok())
                    .map(|l| l.serial),
            },
            git_revision: git_rev.clone(),
            kernel: KernelInfo {
                package: kernel_pkg.name.clone(),
                version: kernel_pkg.version.clone(),
                release: kver.clone(),
                modules: nmods,
            },
            zfs: ZfsInfo {
                version: zfs_version.clone(),
                dkms_package: build_pkgs[0].version.clone(),
                userland_package: zfs_user.version.clone(),
            },
            cmdline: cmdline.clone(),
            onboot: m.onboot.iter().map(|e| e.name.clone()).collect(),
            services: m.services.iter().map(|e| e.name.clone()).collect(),
            packages: pkgs.clone(),
            build_packages: build_pkgs.clone(),
            image: ImageInfo {
                path: image.display().to_string(),
                sha256: sha256_file(&image)?,
                size: meta.len(),
                allocated: meta.blocks() * 512,
                compressed_path: zst.display().to_string(),
                compressed_size: fs::metadata(&zst).at("stat", &zst)?.len(),
                squashfs_size: fs::metadata(&sqfs).at("stat", &sqfs)?.len(),
                slot_size: fs::metadata(&slot_img).at("stat", &slot_img)?.len(),
                initramfs_size: fs::metadata(work.join("rootfs/boot/initrd.img"))
                    .at("stat", &work)?
                    .len(),
            },
            update: UpdateInfo {
                path: upd.display().to_string(),
                size: fs::metadata(&upd).at("stat", &upd)?.len(),
                payload_sha256: upd_manifest.payload.sha256.clone(),
            },
            secure_boot: SecureBootInfo {
                boot_keys: boot.kind.into(),
                dev_boot_keys_dir: (boot.kind == "dev").then(|| boot.dir.display().to_string()),
                ovmf_vars: vars.display().to_string(),
                shim: format!("{} {}", boot_pkgs.shim.name, boot_pkgs.shim.version),
                grub_sbat_from: format!(
                    "{} {}",
                    boot_pkgs.grub_signed.name, boot_pkgs.grub_signed.version
                ),
                verity_root_hash: descriptor.root_hash.clone(),
            },
        };
        let p = opts.out.join(format!("{}.build.json", opts.profile.stem()));
        fs::write(&p, serde_json::to_vec_pretty(&bm).unwrap_or_default()).at("write", &p)?;
        Ok(bm)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exists_in_follows_symlinks_inside_the_root_only() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::write(r.join("usr/bin/busybox"), "x").unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/busybox", r.join("usr/bin/sh")).unwrap();
        std::os::unix::fs::symlink("../bin/busybox", r.join("usr/bin/rel")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("usr/bin/hostfile")).unwrap();
        assert!(exists_in(r, "/bin/sh"));
        assert!(exists_in(r, "/usr/bin/rel"));
        assert!(
            !exists_in(r, "/usr/bin/hostfile"),
            "must not resolve against the host"
        );
        assert!(!exists_in(r, "/usr/bin/nope"));
        assert!(!exists_in(r, "/usr/bin"), "a directory is not a command");
    }

    #[test]
    fn a_production_image_refuses_the_shell_and_the_agent() {
        let cfg = manifest::parse_config(
            Path::new("packages.toml"),
            r#"
[apt]
suites = ["bookworm"]
backports = []
exclude = []
[kernel]
package = "k"
headers = "h"
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
[images."vendor/rescue"]
command = ["/bin/sh"]
console = true
"#,
        )
        .unwrap();
        let base = manifest::parse(
            Path::new("a.yml"),
            "kernel:\n  image: k\ninit: [i]\nservices:\n  - name: zed\n    image: eve-storage/zfs-tools:dev\n",
        )
        .unwrap();
        check_profile(&base, &cfg, Profile::Prod).unwrap();
        for (name, image) in [
            ("getty", "linuxkit/getty:v1.0.0"),
            ("x", "eve-storage/eve-agent:dev"),
            ("rescue", "vendor/rescue:1"),
        ] {
            let text = format!(
                "kernel:\n  image: k\ninit: [i]\nservices:\n  - name: {name}\n    image: {image}\n"
            );
            let m = manifest::parse(Path::new("a.yml"), &text).unwrap();
            let e = check_profile(&m, &cfg, Profile::Prod)
                .unwrap_err()
                .to_string();
            assert!(e.contains(name) && e.contains("dev profile"), "{e}");
            check_profile(&m, &cfg, Profile::Dev).unwrap();
        }
    }
}
