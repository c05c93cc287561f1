//! VM tests for A/B updates under OVMF and stock GRUB: install into the other slot, trial boot,
//! health check, automatic fallback from an image that cannot boot or is unhealthy, refusal of bad
//! update files, and a power cut in the middle of an install.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with context on failure

use eve_vmtest::{image_path, test_dir, DiskKind, DiskSpec, Machine, MachineSpec};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The update artifact `make image` wrote next to the disk image.
fn built_update() -> PathBuf {
    image_path().with_file_name("eve-storage.update")
}

/// The built OS repacked under another version, after `edit` changes its root tree.
fn variant(dir: &Path, version: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let art = std::fs::read(built_update()).unwrap();
    let sq = dir.join(format!("{version}.squashfs"));
    std::fs::write(&sq, &art[abupdate::artifact::PAYLOAD_OFFSET as usize..]).unwrap();
    let root = dir.join(format!("{version}.root"));
    let _ = std::fs::remove_dir_all(&root);
    let st = Command::new("/usr/bin/unsquashfs")
        .args(["-q", "-no-progress", "-d"])
        .arg(&root)
        .arg(&sq)
        .status()
        .unwrap();
    assert!(st.success(), "unsquashfs {}", sq.display());
    std::fs::write(
        root.join("etc/eve-release"),
        format!("eve-storage {version}\n"),
    )
    .unwrap();
    edit(&root);
    imgbuild::update::squash(&root, &sq).unwrap();
    let out = dir.join(format!("{version}.update"));
    imgbuild::update::pack(&sq, version, Default::default(), &out).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_file(&sq).unwrap();
    out
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
    let st = wait_status(&mut m, "the factory slot A to be good", |s| good(s, "A"));
    assert_eq!(slot(&st, "B")["state"], "empty");
    let v1 = slot(&st, "A")["version"].as_str().unwrap().to_string();
    write_data(&mut m);
    let b_dev = slot(&st, "B")["device"].as_str().unwrap().to_string();

    // Bad update files are refused before anything is written.
    let good_bytes = std::fs::read(&v2).unwrap();
    let truncated = dir.join("truncated.update");
    std::fs::write(&truncated, &good_bytes[..good_bytes.len() - 100_000]).unwrap();
    let corrupt = dir.join("corrupt.update");
    let mut c = good_bytes.clone();
    c[4096 + 3_000_000] ^= 0x40;
    std::fs::write(&corrupt, &c).unwrap();
    let b_before = slot_digest(&mut m, &b_dev);
    for (file, why) in [(&truncated, "truncated"), (&corrupt, "corrupt")] {
        m.copy_in(file, "/run/bad.update").unwrap();
        let out = m.sh("abupdate install /run/bad.update").unwrap();
        assert_eq!(out.status, 1, "{out:?}");
        assert!(
            out.stderr.contains(why) && out.stderr.contains("/run/bad.update"),
            "{out:?}"
        );
        assert_eq!(
            status(&mut m),
            st,
            "state unchanged after a refused {why} file"
        );
        assert_eq!(slot_digest(&mut m, &b_dev), b_before, "slot B untouched");
    }
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

    // v3 whose init exits: tried once, then the box comes back on v2 by itself.
    m.copy_in(&v3_dead, "/run/v3.update").unwrap();
    m.ok("abupdate install /run/v3.update").unwrap();
    let _ = m.exec_argv(
        &["/usr/bin/eve-init", "reboot"],
        &[],
        Duration::from_secs(30),
    );
    m.wait_guest_reset(Duration::from_secs(180)).unwrap();
    let failed = m.boot_until_reset(Duration::from_secs(400)).unwrap();
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
    let _ = m.exec_argv(
        &["/usr/bin/eve-init", "reboot"],
        &[],
        Duration::from_secs(30),
    );
    m.wait_guest_reset(Duration::from_secs(180)).unwrap();
    let trial = m.boot_until_reset(Duration::from_secs(500)).unwrap();
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
    let (mut m, dir) = machine("update-powercut");
    let v2 = variant(&dir, "v2", |_| {});
    m.boot().unwrap();
    wait_status(&mut m, "slot A to be good", |s| good(s, "A"));
    write_data(&mut m);
    m.copy_in(&v2, "/run/v2.update").unwrap();
    // Stream half of the file on stdin and hold the rest back, so the cut lands mid-write.
    m.ok(
        "setsid sh -c '(head -c 45000000 /run/v2.update; sleep 3600) | abupdate install - \
          >/run/install.log 2>&1' </dev/null >/dev/null 2>&1 &",
    )
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

    // Rolling back to the good v1 in A, then booting it.
    let out = m.ok("abupdate rollback").unwrap();
    assert!(out.contains("next boot: slot A"), "{out}");
    assert_eq!(status(&mut m)["next"], "A");
    m.reboot().unwrap();
    let st = wait_status(&mut m, "v1 to run again", |s| good(s, "A"));
    assert_eq!(slot(&st, "B")["state"], "good", "v2 stays available");
    assert_eq!(m.ok("cat /etc/eve-release").unwrap(), "eve-storage dev\n");
    data_intact(&mut m);
    m.poweroff().unwrap();
}
