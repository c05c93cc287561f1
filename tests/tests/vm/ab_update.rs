//! VM tests for A/B updates under OVMF and stock GRUB: install into the other slot, trial boot,
//! health check, automatic fallback from an image that cannot boot or is unhealthy, refusal of bad
//! update files, and a power cut in the middle of an install.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with context on failure

use crate::common::{
    builtin_keys, copy_probe, dev_key, info, recover, recovery_key, variant, variant_with,
};
use abupdate::artifact::Manifest;
use eve_vmtest::{dev_signing_key, image_path, test_dir, DiskKind, DiskSpec, Machine, MachineSpec};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `good` with its header rewritten by `f` (manifest JSON, signature line) and its payload by
/// `payload`; the result is written to `dir/name`.
fn doctored(
    dir: &Path,
    name: &str,
    good: &[u8],
    f: impl FnOnce(&mut Manifest, &mut String),
    payload: impl FnOnce(&mut Vec<u8>),
) -> PathBuf {
    let head = &good[..4096];
    let text = String::from_utf8_lossy(&head[..head.iter().rposition(|b| *b != 0).unwrap() + 1])
        .into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut m: Manifest = serde_json::from_str(lines[1]).unwrap();
    let mut sig = lines[2].to_string();
    let mut p = good[4096..].to_vec();
    payload(&mut p);
    f(&mut m, &mut sig);
    let mut h = format!(
        "{}\n{}\n{sig}\n",
        lines[0],
        serde_json::to_string(&m).unwrap()
    )
    .into_bytes();
    h.resize(4096, 0);
    h.extend_from_slice(&p);
    let out = dir.join(name);
    std::fs::write(&out, h).unwrap();
    out
}

/// Rewrites both slot-state copies on the ESP as someone with the disk would, through the GRUB
/// environment serializer (so the blocks stay 1024 bytes).
fn edit_state(
    m: &mut Machine,
    dir: &Path,
    edit: impl Fn(&mut std::collections::BTreeMap<String, String>),
) {
    let mount = "mkdir -p /run/esp && mount -t vfat /dev/disk/by-partlabel/EFI /run/esp";
    for copy in abupdate::esp::COPIES {
        let host = dir.join("state.env");
        m.ok(&format!(
            "{mount} && cp /run/esp/{copy} /run/state.env && umount /run/esp"
        ))
        .unwrap();
        m.copy_out("/run/state.env", &host).unwrap();
        let mut env = abupdate::grubenv::parse(&std::fs::read(&host).unwrap()).unwrap();
        edit(&mut env);
        std::fs::write(&host, abupdate::grubenv::serialize(&env).unwrap()).unwrap();
        m.copy_in(&host, "/run/state.env").unwrap();
        m.ok(&format!(
            "{mount} && cp /run/state.env /run/esp/{copy} && umount /run/esp && sync"
        ))
        .unwrap();
    }
}

fn status(m: &mut Machine) -> Value {
    serde_json::from_str(&m.ok("abupdate status --json").unwrap()).unwrap()
}

fn slot<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == name)
        .unwrap()
}

/// Polls `abupdate status` until `pred` holds (the health check runs in the background at boot).
fn wait_status(m: &mut Machine, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let st = status(m);
        if pred(&st) {
            return st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}; status: {st:#}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn good(st: &Value, s: &str) -> bool {
    st["running"] == s && slot(st, s)["state"] == "good"
}

/// sha256 of the first 32 MiB of a slot partition, as the guest reads it.
fn slot_digest(m: &mut Machine, dev: &str) -> String {
    m.ok(&format!("head -c 33554432 {dev} | sha256sum"))
        .unwrap()
        .trim()
        .to_string()
}

/// Reboots the guest into a boot that ends by resetting itself (a refused slot, a dead init, a
/// failed health check), and returns that boot's console.
fn reboot_until_reset(m: &mut Machine, secs: u64) -> String {
    // The agent goes down with the reboot it starts, so its reply may never come.
    let _ = m.exec_argv(
        &["/usr/bin/eve-init", "reboot"],
        &[],
        Duration::from_secs(30),
    );
    m.wait_guest_reset(Duration::from_secs(180)).unwrap();
    m.boot_until_reset(Duration::from_secs(secs)).unwrap()
}

const ESP: &str = "mkdir -p /run/esp && mount -t vfat /dev/disk/by-partlabel/EFI /run/esp";

/// Waits until the ESP holds the running image's boot loader (ab-health puts it there after the
/// health check).
fn wait_loader(m: &mut Machine, what: &str) {
    let start = Instant::now();
    loop {
        let out = m.ok("abupdate bootloader --dry-run --json").unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        if v["action"] == "current" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "waiting for {what}: {out}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn machine(name: &str) -> (Machine, PathBuf) {
    let dir = test_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut spec = MachineSpec::new(name, &image_path());
    spec.disks = vec![DiskSpec::blank(DiskKind::Nvme, 1024, "DATA1")];
    let m = Machine::create(spec, &dir.join("vm")).unwrap();
    (m, dir)
}

fn write_data(m: &mut Machine) {
    m.ok("echo vault-v1 > /persist/config/update-marker && echo clear-v1 > /persist/newlog/update-marker && sync")
        .unwrap();
}

fn data_intact(m: &mut Machine) {
    assert_eq!(
        m.ok("zfs get -H -o value keystatus persist/vault")
            .unwrap()
            .trim(),
        "available",
        "the vault must unlock under the new OS"
    );
    assert_eq!(
        m.ok("cat /persist/config/update-marker /persist/newlog/update-marker")
            .unwrap(),
        "vault-v1\nclear-v1\n"
    );
}

#[test]
fn v2_installs_and_becomes_good_while_unbootable_and_unhealthy_v3_roll_back_by_themselves() {
    let _dir = eve_vmtest::scratch("update-ab");
    let (mut m, dir) = machine("update-ab");
    let v2 = variant(&dir, "v2", |_| {});
    // An init that exits: the kernel panics (panic=10) and resets.
    let v3_dead = variant(&dir, "v3-noboot", |root| {
        let init = root.join("usr/sbin/init");
        std::fs::remove_file(&init).unwrap();
        std::fs::write(&init, "#!/bin/sh\necho 'v3 init: exiting'\nexit 1\n").unwrap();
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    });
    // Boots, but a service crash-loops: the health check must fail it.
    let v3_sick = variant(&dir, "v3-unhealthy", |root| {
        let svc = root.join("containers/services/crasher");
        std::fs::create_dir_all(&svc).unwrap();
        std::fs::write(
            svc.join("config.json"),
            r#"{"process":{"args":["/bin/sh","-c","echo crasher: failing; exit 3"]},"root":{"path":"rootfs"}}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink("/", svc.join("rootfs")).unwrap();
    });

    m.boot().unwrap();
    let rk = recovery_key(&m.console()).expect("the first boot shows the recovery key");
    let st = wait_status(&mut m, "the factory slot A to be good", |s| good(s, "A"));
    assert_eq!(slot(&st, "B")["state"], "empty");
    let v1 = slot(&st, "A")["version"].as_str().unwrap().to_string();
    write_data(&mut m);
    let b_dev = slot(&st, "B")["device"].as_str().unwrap().to_string();
    // v1's boot loader (built for epoch 0), kept for an attack below.
    let v1_grub = dir.join("v1-grubx64.efi");
    m.ok(&format!(
        "{ESP} && cp /run/esp/EFI/BOOT/grubx64.efi /run/v1-grub.efi && umount /run/esp"
    ))
    .unwrap();
    m.copy_out("/run/v1-grub.efi", &v1_grub).unwrap();
    assert_eq!(
        platform::rollback::loader_epoch_in(&std::fs::read(&v1_grub).unwrap()),
        Some(0)
    );

    // Bad update files are refused before anything is written: broken, unsigned, signed by a key
    // the box does not trust, tampered (payload changed and its checksum recomputed), for another
    // architecture.
    let good_bytes = std::fs::read(&v2).unwrap();
    let truncated = dir.join("truncated.update");
    std::fs::write(&truncated, &good_bytes[..good_bytes.len() - 100_000]).unwrap();
    let corrupt = dir.join("corrupt.update");
    let mut c = good_bytes.clone();
    c[4096 + 3_000_000] ^= 0x40;
    std::fs::write(&corrupt, &c).unwrap();
    let unsigned = {
        let p = doctored(&dir, "unsigned.update", &good_bytes, |_, _| {}, |_| {});
        // Format 1 had no signature line: the header as the old builder wrote it.
        let mut b = std::fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&b[..4096]).into_owned();
        let json = text
            .lines()
            .nth(1)
            .unwrap()
            .replace("\"format\":2", "\"format\":1");
        let mut h = format!(
            "EVE-UPDATE 1 {}\n{json}\n",
            abupdate::artifact::sha256_hex(json.as_bytes())
        )
        .into_bytes();
        h.resize(4096, 0);
        b.splice(..4096, h);
        std::fs::write(&p, b).unwrap();
        p
    };
    // Test folders outlive a run, and a key file is never overwritten.
    let _ = std::fs::remove_file(dir.join("stranger.pem"));
    let stranger = imgbuild::keys::generate(&dir.join("stranger.pem")).unwrap();
    let wrong_key = variant_with(&dir, "v2-stranger", &stranger, info(0), |_| {});
    let tampered = doctored(
        &dir,
        "tampered.update",
        &good_bytes,
        |m, _| {
            let p = &std::fs::read(dir.join("tampered.payload")).unwrap();
            m.payload.sha256 = abupdate::artifact::sha256_hex(p);
        },
        |p| {
            p[3_000_000] ^= 0x01;
            std::fs::write(dir.join("tampered.payload"), &p).unwrap();
        },
    );
    let wrong_arch = {
        let payload = &good_bytes[4096..];
        let mut m = abupdate::artifact::manifest_for("v2", "aarch64", payload, info(0)).unwrap();
        m.arch = "aarch64".into();
        let mut a = abupdate::artifact::header(&m, &dev_key()).unwrap();
        a.extend_from_slice(payload);
        let p = dir.join("arm.update");
        std::fs::write(&p, a).unwrap();
        p
    };
    let b_before = slot_digest(&mut m, &b_dev);
    for (file, why) in [
        (&truncated, "truncated"),
        (&corrupt, "corrupt"),
        (&unsigned, "not signed"),
        (&wrong_key, "does not trust"),
        (&tampered, "does not verify"),
        (&wrong_arch, "update is for aarch64"),
    ] {
        m.copy_in(file, "/run/bad.update").unwrap();
        for cmd in [
            "abupdate verify /run/bad.update",
            "abupdate install /run/bad.update",
        ] {
            let out = m.sh(cmd).unwrap();
            assert_eq!(out.status, 1, "{cmd}: {out:?}");
            assert!(
                out.stderr.contains(why) && out.stderr.contains("/run/bad.update"),
                "{why}: {out:?}"
            );
        }
        assert_eq!(
            status(&mut m),
            st,
            "state unchanged after a refused {why} file"
        );
        assert_eq!(slot_digest(&mut m, &b_dev), b_before, "slot B untouched");
    }
    // Streamed on stdin: a bad signature is refused before a byte is written; a payload that does
    // not match its signed checksum is found at the end and leaves the slot empty.
    m.copy_in(&wrong_key, "/run/bad.update").unwrap();
    let out = m.sh("abupdate install - < /run/bad.update").unwrap();
    assert!(
        out.status == 1 && out.stderr.contains("does not trust"),
        "{out:?}"
    );
    assert_eq!(status(&mut m), st);
    m.copy_in(&corrupt, "/run/bad.update").unwrap();
    let out = m.sh("abupdate install - < /run/bad.update").unwrap();
    assert!(out.status == 1 && out.stderr.contains("corrupt"), "{out:?}");
    let after = status(&mut m);
    assert_eq!(slot(&after, "B")["state"], "empty", "{after:#}");
    assert_eq!(after["next"], "A");
    m.ok("rm /run/bad.update").unwrap();

    // v1 (A) installs v2 into B; B is tried on the next boot and marked good by the health check.
    m.copy_in(&v2, "/run/v2.update").unwrap();
    let t = Instant::now();
    let out = m.sh("abupdate install /run/v2.update").unwrap();
    let install_secs = t.elapsed().as_secs_f32();
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stderr.contains("writing 100%") && out.stderr.contains("reading back 100%"));
    eprintln!(
        "install of a {} MiB update under TCG: {install_secs:.1} s",
        good_bytes.len() >> 20
    );
    let st = status(&mut m);
    assert_eq!(
        (
            &slot(&st, "B")["state"],
            &slot(&st, "B")["version"],
            &slot(&st, "B")["tries"]
        ),
        (&Value::from("trial"), &Value::from("v2"), &Value::from(1))
    );
    assert_eq!(st["next"], "B");
    m.ok("rm /run/v2.update").unwrap();
    m.reboot().unwrap();
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("EVE: trying slot B"),
        "GRUB counted the try"
    );
    let st = wait_status(&mut m, "v2 in B to be marked good", |s| good(s, "B"));
    assert_eq!(slot(&st, "B")["version"], "v2");
    assert_eq!(slot(&st, "A")["state"], "good", "v1 stays as the fallback");
    assert_eq!(slot(&st, "A")["version"], v1.as_str());
    assert_eq!(m.ok("cat /etc/eve-release").unwrap(), "eve-storage v2\n");
    data_intact(&mut m);

    // v2's good boot put its boot loader (epoch 1) on the ESP and raised the TPM's rollback floor
    // to its epoch (1).
    wait_loader(&mut m, "v2's boot loader to be on the ESP");
    // ab-health may still be raising it: the two raises take turns (a lock), and the floor ends
    // at 1 either way, never past it.
    let floor = m.ok("storage-init raise-floor").unwrap();
    assert!(
        (floor.contains("rollback floor: security epoch 1, key serial 1")
            || floor.contains("rollback floor raised: security epoch 0 -> 1, key serial 1"))
            && !floor.contains("WARNING"),
        "{floor}"
    );
    // Attack: the slot order flipped back to v1 (epoch 0) in the unsigned boot state on the
    // ESP. GRUB boots v1's slot; its stage 1 finds it below the floor, marks it bad and boots v2,
    // whose vault unlocks as before.
    m.ok("mkdir -p /run/esp && mount -t vfat /dev/disk/by-partlabel/EFI /run/esp && \
          sed -i 's/EVE_ORDER=B A/EVE_ORDER=A B/' /run/esp/EFI/eve/state1.env /run/esp/EFI/eve/state2.env && \
          grep -c 'EVE_ORDER=A B' /run/esp/EFI/eve/state1.env && umount /run/esp && sync")
        .unwrap();
    let refused = reboot_until_reset(&mut m, 400);
    assert!(
        refused.contains("SLOT A REFUSED: security epoch 0 is below this box's floor 1"),
        "{refused}"
    );
    m.boot().unwrap();
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(console.contains("EVE: booting slot B"), "fell back to v2");
    assert!(
        console.contains(
            "rollback floor met (epoch 1 >= 1, key serial 1 >= 1, boot loader epoch 1 >= 1, built-in key list 1 >= 1;"
        ),
        "{console}"
    );
    let st = wait_status(&mut m, "v1's refusal to be recorded", |s| {
        s["running"] == "B" && slot(s, "A")["state"] == "bad"
    });
    assert!(
        slot(&st, "A")["failure"]
            .as_str()
            .unwrap()
            .starts_with("boot: rollback: security epoch 0"),
        "{st:#}"
    );
    assert_eq!(m.ok("cat /etc/eve-release").unwrap(), "eve-storage v2\n");
    data_intact(&mut m);

    // Attack: v1's GRUB (project-signed, built for epoch 0) put back on the ESP over v2's. It
    // still boots v2, but stage 1 finds a boot loader below the floor: v2 runs with the vault
    // locked and every dataset kept; its boot (a good slot) puts its own loader back, and the next
    // boot unlocks the vault with the data as it was.
    let guids = m.ok("zfs get -H -o name,value -r guid persist").unwrap();
    m.copy_in(&v1_grub, "/run/v1-grub.efi").unwrap();
    m.ok(&format!(
        "{ESP} && cp /run/v1-grub.efi /run/esp/EFI/BOOT/grubx64.efi && umount /run/esp && sync"
    ))
    .unwrap();
    m.reboot().unwrap();
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains(
            "the boot loader on the ESP was built for security epoch 0, below this box's floor 1"
        ),
        "{console}"
    );
    wait_loader(&mut m, "v2's boot loader to be put back");
    assert_eq!(
        m.ok("zfs get -H -o value keystatus persist/vault")
            .unwrap()
            .trim(),
        "unavailable",
        "the older GRUB's boot leaves the vault locked"
    );
    assert_eq!(
        m.ok("zfs get -H -o name,value -r guid persist").unwrap(),
        guids
    );
    let st = status(&mut m);
    assert!(good(&st, "B") && st["running"] == "B", "{st:#}");
    m.reboot().unwrap();
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(console.contains("boot loader epoch 1 >= 1"), "{console}");
    wait_status(&mut m, "v2 to be good again", |s| good(s, "B"));
    data_intact(&mut m);
    assert_eq!(
        m.ok("zfs get -H -o name,value -r guid persist").unwrap(),
        guids
    );

    // Attack: the TPM's counters deleted (any shell or live USB can) and v1 (epoch 0, signed,
    // still in slot A) made first and good again in the unsigned slot state; stage 1 finds no
    // floor, so v1 boots, without the vault. The operator is asked to recover. The vault's own
    // record of the floors it saw confirmed (epoch 1, tagged with its key) refuses to seal for
    // v1: unlocked for that boot only, nothing raised or sealed. Back on v2 the recovery seals
    // again, and the next boot unlocks by itself.
    copy_probe(&mut m, &dir);
    m.ok("/run/probe undefine-floor").unwrap();
    edit_state(&mut m, &dir, |env| {
        env.insert("EVE_ORDER".into(), "A B".into());
        env.insert("A_STATE".into(), "good".into());
    });
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains("EVE: booting slot A")
            && console.contains("stage 1: WARNING: no rollback floor in the TPM"),
        "{console}"
    );
    assert_eq!(status(&mut m)["running"], "A");
    let vault_key = |m: &mut Machine| {
        m.ok("zfs get -H -o value keystatus persist/vault")
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(vault_key(&mut m), "unavailable");
    let out = recover(&mut m, &rk);
    assert!(
        out.status == 0
            && out
                .stdout
                .contains("WARNING: the running release's security epoch is 0, below 1 which this vault saw confirmed")
            && out.stdout.contains("its seal is not replaced"),
        "{out:?}"
    );
    assert_eq!(vault_key(&mut m), "available", "for this boot");
    copy_probe(&mut m, &dir);
    assert_eq!(
        m.ok("/run/probe floor").unwrap().trim(),
        "epoch None serial None",
        "nothing raised for v1"
    );
    m.ok(&format!(
        "{ESP} && sed -i 's/EVE_ORDER=A B/EVE_ORDER=B A/' /run/esp/EFI/eve/state1.env /run/esp/EFI/eve/state2.env && umount /run/esp && sync"
    ))
    .unwrap();
    m.reboot().unwrap();
    assert!(m.console().contains("EVE: booting slot B"));
    assert_eq!(vault_key(&mut m), "unavailable");
    let out = recover(&mut m, &rk);
    assert!(
        out.status == 0
            && out.stdout.contains("the next boot unlocks by itself")
            && !out.stdout.contains("WARNING"),
        "{out:?}"
    );
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains("rollback floor met (epoch 1 >= 1, key serial 1 >= 1"),
        "{console}"
    );
    wait_status(&mut m, "v2 to be good again", |s| good(s, "B"));
    data_intact(&mut m);
    assert_eq!(
        m.ok("zfs get -H -o name,value -r guid persist").unwrap(),
        guids
    );

    // v2 runs security epoch 1: an artifact of epoch 0 is refused even as a deliberate downgrade;
    // an older version of the same epoch only with --allow-downgrade.
    let old_epoch = variant_with(&dir, "v9-epoch0", &dev_key(), info(0), |_| {});
    let older = variant(&dir, "v1.5", |_| {});
    m.copy_in(&old_epoch, "/run/old.update").unwrap();
    m.copy_in(&older, "/run/older.update").unwrap();
    let before = status(&mut m);
    for cmd in [
        "abupdate install /run/old.update",
        "abupdate install --allow-downgrade /run/old.update",
    ] {
        let out = m.sh(cmd).unwrap();
        assert!(
            out.status == 1
                && out
                    .stderr
                    .contains("security epoch 0, below the running system's 1"),
            "{cmd}: {out:?}"
        );
    }
    let out = m.sh("abupdate install /run/older.update").unwrap();
    assert!(
        out.status == 1
            && out.stderr.contains("older than the running v2")
            && out.stderr.contains("--allow-downgrade"),
        "{out:?}"
    );
    assert_eq!(status(&mut m), before, "refusals change nothing");
    let ok = m
        .ok("abupdate verify --allow-downgrade /run/older.update")
        .unwrap();
    assert!(ok.contains("\"version\": \"v1.5\""), "{ok}");
    let text = m.ok("abupdate status").unwrap();
    assert!(
        text.contains("dev-signed, security epoch 1") && text.contains(&dev_key().id()),
        "{text}"
    );
    m.ok("rm /run/old.update /run/older.update").unwrap();

    // v3 whose init exits: tried once, then the box comes back on v2 by itself.
    m.copy_in(&v3_dead, "/run/v3.update").unwrap();
    m.ok("abupdate install /run/v3.update").unwrap();
    let failed = reboot_until_reset(&mut m, 400);
    assert!(failed.contains("EVE: trying slot A"), "{failed}");
    assert!(failed.contains("v3 init: exiting"), "the v3 image ran");
    m.boot().unwrap();
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(console.contains("EVE: booting slot B"), "fell back to v2");
    let st = wait_status(&mut m, "v3's boot failure to be recorded", |s| {
        slot(s, "A")["state"] == "bad"
    });
    assert_eq!(st["running"], "B");
    assert_eq!(slot(&st, "A")["version"], "v3-noboot");
    assert!(
        slot(&st, "A")["failure"]
            .as_str()
            .unwrap()
            .starts_with("boot:"),
        "{st:#}"
    );
    assert_eq!(slot(&st, "B")["state"], "good");
    let text = m.ok("abupdate status").unwrap();
    assert!(text.contains("last failure: boot:"), "{text}");

    // v3 that boots but fails its health check: marked bad, the box reboots into v2 by itself.
    m.copy_in(&v3_sick, "/run/v3.update").unwrap();
    m.ok("abupdate install /run/v3.update").unwrap();
    let trial = reboot_until_reset(&mut m, 500);
    assert!(trial.contains("EVE: trying slot A"), "{trial}");
    assert!(
        trial.contains("slot A (version v3-unhealthy) failed its health check"),
        "{trial}"
    );
    m.boot().unwrap();
    let st = wait_status(&mut m, "the health failure to be recorded", |s| {
        s["running"] == "B" && slot(s, "A")["state"] == "bad"
    });
    let why = slot(&st, "A")["failure"].as_str().unwrap();
    assert!(
        why.starts_with("health:") && why.contains("crasher"),
        "{why}"
    );
    assert_eq!(slot(&st, "A")["version"], "v3-unhealthy");
    data_intact(&mut m);

    // Nothing good to roll back to.
    let out = m.sh("abupdate rollback").unwrap();
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("slot A holds no good image"), "{out:?}");
    m.poweroff().unwrap();
}

#[test]
fn a_power_cut_mid_install_boots_the_old_slot_and_the_install_can_be_repeated() {
    let _dir = eve_vmtest::scratch("update-powercut");
    let (mut m, dir) = machine("update-powercut");
    let v2 = variant(&dir, "v2", |_| {});
    m.boot().unwrap();
    wait_status(&mut m, "slot A to be good", |s| good(s, "A"));
    // A box made by an older build has another ESP volume id than the one GRUBs derive from the
    // keys today (ids were once per build): GRUB finds the ESP by its marker file instead, so a
    // GRUB an update brings still boots it.
    m.ok(
        "d=/dev/disk/by-partlabel/EFI; t=$(dd if=$d bs=1 skip=54 count=5 2>/dev/null); \
          if [ \"$t\" = FAT16 ] || [ \"$t\" = FAT12 ]; then o=39; else o=67; fi; \
          printf '\\170\\126\\064\\022' | dd of=$d bs=1 seek=$o conv=notrunc 2>/dev/null && sync",
    )
    .unwrap();
    let id = m.ok("blkid /dev/disk/by-partlabel/EFI").unwrap();
    assert!(id.contains("1234-5678"), "{id}");
    m.reboot().unwrap();
    wait_status(
        &mut m,
        "slot A to be good under an ESP of another id",
        |s| good(s, "A") && s["running"] == "A",
    );
    write_data(&mut m);
    m.copy_in(&v2, "/run/v2.update").unwrap();
    // Stream 60% of the file on stdin and hold the rest back, so the cut lands mid-write (past
    // the 50% progress line, which comes per chunk).
    let part = std::fs::metadata(&v2).unwrap().len() * 6 / 10;
    m.ok(&format!(
        "setsid sh -c '(head -c {part} /run/v2.update; sleep 3600) | abupdate install - \
          >/run/install.log 2>&1' </dev/null >/dev/null 2>&1 &"
    ))
    .unwrap();
    let start = Instant::now();
    loop {
        // The background shell may not have created the log yet.
        let log = m.ok("cat /run/install.log 2>/dev/null; true").unwrap();
        // Progress is printed per chunk, so the figure passes 50% without landing on it.
        let pct = log
            .lines()
            .filter_map(|l| {
                l.strip_prefix("abupdate: writing ")?
                    .split('%')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        if pct >= 50 {
            break;
        }
        assert!(!log.contains("writing 100%"), "{log}");
        assert!(start.elapsed() < Duration::from_secs(120), "{log}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let st = status(&mut m);
    assert_eq!(
        slot(&st, "B")["state"],
        "empty",
        "a slot being written is not bootable"
    );
    assert_eq!(st["next"], "A");
    m.power_cut().unwrap();

    m.boot().unwrap();
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(console.contains("EVE: booting slot A"));
    let st = wait_status(&mut m, "the interrupted install to be recorded", |s| {
        slot(s, "B")["failure"] == "install: interrupted"
    });
    assert_eq!(st["running"], "A");
    assert_eq!(slot(&st, "B")["state"], "empty");
    data_intact(&mut m);

    m.copy_in(&v2, "/run/v2.update").unwrap();
    m.ok("abupdate install /run/v2.update").unwrap();
    m.reboot().unwrap();
    let st = wait_status(&mut m, "v2 to be good", |s| good(s, "B"));
    assert_eq!(slot(&st, "B")["version"], "v2");
    data_intact(&mut m);

    // Rolling back to the good v1 in A: v2's good boot raised the rollback floor to its
    // security epoch (1), so v1 (epoch 0) would be refused at boot; `abupdate rollback` says so
    // and changes nothing.
    let before = status(&mut m);
    let out = m.sh("abupdate rollback").unwrap();
    assert!(
        out.status == 1
            && out
                .stderr
                .contains("security epoch 0, below this box's rollback floor 1"),
        "{out:?}"
    );
    assert_eq!(status(&mut m), before, "nothing changed");

    // Key rotation: v4, signed by a new key, carries a key list with only that key, signed by the
    // key the box trusts now. Once v4 is installed, the retired key signs nothing any more, before
    // and after booting v4 (whose own built-in list still names the old key: the ESP's chain
    // governs).
    let _ = std::fs::remove_file(dir.join("new.pem"));
    let new_key = imgbuild::keys::generate(&dir.join("new.pem")).unwrap();
    let new_pub = dir.join("new.pub");
    std::fs::write(
        &new_pub,
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            new_key.public().as_bytes(),
        ),
    )
    .unwrap();
    let rotation =
        imgbuild::keys::rotation(&dev_signing_key(&image_path()), &[new_pub], 2).unwrap();
    let mut i = info(1);
    i.keys = Some(rotation.clone());
    let v4 = variant_with(&dir, "v4-rotate", &new_key, i, |_| {});
    let v5_retired = variant(&dir, "v5-old-key", |_| {});
    let v5_new = variant_with(&dir, "v5", &new_key, info(1), |_| {});
    m.copy_in(&v4, "/run/v4.update").unwrap();
    let out = m.sh("abupdate install /run/v4.update").unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains("update keys rotated to list 2"),
        "{out:?}"
    );
    let check_keys = |m: &mut Machine| {
        m.copy_in(&v5_retired, "/run/v5-old.update").unwrap();
        m.copy_in(&v5_new, "/run/v5.update").unwrap();
        let text = m.ok("abupdate status").unwrap();
        assert!(
            text.contains(&format!("signed by key {} (key list 2;", new_key.id())),
            "{text}"
        );
        let out = m.sh("abupdate verify /run/v5-old.update").unwrap();
        assert!(
            out.status == 1 && out.stderr.contains("does not trust"),
            "the retired key: {out:?}"
        );
        m.ok("abupdate verify /run/v5.update").unwrap();
    };
    check_keys(&mut m);
    m.reboot().unwrap();
    let st = wait_status(&mut m, "v4 to be good", |s| good(s, "A"));
    assert_eq!(slot(&st, "A")["version"], "v4-rotate");
    check_keys(&mut m);
    // The stored rotation lost (deleted from the ESP): the slot state still remembers list 2, so
    // the box refuses updates instead of trusting the retired key again; put back, it trusts again.
    let esp = "mkdir -p /run/esp && mount -t vfat /dev/disk/by-partlabel/EFI /run/esp";
    m.ok(&format!(
        "{esp} && mv /run/esp/EFI/eve/keys.json /run/esp/keys.aside && umount /run/esp"
    ))
    .unwrap();
    for cmd in [
        "abupdate verify /run/v5.update",
        "abupdate verify /run/v5-old.update",
        "abupdate install /run/v5-old.update",
    ] {
        let out = m.sh(cmd).unwrap();
        assert!(
            out.status == 1 && out.stderr.contains("missing or were rolled back"),
            "{cmd}: {out:?}"
        );
    }
    let text = m.ok("abupdate status").unwrap();
    assert!(text.contains("updates refused:"), "{text}");
    m.ok(&format!(
        "{esp} && mv /run/esp/keys.aside /run/esp/EFI/eve/keys.json && umount /run/esp"
    ))
    .unwrap();
    check_keys(&mut m);

    // The ESP's rotations are a cache; the TPM's floor (list 2, raised when v4 took the rotation)
    // is the record. Garbage in keys.json and an absurd EVE_KEYS in both slot-state copies: the
    // box neither freezes nor trusts the retired key. An update without the chain is refused
    // (the image's own list 1 is below the floor), one signed by the retired key too; v5
    // carrying the vendor's full chain is accepted, rewrites keys.json and resets EVE_KEYS, and
    // boots with the vault.
    edit_state(&mut m, &dir, |env| {
        assert_eq!(env["EVE_KEYS"], "2");
        env.insert("EVE_KEYS".into(), "4000000000".into());
    });
    m.ok(&format!(
        "{esp} && printf '{{garbage' > /run/esp/EFI/eve/keys.json && umount /run/esp"
    ))
    .unwrap();
    let text = m.ok("abupdate status").unwrap();
    assert!(
        text.contains("updates refused:")
            && text.contains("accepted key list 2 (the TPM's rollback floor)")
            && text.contains("unreadable key rotations"),
        "{text}"
    );
    for cmd in [
        "abupdate verify /run/v5.update",
        "abupdate verify /run/v5-old.update",
    ] {
        let out = m.sh(cmd).unwrap();
        assert!(
            out.status == 1 && out.stderr.contains("--key-chain"),
            "{cmd}: {out:?}"
        );
    }
    // v4.5 is also the first release built after the rotation: list 2 is the one built into its
    // initramfs and its release facts, so its good boot raises the built-in key-list floor.
    let list2 = abupdate::trust::KeyList::parse(rotation.list.as_bytes()).unwrap();
    let mut i = info(1);
    i.key_chain = vec![rotation];
    let v5_chain = variant_with(&dir, "v4.5-chain", &new_key, i, |root| {
        builtin_keys(root, &list2)
    });
    m.copy_in(&v5_chain, "/run/v5-chain.update").unwrap();
    let out = m.sh("abupdate install /run/v5-chain.update").unwrap();
    assert!(
        out.status == 0 && out.stderr.contains("stored key rotations repaired"),
        "{out:?}"
    );
    let env = m
        .ok(&format!(
            "{esp} && cat /run/esp/{} && umount /run/esp",
            abupdate::esp::COPIES[0]
        ))
        .unwrap();
    assert!(env.contains("EVE_KEYS=2\n"), "{env}");
    check_keys(&mut m);
    m.reboot().unwrap();
    let st = wait_status(&mut m, "v4.5-chain to be good", |s| good(s, "B"));
    assert_eq!(slot(&st, "B")["version"], "v4.5-chain");
    data_intact(&mut m);
    check_keys(&mut m);
    // ab-health raised the floor once v4.5 was good (this call may take the turn before it).
    let floor = m.ok("storage-init raise-floor").unwrap();
    assert!(
        floor.contains("built-in key list 2") || floor.contains("built-in key list 1 -> 2"),
        "{floor}"
    );

    // Attack: a fork by the retired key. Whoever holds the key the box trusted before the
    // rotation (the development key here) signs a slot of their own and writes it straight to
    // slot A, first in the boot order. Its initramfs is a genuine one built before the rotation:
    // it still trusts the retired key, so its stage 1 opens the slot (under the ESP's chain the
    // keys in force even read as list 2). The built-in key-list floor keeps the vault locked,
    // and every dataset as it was; the box's own release, put back first, unlocks as before.
    let guids = m.ok("zfs get -H -o name,value -r guid persist").unwrap();
    let fork = variant(&dir, "v6-fork", |_| {});
    m.copy_in(&fork, "/run/fork.update").unwrap();
    m.ok(&format!(
        "dd if=/run/fork.update of=/dev/disk/by-partlabel/IMGA bs=4096 skip=1 conv=fsync 2>/dev/null && rm /run/fork.update && \
         {esp} && sed -i 's/EVE_ORDER=B A/EVE_ORDER=A B/' /run/esp/EFI/eve/state1.env /run/esp/EFI/eve/state2.env && \
         grep -c 'EVE_ORDER=A B' /run/esp/EFI/eve/state1.env && umount /run/esp && sync"
    ))
    .unwrap();
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains("EVE: booting slot A")
            && console.contains(
                "the key list built into this initramfs has serial 1, below this box's floor 2"
            ),
        "{console}"
    );
    assert_eq!(
        m.ok("cat /etc/eve-release").unwrap(),
        "eve-storage v6-fork\n"
    );
    assert_eq!(
        m.ok("zfs get -H -o value keystatus persist/vault")
            .unwrap()
            .trim(),
        "unavailable",
        "the fork's boot leaves the vault locked"
    );
    assert_eq!(
        m.ok("zfs get -H -o name,value -r guid persist").unwrap(),
        guids
    );
    m.ok(&format!(
        "{esp} && sed -i 's/EVE_ORDER=A B/EVE_ORDER=B A/' /run/esp/EFI/eve/state1.env /run/esp/EFI/eve/state2.env && umount /run/esp && sync"
    ))
    .unwrap();
    m.reboot().unwrap();
    let console = m.console();
    assert!(console.contains("built-in key list 2 >= 2"), "{console}");
    assert_eq!(
        m.ok("cat /etc/eve-release").unwrap(),
        "eve-storage v4.5-chain\n"
    );
    data_intact(&mut m);
    assert_eq!(
        m.ok("zfs get -H -o name,value -r guid persist").unwrap(),
        guids
    );
    m.poweroff().unwrap();
}
