//! VM tests for what the disk may not decide (issue 27): one box under Secure Boot, attacked in
//! turn the way someone holding it would, with the TPM and the operator's recovery key as the
//! only authorities. A process after the unlock phase cannot unseal; a CONFIG policy cannot unbind
//! PCR 7; a deleted recovery property is an alert, never a new key, and a new recovery key rotates
//! the vault key so old seals and old recovery keys open nothing; a vault put in place of the
//! box's own (unencrypted, or encrypted with a seal anyone could make) is refused and nothing is
//! written into it; a mountpoint written on the disk never puts a dataset over the system or the
//! vault. Every dataset's GUID and the vault's content are the same at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with context on failure

use crate::common::{copy_probe, recover, recovery_key};
use eve_vmtest::{image_path, test_dir, DiskKind, DiskSpec, Machine, MachineSpec};
use serde_json::Value;
use std::time::Duration;

const SEALED: &str = "org.lfedge.eve:sealed-key";
const RECOVERY: &str = "org.lfedge.eve:recovery";

fn keystatus(m: &mut Machine, ds: &str) -> String {
    m.ok(&format!("zfs get -H -o value keystatus {ds}"))
        .unwrap()
        .trim()
        .to_string()
}

fn prop(m: &mut Machine, p: &str, ds: &str) -> String {
    m.ok(&format!("zfs get -H -o value {p} {ds}"))
        .unwrap()
        .trim()
        .to_string()
}

fn datasets(m: &mut Machine) -> String {
    m.ok("zfs list -H -o name,guid -t all -r persist").unwrap()
}

fn alerts(m: &mut Machine) -> String {
    let h: Value =
        serde_json::from_str(&crate::common::report(m, "storagectl health --json").1).unwrap();
    h["alerts"].to_string()
}

/// The origins the TPM records for the floor's counters (the probe must be in the guest).
fn recorded_origins(m: &mut Machine) -> [u64; 3] {
    let out = m.ok("/run/probe origins").unwrap();
    let inner = out
        .trim()
        .strip_prefix("Some([")
        .and_then(|r| r.strip_suffix("])"))
        .unwrap_or_else(|| panic!("no origins recorded: {out}"));
    let v: Vec<u64> = inner.split(", ").map(|x| x.parse().unwrap()).collect();
    v.try_into().unwrap()
}

#[test]
fn what_is_on_the_disk_cannot_undo_what_the_tpm_and_the_operator_decided() {
    let _dir = eve_vmtest::scratch("trust");
    let dir = test_dir("trust");
    std::fs::create_dir_all(&dir).unwrap();
    let mut spec = MachineSpec::new("trust", &image_path());
    spec.disks = vec![DiskSpec::blank(DiskKind::Nvme, 2048, "DATA1")];
    spec.secure_boot = true;
    let mut m = Machine::create(spec, &dir.join("vm")).unwrap();

    // First boot under Secure Boot: the vault is made, its key sealed to PCR 7 (and the phase
    // PCR) for this vault only, the recovery key shown once.
    m.boot().unwrap();
    let rk1 = recovery_key(&m.console()).expect("a recovery key on the first boot's console");
    assert_eq!(keystatus(&mut m, "persist/vault"), "available");
    m.ok("echo vault-content > /persist/config/marker && sync")
        .unwrap();
    let st: Value =
        serde_json::from_str(&crate::common::report(&mut m, "storagectl status --json").1).unwrap();
    assert_eq!(st["boot"]["pcrs"], serde_json::json!([7]), "{st:#}");
    let before = datasets(&mut m);

    // Attack 2: a CONFIG policy that unbinds PCR 7 is ignored: the vault still unlocks, and the
    // re-seal a new recovery key makes is still bound to PCR 7.
    let policy = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs/etc/storage.toml"),
    )
    .unwrap()
    .replace(
        "without_tpm = \"require\"",
        "without_tpm = \"allow-unencrypted\"\nbind_secure_boot = false\npcrs = []",
    );
    m.ok("mount -o remount,rw /config").unwrap();
    m.write_file("/config/storage.toml", policy.as_bytes(), 0o644)
        .unwrap();
    m.ok("sync").unwrap();
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains("[encryption] (without_tpm = AllowUnencrypted, pcrs = [], bind_secure_boot = false) ignored"),
        "{console}"
    );
    assert_eq!(keystatus(&mut m, "persist/vault"), "available");
    let sealed1 = prop(&mut m, SEALED, "persist/vault");
    let recovery1 = prop(&mut m, RECOVERY, "persist/vault");
    assert!(sealed1.starts_with("v2:7,11,12:"), "{sealed1}");

    // Attack 1 (in the second boot, the first with a rollback floor for stage 1 to confirm): a
    // process after the unlock phase (anything but storage-init) cannot unseal the vault key,
    // even with the box's own seal in hand, and the phase PCR says so.
    copy_probe(&mut m, &dir);
    m.ok(&format!(
        "zfs get -H -o value {SEALED} persist/vault > /run/blob"
    ))
    .unwrap();
    let out = m.sh("/run/probe unseal /run/blob").unwrap();
    assert_ne!(out.status, 0, "unsealed after the unlock phase: {out:?}");
    assert!(out.stderr.contains("refused to unseal"), "{out:?}");
    let pcr11 = m.ok("cat /sys/class/tpm/tpm0/pcr-sha256/11").unwrap();
    assert!(pcr11.trim().chars().any(|c| c != '0'), "PCR 11: {pcr11}");
    assert!(m.console().contains("unlock phase over"));
    // PCR 12 holds stage 1's "floor met, counted from these origins", the value the seal is
    // bound to.
    let pcr12 = m.ok("cat /sys/class/tpm/tpm0/pcr-sha256/12").unwrap();
    let console = m.console();
    let from = "counters counted from [";
    let at = console.find(from).expect("stage 1 names the origins") + from.len();
    let origins: Vec<u64> = console[at..at + console[at..].find(']').unwrap()]
        .split(", ")
        .map(|v| v.parse().unwrap())
        .collect();
    let origins: [u64; 3] = origins.try_into().unwrap();
    let want: String = platform::rollback::pcr_after(&platform::rollback::checked(&origins))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(pcr12.trim().to_lowercase(), want);

    // Attack 3: the recovery property deleted (user properties need no key). The next boot makes
    // no new key: no banner, a tamper alert, the vault unlocked as before.
    m.ok(&format!("zfs inherit {RECOVERY} persist/vault"))
        .unwrap();
    // Attack 3b, in the same boot: mountpoints written on the disk. A new dataset over the
    // system's binaries, and the log dataset moved over /etc. Neither is mounted there.
    m.ok("zfs create -u -o mountpoint=/usr/sbin persist/evil && zfs set -u mountpoint=/etc persist/newlog && zpool sync persist")
        .unwrap();
    // And a symbolic link on the pool's root where another dataset mounts.
    m.ok("zfs umount persist/containerd && rmdir /persist/containerd && ln -s /etc /persist/containerd && zpool sync persist")
        .unwrap();
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains(
            "persist/newlog: NOT MOUNTED: its mountpoint is /etc, the policy says /persist/newlog"
        ),
        "{console}"
    );
    assert!(
        console.contains(
            "persist/evil: not mounted at /usr/sbin: not a dataset of the storage policy"
        ),
        "{console}"
    );
    let mounts = m.ok("cat /proc/self/mounts").unwrap();
    let zfs_at = |path: &str| {
        mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(path) && l.split(' ').nth(2) == Some("zfs"))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
    };
    assert!(
        console.contains("persist/containerd: NOT MOUNTED: /persist/containerd is a symbolic link"),
        "{console}"
    );
    assert_eq!(zfs_at("/usr/sbin"), None, "{mounts}");
    assert_eq!(zfs_at("/etc"), None, "{mounts}");
    // The policy's own mountpoint is put back and the dataset is mounted there, with nothing
    // set-uid, no device nodes and nothing executable outside the vault.
    assert_eq!(
        zfs_at("/persist/newlog").as_deref(),
        Some("persist/newlog"),
        "{mounts}"
    );
    let opts = |path: &str| {
        mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(path))
            .and_then(|l| l.split(' ').nth(3))
            .unwrap_or("")
            .to_string()
    };
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(
            opts("/persist").split(',').any(|x| x == o),
            "/persist: {mounts}"
        );
    }
    assert!(
        opts("/persist/config").split(',').any(|x| x == "nosuid"),
        "{mounts}"
    );
    let a = alerts(&mut m);
    assert!(
        a.contains("mounts:persist:refused") && a.contains("/etc"),
        "{a}"
    );
    m.ok("zfs destroy persist/evil && rm /persist/containerd && zfs mount persist/containerd")
        .unwrap();
    assert!(
        recovery_key(&console).is_none(),
        "a new recovery key was shown"
    );
    assert!(console.contains("TAMPER ALERT: persist/vault"), "{console}");
    assert_eq!(prop(&mut m, RECOVERY, "persist/vault"), "-");
    assert_eq!(keystatus(&mut m, "persist/vault"), "available");
    let a = alerts(&mut m);
    assert!(a.contains("vault:persist:recovery"), "{a}");
    // The operator makes a new one: the vault key rotates, and the seal is still bound to PCR 7
    // (CONFIG's policy is still there).
    let out = m
        .exec_argv(
            &["/usr/bin/storagectl", "vault", "recovery-key"],
            &[],
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    let rk2 = out.stdout.trim().to_string();
    assert_eq!(rk2.len(), 71, "{out:?}");
    let sealed2 = prop(&mut m, SEALED, "persist/vault");
    let recovery2 = prop(&mut m, RECOVERY, "persist/vault");
    assert!(
        sealed2.starts_with("v2:7,11,12:") && sealed2 != sealed1,
        "{sealed2}"
    );
    assert!(recovery2.starts_with("r2:"));
    assert_eq!(
        prop(&mut m, "org.lfedge.eve:sealed-key-next", "persist/vault"),
        "-"
    );
    // The old seal and the old recovery property put back (as `zpool history` keeps them): the
    // next boot unseals the old key, which no longer opens the vault: locked, nothing changed.
    m.ok(&format!(
        "zfs set {SEALED}={sealed1} {RECOVERY}={recovery1} persist/vault"
    ))
    .unwrap();
    m.ok("mount -o remount,rw /config && rm /config/storage.toml && mount -o remount,ro /config")
        .unwrap();
    m.reboot().unwrap();
    assert_eq!(keystatus(&mut m, "persist/vault"), "unavailable");
    assert!(m.console().contains("does not open persist/vault"));
    assert!(m.sh("cat /persist/config/marker").unwrap().status != 0);
    // The old recovery key opens its old wrap, whose key the vault no longer takes.
    let out = recover(&mut m, &rk1);
    assert_eq!(out.status, 4, "refused: {out:?}");
    assert!(out.stderr.contains("does not open this vault"), "{out:?}");
    assert_eq!(keystatus(&mut m, "persist/vault"), "unavailable");
    // The operator's current key, with the current wrap back in place, unlocks.
    m.ok(&format!(
        "zfs set {SEALED}={sealed2} {RECOVERY}={recovery2} persist/vault"
    ))
    .unwrap();
    let out = recover(&mut m, &rk2);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("PCR 7"), "{out:?}");
    assert_eq!(
        m.ok("cat /persist/config/marker").unwrap(),
        "vault-content\n"
    );

    // Attack 4a: an unencrypted dataset in the vault's place, with a child where the vault's
    // config dataset mounts. Refused: nothing of it is mounted or written, nothing is made in it.
    m.ok("zfs rename -u persist/vault persist/stash").unwrap();
    m.ok("zfs create -u -o mountpoint=/persist/vault persist/vault && zfs create -u -o mountpoint=/persist/config persist/vault/config && zpool sync persist")
        .unwrap();
    let fake = m.ok("zfs list -H -o name,guid -r persist/vault").unwrap();
    m.power_cut().unwrap();
    m.boot().unwrap();
    let console = m.console();
    assert!(
        console.contains("VAULT REFUSED: persist/vault: persist/vault is not encrypted"),
        "{console}"
    );
    assert_eq!(
        m.ok("zfs get -H -o value mounted persist/vault persist/vault/config")
            .unwrap(),
        "no\nno\n"
    );
    assert_eq!(
        m.ok("zfs list -H -o name,guid -r persist/vault").unwrap(),
        fake,
        "nothing made under it"
    );
    let a = alerts(&mut m);
    assert!(a.contains("vault:persist:locked"), "{a}");

    // Attack 4b: an encrypted dataset whose key the attacker knows, sealed for its GUID on this
    // TPM under the parent anyone can use; and the same seal claiming the box's PCR 7 gate.
    // Neither opens: the first is not trusted, the second cannot be loaded.
    m.ok("zfs destroy -r persist/vault").unwrap();
    m.ok("head -c 32 /dev/urandom > /run/k && zfs create -u -o encryption=aes-256-gcm -o keyformat=raw -o keylocation=file:///run/k -o mountpoint=/persist/vault persist/vault && zfs set keylocation=prompt persist/vault")
        .unwrap();
    let guid = prop(&mut m, "guid", "persist/vault");
    copy_probe(&mut m, &dir);
    // Attack 4c, on the same vault: wrapped to the operator's recovery key's public half (in the
    // real vault's property, for anyone to read), with the real vault's proof copied. The
    // operator's recovery key refuses it before anything is opened or sealed.
    m.ok(&format!(
        "zfs unload-key persist/vault && zfs get -H -o value {RECOVERY} persist/stash > /run/real && /run/probe wrap /run/k /run/real > /run/forged && zfs set {RECOVERY}=$(cat /run/forged) persist/vault"
    ))
    .unwrap();
    let out = recover(&mut m, &rk2);
    assert_eq!(out.status, 4, "refused: {out:?}");
    assert!(
        out.stderr
            .contains("is not the vault this recovery key was made for"),
        "{out:?}"
    );
    assert_eq!(keystatus(&mut m, "persist/vault"), "unavailable");
    assert_eq!(
        prop(&mut m, SEALED, "persist/vault"),
        "-",
        "nothing sealed for it"
    );
    let out = m
        .sh(&format!("/run/probe seal-ungated /run/k {guid}"))
        .unwrap();
    assert_eq!(out.status, 0, "{out:?}");
    let forged = out.stdout.trim().to_string();
    let f: Vec<&str> = forged.split(':').collect();
    let real: Vec<&str> = sealed2.split(':').collect();
    let claimed = format!("v2:7,11,12:{}:{}:{}", real[2], f[3], f[4]);
    m.ok(&format!(
        "zfs set {SEALED}={forged} org.lfedge.eve:sealed-key-next={claimed} persist/vault && zpool sync persist"
    ))
    .unwrap();
    let fake = m.ok("zfs list -H -o name,guid -r persist/vault").unwrap();
    m.power_cut().unwrap();
    m.boot().unwrap();
    assert_eq!(keystatus(&mut m, "persist/vault"), "unavailable");
    let console = m.console();
    assert!(console.contains("VAULT LOCKED: persist/vault"), "{console}");
    assert_eq!(
        m.ok("zfs list -H -o name,guid -r persist/vault").unwrap(),
        fake
    );
    assert_eq!(prop(&mut m, "mounted", "persist/vault"), "no");

    // Put back: the box's own vault unlocks by itself with the seal `storagectl vault recover`
    // made after the unlock phase, with every dataset and the content as they were.
    m.ok("zfs destroy -r persist/vault && zfs rename -u persist/stash persist/vault && zpool sync persist")
        .unwrap();
    m.power_cut().unwrap();
    m.boot().unwrap();
    assert_eq!(keystatus(&mut m, "persist/vault"), "available");
    assert_eq!(
        m.ok("cat /persist/config/marker").unwrap(),
        "vault-content\n"
    );
    assert_eq!(
        datasets(&mut m),
        before,
        "every dataset's guid is unchanged"
    );

    // A box from before the built-in key-list floor, as the previous release left it: two
    // counters, no origins, the vault key sealed to stage 1's older "floor checked". Its stage 1
    // now measures that older value, so the vault opens; the boot (already good) replaces the
    // seal and records the origins, and the next boot opens the new seal, counted from them.
    copy_probe(&mut m, &dir);
    let guid = prop(&mut m, "guid", "persist/vault");
    m.write_file("/run/rk", rk2.as_bytes(), 0o600).unwrap();
    m.ok(&format!(
        "zfs get -H -o value {RECOVERY} persist/vault > /run/rprop"
    ))
    .unwrap();
    let legacy = m
        .ok(&format!("/run/probe legacy-seal /run/rk /run/rprop {guid}"))
        .unwrap()
        .trim()
        .to_string();
    m.ok("rm /run/rk && /run/probe forget-origins").unwrap();
    m.ok(&format!(
        "zfs set {SEALED}={legacy} persist/vault && zpool sync persist"
    ))
    .unwrap();
    m.reboot().unwrap();
    let console = m.console();
    assert!(console.contains("no origins recorded yet"), "{console}");
    assert_eq!(keystatus(&mut m, "persist/vault"), "available");
    copy_probe(&mut m, &dir);
    let t = std::time::Instant::now();
    // Between the index's definition and its first write the probe reads an index not written
    // yet (a CI run caught that instant): it is polled through like "None".
    loop {
        let o = m.sh("/run/probe origins").unwrap();
        if o.status == 0 && o.stdout.trim() != "None" {
            break;
        }
        assert!(
            o.status == 0 || o.stderr.contains("is not the box's origin record"),
            "{o:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the origins were never recorded ({o:?}): {}",
            m.console()
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    assert_ne!(
        prop(&mut m, SEALED, "persist/vault"),
        legacy,
        "seal replaced"
    );
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains("built-in key list 1 >= 1; counters counted from [1, 1, "),
        "{console}"
    );
    assert_eq!(keystatus(&mut m, "persist/vault"), "available");
    assert_eq!(datasets(&mut m), before);

    // Attack 6: the rollback floor deleted from the TPM (the owner's auth is empty: any shell
    // or live USB can), as if to boot an older release. Stage 1 finds no floor and says so; the
    // vault's seal, bound to stage 1's "floor met", does not open; nothing is changed.
    copy_probe(&mut m, &dir);
    let floor = m.ok("/run/probe floor").unwrap();
    assert_eq!(floor.trim(), "epoch Some(0) serial Some(1)");
    m.ok("/run/probe undefine-floor").unwrap();
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains("stage 1: WARNING: no rollback floor in the TPM"),
        "{console}"
    );
    assert_eq!(keystatus(&mut m, "persist/vault"), "unavailable");
    assert!(
        console.contains("stage 1 did not confirm the rollback floor this boot"),
        "{console}"
    );
    assert_eq!(prop(&mut m, "mounted", "persist/vault"), "no");
    let a = alerts(&mut m);
    assert!(a.contains("vault:persist:locked"), "{a}");
    assert_eq!(datasets(&mut m), before);

    // The operator recovers. The counters are made again, and a counter made again starts above
    // every value this TPM's counters ever held; each is counted from its recorded origin, so the
    // floor is the running release's again (not its raw value), and the next boot confirms it and
    // unlocks by itself.
    let out = recover(&mut m, &rk2);
    assert_eq!(out.status, 0, "{out:?}");
    copy_probe(&mut m, &dir);
    assert_eq!(
        m.ok("/run/probe floor").unwrap().trim(),
        "epoch Some(0) serial Some(1)"
    );
    // The counters made again started above every value they held (the raw values would have
    // stood for floors above this release): only their origins make the floor right.
    let after6 = recorded_origins(&mut m);
    assert!(after6[0] > 2 && after6[1] > 2, "{after6:?}");
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains("stage 1: rollback floor met (epoch 0 >= 0, key serial 1 >= 1"),
        "{console}"
    );
    assert_eq!(keystatus(&mut m, "persist/vault"), "available");
    assert_eq!(datasets(&mut m), before);

    // Attack 7: the TPM cleared (the firmware's "clear TPM": new seeds, every NV index gone). The
    // seal opens nothing; after the operator's recovery the counters restart far above their old
    // values, yet the box boots its release with the vault and still takes updates signed under
    // its key list (the key floor is list 1, not the counter's raw value).
    copy_probe(&mut m, &dir);
    let before_clear = recorded_origins(&mut m);
    m.ok("/run/probe clear").unwrap();
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains("stage 1: WARNING: no rollback floor in the TPM"),
        "{console}"
    );
    assert_eq!(keystatus(&mut m, "persist/vault"), "unavailable");
    assert_eq!(datasets(&mut m), before);
    let out = recover(&mut m, &rk2);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("the next boot unlocks by itself") && !out.stdout.contains("WARNING"),
        "{out:?}"
    );
    copy_probe(&mut m, &dir);
    let after_clear = recorded_origins(&mut m);
    assert!(
        (0..3).all(|i| after_clear[i] > before_clear[i]),
        "the cleared TPM's counters restart above their old values: {before_clear:?} -> {after_clear:?}"
    );
    assert_eq!(
        m.ok("/run/probe floor").unwrap().trim(),
        "epoch Some(0) serial Some(1)"
    );
    m.reboot().unwrap();
    let console = m.console();
    assert!(
        console.contains("stage 1: rollback floor met (epoch 0 >= 0, key serial 1 >= 1, boot loader epoch 0 >= 0, built-in key list 1 >= 1; counters counted from"),
        "{console}"
    );
    assert!(!console.contains("REFUSED"), "{console}");
    assert_eq!(keystatus(&mut m, "persist/vault"), "available");
    assert_eq!(
        m.ok("cat /persist/config/marker").unwrap(),
        "vault-content\n"
    );
    assert_eq!(datasets(&mut m), before);
    let st: Value = serde_json::from_str(&m.ok("abupdate status --json").unwrap()).unwrap();
    assert_eq!(st["updates"]["key_floor"], 1, "{st:#}");
    // The vault's own record of the floors it saw confirmed, carried through every rotation and
    // recovery (tagged with the vault key: a recovery never seals for a release below it).
    let seen = prop(&mut m, "org.lfedge.eve:floor-seen", "persist/vault");
    assert!(seen.starts_with("s1:0,1,1:"), "{seen}");
    m.poweroff().unwrap();
}
