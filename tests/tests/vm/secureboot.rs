//! VM tests for the verified boot chain under OVMF's Secure Boot build with the project's keys
//! enrolled: a vault sealed while Secure Boot was off is not trusted once it is on until the
//! recovery key re-seals it to PCR 7, a signed update keeps unlocking it, and one that revokes
//! the older GRUB through a KEK-signed dbx append has the firmware refuse that GRUB while the
//! vault keeps opening (its seal made for the new PCR 7 first),
//! Secure Boot off, or another key enrolled beside ours, locks it without destroying anything,
//! and the recovery key unlocks it on a fresh TPM; a slot whose kernel, initrd, GRUB config or
//! squashfs was changed is refused and the box boots the other slot, or stops with the reason
//! when there is none.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with context on failure

use crate::common::{copy_image, recover, recovery_key, revoke_loaders, variant};
use abupdate::state::{SlotInfo, Slots, State};
use eve_vmtest::{
    build_manifest, image_path, partition_of, test_dir, BootTimes, DiskKind, DiskSpec, Machine,
    MachineSpec,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn storage_status(m: &mut Machine) -> Value {
    serde_json::from_str(&crate::common::report(m, "storagectl status --json").1).unwrap()
}

fn ab_status(m: &mut Machine) -> Value {
    serde_json::from_str(&m.ok("abupdate status --json").unwrap()).unwrap()
}

fn keystatus(m: &mut Machine) -> String {
    m.ok("zfs get -H -o value keystatus persist/vault")
        .unwrap()
        .trim()
        .to_string()
}

/// stage 1's "verified: N MiB ... in X s" line.
fn verity_line(console: &str) -> String {
    console
        .lines()
        .find(|l| l.contains("stage 1: slot") && l.contains("verified"))
        .unwrap_or("(no verity line)")
        .trim()
        .to_string()
}

fn datasets(m: &mut Machine) -> String {
    m.ok("zfs list -H -o name,guid -t all -r persist").unwrap()
}

/// The image's firmware variables with one more db certificate, someone else's.
fn other_keys_vars(dir: &Path) -> PathBuf {
    let (key, crt) = (dir.join("other.key"), dir.join("other.crt"));
    let st = Command::new("/usr/bin/openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=someone else/", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let out = dir.join("other.vars.fd");
    let _ = std::fs::remove_file(&out);
    let st = Command::new("/usr/bin/virt-fw-vars")
        .arg("-i")
        .arg(eve_vmtest::secure_boot_vars(&image_path()))
        .args(["--add-db", "11111111-2222-3333-4444-555555555555"])
        .arg(&crt)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    out
}

const ESP: &str = "mkdir -p /run/esp && mount -t vfat /dev/disk/by-partlabel/EFI /run/esp";
const DBX_SUM: &str =
    "sha256sum /sys/firmware/efi/efivars/dbx-d719b2cb-3d3a-4596-a3bc-dad00e67656f";

fn sealed_key(m: &mut Machine) -> String {
    m.ok("zfs get -H -o value org.lfedge.eve:sealed-key persist/vault")
        .unwrap()
        .trim()
        .to_string()
}

/// Waits until the running slot is good, the ESP holds its boot loader and ab-health's steps
/// after that are over.
fn wait_boot_jobs(m: &mut Machine) {
    let start = Instant::now();
    loop {
        let out = m.ok("abupdate bootloader --dry-run --json").unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        // ab-health is a one-shot service: init says when its last step is over. (Matching its
        // shell's command line broke once that line changed, and then raced the dbx step.)
        let st: Value = serde_json::from_str(&m.ok("eve-init status --json").unwrap()).unwrap();
        let busy = st["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "ab-health")
            .is_none_or(|s| s["state"] != "exited");
        if v["action"] == "current" && !busy {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "waiting for ab-health: {out}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn times(what: &str, t: BootTimes) -> String {
    format!(
        "{what}: {:.1} s to init, {:.1} s to the agent",
        t.to_init.as_secs_f32(),
        t.to_agent.as_secs_f32()
    )
}

#[test]
fn the_vault_follows_secure_boot_through_a_tpm_swap_recovery_and_a_signed_update() {
    let _dir = eve_vmtest::scratch("sb-vault");
    let dir = test_dir("sb-vault");
    std::fs::create_dir_all(&dir).unwrap();
    let mut spec = MachineSpec::new("sb-vault", &image_path());
    spec.disks = vec![DiskSpec::blank(DiskKind::Nvme, 2048, "DATA1")];
    spec.secure_boot = false;
    let mut m = Machine::create(spec, &dir.join("vm")).unwrap();
    let mut report = Vec::new();

    // 1. First boot without Secure Boot: the key is sealed to the TPM alone (under the parent
    //    anyone holding the TPM can use), the recovery key shown once.
    let t = m.boot_timed().unwrap();
    report.push(times("Secure Boot off", t));
    report.push(format!("  {}", verity_line(&m.console())));
    let rk = recovery_key(&m.console()).expect("a recovery key on the first boot's console");
    let st = storage_status(&mut m);
    // Stock firmware variables have no platform key: setup mode, nothing enforced.
    assert_eq!(st["boot"]["secure_boot"], "setup-mode", "{st:#}");
    assert_eq!(st["boot"]["pcrs"], serde_json::json!([]), "{st:#}");
    m.ok("echo sealed-the-old-way > /persist/config/sb-marker && sync")
        .unwrap();
    let before = datasets(&mut m);
    m.poweroff().unwrap();

    // 2. Secure Boot on, the project's keys enrolled: a seal made while Secure Boot was off could
    //    have been made by anyone holding the TPM, so it is not trusted and nothing is re-sealed
    //    or made behind the operator's back. The recovery key unlocks and seals to PCR 7.
    m.set_secure_boot(true).unwrap();
    let t = m.boot_timed().unwrap();
    report.push(times("Secure Boot on", t));
    let console = m.console();
    report.push(format!("  {}", verity_line(&console)));
    assert!(
        console.contains("VAULT REFUSED: persist/vault: its key is sealed to this TPM only")
            && console.contains("not trusted"),
        "{console}"
    );
    assert!(
        recovery_key(&console).is_none(),
        "a recovery key was made at boot"
    );
    assert_eq!(keystatus(&mut m), "unavailable");
    assert_eq!(datasets(&mut m), before, "nothing created or destroyed");
    let out = recover(&mut m, &rk);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("PCR 7"), "{out:?}");
    assert_eq!(keystatus(&mut m), "available");
    let st = storage_status(&mut m);
    assert_eq!(st["boot"]["secure_boot"], "on", "{st:#}");
    assert_eq!(st["boot"]["pcrs"], serde_json::json!([7]), "{st:#}");
    assert_eq!(st["boot"]["recovery_key"], true);
    assert_eq!(st["vault"]["state"], "unlocked");
    let (_, text) = crate::common::report(&mut m, "storagectl status");
    assert!(text.contains("secure boot: on\n"), "{text}");
    assert!(
        text.contains(
            "key sealed to this TPM and PCR 7 (Secure Boot state and keys); recovery key: set"
        ),
        "{text}"
    );
    let ab = m.ok("abupdate status").unwrap();
    assert!(
        ab.contains("secure boot: on; persist/vault unlocked, key sealed to this TPM and PCR 7"),
        "{ab}"
    );
    // The kernel is locked down and still loads the project's signed ZFS modules.
    assert!(m
        .ok("cat /sys/kernel/security/lockdown")
        .unwrap()
        .contains("[integrity]"));
    assert!(m
        .ok("cat /sys/module/zfs/version")
        .unwrap()
        .starts_with("2."));
    assert_eq!(
        m.ok("cat /persist/config/sb-marker").unwrap(),
        "sealed-the-old-way\n"
    );
    // Shown once on the console, never written to a log.
    let grep = m
        .sh(&format!(
            "grep -rlF '{rk}' /run/log /persist/log /persist/config"
        ))
        .unwrap();
    assert_eq!(grep.status, 1, "the recovery key is in a file: {grep:?}");
    m.poweroff().unwrap();

    // 3. Secure Boot off: the vault stays locked and nothing is destroyed.
    m.set_secure_boot(false).unwrap();
    m.boot().unwrap();
    assert_eq!(keystatus(&mut m), "unavailable");
    let st = storage_status(&mut m);
    assert_eq!(st["vault"]["state"], "locked", "{st:#}");
    assert!(m.sh("cat /persist/config/sb-marker").unwrap().status != 0);
    assert_eq!(datasets(&mut m), before, "nothing created or destroyed");
    assert!(m.console().contains("VAULT LOCKED: persist/vault"));
    assert!(m
        .ok("abupdate status")
        .unwrap()
        .contains("secure boot: off (setup mode: no platform key enrolled); persist/vault locked"));
    m.poweroff().unwrap();

    // 3b. Secure Boot on, but the firmware holds another key besides ours (someone enrolled their
    //     own db entry): the box still boots (our key is there) and PCR 7 differs: locked.
    m.set_secure_boot(true).unwrap();
    m.set_secure_boot_vars(&other_keys_vars(&dir)).unwrap();
    m.boot().unwrap();
    assert_eq!(keystatus(&mut m), "unavailable");
    assert_eq!(storage_status(&mut m)["boot"]["secure_boot"], "on");
    assert_eq!(datasets(&mut m), before, "nothing created or destroyed");
    m.poweroff().unwrap();

    // 4. Back with Secure Boot on and the project's keys only: unlocks.
    m.restore_secure_boot_vars().unwrap();
    m.boot().unwrap();
    assert_eq!(keystatus(&mut m), "available");
    assert_eq!(
        m.ok("cat /persist/config/sb-marker").unwrap(),
        "sealed-the-old-way\n"
    );
    m.poweroff().unwrap();

    // 5. A new board (a fresh TPM): locked; a wrong recovery key is refused, the shown one
    //    unlocks and seals the key to this TPM.
    m.stash_tpm("original").unwrap();
    m.boot().unwrap();
    assert_eq!(keystatus(&mut m), "unavailable");
    // Another key of the same shape: its first letter changed.
    let first = if rk.starts_with('c') { "d" } else { "c" };
    let wrong = format!("{first}{}", &rk[1..]);
    let out = recover(&mut m, &wrong);
    assert_eq!(out.status, 4, "refused: {out:?}");
    assert!(out.stderr.contains("does not open this vault"), "{out:?}");
    assert_eq!(keystatus(&mut m), "unavailable");
    let out = recover(&mut m, &rk);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("unlocked with the recovery key") && out.stdout.contains("PCR 7"),
        "{out:?}"
    );
    assert_eq!(keystatus(&mut m), "available");
    assert_eq!(
        m.ok("cat /persist/config/sb-marker").unwrap(),
        "sealed-the-old-way\n"
    );

    // 6. A signed update to v2, booted under Secure Boot on the new TPM: the vault unlocks by
    //    itself (PCR 7 does not change with a signed update). v2 revokes v1's boot loader (say
    //    its GRUB had a hole) by a dbx append signed with the KEK.
    let v1_grub = dir.join("v1-grubx64.efi");
    m.ok(&format!(
        "{ESP} && cp /run/esp/EFI/BOOT/grubx64.efi /run/v1-grub.efi && umount /run/esp"
    ))
    .unwrap();
    let dbx_before = m.ok(DBX_SUM).unwrap();
    m.copy_out("/run/v1-grub.efi", &v1_grub).unwrap();
    let v2 = variant(&dir, "v2", |root| {
        revoke_loaders(root, std::slice::from_ref(&v1_grub))
    });
    m.copy_in(&v2, "/run/v2.update").unwrap();
    let out = m.sh("abupdate install /run/v2.update").unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    m.reboot().unwrap();
    let st = ab_status(&mut m);
    assert_eq!(st["running"], "B", "{st:#}");
    let running_version = m.ok("cat /etc/eve-release").unwrap();
    assert_eq!(running_version, "eve-storage v2\n");
    assert!(verity_line(&m.console()).contains("of version v2"));
    assert_eq!(keystatus(&mut m), "available");
    assert_eq!(
        m.ok("cat /persist/config/sb-marker").unwrap(),
        "sealed-the-old-way\n"
    );
    assert_eq!(
        storage_status(&mut m)["boot"]["pcrs"],
        serde_json::json!([7])
    );

    // 7. Once v2 is judged good, ab-health puts its boot loader on the ESP, rotates the vault's
    //    key to a seal that opens both before and after the update, and writes the firmware's
    //    dbx. This boot's event log and PCR 7 are kept beside the test's logs (the unit tier's
    //    fixture came from here).
    m.copy_out(
        "/sys/kernel/security/tpm0/binary_bios_measurements",
        &dir.join("binary_bios_measurements"),
    )
    .unwrap();
    std::fs::write(
        dir.join("pcr7"),
        m.ok("cat /sys/class/tpm/tpm0/pcr-sha256/7").unwrap(),
    )
    .unwrap();
    wait_boot_jobs(&mut m);
    assert_ne!(
        m.ok(DBX_SUM).unwrap(),
        dbx_before,
        "ab-health wrote the firmware's dbx"
    );
    assert!(
        sealed_key(&mut m).starts_with("v3:"),
        "{}",
        sealed_key(&mut m)
    );
    let out = m.ok("storage-init dbx-update --dry-run").unwrap();
    assert!(
        out.contains("already forbids the 1 boot loader image(s)"),
        "{out}"
    );
    // Asked again: nothing more to write, nothing rotated.
    let sealed = sealed_key(&mut m);
    let out = m.ok("storage-init dbx-update").unwrap();
    assert!(out.contains("already forbids the 1"), "{out}");
    assert_eq!(sealed_key(&mut m), sealed);
    // An older loader on the ESP's boot path holds an update back (here it is already written,
    // so the wait shows): v1's GRUB in place of v2's.
    m.copy_in(&v1_grub, "/run/v1-grub.efi").unwrap();
    m.ok(&format!(
        "{ESP} && cp /run/v1-grub.efi /run/esp/EFI/BOOT/grubx64.efi && umount /run/esp && sync"
    ))
    .unwrap();
    let out = m.ok("storage-init dbx-update").unwrap();
    assert!(
        out.contains("waits: the ESP does not hold this release's boot loader"),
        "{out}"
    );
    m.ok("abupdate bootloader").unwrap();

    // 8. The next boot measures the new dbx into PCR 7: the seal made for it opens, and the key
    //    is rotated at once to a seal of this state alone.
    m.reboot().unwrap();
    assert_eq!(keystatus(&mut m), "available");
    assert_eq!(
        m.ok("cat /persist/config/sb-marker").unwrap(),
        "sealed-the-old-way\n"
    );
    assert!(
        m.console()
            .contains("unlocked by the seal made for the firmware dbx update; its key rotated"),
        "{}",
        m.console()
    );
    assert!(sealed_key(&mut m).starts_with("v2:"));
    let v2_grub = dir.join("v2-grubx64.efi");
    m.ok(&format!(
        "{ESP} && cp /run/esp/EFI/BOOT/grubx64.efi /run/v2-grub.efi && umount /run/esp"
    ))
    .unwrap();
    m.copy_out("/run/v2-grub.efi", &v2_grub).unwrap();
    let guids = datasets(&mut m);
    m.poweroff().unwrap();

    // 9. Attack: v1's GRUB (project-signed) put back on the ESP. shim finds it in the firmware's
    //    dbx and refuses it: nothing of v1's boot chain runs.
    m.write_esp_file("EFI/BOOT/grubx64.efi", &std::fs::read(&v1_grub).unwrap())
        .unwrap();
    m.boot_until_console("Security Violation").unwrap();
    let console = m.console();
    assert!(!console.contains("eve-init"), "{console}");
    m.power_cut().unwrap();
    // The operator puts v2's loader back: the box boots and its vault opens as it was.
    m.write_esp_file("EFI/BOOT/grubx64.efi", &std::fs::read(&v2_grub).unwrap())
        .unwrap();
    m.boot().unwrap();
    assert_eq!(keystatus(&mut m), "available");
    assert_eq!(
        m.ok("cat /persist/config/sb-marker").unwrap(),
        "sealed-the-old-way\n"
    );
    assert_eq!(datasets(&mut m), guids, "every dataset kept");
    m.poweroff().unwrap();

    let text = format!(
        "boot-time cost of Secure Boot and verification (TCG):\n{}\n",
        report.join("\n")
    );
    eprint!("{text}");
    std::fs::write(dir.join("boot-times.txt"), text).unwrap();
}

/// What is changed in slot A of a prepared image.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    Kernel,
    Initrd,
    GrubCfg,
    /// One byte in the middle of the squashfs, outside the files GRUB reads.
    Block,
}

/// A copy of the built image with slot A tampered and, if `populate_b`, the same image in slot B,
/// marked good (A is still preferred).
fn prepared(dir: &Path, name: &str, tamper: Tamper, populate_b: bool) -> PathBuf {
    let src = image_path();
    let out = dir.join(format!("{name}.raw"));
    copy_image(&src, &out);
    let slot_len = build_manifest(&src)["image"]["slot_size"].as_u64().unwrap() as usize;
    let (a_off, _) = partition_of(&out, "IMGA").unwrap();
    let (b_off, _) = partition_of(&out, "IMGB").unwrap();
    let (esp_off, _) = partition_of(&out, "EFI").unwrap();
    let raw = std::fs::read(&out).unwrap();
    let slot = raw[a_off as usize..a_off as usize + slot_len].to_vec();
    drop(raw);
    let write_at = |off: u64, data: &[u8]| {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(data).unwrap();
    };
    if populate_b {
        write_at(b_off, &slot);
        let mut s = Slots::factory("dev");
        s.b = SlotInfo {
            state: State::Good,
            tries: 0,
            version: "dev".into(),
            failure: String::new(),
        };
        let env = dir.join(format!("{name}.env"));
        std::fs::write(&env, abupdate::grubenv::serialize(&s.to_env()).unwrap()).unwrap();
        for copy in abupdate::esp::COPIES {
            let st = Command::new("/usr/bin/mcopy")
                .args(["-o", "-i"])
                .arg(format!("{}@@{esp_off}", out.display()))
                .arg(&env)
                .arg(format!("::{copy}"))
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
    match tamper {
        Tamper::Block => {
            let data_size = abupdate::verity::descriptor_offset(&slot, slot.len() as u64).unwrap();
            let at = abupdate::verity::align(data_size / 2) + 100;
            write_at(a_off + at, &[slot[at as usize] ^ 0x40]);
        }
        t => {
            let sq = dir.join(format!("{name}.squashfs"));
            std::fs::write(&sq, &slot).unwrap();
            let root = dir.join(format!("{name}.root"));
            crate::common::unsquash(&sq, &root);
            match t {
                Tamper::Kernel => {
                    let p = root.join("boot/vmlinuz");
                    let mut k = std::fs::read(&p).unwrap();
                    let i = k.len() / 2;
                    k[i] ^= 0x01;
                    std::fs::write(&p, k).unwrap();
                }
                Tamper::Initrd => {
                    let p = root.join("boot/initrd.img");
                    let mut k = std::fs::read(&p).unwrap();
                    k.extend_from_slice(&[0u8; 512]);
                    std::fs::write(&p, k).unwrap();
                }
                Tamper::GrubCfg => {
                    let p = root.join("boot/grub.cfg");
                    let c = std::fs::read_to_string(&p).unwrap();
                    std::fs::write(&p, c.replace("panic=10", "panic=10 init=/bin/sh")).unwrap();
                }
                Tamper::Block => unreachable!(),
            }
            imgbuild::update::squash_quick(&root, &sq).unwrap();
            write_at(a_off, &std::fs::read(&sq).unwrap());
            std::fs::remove_dir_all(&root).unwrap();
            std::fs::remove_file(&sq).unwrap();
        }
    }
    out
}

fn machine(dir: &Path, name: &str, image: &Path) -> Machine {
    let mut spec = MachineSpec::new(name, image);
    spec.disks = vec![DiskSpec::blank(DiskKind::Virtio, 1024, "DATA1")];
    spec.secure_boot = true;
    Machine::create(spec, &dir.join(name)).unwrap()
}

/// Polls `abupdate status` until slot A is recorded bad (the health check runs at boot).
fn wait_a_bad(m: &mut Machine) -> Value {
    let start = Instant::now();
    loop {
        let st = ab_status(m);
        let a = st["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["slot"] == "A")
            .unwrap()
            .clone();
        if a["state"] == "bad" {
            return a;
        }
        assert!(start.elapsed() < Duration::from_secs(240), "{st:#}");
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[test]
fn a_changed_kernel_initrd_grub_config_or_squashfs_block_is_refused_and_the_other_slot_boots() {
    let _dir = eve_vmtest::scratch("sb-tamper");
    let dir = test_dir("sb-tamper");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The kernel: GRUB refuses it, boots B and tells it which slot it refused.
    let img = prepared(&dir, "kernel", Tamper::Kernel, true);
    let mut m = machine(&dir, "kernel", &img);
    m.boot().unwrap();
    let c = m.console();
    assert!(
        c.contains(
            "EVE: slot A REFUSED: /boot/vmlinuz is missing or not signed by the project's key"
        ) && c.contains("EVE: falling back to slot B"),
        "{c}"
    );
    let cmdline = m.ok("cat /proc/cmdline").unwrap();
    assert!(
        cmdline.contains("eve.slot=B") && cmdline.contains("eve.refused=A"),
        "{cmdline}"
    );
    let a = wait_a_bad(&mut m);
    assert!(
        a["failure"].as_str().unwrap().contains("GRUB refused"),
        "{a}"
    );
    assert_eq!(ab_status(&mut m)["next"], "B");
    m.poweroff().unwrap();

    // The initrd and the slot's GRUB config: refused the same way (cut once B's root verified).
    for (t, file) in [
        (Tamper::Initrd, "/boot/initrd.img"),
        (Tamper::GrubCfg, "/boot/grub.cfg"),
    ] {
        let name = format!("{t:?}").to_lowercase();
        let img = prepared(&dir, &name, t, true);
        let mut m = machine(&dir, &name, &img);
        m.boot_until_console("stage 1: slot B verified").unwrap();
        let c = m.console();
        assert!(
            c.contains(&format!(
                "EVE: slot A REFUSED: {file} is missing or not signed"
            )),
            "{c}"
        );
        assert!(
            !c.contains("stage 1: slot A"),
            "slot A's kernel never ran: {c}"
        );
        m.power_cut().unwrap();
    }

    // A flipped block of the squashfs: GRUB's files are intact, stage 1's verity check fails,
    // marks A bad and reboots; the box comes up on B.
    let img = prepared(&dir, "block", Tamper::Block, true);
    let mut m = machine(&dir, "block", &img);
    let c = m.boot_until_reset(Duration::from_secs(300)).unwrap();
    assert!(
        c.contains("EVE: booting slot A")
            && c.contains(
                "eve-init: SLOT A REFUSED: the image does not match its signed root hash"
            )
            && c.contains("slot A marked bad; rebooting into slot B"),
        "{c}"
    );
    m.boot().unwrap();
    assert_eq!(ab_status(&mut m)["running"], "B");
    let a = wait_a_bad(&mut m);
    assert!(
        a["failure"].as_str().unwrap().starts_with("boot: verity"),
        "{a}"
    );
    m.poweroff().unwrap();

    // With slot B empty there is nothing to fall back to: the box stops and says why.
    let img = prepared(&dir, "kernel-only", Tamper::Kernel, false);
    let mut m = machine(&dir, "kernel-only", &img);
    m.boot_until_console("this box stops here").unwrap();
    let c = m.console();
    assert!(
        c.contains("EVE: slot A REFUSED: /boot/vmlinuz") && !c.contains("falling back"),
        "{c}"
    );
    assert!(!c.contains("eve-init: stage 1"), "no kernel ran: {c}");
    m.power_cut().unwrap();
    let img = prepared(&dir, "block-only", Tamper::Block, false);
    let mut m = machine(&dir, "block-only", &img);
    m.boot_until_console("this box stops here").unwrap();
    let c = m.console();
    assert!(
        c.contains("SLOT A REFUSED: the image does not match its signed root hash")
            && c.contains("slot B holds no image: nothing verified to boot")
            && !c.contains("stage 2"),
        "{c}"
    );
    m.power_cut().unwrap();
}
