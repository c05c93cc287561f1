//! The build: manifest -> resolved packages -> cached downloads and ZFS modules -> rootfs ->
//! initramfs -> squashfs slot -> ESP -> GPT image -> build manifest, each step a module under
//! `step/`. `build` runs them in order; each reports progress on stderr and a failure names the
//! step and, through the error chain, the command.

use crate::apt::{Package, Policy};
use crate::context::{deb_path, extract_plain, tempfile_dir, Options, Profile};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Config, Manifest};
use crate::secureboot::BootKeys;
use crate::step::rootfs::{build_rootfs, work_dir, KernelParts, KernelSigner};
use crate::step::{self, fetch::fetch, resolve::Resolved, zfs_modules::zfs_modules};
use crate::{cmd, disk, grub, keys, update, workspace};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

pub fn build(opts: &Options) -> Result<crate::record::BuildManifest> {
    let mut pr = Progress {
        n: 0,
        total: 11,
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
    let signing = keys::for_build(
        opts.signing_key.as_deref(),
        opts.release,
        &opts.cache,
        opts.profile,
    )?;
    let trusted = keys::trusted(&signing, &opts.trusted_keys, opts.key_serial)?;
    let rotation = opts
        .rotation
        .as_deref()
        .map(keys::read_rotation)
        .transpose()?;
    let boot = BootKeys::for_build(
        opts.boot_keys.as_deref(),
        opts.release,
        &opts.cache,
        opts.profile,
    )?;
    let mgmt = crate::mgmtca::MgmtCa::for_build(
        opts.mgmt_ca.as_deref(),
        opts.release,
        &opts.cache,
        opts.profile,
    )?;
    let keys = step::Keys {
        signing: &signing,
        trusted: &trusted,
        rotation: rotation.as_ref(),
        boot: &boot,
        mgmt: &mgmt,
    };
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
    let r = pr.step("resolve", || {
        step::resolve::resolve(opts, &m, &cfg, &policy)
    })?;
    let Resolved {
        pkgs,
        build_pkgs,
        kver,
        zfs_version,
        boot_pkgs,
        ..
    } = &r;
    pr.step("fetch", || {
        fetch(opts, pkgs)
            .and_then(|_| fetch(opts, build_pkgs))
            .and_then(|_| {
                fetch(
                    opts,
                    &[boot_pkgs.shim.clone(), boot_pkgs.grub_signed.clone()],
                )
            })
    })?;
    let zfs_dir = pr.step("zfs-modules", || {
        zfs_modules(opts, kver, zfs_version, build_pkgs)
    })?;
    let epoch = source_date_epoch(&opts.repo);
    let signer = KernelSigner {
        keys: boot.clone(),
        sign_file: kbuild_sign_file(opts, build_pkgs)?,
        epoch,
    };
    let nmods = pr.step("rootfs+initramfs", || {
        let k = KernelParts {
            release: kver,
            zfs_dir: &zfs_dir,
            signer: &signer,
        };
        let n = build_rootfs(opts, &m, &cfg, pkgs, &k, &release)?;
        // The operator CAs, on the verified root: only a signed update changes them.
        let root = work_dir(opts).join("rootfs");
        step::rootfs::write(&root, crate::mgmtca::ADMIN_CA, &mgmt.admin_pem)?;
        step::rootfs::write(&root, crate::mgmtca::READER_CA, &mgmt.reader_pem)?;
        for o in &opts.overlays {
            step::rootfs::overlay(o, &root)?;
        }
        Ok(n)
    })?;
    let work = work_dir(opts);
    let sqfs = work.join("slot.squashfs");
    let slot_img = work.join("slot.img");
    let cmdline = m
        .kernel
        .as_ref()
        .map(|k| k.cmdline.clone())
        .unwrap_or_default();
    let esp_id = step::esp::esp_id(&boot)?;
    let loader = pr.step("bootloader", || {
        step::esp::bootloader(
            opts,
            &work,
            &work.join("rootfs"),
            &boot,
            boot_pkgs,
            epoch,
            &esp_id,
        )
    })?;
    let descriptor = pr.step("sign+squashfs+verity", || {
        step::slot::slot(opts, &work, &keys, &cmdline, epoch, (&sqfs, &slot_img))
    })?;
    let (esp, config) = (work.join("esp.img"), work.join("config.img"));
    let git_rev = git_revision(&opts.repo);
    let seed = format!("{}/{}/{git_rev}", opts.version, opts.profile.name());
    let guid = disk::disk_guid(&seed).simple().to_string();
    let config_id = guid[8..16].to_string();
    let vars = opts.out.join(format!("{}.vars.fd", opts.profile.stem()));
    pr.step("esp+config+firmware", || {
        let out = step::esp::Outputs {
            esp: &esp,
            esp_id: &esp_id,
            config: &config,
            config_id: &config_id,
            vars: &vars,
        };
        step::esp::esp_config_firmware(opts, &work, &boot, &loader, epoch, &out)
    })?;
    let image = opts.out.join(format!("{}.raw", opts.profile.stem()));
    pr.step("disk", || {
        step::image::disk_image(opts, &seed, &esp, &slot_img, &config, &image)
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
            profile: opts.profile.name().into(),
            keys: rotation.clone(),
            key_chain: Vec::new(),
            build,
        };
        update::pack_slot(&slot_img, &opts.version, info, &signing.key, &upd)
    })?;
    pr.step("build-manifest", || {
        let made = step::record::Made {
            image: &image,
            work: &work,
            sqfs: &sqfs,
            slot_img: &slot_img,
            upd: &upd,
            vars: &vars,
            git_rev: &git_rev,
            cmdline: &cmdline,
            nmods,
            descriptor: &descriptor,
            upd_manifest: &upd_manifest,
        };
        step::record::record(opts, &m, &r, &keys, &made)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
