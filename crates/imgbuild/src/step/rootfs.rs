//! Step "rootfs+initramfs": the root filesystem from the resolved packages (merged /usr, docs and
//! init scripts dropped), the workspace's binaries, the LinuxKit bundles and files, the kernel's
//! modules with ours signed, and the initramfs holding stage 1.

use crate::apt::Package;
use crate::context::*;
use crate::cpio::{Node, Tree};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Config, Manifest};
use crate::secureboot::BootKeys;
use crate::{cmd, kmod, rootfs};
use eve_init::bundle;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What signs the kernel and its out-of-tree modules.
#[derive(Debug)]
pub(crate) struct KernelSigner {
    pub(crate) keys: BootKeys,
    /// The kernel's `sign-file`, from the linux-kbuild package of the same kernel.
    pub(crate) sign_file: PathBuf,
    pub(crate) epoch: u64,
}

/// The kernel release, its ZFS modules and what signs them.
#[derive(Debug)]
pub(crate) struct KernelParts<'a> {
    pub(crate) release: &'a str,
    pub(crate) zfs_dir: &'a Path,
    pub(crate) signer: &'a KernelSigner,
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

pub(crate) fn write(root: &Path, rel: &str, data: impl AsRef<[u8]>) -> Result<()> {
    let p = root.join(rel.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).at("mkdir", d)?;
    }
    Ok(fs::write(&p, data).at("write", &p)?)
}

/// Where an overlay may put files: documentation and completions, nothing the box runs or
/// trusts (an overlay can never replace a CA, a binary or a configuration).
const OVERLAY_UNDER: &[&str] = &[
    "usr/share/man/",
    "usr/share/bash-completion/",
    "usr/share/zsh/",
    "usr/share/fish/",
];

/// Copies the tree `from` into `root`: directories and regular files only (a symlink or a
/// device in an overlay is an error naming it, never followed), only under [`OVERLAY_UNDER`],
/// never over a file the root has, never through a symlink of the root.
pub(crate) fn overlay(from: &Path, root: &Path) -> Result<()> {
    fn walk(dir: &Path, base: &Path, root: &Path) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .at("read", dir)?
            .collect::<std::io::Result<_>>()
            .at("read", dir)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let t = e.file_type().at("stat", &p)?;
            let rel = p
                .strip_prefix(base)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if t.is_dir() {
                walk(&p, base, root)?;
            } else if t.is_file() {
                let refuse = |msg: &str| crate::error::Error::Manifest {
                    path: p.clone(),
                    msg: msg.into(),
                };
                if !OVERLAY_UNDER.iter().any(|u| rel.starts_with(u)) {
                    return Err(refuse(
                        "an overlay holds only man pages and shell completions (usr/share/...)",
                    ));
                }
                let target = root.join(&rel);
                if target.symlink_metadata().is_ok() {
                    return Err(refuse(
                        "the image has this file already; an overlay adds, never replaces",
                    ));
                }
                if target.ancestors().take_while(|a| *a != root).any(|a| {
                    a.symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink())
                }) {
                    return Err(refuse("a folder on its way is a symlink in the image"));
                }
                write(root, &rel, fs::read(&p).at("read", &p)?)?;
            } else {
                return Err(crate::error::Error::Manifest {
                    path: p.clone(),
                    msg: "an overlay holds only directories and regular files".into(),
                });
            }
        }
        Ok(())
    }
    walk(from, from, root)
}

pub(crate) fn symlink(target: &str, root: &Path, rel: &str) -> Result<()> {
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
pub(crate) fn work_dir(opts: &Options) -> PathBuf {
    opts.out.join(format!("work-{}", opts.profile.name()))
}

/// Builds the root filesystem under the work directory and the initramfs in its /boot; returns
/// how many kernel modules the root carries.
pub(crate) fn build_rootfs(
    opts: &Options,
    m: &Manifest,
    cfg: &Config,
    pkgs: &[Package],
    kernel: &KernelParts,
    release: &abupdate::release::Release,
) -> Result<usize> {
    let root = work_dir(opts).join("rootfs");
    if root.exists() {
        fs::remove_dir_all(&root).at("clean", &root)?;
    }
    skeleton(&root)?;
    let (kernel_pkgs, others): (Vec<&Package>, Vec<&Package>) = pkgs
        .iter()
        .partition(|p| p.name.starts_with("linux-image-"));
    unpack_packages(opts, &others, &root)?;
    let (modules, initramfs_modules) = kernel_and_modules(opts, cfg, &kernel_pkgs, kernel, &root)?;
    busybox_applets(&root)?;
    workspace_binaries(opts, m, cfg, &root)?;
    symlink("/usr/bin/eve-init", &root, "usr/sbin/init")?;
    base_etc(opts, release, &root)?;
    manifest_files(m, &root)?;
    bundles(m, cfg, &root)?;
    cmd::run(
        cmd::LDCONFIG,
        &[std::ffi::OsStr::new("-r"), root.as_os_str()],
        None,
    )?;
    initramfs(opts, release, initramfs_modules, &root)?;
    Ok(modules)
}

/// The merged-/usr skeleton.
fn skeleton(root: &Path) -> Result<()> {
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
        symlink(t, root, l)?;
    }
    Ok(())
}

/// Every package but the kernel, unpacked into `root` with a progress bar.
fn unpack_packages(opts: &Options, pkgs: &[&Package], root: &Path) -> Result<()> {
    let b = bar(pkgs.len() as u64, "unpack");
    for p in pkgs {
        unpack_deb(&deb_path(&opts.cache, p), root)?;
        b.inc(1);
    }
    b.finish_and_clear();
    Ok(())
}

/// The kernel unpacked aside: vmlinuz signed into /boot, the configured module closure and our
/// signed ZFS modules into the root. Returns the root's module count and the initramfs's
/// modules (decompressed) with their load order.
fn kernel_and_modules(
    opts: &Options,
    cfg: &Config,
    kernel_pkgs: &[&Package],
    kernel: &KernelParts,
    root: &Path,
) -> Result<(usize, (Tree, String))> {
    let (kver, zfs_dir, signer) = (kernel.release, kernel.zfs_dir, kernel.signer);
    let kdir = tempfile_dir(&work_dir(opts), "kernel")?;
    for p in kernel_pkgs {
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
    Ok((closure.len() + 2, (tree, order)))
}

/// Busybox applets where no real tool exists.
fn busybox_applets(root: &Path) -> Result<()> {
    let bb = root.join("usr/bin/busybox");
    let list = cmd::run(bb.to_string_lossy().as_ref(), &["--list-full"], None)?;
    for applet in String::from_utf8_lossy(&list).lines() {
        let Some(rel) = rootfs::map_path(applet) else {
            continue;
        };
        if root.join(&rel).symlink_metadata().is_err() {
            symlink("/usr/bin/busybox", root, &rel)?;
        }
    }
    Ok(())
}

/// The workspace binaries of every image the manifests use.
fn workspace_binaries(opts: &Options, m: &Manifest, cfg: &Config, root: &Path) -> Result<()> {
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
    Ok(())
}

/// Base /etc the packages' maintainer scripts would have made, and the release the image is.
fn base_etc(opts: &Options, release: &abupdate::release::Release, root: &Path) -> Result<()> {
    write(root, "etc/passwd", PASSWD)?;
    write(root, "etc/group", GROUP)?;
    // dev: root with no password on the console shell; prod: root cannot log in at all.
    let shadow = match opts.profile {
        Profile::Dev => "root::0:0:99999:7:::\n",
        Profile::Prod => "root:!*:0:0:99999:7:::\n",
    };
    write(root, "etc/shadow", shadow)?;
    write(
        root,
        &format!("etc/{}", abupdate::release::RELEASE),
        serde_json::to_vec_pretty(release).unwrap_or_default(),
    )?;
    write(root, "etc/hostname", "eve-storage\n")?;
    write(
        root,
        "etc/hosts",
        "127.0.0.1 localhost eve-storage\n::1 localhost\n",
    )?;
    write(root, "etc/profile", PROFILE)?;
    write(root, "etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n")?;
    write(
        root,
        "etc/os-release",
        format!(
            "NAME=\"EVE storage\"\nID=eve-storage\nVERSION_ID={}\nPRETTY_NAME=\"EVE storage {}\"\n",
            opts.version, opts.version
        ),
    )?;
    symlink("../proc/self/mounts", root, "etc/mtab")?;
    Ok(())
}

/// The initramfs: eve-init (static), the drivers to reach the slot in load order, and the keys
/// stage 1 checks the slot's verity descriptor with; zstd-compressed into the root's /boot.
fn initramfs(
    opts: &Options,
    release: &abupdate::release::Release,
    (mut tree, order): (Tree, String),
    root: &Path,
) -> Result<()> {
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
    // The profile stage 1 boots: a production initramfs refuses a development slot.
    tree.insert(
        eve_init::verity::PROFILE,
        Node::File {
            data: release.profile.clone().into_bytes(),
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_copies_files_and_refuses_links() {
        let d = tempfile::tempdir().unwrap();
        let (from, root) = (d.path().join("o"), d.path().join("r"));
        fs::create_dir_all(from.join("usr/share/man/man1")).unwrap();
        fs::write(from.join("usr/share/man/man1/x.1"), ".TH X").unwrap();
        overlay(&from, &root).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("usr/share/man/man1/x.1")).unwrap(),
            ".TH X"
        );
        // Twice: the file is there now, and an overlay never replaces.
        let e = overlay(&from, &root).unwrap_err().to_string();
        assert!(e.contains("never replaces"), "{e}");
        fs::remove_file(from.join("usr/share/man/man1/x.1")).unwrap();
        // Nothing outside the documentation folders: not a CA, not a binary.
        let ca = d.path().join("o2");
        fs::create_dir_all(ca.join("etc/eve/mgmt")).unwrap();
        fs::write(ca.join("etc/eve/mgmt/admin-ca.pem"), "x").unwrap();
        let e = overlay(&ca, &root).unwrap_err().to_string();
        assert!(e.contains("only man pages"), "{e}");
        std::os::unix::fs::symlink("/etc/shadow", from.join("usr/evil")).unwrap();
        let e = overlay(&from, &root).unwrap_err().to_string();
        assert!(e.contains("usr/evil") && e.contains("regular files"), "{e}");
        assert!(!root.join("usr/evil").exists());
    }

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
}
