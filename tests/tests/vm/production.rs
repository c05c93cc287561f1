//! VM test for the production image (`make image`): it boots with disks and a TPM and brings the
//! pool, the vault and the services up, which the console shows; it opens nothing but the
//! management API: no shell answers on the serial console, no agent answers on its port, root
//! cannot log in, and on the network only mutual TLS on 8443 answers. Through that API, with
//! the development CAs' certificates, an operator reads and changes the box, and every refusal
//! (no certificate, another CA's, a reader changing) changes nothing. A second machine on a
//! private wire, a VM host, writes to a volume over NVMe/TCP with the secrets the API gave.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic with context on failure

use eve_vmtest::{
    build_manifest, image_path, prod_image_path, test_dir, DiskKind, DiskSpec, Machine,
    MachineSpec, Wire,
};
use std::process::Command;
use std::time::{Duration, Instant};

/// A file of the production image's root, read from its update artifact's squashfs.
fn image_file(rel: &str) -> String {
    let upd = prod_image_path().with_extension("update");
    let art = std::fs::read(&upd).unwrap();
    let dir = test_dir("production");
    std::fs::create_dir_all(&dir).unwrap();
    let sq = dir.join("slot.squashfs");
    std::fs::write(&sq, &art[abupdate::artifact::PAYLOAD_OFFSET as usize..]).unwrap();
    let out = Command::new("/usr/bin/unsquashfs")
        .args(["-cat"])
        .arg(&sq)
        .arg(rel)
        .output()
        .unwrap();
    assert!(out.status.success(), "unsquashfs -cat {rel}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_production_image_boots_to_a_working_box_and_opens_nothing() {
    let _dir = eve_vmtest::scratch("production");
    let img = prod_image_path();
    // The image says what it is.
    let bm = build_manifest(&img);
    assert_eq!(bm["profile"], "prod", "{}", bm["profile"]);
    assert!(
        !bm["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "getty" || s == "agent"),
        "{}",
        bm["services"]
    );
    let release: serde_json::Value =
        serde_json::from_str(&image_file("etc/eve/release.json")).unwrap();
    assert_eq!(release["profile"], "prod");
    assert!(
        image_file("etc/shadow").starts_with("root:!"),
        "root is locked"
    );

    let mut spec = MachineSpec::new("production", &img);
    spec.disks = vec![
        DiskSpec::blank(DiskKind::Nvme, 2048, "PROD1"),
        DiskSpec::blank(DiskKind::Virtio, 2048, "PROD2"),
    ];
    spec.console_input = true;
    // As shipped: Secure Boot on with the project's keys enrolled.
    spec.secure_boot = true;
    // The API's port, the plain-HTTP metrics port network.toml opens, and NVMe/TCP's, which
    // the firewall must keep from the host (every forwarded connection comes from qemu's user
    // network gateway, 10.0.2.2, which network.toml does not allow).
    spec.forward = vec![8443, 9100, 4420];
    // And a private wire to a VM host, the only host NVMe/TCP is for.
    let (wire_box, wire_vm_host) = Wire::pair().unwrap();
    spec.wire = Some(wire_box);
    // The operator's network settings on the CONFIG partition: a static address (qemu's user
    // network is 10.0.2.0/24, its gateway .2) instead of DHCP, a metrics listener, and NVMe/TCP
    // on every address (so that only the firewall keeps the host's forwarded connection out),
    // for the VM host at the wire's other end alone.
    // And a mirror (the config dataset's quota cut to fit a pool this small), so a member can be
    // pulled and replaced through the API.
    let mirror = crate::common::image_policy()
        .replace("topology = \"stripe\"", "topology = \"mirror\"")
        .replace("quota = \"1G\"", "quota = \"256M\"");
    assert!(mirror.contains("mirror") && mirror.contains("256M"));
    spec.config_files = vec![
        ("storage.toml".into(), mirror.into_bytes()),
        (
        "network.toml".into(),
        b"[interfaces.enp0s3]\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\n\n[interfaces.enp0s16]\naddress = \"10.9.0.1/24\"\n\n[metrics]\nlisten = \"0.0.0.0:9100\"\n\n[nvme_tcp]\nlisten = \"0.0.0.0\"\nallow = [\"10.9.0.2\"]\n".to_vec(),
        ),
    ];
    let mut m = Machine::create(spec, &test_dir("production").join("vm")).unwrap();

    // The console shows the box coming up: storage, services, the status summary and the health
    // check's verdict.
    m.boot_until_console("is healthy").unwrap();
    let start = Instant::now();
    while !m.console().contains("[status]") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no status summary"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let console = m.console();
    for want in [
        "storage-init",
        "storage-init: Secure Boot: on\r\n",
        "slot A verified: ",
        "key sealed to this TPM and PCR 7",
        "[status] pool: persist",
        "[status] vault: persist/vault",
        "volumed",
        "zed",
    ] {
        assert!(console.contains(want), "console lacks {want:?}:\n{console}");
    }
    assert!(!console.contains("getty"), "{console}");

    // The VM host: a development image (for its agent) at the wire's other end, booted while the
    // box's API is checked.
    let vm_host = std::thread::spawn(move || {
        let mut spec = MachineSpec::new("production-vm-host", &image_path());
        spec.disks = vec![DiskSpec::blank(DiskKind::Virtio, 512, "VMHOST1")];
        spec.wire = Some(wire_vm_host);
        spec.config_files = vec![(
            "network.toml".into(),
            format!("[interfaces.{}]\naddress = \"10.9.0.2/24\"\n", Wire::IFACE).into_bytes(),
        )];
        let mut h = Machine::create(spec, &test_dir("production").join("vm-host")).unwrap();
        h.boot().unwrap();
        h
    });
    let api = the_api_answers_only_mutual_tls(&m, &bm, vm_host);

    // Nothing answers on the console: typed commands are never run.
    // Typed twice, 10 s apart, well after every service is up (as the dev image's check does).
    for _ in 0..2 {
        m.type_on_console("\n\necho PWN$((6*7))ED\n").unwrap();
        std::thread::sleep(Duration::from_secs(10));
    }
    let after = m.console();
    assert!(
        !after.contains("PWN42ED"),
        "a shell ran a typed command:\n{after}"
    );
    // And no agent answers on the virtio-serial port the dev image's agent uses.
    assert!(
        !m.agent_answers(Duration::from_secs(20)),
        "an agent answered"
    );
    updates_through_the_api(&mut m, &api);
    a_pulled_mirror_member_is_replaced_through_the_api(&mut m, &api);
    m.power_cut().unwrap();
}

/// A mirror member pulled (with the power: a production box has no shell to power off from)
/// and a blank drive put in its place: the operator finds the missing member and replaces it
/// from the host with `storagectl --remote`, which waits for the resilver as it does on a box.
fn a_pulled_mirror_member_is_replaced_through_the_api(m: &mut Machine, api: &Api) {
    m.power_cut().unwrap();
    m.detach_disk("PROD2").unwrap();
    m.attach_disk(&DiskSpec::blank(DiskKind::Virtio, 2048, "PRODNEW"))
        .unwrap();
    m.boot_until_console("mgmtd: serving").unwrap();
    let start = Instant::now();
    let l = loop {
        let o = host_cli("storagectl", api, "reader", &["disk", "list", "--json"]);
        if o.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{o:?}");
        std::thread::sleep(Duration::from_secs(3));
    };
    let missing = l["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{l}");
    let gone = missing[0]["guid"].as_u64().unwrap().to_string();
    // A script sees the pool degraded from the exit codes alone (7), `-x` says what is wrong,
    // and a failure with --json is a JSON error with its own code (3: not found).
    for cmd in ["status", "health"] {
        let o = host_cli("storagectl", api, "reader", &[cmd, "-x"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(7), "{cmd}: {o:?}");
        assert!(out.starts_with("pool persist: DEGRADED\n"), "{cmd}: {out}");
    }
    let o = host_cli("storagectl", api, "reader", &["status", "--json"]);
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["exit_code"], 7, "{st}");
    let o = host_cli(
        "storagectl",
        api,
        "reader",
        &["volume", "show", "nosuch", "--json"],
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["error"]["code"], "not_found", "{e}");
    let o = host_cli(
        "storagectl",
        api,
        "admin",
        &["disk", "replace", &gone, "/dev/disk/by-id/virtio-PRODNEW"],
    );
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("storagectl: persist: ONLINE"), "{err}");
    let o = host_cli("storagectl", api, "reader", &["disk", "list", "--json"]);
    let l: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(l["missing"].as_array().unwrap().len(), 0, "{l}");
    assert_eq!(l["risks"].as_array().unwrap().len(), 0, "{l}");
    let o = host_cli("storagectl", api, "reader", &["status"]);
    assert_eq!(o.status.code(), Some(0), "whole again: {o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    // The box's own rendering: the pool whole again, the new drive a member by its stable id.
    assert!(
        text.starts_with("pool: persist guid ")
            && text.lines().next().unwrap().contains(" ONLINE ")
            && text.contains("virtio-PRODNEW"),
        "{text}"
    );
}

/// One slot of `abupdate status --json`.
fn slot_of(st: &serde_json::Value, slot: &str) -> serde_json::Value {
    st["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == slot)
        .unwrap_or_else(|| panic!("no slot {slot}: {st}"))
        .clone()
}

/// An operator's CLI as built for the image (the same binary the box runs), as `who`.
fn host_cli(tool: &str, api: &Api, who: &str, args: &[&str]) -> std::process::Output {
    let bin = eve_vmtest::host_tool(tool);
    let out = Command::new(&bin)
        .args(args)
        .args(["--remote", &format!("https://127.0.0.1:{}", api.port)])
        .arg("--cert")
        .arg(api.dir.join(format!("{who}.pem")))
        .arg("--key")
        .arg(api.dir.join(format!("{who}.key")))
        .arg("--ca")
        .arg(&api.server_pem)
        .output()
        .unwrap();
    eprintln!(
        "{tool} {args:?} --remote ({who}): {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn host_abupdate(api: &Api, args: &[&str]) -> std::process::Output {
    host_cli("abupdate", api, "admin", args)
}

/// Updates through the API: forged, foreign and development builds are refused with the slots
/// unchanged; a signed one sent by `abupdate install --remote` from the host is installed, the
/// box reboots on `POST /v1/reboot` and comes back healthy on it.
fn updates_through_the_api(m: &mut Machine, api: &Api) {
    let dir = test_dir("production").join("update");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let before = api.json("reader", "GET", "/v1/update", None, 200);
    let slots = |v: &serde_json::Value| v["status"]["slots"].clone();
    assert_eq!(before["status"]["running"], "A", "{before}");
    assert_eq!(before["health"]["verdict"], "healthy", "{before}");

    let key = crate::common::dev_key_of(&prod_image_path());
    let prod = |epoch| abupdate::artifact::BuildInfo {
        security_epoch: epoch,
        signing: "dev".into(),
        profile: "prod".into(),
        ..Default::default()
    };
    let base = prod_image_path().with_extension("update");
    let v2 = crate::common::variant_of(&base, &dir, "v2", &key, prod(0), |_| {});
    let good = std::fs::read(&v2).unwrap();
    let off = abupdate::artifact::PAYLOAD_OFFSET as usize;
    let mut forged: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    // One payload byte changed: the header is signed and valid, the checksum is not.
    let mut b = good.clone();
    b[off + 100_000] ^= 1;
    forged.push(("payload", b, "the update is corrupt"));
    // The manifest edited (a version of its own): the signature fails.
    let mut b = good.clone();
    let at = b[..off].windows(4).position(|w| w == b"\"v2\"").unwrap();
    b[at + 2] = b'3';
    forged.push(("manifest", b, "signature"));
    // Signed by a key the box does not trust.
    let stranger = abupdate::trust::Signer25519::from_seed(&[9; 32]);
    let other = crate::common::variant_of(&base, &dir, "v2-stranger", &stranger, prod(0), |_| {});
    forged.push(("stranger", std::fs::read(&other).unwrap(), "signature"));
    // A development build, signed with the very key the box trusts.
    let dev =
        crate::common::variant_of(&base, &dir, "v2-dev", &key, crate::common::info(0), |_| {});
    forged.push((
        "dev build",
        std::fs::read(&dev).unwrap(),
        "production builds only",
    ));
    // Cut short.
    forged.push(("truncated", good[..good.len() / 2].to_vec(), "truncated"));
    for (what, bytes, why) in &forged {
        let f = dir.join("forged.update");
        std::fs::write(&f, bytes).unwrap();
        let (s, b) = api.upload("admin", &f);
        assert_eq!(s, 400, "{what}: {b}");
        assert!(
            b.contains("update_refused") && b.contains(why),
            "{what}: {b}"
        );
        let now = api.json("reader", "GET", "/v1/update", None, 200);
        assert_eq!(slots(&now), slots(&before), "{what} changed the slots");
    }
    // A reader may not install even a good one.
    let (s, b) = api.upload("reader", &v2);
    assert_eq!(s, 403, "{b}");
    assert_eq!(
        slots(&api.json("reader", "GET", "/v1/update", None, 200)),
        slots(&before)
    );

    // The signed one, from the operator's CLI.
    let out = host_abupdate(api, &["install", v2.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "installed v2 into slot B; reboot to try it\n"
    );
    let out = host_abupdate(api, &["status", "--json"]);
    assert!(out.status.success());
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b_slot = slot_of(&st, "B");
    assert_eq!(
        (&b_slot["state"], &b_slot["version"]),
        (&"trial".into(), &"v2".into()),
        "{st}"
    );
    let u = api.json("reader", "GET", "/v1/update", None, 200);
    assert_eq!(u["install"]["phase"], "installed", "{u}");
    let audit = api.json("admin", "GET", "/v1/audit", None, 200);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "/v1/update" && e["status"] == 200),
        "{audit}"
    );

    // Reboot through the API; the box comes back on v2, which passes its health check.
    api.json("admin", "POST", "/v1/reboot", None, 200);
    m.wait_guest_reset(Duration::from_secs(180)).unwrap();
    m.boot_until_console("passed its health check").unwrap();
    let start = Instant::now();
    let st = loop {
        let out = host_abupdate(api, &["status", "--json"]);
        if out.status.success() {
            let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if st["running"] == "B" && st["slots"].to_string().contains("\"good\"") {
                let b = slot_of(&st, "B");
                if b["state"] == "good" {
                    break st;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "v2 never reported good"
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    let b_slot = slot_of(&st, "B");
    assert_eq!(b_slot["version"], "v2", "{st}");
    let out = host_abupdate(api, &["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("running slot B (good, version v2)"),
        "{out:?}"
    );
    // The slots and the trust as gauges, beside storaged's, through the API's /metrics.
    let (s, metrics) = api.call(Some("reader"), "GET", "/metrics", None);
    assert_eq!(s, 200, "{metrics}");
    for line in [
        "eve_update_slot_running{slot=\"B\"} 1",
        "eve_update_slot_state{slot=\"B\",state=\"good\"} 1",
        "eve_update_slot_info{slot=\"B\",version=\"v2\"} 1",
        "eve_boot_secure_boot_enabled 1",
        "eve_boot_vault_bound_to_pcr7 1",
        "# TYPE eve_storage_vault_state gauge",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

/// A copy of the production image (and its enrolled firmware variables) whose slot A holds
/// `slot` (bytes from offset 0 of the partition); slot B stays empty.
fn prod_with_slot_a(dir: &std::path::Path, name: &str, slot: &[u8]) -> std::path::PathBuf {
    let src = prod_image_path();
    let out = dir.join(format!("{name}.raw"));
    crate::common::copy_image(&src, &out);
    let (a_off, a_len) = eve_vmtest::partition_of(&out, "IMGA").unwrap();
    assert!(slot.len() as u64 <= a_len);
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
    f.seek(SeekFrom::Start(a_off)).unwrap();
    f.write_all(slot).unwrap();
    out
}

/// Slot A of a built image, as the build wrote it.
fn slot_a(img: &std::path::Path) -> Vec<u8> {
    let len = build_manifest(img)["image"]["slot_size"].as_u64().unwrap() as usize;
    let (off, _) = eve_vmtest::partition_of(img, "IMGA").unwrap();
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact(&mut b).unwrap();
    b
}

#[test]
fn a_development_build_written_to_a_production_box_never_runs() {
    let _dir = eve_vmtest::scratch("prod-dev-slot");
    let dir = test_dir("prod-dev-slot");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dev = eve_vmtest::image_path();
    // The two profiles are signed with different keys.
    let (pm, dm) = (build_manifest(&prod_image_path()), build_manifest(&dev));
    assert_ne!(
        pm["signing"]["key_id"], dm["signing"]["key_id"],
        "{pm} {dm}"
    );
    assert_ne!(pm["signing"]["dev_key_file"], dm["signing"]["dev_key_file"]);
    let boot = |name: &str, img: &std::path::Path| {
        let mut spec = MachineSpec::new(name, img);
        spec.disks = vec![DiskSpec::blank(DiskKind::Virtio, 1024, "DATA1")];
        spec.secure_boot = true;
        let mut m = Machine::create(spec, &dir.join(name)).unwrap();
        m.boot_until_console("this box stops here").unwrap();
        let c = m.console();
        m.power_cut().unwrap();
        c
    };

    // The development image's whole slot: GRUB refuses its kernel (the dev boot key is not the
    // production one) and no kernel runs.
    let img = prod_with_slot_a(&dir, "whole", &slot_a(&dev));
    let c = boot("whole", &img);
    // GRUB checks the slot's config, then its initrd and kernel: the first it meets is refused.
    assert!(
        c.contains("EVE: slot A REFUSED: /boot/")
            && c.contains("is missing or not signed by the project's key"),
        "{c}"
    );
    assert!(!c.contains("eve-init: stage 1"), "a kernel ran: {c}");

    // The development root with the production kernel, initrd and GRUB config put in, sealed
    // again with the development update key (which is no secret): GRUB accepts the production
    // boot files, and the production initramfs refuses the root.
    let sq = dir.join("dev.squashfs");
    std::fs::write(&sq, slot_a(&dev)).unwrap();
    let root = dir.join("dev.root");
    crate::common::unsquash(&sq, &root);
    let psq = dir.join("prod.squashfs");
    std::fs::write(&psq, slot_a(&prod_image_path())).unwrap();
    let proot = dir.join("prod.root");
    crate::common::unsquash(&psq, &proot);
    let st = Command::new("/bin/cp")
        .arg("-a")
        .arg(proot.join("boot/."))
        .arg(root.join("boot"))
        .status()
        .unwrap();
    assert!(st.success());
    imgbuild::update::squash_quick(&root, &sq).unwrap();
    let key = imgbuild::keys::load(&eve_vmtest::dev_signing_key(&dev)).unwrap();
    let slot = dir.join("mixed.slot");
    imgbuild::verity::slot_image(&sq, &slot, &key, "dev", 0, "dev").unwrap();
    let img = prod_with_slot_a(&dir, "mixed", &std::fs::read(&slot).unwrap());
    let c = boot("mixed", &img);
    assert!(
        c.contains("eve-init: stage 1") && c.contains("SLOT A REFUSED"),
        "{c}"
    );
    assert!(!c.contains("stage 2"), "the development root ran: {c}");
    for p in [&root, &proot] {
        std::fs::remove_dir_all(p).unwrap();
    }
}

/// A client on the host: curl with a certificate pair (or none), trusting the box's own
/// certificate once its fingerprint matched the one on the console.
#[derive(Clone)]
struct Api {
    port: u16,
    dir: std::path::PathBuf,
    server_pem: std::path::PathBuf,
}

impl Api {
    /// (HTTP status, body); status 0 when no HTTP answer came (the handshake was refused).
    fn call(
        &self,
        who: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--max-time",
            "120",
            "--tlsv1.3",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cacert")
        .arg(&self.server_pem)
        .args(["--resolve", &format!("eve-storage:{}:127.0.0.1", self.port)]);
        if let Some(w) = who {
            c.arg("--cert").arg(self.dir.join(format!("{w}.pem")));
            c.arg("--key").arg(self.dir.join(format!("{w}.key")));
        }
        if let Some(b) = body {
            // From a file: a body can be larger than an argument may be.
            let f = self.dir.join("body.json");
            std::fs::write(&f, b).unwrap();
            c.args(["-H", "content-type: application/json", "--data-binary"])
                .arg(format!("@{}", f.display()));
        }
        c.arg(format!("https://eve-storage:{}{path}", self.port));
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        eprintln!(
            "api: {} {method} {path} -> {code} ({})",
            who.unwrap_or("no certificate"),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// `POST /v1/update` with `file` as the body.
    fn upload(&self, who: &str, file: &std::path::Path) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "600",
                "--tlsv1.3",
                "-w",
                "\n%{http_code}",
            ])
            .arg("--cacert")
            .arg(&self.server_pem)
            .args(["--resolve", &format!("eve-storage:{}:127.0.0.1", self.port)])
            .arg("--cert")
            .arg(self.dir.join(format!("{who}.pem")))
            .arg("--key")
            .arg(self.dir.join(format!("{who}.key")))
            .args([
                "-H",
                "content-type: application/octet-stream",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .arg(format!("https://eve-storage:{}/v1/update", self.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        eprintln!(
            "api: {who} POST /v1/update ({}) -> {code} {body} ({})",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn json(
        &self,
        who: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        want: u16,
    ) -> serde_json::Value {
        let (s, b) = self.call(Some(who), method, path, body);
        assert_eq!(s, want, "{method} {path}: {b}");
        serde_json::from_str(&b).unwrap_or_else(|e| panic!("{method} {path}: {e}: {b}"))
    }
}

fn openssl(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn the_api_answers_only_mutual_tls(
    m: &Machine,
    bm: &serde_json::Value,
    vm_host: std::thread::JoinHandle<Machine>,
) -> Api {
    let dev = std::path::PathBuf::from(
        bm["mgmt"]["dev_dir"]
            .as_str()
            .expect("a development CA build"),
    );
    let work = test_dir("production").join("api");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let port = m.host_port(8443);
    // The console names the server certificate's fingerprint; the certificate the port presents
    // must be that one.
    let start = Instant::now();
    let printed = loop {
        let c = m.console();
        if let Some(fp) = c.split("server certificate SHA-256 ").nth(1) {
            break fp.split_whitespace().next().unwrap().to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "mgmtd printed no fingerprint:\n{c}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let connect = format!("127.0.0.1:{port}");
    let admin_pem = dev.join("admin.pem").display().to_string();
    let admin_key = dev.join("admin.key").display().to_string();
    let shown = openssl(
        &[
            "s_client", "-connect", &connect, "-cert", &admin_pem, "-key", &admin_key, "-tls1_3",
        ],
        &work,
    );
    let begin = shown
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a server certificate");
    let end = shown.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    std::fs::write(work.join("server.pem"), format!("{}\n", &shown[begin..end])).unwrap();
    let fp = openssl(
        &[
            "x509",
            "-in",
            "server.pem",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
        &work,
    );
    assert_eq!(
        fp.trim().rsplit('=').next().unwrap(),
        printed,
        "the certificate on the port is the one on the console"
    );
    for f in ["admin", "reader"] {
        for ext in ["pem", "key"] {
            std::fs::copy(
                dev.join(format!("{f}.{ext}")),
                work.join(format!("{f}.{ext}")),
            )
            .unwrap();
        }
    }
    // A CA of someone else's, issuing a certificate named like the admin's.
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.pem",
            "-subj",
            "/CN=eve-storage development admin CA",
            "-days",
            "30",
        ],
        &work,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.csr",
            "-subj",
            "/CN=dev-admin",
        ],
        &work,
    );
    // A v3 client certificate, as operators are told to make them (a v1 one is refused before
    // its CA is even looked at).
    std::fs::write(
        work.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-extfile",
            "client.ext",
            "-in",
            "other.csr",
            "-CA",
            "other-ca.pem",
            "-CAkey",
            "other-ca.key",
            "-out",
            "other.pem",
            "-days",
            "30",
        ],
        &work,
    );
    let api = Api {
        port,
        dir: work.clone(),
        server_pem: work.join("server.pem"),
    };

    // Reading, as a reader.
    let st = api.json("reader", "GET", "/v1/status", None, 200);
    assert_eq!(st["pool"]["name"], "persist", "{st}");
    let who = api.json("reader", "GET", "/v1/whoami", None, 200);
    assert_eq!(
        (who["role"].as_str(), who["subject"].as_str()),
        (Some("reader"), Some("CN=dev-reader"))
    );
    let (s, b) = api.call(Some("reader"), "GET", "/v1/disks", None);
    assert_eq!(s, 200, "{b}");

    // Refusals: no certificate, another CA's, a reader asking for a change. None changes a thing.
    let spec = r#"{"name":"web","size":"64M","vm":"vm1","transport":"nvme-tcp"}"#;
    assert_eq!(
        api.call(None, "POST", "/v1/volumes", Some(spec)).0,
        0,
        "no certificate: no HTTP answer"
    );
    assert_eq!(
        api.call(Some("other"), "POST", "/v1/volumes", Some(spec)).0,
        0,
        "another CA: no HTTP answer"
    );
    let (s, b) = api.call(Some("reader"), "POST", "/v1/volumes", Some(spec));
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("\"forbidden\""), "{b}");
    let l = api.json("reader", "GET", "/v1/volumes", None, 200);
    assert!(
        !l.to_string().contains("\"web\""),
        "a refused request made a volume: {l}"
    );
    // Bad input: an unknown field, a name with `..`, a body far over the limit.
    let (s, b) = api.call(
        Some("admin"),
        "POST",
        "/v1/volumes",
        Some(r#"{"name":"web","size":"64M","vm":"vm1","transport":"nvme-tcp","owner":"x"}"#),
    );
    assert_eq!(s, 400, "{b}");
    let (s, b) = api.call(
        Some("admin"),
        "POST",
        "/v1/volumes",
        Some(r#"{"name":"../web","size":"64M","vm":"vm1","transport":"nvme-tcp"}"#),
    );
    assert_eq!(s, 400, "{b}");
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(200_000));
    assert_eq!(
        api.call(Some("admin"), "POST", "/v1/volumes", Some(&huge))
            .0,
        413
    );

    // Changing, as an admin: a volume made, snapshotted, rolled back and deleted.
    let v = api.json("admin", "POST", "/v1/volumes", Some(spec), 200);
    assert_eq!(v["name"], "web", "{v}");
    let l = api.json("reader", "GET", "/v1/volumes", None, 200);
    assert!(l.to_string().contains("\"web\""), "{l}");
    let shown = api.json("reader", "GET", "/v1/volumes/web", None, 200);
    assert_eq!(shown["name"], "web", "{shown}");
    // Its export listens where network.toml put it (every address); a host the settings do not
    // allow gets no NVMe/TCP answer (the first exchange of a connection, ICReq and ICResp,
    // written by hand), though nvmet listens on the address it reaches.
    assert!(
        shown.to_string().contains("traddr=0.0.0.0 trsvcid=4420"),
        "{shown}"
    );
    assert!(!shown.to_string().contains("DHHC-1"), "{shown}");
    if let Some(r) = nvme_tcp_icreq(m.host_port(4420)) {
        panic!("NVMe/TCP answered a host network.toml does not allow: {r:02x?}");
    }
    // The connection details with the VM's secrets: an admin's alone.
    let (s, b) = api.call(Some("reader"), "GET", "/v1/volumes/web/connect", None);
    assert!(s == 403 && !b.contains("DHHC-1"), "{s} {b}");
    let conn = api.json("admin", "GET", "/v1/volumes/web/connect", None, 200);
    let t = &conn["nvme_tcp"];
    assert_eq!(t["traddr"], "0.0.0.0", "{conn}");
    assert!(
        conn["warnings"].to_string().contains("every address"),
        "the launcher is told to pick an address: {conn}"
    );
    // The VM host reaches the box at its address on the wire.
    let without_secrets = format!(
        "transport=tcp,traddr=10.9.0.1,trsvcid={},nqn={},hostnqn={},hostid={}",
        t["trsvcid"],
        t["subsysnqn"].as_str().unwrap(),
        t["hostnqn"].as_str().unwrap(),
        t["hostid"].as_str().unwrap(),
    );
    let options = format!(
        "transport=tcp,traddr={},trsvcid={},nqn={},hostnqn={},hostid={},dhchap_secret={},dhchap_ctrl_secret={}",
        "10.9.0.1",
        t["trsvcid"],
        t["subsysnqn"].as_str().unwrap(),
        t["hostnqn"].as_str().unwrap(),
        t["hostid"].as_str().unwrap(),
        t["dhchap_secret"].as_str().unwrap(),
        t["dhchap_ctrl_secret"].as_str().unwrap()
    );
    let nqn = t["subsysnqn"].as_str().unwrap().to_string();
    let mut host = vm_host.join().expect("the VM host boots");
    let ns = nvme_tcp_connect(&mut host, &options, &nqn);
    let a = host
        .ok(&format!(
            "dd if=/dev/urandom of=/run/a bs=1M count=4 2>/dev/null && dd if=/run/a of={ns} bs=1M oflag=direct conv=fsync 2>/dev/null && sha256sum < /run/a"
        ))
        .unwrap();
    let snap = api.json(
        "admin",
        "POST",
        "/v1/volumes/web/snapshots",
        Some(r#"{"name":"before"}"#),
        200,
    );
    assert_eq!(snap["name"], "before", "{snap}");
    let snaps = api.json("reader", "GET", "/v1/volumes/web/snapshots", None, 200);
    assert!(snaps.to_string().contains("\"before\""), "{snaps}");
    // Written after the snapshot, read back through the export.
    let read = format!("dd if={ns} bs=1M count=4 iflag=direct 2>/dev/null | sha256sum");
    let b = host
        .ok(&format!(
            "dd if=/dev/urandom of=/run/b bs=1M count=4 2>/dev/null && dd if=/run/b of={ns} bs=1M oflag=direct conv=fsync 2>/dev/null && sha256sum < /run/b"
        ))
        .unwrap();
    assert_ne!(a, b);
    assert_eq!(host.ok(&read).unwrap(), b);
    // A rollback under a connected host is refused; once it has gone, the volume reads as it was
    // at the snapshot through a new connection.
    let (s, body) = api.call(
        Some("admin"),
        "POST",
        "/v1/volumes/web/rollback",
        Some(r#"{"snapshot":"before"}"#),
    );
    assert_eq!(s, 409, "{body}");
    nvme_tcp_disconnect(&mut host, &nqn);
    let start = Instant::now();
    loop {
        let (s, body) = api.call(
            Some("admin"),
            "POST",
            "/v1/volumes/web/rollback",
            Some(r#"{"snapshot":"before"}"#),
        );
        if s == 200 {
            break;
        }
        assert!(
            s == 409 && start.elapsed() < Duration::from_secs(60),
            "{s} {body}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // The allowed host, on the wire, without the VM's secrets: nvmet's DH-HMAC-CHAP refuses it
    // and no controller is made.
    let out = host
        .exec_argv(
            &["/bin/sh", "-c", "cat > /dev/nvme-fabrics"],
            without_secrets.as_bytes(),
            Duration::from_secs(60),
        )
        .unwrap();
    assert_ne!(out.status, 0, "connected without the secrets: {out:?}");
    assert_eq!(
        host.ok(&format!(
            "grep -lx {nqn} /sys/class/nvme/nvme*/subsysnqn 2>/dev/null | wc -l"
        ))
        .unwrap()
        .trim(),
        "0"
    );
    let ns = nvme_tcp_connect(&mut host, &options, &nqn);
    let read = format!("dd if={ns} bs=1M count=4 iflag=direct 2>/dev/null | sha256sum");
    assert_eq!(
        host.ok(&read).unwrap(),
        a,
        "the rollback did not bring the snapshot's data back"
    );
    nvme_tcp_disconnect(&mut host, &nqn);
    host.power_cut().unwrap();
    let (s, b) = api.call(
        Some("admin"),
        "POST",
        "/v1/volumes/web/rollback",
        Some(r#"{"snapshot":"nope"}"#),
    );
    assert_eq!(s, 404, "{b}");
    api.json("admin", "DELETE", "/v1/volumes/web", None, 200);
    let (s, b) = api.call(Some("reader"), "GET", "/v1/volumes/web", None);
    assert_eq!(s, 404, "{b}");

    // Metrics: storaged's gauges and the API's own counters, refused handshakes among them.
    let start = Instant::now();
    let metrics = loop {
        let (s, b) = api.call(Some("reader"), "GET", "/metrics", None);
        if s == 200 {
            break b;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no metrics: {s} {b}"
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    assert!(
        metrics.contains("# TYPE eve_mgmt_requests_total counter"),
        "{metrics}"
    );
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("eve_mgmt_tls_handshakes_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(refused >= 2, "{metrics}");
    assert!(
        metrics.contains("eve_storage_pool_up"),
        "storaged's gauges: {metrics}"
    );

    // The audit journal: every change asked, with who asked and what came of it.
    let audit = api.json("admin", "GET", "/v1/audit", None, 200);
    let entries = audit["entries"].as_array().unwrap();
    let find = |method: &str, path: &str, status: u64| {
        entries
            .iter()
            .find(|e| e["method"] == method && e["path"] == path && e["status"] == status)
    };
    let refused = find("POST", "/v1/volumes", 403).unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(refused["subject"], "CN=dev-reader");
    let made = find("POST", "/v1/volumes", 200).unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(
        (made["subject"].as_str(), made["role"].as_str()),
        (Some("CN=dev-admin"), Some("admin"))
    );
    assert!(find("DELETE", "/v1/volumes/web", 200).is_some(), "{audit}");
    assert!(
        find("POST", "/v1/volumes/web/rollback", 404).is_some(),
        "{audit}"
    );
    let (s, _) = api.call(Some("reader"), "GET", "/v1/audit", None);
    assert_eq!(s, 403);

    // The vault, read and operated remotely: its state, a new recovery key (the vault key
    // rotates), and a recovery with it on an unlocked vault changes nothing.
    let v = api.json("reader", "GET", "/v1/vault", None, 200);
    assert_eq!(v["vault"]["state"], "unlocked", "{v}");
    let (s, _) = api.call(Some("reader"), "POST", "/v1/vault/recovery-key", None);
    assert_eq!(s, 403);
    let rk = api.json("admin", "POST", "/v1/vault/recovery-key", None, 200);
    let key = rk["recovery_key"].as_str().unwrap().to_string();
    let body = serde_json::json!({"recovery_key": key}).to_string();
    let r = api.json("admin", "POST", "/v1/vault/recover", Some(&body), 200);
    assert_eq!(r["unlocked"], false, "already unlocked: nothing to do: {r}");
    let (s, b) = api.call(
        Some("admin"),
        "POST",
        "/v1/vault/recover",
        Some(r#"{"recovery_key":"not a key"}"#),
    );
    assert_eq!((s, b.contains("invalid_recovery_key")), (400, true), "{b}");
    let audit = api.json("admin", "GET", "/v1/audit", None, 200).to_string();
    assert!(
        !audit.contains(&key),
        "the recovery key is in the audit journal"
    );

    // A support bundle through the API (admin only): what support needs, and none of the VM's
    // CHAP secrets, the recovery key just made, or a private key.
    let out = host_cli(
        "storagectl",
        &api,
        "reader",
        &["bundle", "--out", "/nonexistent/b"],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "a reader gets no bundle: {out:?}"
    );
    let bdir = work.join("bundle");
    let _ = std::fs::remove_dir_all(&bdir);
    std::fs::create_dir_all(&bdir).unwrap();
    let file = bdir.join("b.tar.gz");
    let out = host_cli(
        "storagectl",
        &api,
        "admin",
        &["bundle", "--out", file.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["manifest"]["pool"], "persist", "{said}");
    assert_eq!(
        said["output_version"]["command"], "storagectl bundle",
        "{said}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(&bdir)
        .status()
        .unwrap();
    assert!(st.success());
    let mut texts = String::new();
    let mut stack = vec![bdir.clone()];
    let mut n = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.path() != file {
                n += 1;
                texts.push_str(&String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()));
            }
        }
    }
    assert!(n > 20, "{n} files");
    assert!(texts.contains("pool: persist"), "zpool status is in");
    for secret in [
        t["dhchap_secret"].as_str().unwrap(),
        t["dhchap_ctrl_secret"].as_str().unwrap(),
        key.as_str(),
        &key.replace('-', ""),
        &key.replace('-', "").to_uppercase(),
        "PRIVATE KEY",
    ] {
        assert!(!texts.contains(secret), "{secret:.12}... is in the bundle");
    }
    for s in [
        t["dhchap_secret"].as_str().unwrap(),
        t["dhchap_ctrl_secret"].as_str().unwrap(),
    ] {
        let part = s.trim_start_matches("DHHC-1:00:").trim_end_matches(':');
        assert!(
            !texts.contains(part),
            "a CHAP key's base64 is in the bundle"
        );
    }

    // A pile of parallel requests from one host: each is answered, slowed (429) or turned away
    // at the connection limit; the daemon stays up and its memory stays flat.
    let rss = |api: &Api| -> u64 {
        let (s, m) = api.call(Some("reader"), "GET", "/metrics", None);
        assert_eq!(s, 200, "{m}");
        m.lines()
            .find_map(|l| l.strip_prefix("eve_mgmt_resident_memory_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no memory figure: {m}"))
    };
    std::thread::sleep(Duration::from_secs(3));
    let before = rss(&api);
    let pile: Vec<_> = (0..200)
        .map(|_| {
            let api = api.clone();
            std::thread::spawn(move || api.call(Some("reader"), "GET", "/v1/whoami", None).0)
        })
        .collect();
    let statuses: Vec<u16> = pile.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| [0, 200, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    std::thread::sleep(Duration::from_secs(3));
    let after = rss(&api);
    eprintln!(
        "mgmtd resident memory: {before} bytes before 200 parallel requests, {after} after; answered {}, slowed {}, turned away {}",
        statuses.iter().filter(|s| **s == 200).count(),
        statuses.iter().filter(|s| **s == 429).count(),
        statuses.iter().filter(|s| **s == 0).count()
    );
    assert!(
        after < before + (32 << 20),
        "mgmtd grew from {before} to {after} bytes"
    );

    let console = m.console();
    assert!(
        console.contains(
            "eve-net: firewall loaded (TCP 8443, 9100 (metrics), 4420 (NVMe/TCP, from 1 networks) only)"
        )
            && console.contains("eve-net: enp0s3 has 10.0.2.15/24 (static) via 10.0.2.2"),
        "{console}"
    );
    assert!(
        !console.contains("DHCP on enp0s3"),
        "DHCP ran on a port with a static address:\n{console}"
    );
    // The plain-HTTP listener serves the metrics, no certificate needed, and nothing else.
    let plain = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{}{path}", m.host_port(9100)))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_string())
    };
    let (s, body) = plain("/metrics");
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("eve_mgmt_requests_total"), "{body}");
    for p in ["/v1/status", "/v1/audit", "/v1/update"] {
        assert_eq!(plain(p).0, 404, "{p} on the metrics port");
    }
    // The box said why it refused each handshake.
    for why in [
        "TLS handshake refused: peer sent no certificates",
        // The other CA bears our admin CA's name: its signature is what fails.
        "TLS handshake refused: invalid peer certificate: BadSignature",
    ] {
        assert!(console.contains(why), "console lacks {why:?}:\n{console}");
    }
    api
}

/// Opens an NVMe/TCP connection to the forwarded `port` and sends the Initialize Connection
/// Request (NVMe/TCP 1.0, no digests); returns the 128-byte answer, if one came within 20 s.
fn nvme_tcp_icreq(port: u16) -> Option<[u8; 128]> {
    use std::io::{Read, Write};
    let mut req = [0u8; 128];
    req[0] = 0x00; // ICReq
    req[2] = 128; // header length
    req[4..8].copy_from_slice(&128u32.to_le_bytes()); // PDU length
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&req).ok()?;
    let mut resp = [0u8; 128];
    s.read_exact(&mut resp).ok()?;
    Some(resp)
}

/// Connects the VM host to the subsystem `nqn` with the connect `options` (secrets included),
/// handed over on stdin to a file and written to `/dev/nvme-fabrics` from it, as `storagectl
/// volume connect --out` has an operator do; returns the namespace's device.
fn nvme_tcp_connect(host: &mut Machine, options: &str, nqn: &str) -> String {
    // The wire's address, which eve-net sets from the VM host's network.toml.
    let start = Instant::now();
    while host
        .sh(&format!(
            "ip -4 addr show dev {} | grep -q 10.9.0.2/24",
            Wire::IFACE
        ))
        .unwrap()
        .status
        != 0
    {
        if start.elapsed() > Duration::from_secs(60) {
            let diag = host
                .sh("ip addr; ip route; ls /sys/class/net; tail -n 30 /run/log/net.log /run/log/*net*; cat /config/network.toml")
                .unwrap();
            panic!(
                "the VM host has no address on the wire:\n{}\n{}",
                diag.stdout, diag.stderr
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let out = host
        .exec_argv(
            &[
                "/bin/sh",
                "-c",
                "umask 077 && cat > /run/web.nvmf && cat /run/web.nvmf > /dev/nvme-fabrics",
            ],
            options.as_bytes(),
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(out.status, 0, "connect: {out:?}");
    let find = format!(
        "for s in /sys/class/nvme-subsystem/*; do [ \"$(cat $s/subsysnqn)\" = {nqn} ] && for n in $s/nvme*n*; do [ -b /dev/${{n##*/}} ] && echo /dev/${{n##*/}}; done; done | head -1"
    );
    let start = Instant::now();
    loop {
        let dev = host.ok(&find).unwrap().trim().to_string();
        if !dev.is_empty() {
            return dev;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no namespace for {nqn} on the VM host"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn nvme_tcp_disconnect(host: &mut Machine, nqn: &str) {
    host.ok(&format!(
        "for c in /sys/class/nvme/nvme*; do [ \"$(cat $c/subsysnqn)\" = {nqn} ] && echo 1 > $c/delete_controller; done; true"
    ))
    .unwrap();
}
