//! VM tests for storage-init with real ZFS and swtpm: first boot pools every eligible drive into an
//! encrypted pool, later boots import it, foreign data is left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with context on failure

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

fn four_disks() -> Vec<DiskSpec> {
    vec![
        DiskSpec::blank(DiskKind::Nvme, 2048, "NVMEA"),
        DiskSpec::blank(DiskKind::Nvme, 2048, "NVMEB"),
        DiskSpec::blank(DiskKind::Virtio, 2048, "VIRTA"),
        DiskSpec::blank(DiskKind::Sata, 2048, "SATAA"),
    ]
}

#[test]
fn four_blank_disks_become_one_encrypted_pool_that_survives_reboot_and_foreign_data_is_untouched() {
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

    let g = guid(&mut m);
    m.ok("echo log-data > /persist/newlog/before && echo secret > /persist/config/before && sync")
        .unwrap();
    m.reboot().unwrap();

    assert_eq!(guid(&mut m), g, "a different pool after reboot");
    assert_eq!(members(&mut m), 5);
    assert_eq!(
        m.ok("cat /persist/newlog/before /persist/config/before")
            .unwrap(),
        "log-data\nsecret\n"
    );
    assert_eq!(
        m.ok("zfs get -H -o value keystatus persist/vault")
            .unwrap()
            .trim(),
        "available"
    );
    let console = std::fs::read_to_string(m.console_log()).unwrap();
    assert!(
        console.contains("importing pool persist"),
        "second boot did not import"
    );

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
    m.poweroff().unwrap();
    assert_eq!(
        sha256(&ext4_disk),
        ext4_before,
        "the ext4 disk was modified"
    );
}

#[test]
fn fresh_tpm_leaves_the_vault_locked_and_a_missing_mirror_member_gives_a_degraded_import() {
    let mut spec = MachineSpec::new("storage-tpm", &image_path());
    spec.disks = vec![
        DiskSpec::blank(DiskKind::Nvme, 2048, "NVMEA"),
        DiskSpec::blank(DiskKind::Virtio, 2048, "VIRTA"),
    ];
    // The user's override on the CONFIG partition asks for a mirror.
    let policy = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs/etc/storage.toml"),
    )
    .unwrap();
    spec.config_files = vec![(
        "storage.toml".into(),
        policy
            .replace("topology = \"stripe\"", "topology = \"mirror\"")
            .into_bytes(),
    )];
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
    assert_eq!(
        m.ok("zfs get -H -o value keystatus persist/vault")
            .unwrap()
            .trim(),
        "unavailable"
    );
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
    m.power_cut().unwrap();
}
