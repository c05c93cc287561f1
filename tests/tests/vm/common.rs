//! Helpers shared by the VM tests: OS variants repacked from the built one (for the tests that
//! install updates), and the image's own storage policy as a base for CONFIG overrides.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a subset

use abupdate::artifact::BuildInfo;
use abupdate::release::Release;
use abupdate::trust::Signer25519;
use eve_vmtest::{dev_signing_key, image_path};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The update artifact `make dev-image` wrote next to the disk image.
pub fn built_update() -> PathBuf {
    image_path().with_extension("update")
}

/// The development key the image trusts (the build made it in its cache).
pub fn dev_key() -> Signer25519 {
    imgbuild::keys::load(&dev_signing_key(&image_path())).unwrap()
}

/// The development key `image` was signed with.
pub fn dev_key_of(image: &Path) -> Signer25519 {
    imgbuild::keys::load(&dev_signing_key(image)).unwrap()
}

pub fn info(epoch: u32) -> BuildInfo {
    BuildInfo {
        security_epoch: epoch,
        signing: "dev".into(),
        profile: "dev".into(),
        ..Default::default()
    }
}

/// The built OS repacked under another version (its release facts say so too), after `edit`
/// changes its root tree, signed by `key` with `info`.
pub fn variant_with(
    dir: &Path,
    version: &str,
    key: &Signer25519,
    info: BuildInfo,
    edit: impl FnOnce(&Path),
) -> PathBuf {
    variant_of(&built_update(), dir, version, key, info, edit)
}

/// [`variant_with`] from the update artifact `base` (the production image's, say).
pub fn variant_of(
    base: &Path,
    dir: &Path,
    version: &str,
    key: &Signer25519,
    info: BuildInfo,
    edit: impl FnOnce(&Path),
) -> PathBuf {
    let art = std::fs::read(base).unwrap();
    let sq = dir.join(format!("{version}.squashfs"));
    std::fs::write(&sq, &art[abupdate::artifact::PAYLOAD_OFFSET as usize..]).unwrap();
    let root = dir.join(format!("{version}.root"));
    unsquash(&sq, &root);
    std::fs::write(
        root.join("etc/eve-release"),
        format!("eve-storage {version}\n"),
    )
    .unwrap();
    let rp = root.join("etc").join(abupdate::release::RELEASE);
    let mut rel: Release = serde_json::from_slice(&std::fs::read(&rp).unwrap()).unwrap();
    rel.version = version.into();
    rel.security_epoch = info.security_epoch;
    std::fs::write(&rp, serde_json::to_vec_pretty(&rel).unwrap()).unwrap();
    loader_for_epoch(&root, info.security_epoch);
    edit(&root);
    imgbuild::update::squash_quick(&root, &sq).unwrap();
    let out = dir.join(format!("{version}.update"));
    imgbuild::update::pack(&sq, version, info, key, &out).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_file(&sq).unwrap();
    out
}

/// The tree's boot loader as a build of security epoch `epoch` makes it: the build writes the
/// epoch into GRUB's embedded config (`eve.bootepoch=`) and its SBAT generation (epoch + 1), and
/// those bytes are all that differ between GRUBs built with one key set; they are rewritten here
/// (same length) and the binary is signed again with the image's development db key.
pub fn loader_for_epoch(root: &Path, epoch: u32) {
    let p = root
        .join("usr")
        .join(abupdate::loader::IN_USR)
        .join("grubx64.efi");
    let b = std::fs::read(&p).unwrap();
    let cur = platform::rollback::loader_epoch_in(&b).unwrap();
    if cur == epoch {
        return;
    }
    assert!(cur < 9 && epoch < 9, "single digits keep the length");
    let swap = |b: Vec<u8>, from: String, to: String| {
        let (from, to) = (from.into_bytes(), to.into_bytes());
        let at: Vec<usize> = (0..=b.len() - from.len())
            .filter(|i| b[*i..].starts_with(&from))
            .collect();
        assert_eq!(at.len(), 1, "{}", String::from_utf8_lossy(&from));
        let mut b = b;
        b[at[0]..at[0] + to.len()].copy_from_slice(&to);
        b
    };
    let b = swap(
        b,
        format!("eve.bootepoch={cur} "),
        format!("eve.bootepoch={epoch} "),
    );
    let b = swap(
        b,
        format!("grub.eve-storage,{},", cur + 1),
        format!("grub.eve-storage,{},", epoch + 1),
    );
    let unsigned = root.join("grubx64.patched");
    std::fs::write(&unsigned, b).unwrap();
    let m = eve_vmtest::build_manifest(&image_path());
    let keys = m["secure_boot"]["dev_boot_keys_dir"].as_str().unwrap();
    imgbuild::secureboot::BootKeys::open(Path::new(keys), "dev")
        .unwrap()
        .sign_pe(&unsigned, &p, 0)
        .unwrap();
    std::fs::remove_file(&unsigned).unwrap();
    assert_eq!(
        platform::rollback::loader_epoch_in(&std::fs::read(&p).unwrap()),
        Some(epoch)
    );
}

/// The tree as a build made after a key rotation makes it: `list` is the update-key list built in,
/// in the image's release facts and in the initramfs (appended as a second cpio archive, whose
/// file replaces the first one's when the kernel unpacks them), and the boot files are signed
/// again with the image's development boot keys, as the build signs them.
pub fn builtin_keys(root: &Path, list: &abupdate::trust::KeyList) {
    let rp = root.join("etc").join(abupdate::release::RELEASE);
    let mut rel: Release = serde_json::from_slice(&std::fs::read(&rp).unwrap()).unwrap();
    rel.update_keys = list.clone();
    std::fs::write(&rp, serde_json::to_vec_pretty(&rel).unwrap()).unwrap();
    let initrd = root.join("boot/initrd.img");
    let out = Command::new("zstd")
        .args(["-q", "-d", "-c"])
        .arg(&initrd)
        .output()
        .unwrap();
    assert!(out.status.success(), "zstd -d {}", initrd.display());
    let mut cpio = out.stdout;
    // Zero bytes between archives are skipped; the next one starts aligned.
    cpio.resize(cpio.len().div_ceil(512) * 512, 0);
    let mut t = imgbuild::cpio::Tree::default();
    t.insert(
        "etc/eve/boot-keys.json",
        imgbuild::cpio::Node::File {
            data: serde_json::to_vec_pretty(list).unwrap(),
            mode: 0o644,
        },
    );
    let cpio = t.write(cpio).unwrap();
    let raw = root.join("initrd.cpio");
    std::fs::write(&raw, cpio).unwrap();
    let st = Command::new("zstd")
        .args(["-q", "-f", "-3"])
        .arg(&raw)
        .arg("-o")
        .arg(&initrd)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(&raw).unwrap();
    let m = eve_vmtest::build_manifest(&image_path());
    let keys = m["secure_boot"]["dev_boot_keys_dir"].as_str().unwrap();
    imgbuild::build::sign_boot_files(Path::new(keys), root).unwrap();
}

/// The tree as a build with `REVOKE_LOADERS=<files>` makes it: a dbx append revoking `files`,
/// signed with the image's development KEK, beside its boot loader.
pub fn revoke_loaders(root: &Path, files: &[PathBuf]) {
    let m = eve_vmtest::build_manifest(&image_path());
    let keys = m["secure_boot"]["dev_boot_keys_dir"].as_str().unwrap();
    let boot = imgbuild::secureboot::BootKeys::open(Path::new(keys), "dev").unwrap();
    let dir = root.join("usr").join(abupdate::loader::IN_USR);
    let ours = [dir.join("grubx64.efi"), dir.join("BOOTX64.EFI")];
    let work = root.join("revoke-work");
    std::fs::create_dir_all(&work).unwrap();
    let release: Release = serde_json::from_slice(
        &std::fs::read(root.join("etc").join(abupdate::release::RELEASE)).unwrap(),
    )
    .unwrap();
    imgbuild::step::esp::revoke(
        &boot,
        files,
        &[&ours[0], &ours[1]],
        release.security_epoch,
        0,
        &work,
        &dir,
    )
    .unwrap();
    std::fs::remove_dir_all(&work).unwrap();
    assert!(root.join("usr").join(platform::efisig::CARRIED).is_file());
}

/// Unpacks the squashfs `sq` (a slot image: trailing verity data is ignored) into a fresh `root`.
pub fn unsquash(sq: &Path, root: &Path) {
    let _ = std::fs::remove_dir_all(root);
    let st = Command::new("/usr/bin/unsquashfs")
        .args(["-q", "-no-progress", "-d"])
        .arg(root)
        .arg(sq)
        .status()
        .unwrap();
    assert!(st.success(), "unsquashfs {}", sq.display());
}

/// Variants carry security epoch 1, above the built image's 0.
pub fn variant(dir: &Path, version: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    variant_with(dir, version, &dev_key(), info(1), edit)
}

/// The policy the image ships, as the base for CONFIG overrides.
pub fn image_policy() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs/etc/storage.toml"),
    )
    .unwrap()
}

/// A sparse copy of the built image `src` at `out`, with the enrolled firmware variables beside it.
pub fn copy_image(src: &Path, out: &Path) {
    let st = Command::new("/bin/cp")
        .args(["--sparse=always"])
        .arg(src)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::copy(
        eve_vmtest::secure_boot_vars(src),
        eve_vmtest::secure_boot_vars(out),
    )
    .unwrap();
}

/// The recovery key from the banner storage-init writes on the console, if this boot showed one.
pub fn recovery_key(console: &str) -> Option<String> {
    let at = console.find("VAULT RECOVERY KEY")?;
    console[at..]
        .split_whitespace()
        .find(|w| {
            w.len() == 71
                && w.split('-').count() == 8
                && w.bytes()
                    .all(|b| b == b'-' || b"cbdefghijklnrtuv".contains(&b))
        })
        .map(String::from)
}

/// The attacker's TPM tool, stripped, in the guest at /run/probe.
pub fn copy_probe(m: &mut eve_vmtest::Machine, dir: &Path) {
    let out = dir.join("eve-tpm-probe");
    let st = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(PathBuf::from(env!("CARGO_BIN_EXE_eve-tpm-probe")))
        .status()
        .unwrap();
    assert!(st.success());
    m.copy_in(&out, "/run/probe").unwrap();
    m.ok("chmod 755 /run/probe").unwrap();
}

/// `storagectl vault recover` with `rk` typed on its stdin.
pub fn recover(m: &mut eve_vmtest::Machine, rk: &str) -> eve_vmtest::Output {
    m.exec_argv(
        &["/usr/bin/storagectl", "vault", "recover"],
        format!("{rk}\n").as_bytes(),
        std::time::Duration::from_secs(120),
    )
    .unwrap()
}

/// `storagectl status|health ...` as a script runs it: its exit code, which must be one a report
/// ends with (0 all well, 5 vault locked, 6 pool not imported, 7 degraded), and its output.
/// With `--json`, the JSON's own `exit_code` must be the same.
pub fn report(m: &mut eve_vmtest::Machine, cmd: &str) -> (i32, String) {
    let o = m.sh(cmd).unwrap();
    assert!(matches!(o.status, 0 | 5 | 6 | 7), "{cmd}: {o:?}");
    if cmd.contains("--json") {
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["exit_code"], o.status, "{cmd}: {v}");
    }
    (o.status, o.stdout)
}
