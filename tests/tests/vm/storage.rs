//! VM tests for storage-init with real ZFS and swtpm: first boot pools every eligible drive into an
//! encrypted pool, later boots import it, foreign data is left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with context on failure

use crate::common::image_policy;
use eve_vmtest::{image_path, test_dir, Content, DiskKind, DiskSpec, Machine, MachineSpec};
use std::path::Path;
use std::process::Command;

fn sha256(path: &Path) -> String {
    let out = Command::new("/usr/bin/sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn guid(m: &mut Machine) -> String {
    m.ok("zpool get -H -o value guid persist")
        .unwrap()
        .trim()
        .to_string()
}

/// Partitions in the pool, from `zpool list -v -P`.
fn members(m: &mut Machine) -> usize {
    m.ok("zpool list -v -H -P persist")
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("/dev/"))
        .count()
}

/// The vault's key status.
fn keystatus(m: &mut Machine) -> String {
    m.ok("zfs get -H -o value keystatus persist/vault")
        .unwrap()
        .trim()
        .to_string()
}

fn four_disks() -> Vec<DiskSpec> {
    vec![
        DiskSpec::blank(DiskKind::Nvme, 2048, "NVMEA"),
        DiskSpec {
            // It reports "reliability degraded" from power-on: a drive that is failing.
            nvme_critical_warning: 0x04,
            ..DiskSpec::blank(DiskKind::Nvme, 2048, "NVMEB")
        },
        DiskSpec::blank(DiskKind::Virtio, 2048, "VIRTA"),
        DiskSpec::blank(DiskKind::Sata, 2048, "SATAA"),
    ]
}

#[test]
fn four_blank_disks_become_one_encrypted_pool_that_survives_reboot_and_foreign_data_is_untouched() {
    let _dir = eve_vmtest::scratch("storage-4disk");
    let dir = test_dir("storage-4disk");
    std::fs::create_dir_all(&dir).unwrap();
    // An ext4 filesystem with a file in it, made on the host.
    let src = dir.join("ext4-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("precious.txt"), "do not touch\n").unwrap();
    let ext4 = std::env::temp_dir().join(format!("eve-ext4-{}.img", std::process::id()));
    let st = Command::new("/sbin/mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&src)
        .arg(&ext4)
        .arg("1536M")
        .status()
        .unwrap();
    assert!(st.success());
    let mut spec = MachineSpec::new("storage-4disk", &image_path());
    spec.boot_kind = DiskKind::Nvme;
    spec.disks = four_disks();
    // storaged looks at health every 15 s here (5 minutes by default).
    spec.config_files = vec![(
        "storage.toml".into(),
        (image_policy() + "\n[health]\nevery = \"15s\"\n").into_bytes(),
    )];
    spec.disks.push(DiskSpec {
        content: Content::Copy(ext4.clone()),
        ..DiskSpec::blank(DiskKind::Sata, 1536, "EXTFOUR")
    });
    spec.disks
        .push(DiskSpec::blank(DiskKind::Usb, 2048, "USBSTICK"));
    spec.disks
        .push(DiskSpec::blank(DiskKind::Virtio, 512, "TINY"));
    let mut m = Machine::create(spec, &dir).unwrap();
    std::fs::remove_file(&ext4).unwrap();
    let ext4_disk = m.disk_file(4).to_path_buf();
    let ext4_before = sha256(&ext4_disk);
    m.boot().unwrap();

    // One pool: P3 on the boot disk plus the four blank drives.
    assert_eq!(m.ok("zpool list -H -o name").unwrap().trim(), "persist");
    assert_eq!(members(&mut m), 5, "{}", m.ok("zpool status -P").unwrap());
    assert_eq!(
        m.ok("zpool get -H -o value health persist").unwrap().trim(),
        "ONLINE"
    );
    m.ok("grep -q ' /persist zfs ' /proc/mounts").unwrap();
    // Encrypted vault, key from the TPM, and the policy's datasets with quotas.
    assert_eq!(
        m.ok("zfs get -H -o value encryption,keystatus persist/vault")
            .unwrap(),
        "aes-256-gcm\navailable\n"
    );
    assert_eq!(
        m.ok("zfs get -H -o value encryptionroot persist/vault/config")
            .unwrap()
            .trim(),
        "persist/vault"
    );
    let quota: u64 = m
        .ok("zfs get -H -p -o value quota persist/newlog")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let avail: u64 = m
        .ok("zfs get -H -p -o value available persist")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(quota > 0 && quota < avail, "newlog quota {quota}");
    assert!(
        m.ok("zfs get -H -p -o value refreservation persist/reserved")
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    // The report names every device and why it was or was not used.
    let plan = m.ok("storage-init plan --json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let verdict = |serial: &str| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["serial"].as_str() == Some(serial))
            .map(|d| d["verdict"]["verdict"].as_str().unwrap().to_string())
    };
    assert_eq!(
        verdict("EXTFOUR").as_deref(),
        Some("foreign-data"),
        "{plan}"
    );
    assert_eq!(verdict("USBSTICK").as_deref(), Some("removable"), "{plan}");
    assert_eq!(verdict("TINY").as_deref(), Some("too-small"), "{plan}");
    assert_eq!(verdict("NVMEA").as_deref(), Some("pool-member"), "{plan}");
    assert_eq!(v["plan"]["action"], "already-imported");

    // The operator's view.
    let (_, status) = crate::common::report(&mut m, "storagectl status");
    assert!(
        status.contains("pool: persist") && status.contains("ONLINE"),
        "{status}"
    );
    assert_eq!(status.matches("  member ").count(), 5, "{status}");
    assert!(
        status.lines().any(|l| l.starts_with("persist/vault ")
            && l.contains("aes-256-gcm")
            && l.contains("available")),
        "{status}"
    );
    let js: serde_json::Value =
        serde_json::from_str(&crate::common::report(&mut m, "storagectl status --json").1).unwrap();
    assert!(
        js["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["stable_id"].is_string()),
        "{js}"
    );
    let newlog = js["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "persist/newlog")
        .unwrap();
    assert_eq!(newlog["quota"].as_u64(), Some(quota));

    // Health: every drive's own report by its bus. The failing NVMe drive is a critical alert,
    // logged once, kept in the journal on the pool and exported for Prometheus.
    let name_of = |m: &mut Machine, link: &str| {
        m.ok(&format!("readlink -f {link} | head -1"))
            .unwrap()
            .trim()
            .trim_start_matches("/dev/")
            .to_string()
    };
    let nvmea = name_of(&mut m, "/dev/disk/by-id/nvme-*NVMEA");
    let nvmeb = name_of(&mut m, "/dev/disk/by-id/nvme-*NVMEB");
    let h: serde_json::Value =
        serde_json::from_str(&crate::common::report(&mut m, "storagectl health --json").1).unwrap();
    let devs = h["observed"]["devices"].as_array().unwrap().clone();
    let by_name = |n: &str| {
        devs.iter()
            .find(|d| d["name"] == n)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by_name(&nvmeb)["critical_warning"], 4, "{h}");
    assert_eq!(by_name(&nvmea)["critical_warning"], 0, "{h}");
    assert!(by_name(&nvmea)["temperature_c"].as_i64().is_some(), "{h}");
    let sata = devs.iter().find(|d| d["serial"] == "SATAA").unwrap();
    assert_eq!(
        (sata["source"].as_str(), sata["smart_passed"].as_bool()),
        (Some("smartctl"), Some(true)),
        "{sata}"
    );
    for d in &devs {
        if d["bus"] == "virtio" || d["bus"] == "usb" {
            assert_eq!(d["reading"], "no-data", "{d}");
        }
    }
    let alerts = h["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{h}");
    assert_eq!(alerts[0]["severity"], "critical");
    assert!(
        alerts[0]["key"]
            .as_str()
            .unwrap()
            .ends_with(":critical-warning")
            && alerts[0]["message"].as_str().unwrap().contains(&nvmeb)
            && alerts[0]["message"]
                .as_str()
                .unwrap()
                .contains("reliability degraded"),
        "{h}"
    );
    let (code, text) = crate::common::report(&mut m, "storagectl health");
    assert_eq!(code, 7, "a critical alert: degraded");
    assert!(
        text.contains("ALERTS: 1 critical") && text.contains("no health report"),
        "{text}"
    );
    let wait = |m: &mut Machine, what: &str, f: &dyn Fn(&str) -> bool| {
        let t0 = std::time::Instant::now();
        loop {
            let log = m.ok("cat /run/log/storaged.log; true").unwrap();
            if f(&log) {
                return log;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(90),
                "no {what}:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    };
    wait(&mut m, "alert for the failing drive", &|l| {
        l.contains(&format!("alert raised [critical] {nvmeb} ("))
    });
    let journal: serde_json::Value =
        serde_json::from_slice(&m.read_file("/persist/.storage/health.json").unwrap()).unwrap();
    let since = journal["active"][0]["since"].as_u64().unwrap();
    assert_eq!(journal["active"].as_array().unwrap().len(), 1, "{journal}");
    let prom = m.ok("cat /run/metrics/eve-storage.prom").unwrap();
    for line in [
        format!("eve_storage_disk_critical_warning{{device=\"{nvmeb}\","),
        "eve_storage_alerts{severity=\"critical\"} 1".to_string(),
        "eve_storage_pool_state{pool=\"persist\",state=\"ONLINE\"} 1".to_string(),
    ] {
        assert!(prom.contains(&line), "{line} not in\n{prom}");
    }
    assert!(
        prom.lines().any(|l| l.starts_with(&format!(
            "eve_storage_disk_critical_warning{{device=\"{nvmeb}\""
        )) && l.ends_with(" 4")),
        "{prom}"
    );
    // `disk list` carries each drive's health, and `status` the journal's alert count.
    let l: serde_json::Value =
        serde_json::from_str(&m.ok("storagectl disk list --json").unwrap()).unwrap();
    let health_of = |n: &str| {
        l["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == n)
            .map(|d| d["health"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        (health_of(&nvmeb).as_str(), health_of(&nvmea).as_str()),
        ("critical", "ok"),
        "{l}"
    );
    assert!(
        m.ok("storagectl disk list")
            .unwrap()
            .contains("ALERT (critical): "),
        "no alert under disk list"
    );
    let (code, st) = crate::common::report(&mut m, "storagectl status");
    assert_eq!(code, 7, "a critical alert: degraded");
    assert!(
        st.contains("health: 1 critical, 0 warning, 0 notice"),
        "{st}"
    );
    // A drive running hot (its temperature threshold set below its temperature, as the kernel
    // or an operator may) raises a warning, and clears when it cools.
    let ctrl = format!("/dev/{}", nvmea.trim_end_matches("n1"));
    m.ok(&format!("nvme set-feature {ctrl} -f 4 -v 300"))
        .unwrap();
    wait(&mut m, "temperature alert", &|l| {
        l.contains(&format!("alert raised [warning] {nvmea} (")) && l.contains("temperature beyond")
    });
    m.ok(&format!("nvme set-feature {ctrl} -f 4 -v 343"))
        .unwrap();
    wait(&mut m, "cleared temperature alert", &|l| {
        l.contains(&format!("alert cleared [warning] {nvmea} ("))
    });

    // ARC is capped for a box that runs VMs: a quarter of RAM here.
    let arc: u64 = m
        .ok("cat /sys/module/zfs/parameters/zfs_arc_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ram: u64 = m
        .ok("awk '/MemTotal/ {print $2 * 1024}' /proc/meminfo")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(arc, (ram / 4).max(256 << 20));
    // No process after storage-init can unseal the vault key (the unlock phase is over): the
    // escrow command earlier releases had is gone; the recovery key replaces it.
    assert_ne!(
        m.sh("storage-init unseal-key --out /run/vault.key")
            .unwrap()
            .status,
        0
    );
    m.ok("test ! -e /run/vault.key").unwrap();
    // What of the vault's secrets a test can hold: the recovery key the first boot showed, as
    // text and as its 32 raw bytes (the key the vault key is wrapped to).
    let console = std::fs::read_to_string(dir.join("console-1.log")).unwrap_or_default();
    let shown = console
        .split_whitespace()
        .find(|w| w.len() == 71 && w.split('-').count() == 8)
        .expect("the recovery key on the first boot's console")
        .to_string();
    let key = modhex(&shown);

    let g = guid(&mut m);
    m.ok("echo log-data > /persist/newlog/before && echo secret > /persist/config/before && sync")
        .unwrap();
    // A blank drive is plugged in while the box is off; the policy does not add drives by
    // itself, so it waits for the operator.
    m.poweroff().unwrap();
    m.attach_disk(&DiskSpec::blank(DiskKind::Virtio, 2048, "ADDME"))
        .unwrap();
    m.boot().unwrap();

    assert_eq!(guid(&mut m), g, "a different pool after reboot");
    assert_eq!(members(&mut m), 5);
    // The alert journal is on the pool: the failing drive's alert is the same one, not new.
    let journal: serde_json::Value =
        serde_json::from_slice(&m.read_file("/persist/.storage/health.json").unwrap()).unwrap();
    assert_eq!(
        journal["active"][0]["since"].as_u64(),
        Some(since),
        "{journal}"
    );
    // `disk add` grows the stripe by the blank drive and refuses every other kind, naming why.
    for (link, why) in [
        ("/dev/disk/by-id/ata-QEMU_HARDDISK_EXTFOUR", "foreign-data"),
        ("/dev/disk/by-id/virtio-TINY", "too-small"),
        // A member of this pool (kernel names may change across boots; the serial does not).
        (
            "$(readlink -f /dev/disk/by-id/nvme-*NVMEA | head -1)",
            "of pool `persist`",
        ),
        ("/dev/nosuch", "no such device"),
    ] {
        let o = m.sh(&format!("storagectl disk add {link}")).unwrap();
        assert_eq!(o.status, 4, "refused: {link}: {o:?}");
        assert!(o.stderr.contains(why), "{link}: {}", o.stderr);
    }
    assert_eq!(members(&mut m), 5);
    let o = m
        .ok("storagectl disk add /dev/disk/by-id/virtio-ADDME")
        .unwrap();
    assert!(o.contains("grew by"), "{o}");
    assert_eq!(members(&mut m), 6, "{}", m.ok("zpool status -P").unwrap());
    assert_eq!(
        m.ok("zpool get -H -o value health persist").unwrap().trim(),
        "ONLINE"
    );
    let addme = m.ok("readlink -f /dev/disk/by-id/virtio-ADDME").unwrap();
    let list = m.ok("storagectl disk list").unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with(addme.trim().trim_start_matches("/dev/"))
                && l.contains("pool-member")
                && l.contains("ONLINE")),
        "{list}"
    );
    assert_eq!(
        m.ok("cat /persist/newlog/before /persist/config/before")
            .unwrap(),
        "log-data\nsecret\n"
    );
    assert_eq!(keystatus(&mut m), "available");
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("importing pool persist"),
        "second boot did not import"
    );

    selftests_a_bundle_and_a_rotated_log(&mut m, &dir, &shown, &key);

    // Runaway writer: newlog hits its quota, containerd still takes writes.
    let fill = m
        .sh("dd if=/dev/urandom of=/persist/newlog/fill bs=1M count=4096 2>&1")
        .unwrap();
    assert_ne!(fill.status, 0, "filling newlog did not fail");
    assert!(
        fill.stdout.contains("quota"),
        "expected EDQUOT, got: {}",
        fill.stdout
    );
    m.ok("dd if=/dev/urandom of=/persist/containerd/still-ok bs=1M count=16 2>/dev/null && sync")
        .unwrap();
    let reserved: u64 = m
        .ok("zfs get -H -p -o value refreservation persist/reserved")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let free: u64 = m
        .ok("zpool get -H -p -o value free persist")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        free >= reserved,
        "reserved share eaten: free {free} < reserved {reserved}"
    );
    // The full dataset is a critical alert (its quota at the last capacity tier).
    wait(&mut m, "quota alert", &|l| {
        l.contains("[critical] persist/newlog uses")
    });
    m.poweroff().unwrap();
    assert_eq!(
        sha256(&ext4_disk),
        ext4_before,
        "the ext4 disk was modified"
    );
    // The recovery key is nowhere on any disk image, boot disk included, as text or raw.
    let mut files: Vec<std::path::PathBuf> = (0..8).map(|i| m.disk_file(i).to_path_buf()).collect();
    files.push(m.dir.join("boot.qcow2"));
    for f in files {
        for needle in [&key[..], shown.as_bytes()] {
            assert!(
                !contains(&f, needle),
                "the recovery key found in {}",
                f.display()
            );
        }
    }
}

/// Issue 29 on a box with SATA, NVMe and virtio drives: the drives' own self-tests, a support
/// bundle with no secret in it, and a service's log rotated past its limit.
fn selftests_a_bundle_and_a_rotated_log(m: &mut Machine, dir: &Path, shown: &str, key: &[u8]) {
    use serde_json::Value;
    // NVMe stable ids carry the serial in hex (`nvme.1b36-4e564d4541-...` for NVMEA).
    let row = |v: &Value, serial: &str| -> Value {
        let hex: String = serial.bytes().map(|b| format!("{b:02x}")).collect();
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| {
                let id = r["stable_id"].as_str().unwrap_or("");
                id.contains(serial) || id.contains(&format!("-{hex}-"))
            })
            .unwrap_or_else(|| panic!("no {serial} in {v}"))
            .clone()
    };
    // The pool's drives: qemu's SATA drive runs SMART's short test; its NVMe controller offers
    // none (OACS bit 4 clear) and says so; the virtio disk gives no report.
    let o = m.sh("storagectl disk selftest --json").unwrap();
    assert_eq!(o.status, 0, "{o:?}");
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["kind"], "short", "{v}");
    assert_eq!(row(&v["drives"], "SATAA")["outcome"], "started", "{v}");
    let nvme = row(&v["drives"], "NVMEA");
    assert_eq!(nvme["outcome"], "skipped", "{v}");
    assert!(
        nvme["reason"].as_str().unwrap().contains("OACS bit 4"),
        "{v}"
    );
    assert!(
        row(&v["drives"], "VIRTA")["reason"]
            .as_str()
            .unwrap()
            .contains("no self-test report"),
        "{v}"
    );
    // The emulated NVMe drive named alone: nothing can start, so refused (4) with the reason.
    let o = m
        .sh("storagectl disk selftest $(readlink -f /dev/disk/by-id/nvme-*NVMEA | head -1)")
        .unwrap();
    assert_eq!(o.status, 4, "{o:?}");
    assert!(
        o.stdout.contains("OACS bit 4") && o.stderr.contains("no drive could start"),
        "{o:?}"
    );
    let o = m.sh("storagectl disk selftest --long nosuchdrive").unwrap();
    assert_eq!(o.status, 4, "{o:?}");
    assert!(o.stderr.contains("no drive nosuchdrive"), "{o:?}");
    // The result comes back from the drive's own log into `disk list`.
    let t0 = std::time::Instant::now();
    loop {
        let v: Value = serde_json::from_str(&m.ok("storagectl disk list --json").unwrap()).unwrap();
        let sata = row(&v["disks"], "SATAA");
        if sata["selftest"]["last"]["outcome"] == "passed" {
            assert_eq!(sata["selftest"]["last"]["kind"], "short", "{sata}");
            assert_eq!(
                row(&v["disks"], "NVMEA")["selftest"]["state"],
                "unsupported",
                "{v}"
            );
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(120),
            "no self-test result for SATAA: {sata}"
        );
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    let list = m.ok("storagectl disk list").unwrap();
    assert!(list.lines().next().unwrap().contains("SELFTEST"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains("SATAA") && l.contains(" passed")),
        "{list}"
    );
    assert!(
        // (status exits 7 here: the failing drive's critical alert from earlier stands.)
        m.sh("storagectl status")
            .unwrap()
            .stdout
            .contains("selftest every 1w"),
        "the schedule is shown"
    );

    // A support bundle from a box holding a volume's CHAP secrets and a recovery key.
    m.ok("storagectl volume create bundled --size 64M --vm vmb --transport nvme-tcp --clear")
        .unwrap();
    let t0 = std::time::Instant::now();
    while m
        .sh("storagectl volume connect bundled --out /run/conn")
        .unwrap()
        .status
        != 0
    {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(120),
            "bundled was never exported"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    let nvmf = String::from_utf8(m.read_file("/run/conn/bundled.nvmf").unwrap()).unwrap();
    let secrets: Vec<String> = nvmf
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.starts_with("dhchap"))
        .map(|(_, v)| v.trim().to_string())
        .collect();
    assert_eq!(secrets.len(), 2, "{nvmf}");
    let o = m
        .sh("storagectl bundle --out /run/support.tar.gz --json")
        .unwrap();
    assert_eq!(o.status, 0, "{o:?}");
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["version"], 1, "{v}");
    assert_eq!(
        m.ok("stat -c %a /run/support.tar.gz").unwrap().trim(),
        "600"
    );
    let out = dir.join("bundle");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("b.tar.gz"),
        m.read_file("/run/support.tar.gz").unwrap(),
    )
    .unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(out.join("b.tar.gz"))
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let root = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    assert!(read("zpool/status.txt").contains("pool: persist"));
    assert!(read("zpool/history.txt").contains("zpool create"));
    assert!(read("zpool/events.txt").contains("class"));
    assert!(read("volumes/nvmet-export.json").contains("bundled"));
    let cfs = read("volumes/nvmet-configfs.txt");
    assert!(
        cfs.contains("dhchap_key (left out: it holds a key)"),
        "{cfs}"
    );
    assert!(read("version/release.json").contains("version"));
    assert!(read("log/run/storage-init.log").contains("INFO"));
    assert!(read("log/dmesg.txt").contains("Linux version"));
    let status: Value = serde_json::from_str(&read("storage/status.json")).unwrap();
    assert_eq!(status["pool"]["name"], "persist", "{status}");
    // No secret anywhere: the CHAP secrets (whole or their key part), the recovery key as
    // shown, without its dashes or in capitals, and as raw bytes; no private key.
    let mut needles: Vec<Vec<u8>> = vec![
        shown.as_bytes().to_vec(),
        shown.replace('-', "").into_bytes(),
        shown.replace('-', "").to_uppercase().into_bytes(),
        key.to_vec(),
        b"PRIVATE KEY".to_vec(),
    ];
    for s in &secrets {
        needles.push(s.clone().into_bytes());
        let part = s.trim_start_matches("DHHC-1:00:").trim_end_matches(':');
        needles.push(part.as_bytes().to_vec());
    }
    let mut files = vec![out.join("b.tar.gz")];
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    assert!(files.len() > 20, "{files:?}");
    for f in &files[1..] {
        for n in &needles {
            assert!(
                !contains(f, n),
                "a secret ({}) in the bundle's {}",
                String::from_utf8_lossy(&n[..n.len().min(12)]),
                f.display()
            );
        }
    }

    // A service's log rotated past its limit (512 KiB in /run, one kept): 12,000 distinct lines
    // fed into the agent's own stderr pipe, as its output would arrive.
    m.ok("awk 'BEGIN { for (i = 1; i <= 12000; i++) printf \"rotation-check line %06d\\n\", i }' > /proc/$(pidof eve-agent)/fd/2")
        .unwrap();
    let t0 = std::time::Instant::now();
    let (old, new) = loop {
        let new = String::from_utf8(m.read_file("/run/log/agent.log").unwrap()).unwrap();
        if new.contains("rotation-check line 012000") {
            let old = String::from_utf8(m.read_file("/run/log/agent.log.1").unwrap()).unwrap();
            break (old, new);
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(120),
            "the last line never reached the log"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    assert_eq!(
        m.sh("test -e /run/log/agent.log.2").unwrap().status,
        1,
        "only one rotated file is kept in /run"
    );
    for (name, text) in [("agent.log.1", &old), ("agent.log", &new)] {
        assert!(
            text.len() as u64 <= (512 << 10) + 4096,
            "{name}: {} bytes",
            text.len()
        );
    }
    // Every line stamped with its UTC time and a level; the 12,000 lines all there, in order,
    // across the two files.
    let mut seen = Vec::new();
    for l in old.lines().chain(new.lines()) {
        let (stamp, rest) = l
            .split_once(' ')
            .unwrap_or_else(|| panic!("unstamped: {l}"));
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "no time: {l}"
        );
        assert!(
            ["INFO ", "WARN ", "ERROR "]
                .iter()
                .any(|lv| rest.starts_with(lv)),
            "no level: {l}"
        );
        if let Some(n) = l.split("rotation-check line ").nth(1) {
            seen.push(n.trim().parse::<u32>().unwrap());
        }
    }
    assert_eq!(
        seen,
        (1..=12000).collect::<Vec<u32>>(),
        "lines lost or reordered"
    );
}

/// The 32 bytes a recovery key shown in modhex (8 dash-separated groups) stands for.
fn modhex(shown: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"cbdefghijklnrtuv";
    let nib = |c: u8| ALPHABET.iter().position(|&a| a == c).unwrap() as u8;
    let chars: Vec<u8> = shown.bytes().filter(|&b| b != b'-').collect();
    assert_eq!(chars.len(), 64, "{shown}");
    chars
        .chunks(2)
        .map(|p| nib(p[0]) << 4 | nib(p[1]))
        .collect()
}

/// Streams `path` looking for `needle` (also across chunk boundaries).
fn contains(path: &Path, needle: &[u8]) -> bool {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        let mut hay = std::mem::take(&mut carry);
        hay.extend_from_slice(&buf[..n]);
        if hay.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        carry = hay[hay.len().saturating_sub(needle.len() - 1)..].to_vec();
    }
}

/// Power cut at each step of first-boot setup, then a cold boot: the pool always ends complete.
/// The CONFIG partition also carries a malformed policy: the built-in one is used, and the console says why.
#[test]
fn power_cut_during_first_boot_setup_always_converges() {
    let markers = [
        "creating P3 in the free space",
        "writing a GPT with one persist partition",
        "creating pool persist",
        "created, aes-256-gcm",
    ];
    for (i, marker) in markers.iter().enumerate() {
        let name = format!("storage-cut{i}");
        let _dir = eve_vmtest::scratch(&name);
        let mut spec = MachineSpec::new(&name, &image_path());
        spec.disks = vec![
            DiskSpec::blank(DiskKind::Nvme, 2048, "NVMEA"),
            DiskSpec::blank(DiskKind::Sata, 2048, "SATAA"),
        ];
        spec.config_files = vec![(
            "storage.toml".into(),
            b"[pool]\ntopology = \"raid5\"\n".to_vec(),
        )];
        let mut m = Machine::create(spec, &test_dir(&name)).unwrap();
        m.boot_until_console(marker).unwrap();
        m.power_cut().unwrap();
        m.boot().unwrap();
        let ctx = format!("cut at `{marker}`");
        assert_eq!(
            m.ok("zpool get -H -o value health persist").unwrap().trim(),
            "ONLINE",
            "{ctx}"
        );
        assert_eq!(
            members(&mut m),
            3,
            "{ctx}: {}",
            m.ok("zpool status -P").unwrap()
        );
        assert_eq!(
            m.ok("zfs get -H -o value keystatus persist/vault")
                .unwrap()
                .trim(),
            "available",
            "{ctx}"
        );
        m.ok("zfs list persist/newlog persist/containerd persist/reserved persist/vault/config persist/vault/volumes").unwrap();
        // Every partition storage-init made carries its final name on disk (the kernel keeps the
        // old name of in-use partitions until the next boot, so ask storage-init, which reads the GPT).
        let plan: serde_json::Value =
            serde_json::from_str(&m.ok("storage-init plan --json").unwrap()).unwrap();
        assert!(
            plan["observed"]["p3"]["Done"].is_object(),
            "{ctx}: P3 not final: {}",
            plan["observed"]["p3"]
        );
        for d in plan["observed"]["drives"].as_array().unwrap() {
            assert_eq!(d["ours_pending"], false, "{ctx}: {d}");
        }
        let console = std::fs::read_to_string(m.console_log()).unwrap();
        assert!(
            console.contains("policy REJECTED: /config/storage.toml:2: topology"),
            "{ctx}: bad policy not reported"
        );
        m.power_cut().unwrap();
    }
}

#[test]
fn another_pool_is_left_alone_and_a_new_blank_drive_joins_when_allowed() {
    let _dir = eve_vmtest::scratch("storage-grow");
    let dir = test_dir("storage-grow");
    let mut spec = MachineSpec::new("storage-grow", &image_path());
    spec.disks = vec![DiskSpec::blank(DiskKind::Nvme, 2048, "NVMEA")];
    let policy = image_policy();
    spec.config_files = vec![(
        "storage.toml".into(),
        policy
            .replace("[pool]\n", "[pool]\nadd_new_drives = true\n")
            .into_bytes(),
    )];
    let mut m = Machine::create(spec, &dir).unwrap();
    m.boot().unwrap();
    assert_eq!(members(&mut m), 2);
    let g = guid(&mut m);
    // Someone else's pool, made in the guest and carried out as a disk image.
    m.ok("truncate -s 64M /tmp/tank.img && zpool create -o cachefile=none -m /tmp/tankfs tank /tmp/tank.img && echo theirs > /tmp/tankfs/file && zpool export tank").unwrap();
    let tank = dir.join("tank.img");
    m.copy_out("/tmp/tank.img", &tank).unwrap();
    m.poweroff().unwrap();
    let tank_sum = sha256(&tank);
    m.attach_disk(&DiskSpec {
        content: Content::Copy(tank.clone()),
        ..DiskSpec::blank(DiskKind::Virtio, 64, "TANK")
    })
    .unwrap();
    m.attach_disk(&DiskSpec::blank(DiskKind::Sata, 2048, "NEWDRIVE"))
        .unwrap();

    m.boot().unwrap();
    assert_eq!(guid(&mut m), g);
    assert_eq!(
        members(&mut m),
        3,
        "the new drive did not join: {}",
        m.ok("zpool status -P").unwrap()
    );
    assert_eq!(
        m.ok("zpool list -H -o name").unwrap().trim(),
        "persist",
        "the other pool was imported"
    );
    let plan: serde_json::Value =
        serde_json::from_str(&m.ok("storage-init plan --json").unwrap()).unwrap();
    let tank_dev = plan["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == "TANK")
        .unwrap()
        .clone();
    assert_eq!(tank_dev["verdict"]["verdict"], "other-pool", "{tank_dev}");
    assert_eq!(tank_dev["verdict"]["pool"], "tank");
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("adding to pool persist"),
        "the addition is not logged"
    );
    m.poweroff().unwrap();
    // The copy was padded to the disk's size; the pool's own bytes must be unchanged.
    let mut on_disk = std::fs::read(m.dir.join("disk101-TANK.img")).unwrap();
    on_disk.truncate(std::fs::metadata(&tank).unwrap().len() as usize);
    std::fs::write(dir.join("tank-after.img"), &on_disk).unwrap();
    assert_eq!(
        sha256(&dir.join("tank-after.img")),
        tank_sum,
        "the other pool's disk was modified"
    );

    // A stripe member pulled: the pool cannot be imported, and nothing is written; `disk list`
    // and `health` read it from the import listing and name the missing member as the data
    // risk it is.
    m.detach_disk("NEWDRIVE").unwrap();
    m.boot().unwrap();
    assert!(m.ok("zpool list -H -o name").unwrap().trim().is_empty());
    let l: serde_json::Value =
        serde_json::from_str(&m.ok("storagectl disk list --json").unwrap()).unwrap();
    let risks = l["risks"].to_string();
    assert!(
        risks.contains("is not imported")
            && risks.contains("stripe member")
            && risks.contains("at risk"),
        "{l}"
    );
    assert_eq!(l["missing"].as_array().unwrap().len(), 1, "{l}");
    let (code, h) = crate::common::report(&mut m, "storagectl health --json");
    assert_eq!(code, 6, "the pool cannot be imported");
    let h: serde_json::Value = serde_json::from_str(&h).unwrap();
    let alerts = h["alerts"].to_string();
    assert!(
        alerts.contains("stripe member") && alerts.contains("not imported"),
        "{h}"
    );
    m.power_cut().unwrap();
}

#[test]
fn fresh_tpm_leaves_the_vault_locked_and_a_missing_mirror_member_is_replaced_through_a_power_cut() {
    let _dir = eve_vmtest::scratch("storage-tpm");
    let mut spec = MachineSpec::new("storage-tpm", &image_path());
    spec.disks = vec![
        DiskSpec::blank(DiskKind::Nvme, 2048, "NVMEA"),
        DiskSpec::blank(DiskKind::Virtio, 2048, "VIRTA"),
    ];
    // The user's override on the CONFIG partition asks for a mirror.
    let policy = image_policy();
    spec.config_files = vec![(
        "storage.toml".into(),
        policy
            .replace("topology = \"stripe\"", "topology = \"mirror\"")
            .into_bytes(),
    )];
    // The management API's port: the replacement below is asked from the host through it.
    spec.forward = vec![8443];
    let mut m = Machine::create(spec, &test_dir("storage-tpm")).unwrap();
    m.boot().unwrap();
    let g = guid(&mut m);
    assert!(
        m.ok("zpool status persist").unwrap().contains("mirror-0"),
        "CONFIG override not applied"
    );
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("policy: /config/storage.toml"),
        "policy source not reported"
    );
    m.ok("echo kept > /persist/config/data && echo clear > /persist/newlog/data && sync")
        .unwrap();
    m.poweroff().unwrap();

    // Another TPM: the sealed key cannot be loaded; nothing is destroyed or recreated.
    m.reset_tpm().unwrap();
    m.boot().unwrap();
    assert_eq!(guid(&mut m), g);
    assert_eq!(keystatus(&mut m), "unavailable");
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("VAULT LOCKED: persist/vault"),
        "no clear vault error on the console"
    );
    assert!(
        console.contains("different or cleared TPM"),
        "the reason is not given"
    );
    m.ok("zfs list persist/vault/config").unwrap();
    assert_eq!(m.ok("cat /persist/newlog/data").unwrap(), "clear\n");
    m.poweroff().unwrap();

    // A member pulled while off: degraded import, loud report, same pool, data intact.
    m.detach_disk("VIRTA").unwrap();
    m.boot().unwrap();
    assert_eq!(guid(&mut m), g, "a new pool was made");
    assert_eq!(
        m.ok("zpool get -H -o value health persist").unwrap().trim(),
        "DEGRADED"
    );
    assert_eq!(m.ok("cat /persist/newlog/data").unwrap(), "clear\n");
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("DEGRADED"),
        "degraded import is not reported on the console"
    );

    // `disk list` names the missing member and what it risks.
    let l: serde_json::Value =
        serde_json::from_str(&m.ok("storagectl disk list --json").unwrap()).unwrap();
    let missing = l["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{l}");
    let gone = missing[0]["guid"].as_u64().unwrap().to_string();
    // A three-way mirror (the boot disk's P3 and two drives) keeps two healthy members.
    let risks = l["risks"].to_string();
    assert!(
        risks.contains("in mirror-0 is CANT_OPEN") && risks.contains("2 healthy members"),
        "{l}"
    );
    assert!(
        l["disks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| !d["name"].as_str().unwrap().starts_with("loop")),
        "{l}"
    );
    let text = m.ok("storagectl disk list").unwrap();
    assert!(
        text.contains("(missing)") && text.contains("RISK:"),
        "{text}"
    );
    // Enough data that the resilver takes a while, to cut the power in the middle of it.
    m.ok("dd if=/dev/urandom of=/persist/containerd/big bs=1M count=256 2>/dev/null && sync")
        .unwrap();
    let sum = m.ok("sha256sum < /persist/containerd/big").unwrap();
    m.poweroff().unwrap();

    // A blank drive replaces it; drives that are not eligible are refused with the reason.
    m.attach_disk(&DiskSpec::blank(DiskKind::Virtio, 2048, "NEWVIRT"))
        .unwrap();
    m.attach_disk(&DiskSpec::blank(DiskKind::Virtio, 512, "SMALL"))
        .unwrap();
    m.boot().unwrap();
    let member = m
        .ok("readlink -f /dev/disk/by-id/nvme-*NVMEA | head -1")
        .unwrap();
    for (old, new, why) in [
        (gone.as_str(), "/dev/disk/by-id/virtio-SMALL", "too-small"),
        (gone.as_str(), member.trim(), "of pool `persist`"),
        ("nosuch", "/dev/disk/by-id/virtio-NEWVIRT", "not a member"),
    ] {
        let o = m
            .sh(&format!("storagectl disk replace {old} {new} --no-wait"))
            .unwrap();
        assert_eq!(o.status, 4, "refused: {old} {new}: {o:?}");
        assert!(o.stderr.contains(why), "{old} {new}: {}", o.stderr);
    }
    // The replacement itself is asked from the host through the management API, as an
    // operator runs a production box (the vault is locked here: the API serves regardless).
    let api = eve_vmtest::ApiAccess::pin(
        &m,
        &image_path(),
        8443,
        &test_dir("storage-tpm").join("api"),
    );
    let args = [
        "disk",
        "replace",
        gone.as_str(),
        "/dev/disk/by-id/virtio-NEWVIRT",
        "--no-wait",
    ];
    let o = api.run("storagectl", "reader", &args);
    assert_eq!(o.status, 4, "a reader replaced a disk");
    assert!(o.stderr.contains("403 forbidden"), "{}", o.stderr);
    let o = api.run(
        "storagectl",
        "admin",
        &[
            "disk",
            "replace",
            gone.as_str(),
            "/dev/disk/by-id/virtio-SMALL",
            "--no-wait",
        ],
    );
    assert_eq!(o.status, 4, "refused on the box: {o:?}");
    assert!(
        o.stderr.contains("too-small") && o.stderr.contains("409 refused"),
        "{}",
        o.stderr
    );
    let o = api.run("storagectl", "admin", &args);
    assert_eq!(o.status, 0, "{o:?}");
    assert!(
        o.stdout.starts_with(&format!(
            "{gone} is being replaced by /dev/disk/by-id/virtio-NEWVIRT ("
        )),
        "{}",
        o.stdout
    );
    let o = m.ok("zpool status persist").unwrap();
    let cut_mid_resilver = o.contains("resilver in progress");
    m.power_cut().unwrap();

    // The next boot resumes the resilver; it completes and the data verifies. The change is on
    // the audit journal: who asked for it and what came of it.
    m.boot().unwrap();
    let api = eve_vmtest::ApiAccess::pin(
        &m,
        &image_path(),
        8443,
        &test_dir("storage-tpm").join("api"),
    );
    let audit = api.run("storagectl", "admin", &["audit", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&audit.stdout).unwrap();
    let done = |status: u64| {
        entries.as_array().unwrap().iter().any(|e| {
            e["path"] == "/v1/disks/replace"
                && e["status"] == status
                && e["subject"] == "CN=dev-admin"
        })
    };
    assert!(done(200) && done(409), "{entries}");
    wait_for_resilver(&mut m);
    let o = api.run("storagectl", "reader", &["disk", "list", "--json"]);
    let l: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(l["missing"].as_array().unwrap().len(), 0, "{l}");
    let l: serde_json::Value =
        serde_json::from_str(&m.ok("storagectl disk list --json").unwrap()).unwrap();
    assert_eq!(l["missing"].as_array().unwrap().len(), 0, "{l}");
    assert_eq!(l["risks"].as_array().unwrap().len(), 0, "{l}");
    assert_eq!(
        m.ok("zpool get -H -o value health persist").unwrap().trim(),
        "ONLINE"
    );
    assert_eq!(m.ok("sha256sum < /persist/containerd/big").unwrap(), sum);
    m.ok("zpool scrub -w persist").unwrap();
    let st = m.ok("zpool status persist").unwrap();
    assert!(st.contains("with 0 errors"), "{st}");
    eprintln!("power cut landed mid-resilver: {cut_mid_resilver}");

    // With `autoreplace = true` in the policy, a blank drive put in place of a pulled member is
    // taken without a command (the too-small drive beside it is not).
    // (The config dataset's 1G quota is cut to fit this small pool: with the pool's size known,
    // the image's quotas add up to more than it.)
    let auto = image_policy()
        .replace(
            "topology = \"stripe\"",
            "topology = \"mirror\"\nautoreplace = true",
        )
        .replace("quota = \"1G\"", "quota = \"256M\"");
    assert!(auto.contains("autoreplace = true") && auto.contains("256M"));
    m.ok("mount -o remount,rw /config").unwrap();
    m.write_file("/config/storage.toml", auto.as_bytes(), 0o644)
        .unwrap();
    m.ok("sync && mount -o remount,ro /config").unwrap();
    m.poweroff().unwrap();
    m.detach_disk("NEWVIRT").unwrap();
    m.attach_disk(&DiskSpec::blank(DiskKind::Virtio, 2048, "AUTO"))
        .unwrap();
    m.boot().unwrap();
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        !console.contains("policy REJECTED"),
        "the autoreplace policy was rejected"
    );
    let t0 = std::time::Instant::now();
    loop {
        let st = m.ok("zpool status persist").unwrap();
        if st.contains("state: ONLINE") && !st.contains("resilver in progress") {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(300),
            "no automatic replacement: {st}\n{}",
            m.ok("cat /run/log/storaged.log; true").unwrap()
        );
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    let log = m.ok("cat /run/log/storaged.log").unwrap();
    assert!(
        log.contains("autoreplace:") && log.contains("blank drive vd"),
        "{log}"
    );
    let auto_dev = m.ok("readlink -f /dev/disk/by-id/virtio-AUTO").unwrap();
    let list = m.ok("storagectl disk list").unwrap();
    let row = list
        .lines()
        .find(|l| l.starts_with(auto_dev.trim().trim_start_matches("/dev/")))
        .unwrap_or_default();
    assert!(row.contains("mirror-0") && row.contains("ONLINE"), "{list}");
    assert_eq!(m.ok("sha256sum < /persist/containerd/big").unwrap(), sum);
    // A three-way mirror grows by three drives at a time, never by one.
    let o = m
        .sh("storagectl disk add /dev/disk/by-id/virtio-SMALL")
        .unwrap();
    assert_eq!(o.status, 4, "{o:?}");
    assert!(
        o.stderr
            .contains("mirror pool of 3-drive groups grows by 3 drives at a time; 1 given"),
        "{}",
        o.stderr
    );
    m.power_cut().unwrap();
}

/// Waits (up to 5 minutes) until the pool has no resilver running.
fn wait_for_resilver(m: &mut Machine) {
    let t0 = std::time::Instant::now();
    loop {
        let st = m.ok("zpool status persist").unwrap();
        if !st.contains("resilver in progress") && !st.contains("replacing") {
            return;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(300),
            "the resilver did not finish: {st}"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// Odd devices never stop bring-up: an empty CD drive (its probe fails: no medium) is reported
/// as unreadable; a USB stick carrying our pending partition name is removable and left exactly
/// as it was; a boot disk exactly the image's size has no room for P3, so the pool is made from
/// the one data disk, with a warning, and /persist comes up.
#[test]
fn odd_devices_never_stop_bring_up_and_an_image_sized_boot_disk_pools_the_other_drive() {
    let _dir = eve_vmtest::scratch("storage-odd");
    let dir = test_dir("storage-odd");
    std::fs::create_dir_all(&dir).unwrap();
    let stick = dir.join("stick-src.img");
    let _ = std::fs::remove_file(&stick);
    let st = Command::new("/usr/bin/truncate")
        .args(["-s", "1G"])
        .arg(&stick)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("/sbin/sgdisk")
        .args(["-q", "-n1:0:0", "-c1:eve-persist-pending"])
        .arg(&stick)
        .status()
        .unwrap();
    assert!(st.success());
    let image = image_path();
    let mut spec = MachineSpec::new("storage-odd", &image);
    spec.boot_size_mib = std::fs::metadata(&image).unwrap().len().div_ceil(1 << 20);
    spec.disks = vec![
        DiskSpec::blank(DiskKind::Nvme, 2048, "DATA1"),
        DiskSpec {
            content: Content::Copy(stick.clone()),
            ..DiskSpec::blank(DiskKind::Usb, 1024, "PENDSTICK")
        },
        DiskSpec::blank(DiskKind::Cdrom, 1, "EMPTYCD"),
        DiskSpec {
            io_errors: true,
            ..DiskSpec::blank(DiskKind::Virtio, 1024, "DYING")
        },
    ];
    let mut m = Machine::create(spec, &dir.join("vm")).unwrap();
    let stick_disk = m.disk_file(1).to_path_buf();
    let stick_before = sha256(&stick_disk);
    m.boot().unwrap();
    m.ok("grep -q ' /persist zfs ' /proc/mounts").unwrap();
    assert_eq!(members(&mut m), 1, "{}", m.ok("zpool status -P").unwrap());
    assert_eq!(keystatus(&mut m), "available");
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("has no free space for P3"),
        "no warning about P3"
    );
    let plan: serde_json::Value =
        serde_json::from_str(&m.ok("storage-init plan --json").unwrap()).unwrap();
    let dev = |serial: &str| {
        plan["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["serial"].as_str() == Some(serial))
            .cloned()
    };
    assert_eq!(
        dev("PENDSTICK").unwrap()["verdict"]["verdict"],
        "removable",
        "{plan}"
    );
    assert_eq!(
        dev("DATA1").unwrap()["verdict"]["verdict"],
        "pool-member",
        "{plan}"
    );
    let cd = plan["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"].as_str().is_some_and(|n| n.starts_with("sr")))
        .cloned()
        .unwrap_or_else(|| panic!("no CD drive in {plan}"));
    // Its probe fails (no medium) or finds nothing: either way it is reported and left out.
    let v = cd["verdict"]["verdict"].as_str().unwrap();
    assert!(v == "unreadable" || v == "removable", "{cd}");
    // A drive whose reads fail gets its own verdict with the error; the others were pooled.
    let dying = dev("DYING").unwrap();
    assert_eq!(dying["verdict"]["verdict"], "unreadable", "{dying}");
    assert!(
        console.contains("probing with libblkid") && console.contains("left out"),
        "the unreadable drive is not reported on the console"
    );

    // The CONFIG policy renames the pool: rejected whole, naming the field and the pool's real
    // name, and the box still comes up with its pool at /persist.
    let g = guid(&mut m);
    m.ok("echo kept > /persist/newlog/before && sync").unwrap();
    m.ok("mount -o remount,rw /config && sed 's/^name = \"persist\"/name = \"tank\"/' /etc/storage.toml > /config/storage.toml && sync && grep -q 'name = \"tank\"' /config/storage.toml")
        .unwrap();
    m.reboot().unwrap();
    assert_eq!(guid(&mut m), g);
    assert_eq!(m.ok("cat /persist/newlog/before").unwrap(), "kept\n");
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("policy REJECTED: /config/storage.toml:")
            && console.contains("pool.name: `tank`, but this box's pool is `persist`"),
        "the rename is not reported"
    );
    m.poweroff().unwrap();
    assert_eq!(
        sha256(&stick_disk),
        stick_before,
        "the USB stick was modified"
    );
}

/// `storage-init plan` on a box that has no pool yet (its boot disk has no room for P3 and its
/// only other drive is too small, so its first boot made nothing; then a blank drive is plugged
/// in) prints the whole run: the pool to create, the vault with a TPM-sealed key, every dataset,
/// the mounts and the files. It changes nothing: no pool, no partition on the drive, the same mounts (the
/// CONFIG policy it reads is mounted in a namespace of its own), no ARC cap, no outcome file.
#[test]
fn the_plan_of_a_fresh_box_names_the_pool_the_vault_and_every_dataset_and_changes_nothing() {
    let _dir = eve_vmtest::scratch("storage-fresh-plan");
    let dir = test_dir("storage-fresh-plan");
    let image = image_path();
    let mut spec = MachineSpec::new("storage-fresh-plan", &image);
    spec.boot_size_mib = std::fs::metadata(&image).unwrap().len().div_ceil(1 << 20);
    // A CONFIG policy, so the plan shows it read one without mounting it for the box.
    spec.config_files = vec![("storage.toml".into(), image_policy().into_bytes())];
    // A SCSI drive too small to pool: the box has a SCSI bus to plug the fresh drive into, and
    // still nothing to build a pool on.
    spec.disks = vec![DiskSpec::blank(DiskKind::Scsi, 64, "SMALL")];
    let mut m = Machine::create(spec, &dir.join("vm")).unwrap();
    m.boot().unwrap();
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("nothing to build a pool on"),
        "the first boot did not say why it made no pool"
    );
    assert_eq!(m.ok("zpool list -H -o name").unwrap().trim(), "");
    // Big enough for the image's policy: its fixed quotas are too much of a 2 GiB pool.
    m.plug_disk(&DiskSpec::blank(DiskKind::Scsi, 4096, "FRESH"))
        .unwrap();
    m.ok("for i in $(seq 60); do grep -q FRESH /sys/block/sd*/device/serial 2>/dev/null && exit 0; ls /dev/disk/by-id/ | grep -q FRESH && exit 0; sleep 1; done; exit 1")
        .unwrap();
    // The box as it is before: mounts (without CONFIG), pools, ARC cap, outcome, the drive.
    m.ok("umount /config 2>/dev/null; true").unwrap();
    // The box's own boot jobs may mount the ESP meanwhile (ab-health's `abupdate bootloader`,
    // for a moment, at /run/abupdate/esp): every other mount counts.
    let state = "grep -v ' /run/abupdate/esp ' /proc/mounts; echo ---; zpool list -H -o name; echo ---; cat /sys/module/zfs/parameters/zfs_arc_max; echo ---; cat /run/eve/storage.json 2>&1; echo ---; ls /dev/disk/by-partuuid/ | sort";
    let before = m.ok(state).unwrap();
    let disk = m.disk_file_of("FRESH").unwrap().to_path_buf();
    let disk_before = sha256(&disk);

    let text = m.ok("storage-init plan").unwrap();
    for line in [
        "pool: create (",
        "whole drives partitioned: sd",
        "policy: /config/storage.toml",
        "vault: persist/vault: create it with a key generated by the TPM",
        "datasets: persist/vault: made by the vault step",
        "datasets: persist/vault/config: create ",
        "datasets: persist/newlog: create ",
        "datasets: persist/reserved: create ",
        "arc: cap at ",
        "mounts: ",
        "files: the outcome the boot health check reads",
    ] {
        assert!(text.contains(line), "no `{line}` in the plan:\n{text}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&m.ok("storage-init plan --json").unwrap()).unwrap();
    assert_eq!(v["plan"]["action"], "create", "{v}");
    assert_eq!(v["contents"]["vault"]["action"], "create", "{v}");
    let made: Vec<&str> = v["contents"]["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "create")
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for ds in [
        "persist/vault",
        "persist/vault/config",
        "persist/newlog",
        "persist/reserved",
    ] {
        assert!(made.contains(&ds), "{ds} not to be made: {made:?}");
    }
    let dry = m.ok("storage-init run --dry-run").unwrap();
    assert!(dry.contains("pool: create ("), "{dry}");

    assert_eq!(m.ok(state).unwrap(), before, "the plan changed the box");
    assert_eq!(sha256(&disk), disk_before, "the plan wrote to the drive");
    m.poweroff().unwrap();
}
