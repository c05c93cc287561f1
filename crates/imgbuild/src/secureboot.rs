//! Secure Boot for the image: the project's boot keys and everything signed with them.
//!
//! One key set, in one directory (`BOOT_KEYS=dir`, or a development set made once in the cache):
//! - `PK`, `KEK`, `db` (`*.key` + `*.crt`, RSA-2048 X.509): the firmware's platform, key-exchange
//!   and signature-database keys. `db` signs the EFI binaries (shim, GRUB, the kernel) and the
//!   out-of-tree kernel modules (enrolled as shim's MOK too, so Debian's kernel trusts them under
//!   lockdown);
//! - `grub.asc` / `grub.pub` (OpenPGP RSA): what GRUB checks the slot's kernel, initrd and config
//!   against (`check_signatures=enforce`, public key built into the signed GRUB);
//! - the ed25519 update key (`SIGNING_KEY=`, see `keys`) signs update artifacts and each slot's
//!   verity descriptor.
//!
//! Every signature is made with the build's SOURCE_DATE_EPOCH, so the same inputs give the same
//! bytes (RSA PKCS#1 v1.5 and ed25519 are deterministic).

use crate::cmd;
use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};

/// The stock OVMF variable store the enrolled copy starts from.
pub const OVMF_VARS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Owner of our signature-list entries; any fixed GUID does, this one is ours.
pub const OWNER_GUID: &str = "6b6a5e8f-2a3c-4c1e-9d3e-e5e0e5a7f0b1";
const FIRMWARE_KEYS: [&str; 3] = ["PK", "KEK", "db"];
const GRUB_SECRET: &str = "grub.asc";
const GRUB_PUBLIC: &str = "grub.pub";
/// OpenPGP keys made here carry this creation time, so any SOURCE_DATE_EPOCH after it can sign.
const GPG_KEY_TIME: u64 = 1_577_836_800; // 2020-01-01

#[derive(Debug, Clone)]
pub struct BootKeys {
    pub dir: PathBuf,
    /// `release` or `dev`.
    pub kind: &'static str,
}

fn missing(dir: &Path, what: &str) -> Error {
    Error::Parse {
        path: dir.into(),
        msg: format!("boot key set is missing {what} (make one with `eve-imgbuild new-boot-keys`)"),
    }
}

impl BootKeys {
    pub fn open(dir: &Path, kind: &'static str) -> Result<BootKeys> {
        for k in FIRMWARE_KEYS {
            for ext in ["key", "crt"] {
                if !dir.join(format!("{k}.{ext}")).is_file() {
                    return Err(missing(dir, &format!("{k}.{ext}")));
                }
            }
        }
        for f in [GRUB_SECRET, GRUB_PUBLIC] {
            if !dir.join(f).is_file() {
                return Err(missing(dir, f));
            }
        }
        Ok(BootKeys {
            dir: dir.into(),
            kind,
        })
    }

    /// The key set for a build: `explicit` if given; otherwise (not for a release) the cache's
    /// development set, made on first use.
    pub fn for_build(
        explicit: Option<&Path>,
        release: bool,
        cache: &Path,
        profile: crate::context::Profile,
    ) -> Result<BootKeys> {
        crate::keys::check_dev(profile, explicit, "BOOT_KEYS", release)?;
        match explicit {
            Some(d) => BootKeys::open(d, "release"),
            None if release => Err(Error::Parse {
                path: "BOOT_KEYS".into(),
                msg: "a release build needs the vendor's boot keys (BOOT_KEYS=dir with PK, KEK, \
                      db and grub keys); it never signs with development keys"
                    .into(),
            }),
            None => {
                let dir = crate::keys::dev_dir(cache, profile);
                let d = dir.join("dev-boot");
                if !d.join(GRUB_PUBLIC).is_file() {
                    let _ = std::fs::create_dir_all(&dir);
                    let tmp = dir.join(format!(".dev-boot.{}", std::process::id()));
                    let _ = std::fs::remove_dir_all(&tmp);
                    generate(&tmp, "EVE storage development")?;
                    // Another build may have made the set meanwhile; keep whichever came first.
                    if std::fs::rename(&tmp, &d).is_err() {
                        let _ = std::fs::remove_dir_all(&tmp);
                    } else {
                        eprintln!(
                            "      no BOOT_KEYS: made development boot keys in {}",
                            d.display()
                        );
                    }
                }
                BootKeys::open(&d, "dev")
            }
        }
    }

    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }
    fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
    pub fn grub_public(&self) -> PathBuf {
        self.dir.join(GRUB_PUBLIC)
    }

    /// Signs a PE/COFF (EFI) binary with `db` into `out`, replacing any signature it had (the
    /// distribution's, which our firmware does not trust).
    pub fn sign_pe(&self, input: &Path, out: &Path, epoch: u64) -> Result<()> {
        let unsigned = out.with_extension("unsigned");
        let _ = std::fs::remove_file(&unsigned);
        let _ = std::fs::remove_file(out);
        let src = if cmd::run(
            cmd::OSSLSIGNCODE,
            &[
                "remove-signature".as_ref(),
                "-in".as_ref(),
                input.as_os_str(),
                "-out".as_ref(),
                unsigned.as_os_str(),
            ],
            None,
        )
        .is_ok()
        {
            unsigned.clone()
        } else {
            input.to_path_buf()
        };
        cmd::run(
            cmd::OSSLSIGNCODE,
            &[
                "sign".as_ref(),
                "-certs".as_ref(),
                self.cert("db").as_os_str(),
                "-key".as_ref(),
                self.key("db").as_os_str(),
                "-h".as_ref(),
                "sha256".as_ref(),
                "-time".as_ref(),
                epoch.to_string().as_ref(),
                "-in".as_ref(),
                src.as_os_str(),
                "-out".as_ref(),
                out.as_os_str(),
            ],
            None,
        )?;
        let _ = std::fs::remove_file(&unsigned);
        Ok(())
    }

    /// Appends a module signature made with `db` (the kernel's `sign-file`, from linux-kbuild).
    pub fn sign_module(&self, sign_file: &Path, module: &Path) -> Result<()> {
        let der = self.dir.join("db.der");
        if !der.exists() {
            cmd::run(
                cmd::OPENSSL,
                &[
                    "x509".as_ref(),
                    "-in".as_ref(),
                    self.cert("db").as_os_str(),
                    "-outform".as_ref(),
                    "DER".as_ref(),
                    "-out".as_ref(),
                    der.as_os_str(),
                ],
                None,
            )?;
        }
        cmd::run(
            &sign_file.to_string_lossy(),
            &[
                "sha256".as_ref(),
                self.key("db").as_os_str(),
                der.as_os_str(),
                module.as_os_str(),
            ],
            None,
        )
        .map(|_| ())
    }

    /// A signed append to the firmware's `dbx` (an `EFI_VARIABLE_AUTHENTICATION_2` over one
    /// SHA-256 signature list) forbidding the images with Authenticode hashes `hashes`, signed
    /// with `KEK` (efitools' `sign-efi-sig-list`) at time `epoch` (seconds; a fixed time keeps
    /// the build reproducible; firmware does not check the time of an append).
    pub fn dbx_append(
        &self,
        hashes: &[[u8; 32]],
        epoch: u64,
        work: &Path,
        out: &Path,
    ) -> Result<()> {
        use platform::efisig;
        let owner = uuid_bytes(OWNER_GUID);
        let esl = efisig::encode_lists(&[efisig::SigList {
            kind: efisig::CERT_SHA256_GUID,
            header: Vec::new(),
            entries: hashes
                .iter()
                .map(|h| [&owner[..], &h[..]].concat())
                .collect(),
            entry_size: 48,
        }]);
        let esl_path = work.join("dbx-append.esl");
        std::fs::write(&esl_path, esl).at("write", &esl_path)?;
        let time = time_text(epoch);
        cmd::run_env(
            cmd::SIGN_EFI_SIG_LIST,
            &[
                "-a".as_ref(),
                "-g".as_ref(),
                OWNER_GUID.as_ref(),
                "-t".as_ref(),
                time.as_ref(),
                "-c".as_ref(),
                self.cert("KEK").as_os_str(),
                "-k".as_ref(),
                self.key("KEK").as_os_str(),
                platform::efisig::DBX.as_ref(),
                esl_path.as_os_str(),
                out.as_os_str(),
            ],
            &[("LC_ALL", "C".to_string())],
        )?;
        let _ = std::fs::remove_file(&esl_path);
        Ok(())
    }

    /// A session that makes GRUB's detached OpenPGP signatures (`file.sig`).
    pub fn gpg(&self, work: &Path) -> Result<Gpg> {
        Gpg::open(&self.dir.join(GRUB_SECRET), work)
    }

    /// The firmware variable store for qemu's OVMF: PK, KEK and db enrolled, db's certificate
    /// also in shim's MokList (trusted for kernel modules), `revoked` certificates in dbx (the
    /// stock shim's own vendor certificate, so only our signatures boot), Secure Boot on.
    pub fn ovmf_vars(&self, out: &Path, revoked: &[Vec<u8>], work: &Path) -> Result<()> {
        let _ = std::fs::remove_file(out);
        let stage = work.join("vars.keys.fd");
        let _ = std::fs::remove_file(&stage);
        let g = OWNER_GUID;
        let (pk, kek, db) = (self.cert("PK"), self.cert("KEK"), self.cert("db"));
        cmd::run(
            cmd::VIRT_FW_VARS,
            &[
                "-i".as_ref(),
                OVMF_VARS_TEMPLATE.as_ref(),
                "--set-pk".as_ref(),
                g.as_ref(),
                pk.as_os_str(),
                "--add-kek".as_ref(),
                g.as_ref(),
                kek.as_os_str(),
                "--add-db".as_ref(),
                g.as_ref(),
                db.as_os_str(),
                "--add-mok".as_ref(),
                g.as_ref(),
                db.as_os_str(),
                "--sb".as_ref(),
                "-o".as_ref(),
                stage.as_os_str(),
            ],
            None,
        )?;
        let dbx = work.join("dbx.json");
        std::fs::write(&dbx, dbx_json(revoked)).at("write", &dbx)?;
        cmd::run(
            cmd::VIRT_FW_VARS,
            &[
                "-i".as_ref(),
                stage.as_os_str(),
                "--set-json".as_ref(),
                dbx.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
            None,
        )?;
        let _ = std::fs::remove_file(&stage);
        Ok(())
    }
}

/// Makes a new key set in `dir` (which must not exist).
pub fn generate(dir: &Path, name: &str) -> Result<()> {
    if dir.exists() {
        return Err(Error::Parse {
            path: dir.into(),
            msg: "exists; boot keys are never overwritten".into(),
        });
    }
    std::fs::create_dir_all(dir).at("create", dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).at("chmod", dir)?;
    for k in FIRMWARE_KEYS {
        cmd::run(
            cmd::OPENSSL,
            &[
                "req".as_ref(),
                "-new".as_ref(),
                "-x509".as_ref(),
                "-newkey".as_ref(),
                "rsa:2048".as_ref(),
                "-nodes".as_ref(),
                "-sha256".as_ref(),
                "-days".as_ref(),
                "7300".as_ref(),
                "-subj".as_ref(),
                format!("/CN={name} {k}/").as_ref(),
                "-keyout".as_ref(),
                dir.join(format!("{k}.key")).as_os_str(),
                "-out".as_ref(),
                dir.join(format!("{k}.crt")).as_os_str(),
            ],
            None,
        )?;
    }
    let home = tempfile::Builder::new()
        .prefix("gnupg")
        .tempdir_in(dir)
        .at("create a GnuPG home in", dir)?;
    let h = home.path();
    let g = |args: &[&str]| -> Result<Vec<u8>> {
        let mut a = vec![
            "--homedir".to_string(),
            h.display().to_string(),
            "--batch".into(),
            "--pinentry-mode".into(),
            "loopback".into(),
            "--passphrase".into(),
            String::new(),
            "--faked-system-time".into(),
            format!("{GPG_KEY_TIME}!"),
        ];
        a.extend(args.iter().map(|s| s.to_string()));
        cmd::run(cmd::GPG, &a, None)
    };
    let uid = format!("{name} GRUB signing key");
    g(&["--quick-gen-key", &uid, "rsa3072", "sign", "never"])?;
    let secret = g(&["--armor", "--export-secret-keys", &uid])?;
    let public = g(&["--export", &uid])?;
    let _ = cmd::run(
        cmd::GPGCONF,
        &["--homedir", &h.display().to_string(), "--kill", "all"],
        None,
    );
    std::fs::write(dir.join(GRUB_SECRET), secret).at("write", dir.join(GRUB_SECRET))?;
    std::fs::write(dir.join(GRUB_PUBLIC), public).at("write", dir.join(GRUB_PUBLIC))?;
    for f in std::fs::read_dir(dir).at("list", dir)?.flatten() {
        let p = f.path();
        if p.extension().is_some_and(|e| e == "key" || e == "asc") {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).at("chmod", &p)?;
        }
    }
    Ok(())
}

/// GnuPG with the GRUB key imported into a private home, removed on drop.
#[derive(Debug)]
pub struct Gpg {
    home: tempfile::TempDir,
    /// The key's creation time: no signature may be older.
    created: u64,
}

impl Gpg {
    fn open(secret: &Path, work: &Path) -> Result<Gpg> {
        std::fs::create_dir_all(work).at("create", work)?;
        let home = tempfile::Builder::new()
            .prefix("gnupg")
            .tempdir_in(work)
            .at("create a GnuPG home in", work)?;
        let mut g = Gpg { home, created: 0 };
        g.run(&["--import", &secret.display().to_string()], 0)?;
        let list = g.run(&["--with-colons", "--list-secret-keys"], 0)?;
        let created =
            parse_creation(&String::from_utf8_lossy(&list)).ok_or_else(|| Error::Parse {
                path: secret.into(),
                msg: "no OpenPGP secret key in it".into(),
            })?;
        g.created = created;
        Ok(g)
    }

    fn run(&self, args: &[&str], time: u64) -> Result<Vec<u8>> {
        let mut a = vec![
            "--homedir".to_string(),
            self.home.path().display().to_string(),
            "--batch".into(),
            "--yes".into(),
            "--pinentry-mode".into(),
            "loopback".into(),
            "--passphrase".into(),
            String::new(),
        ];
        if time > 0 {
            a.extend(["--faked-system-time".into(), format!("{time}!")]);
        }
        a.extend(args.iter().map(|s| s.to_string()));
        cmd::run(cmd::GPG, &a, None)
    }

    /// Writes `file.sig`: a detached binary signature, SHA-256 (GRUB's pgp module has no other
    /// hash built in), dated at `epoch` (or the key's creation time if that is later).
    pub fn sign(&self, file: &Path, epoch: u64) -> Result<PathBuf> {
        let sig = PathBuf::from(format!("{}.sig", file.display()));
        self.run(
            &[
                "--digest-algo",
                "SHA256",
                "--detach-sign",
                "-o",
                &sig.display().to_string(),
                &file.display().to_string(),
            ],
            epoch.max(self.created),
        )?;
        Ok(sig)
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = cmd::run(
            cmd::GPGCONF,
            &[
                "--homedir",
                &self.home.path().display().to_string(),
                "--kill",
                "all",
            ],
            None,
        );
    }
}

/// The creation time of the first secret key in `gpg --with-colons --list-secret-keys` output.
pub fn parse_creation(colons: &str) -> Option<u64> {
    colons
        .lines()
        .find(|l| l.starts_with("sec:"))
        .and_then(|l| l.split(':').nth(5))
        .and_then(|t| t.parse().ok())
}

/// An EFI_SIGNATURE_LIST of X.509 certificates (DER), owned by [`OWNER_GUID`].
pub fn x509_signature_list(certs: &[Vec<u8>]) -> Vec<u8> {
    // EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072, mixed-endian as EFI stores GUIDs.
    const X509: [u8; 16] = [
        0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0,
        0x72,
    ];
    let owner = uuid::Uuid::parse_str(OWNER_GUID)
        .map(|u| u.to_bytes_le())
        .unwrap_or_default();
    let mut out = Vec::new();
    for c in certs {
        let sig_size = 16 + c.len() as u32;
        out.extend_from_slice(&X509);
        out.extend_from_slice(&(28 + sig_size).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&sig_size.to_le_bytes());
        out.extend_from_slice(&owner);
        out.extend_from_slice(c);
    }
    out
}

/// virt-fw-vars JSON setting dbx to `revoked` (authenticated variable, fixed time stamp).
/// A GUID's bytes as UEFI stores them (the first three fields little-endian).
fn uuid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, o) in b.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// `epoch` as `sign-efi-sig-list -t` reads it (`%Y-%m-%d %H:%M:%S`, UTC).
fn time_text(epoch: u64) -> String {
    let (y, m, d, h, mi, s) = platform::units::civil(epoch);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

fn dbx_json(revoked: &[Vec<u8>]) -> String {
    serde_json::json!({
        "version": 2,
        "variables": [{
            "name": "dbx",
            "guid": "d719b2cb-3d3a-4596-a3bc-dad00e67656f",
            "attr": 39,
            "data": hex::encode(x509_signature_list(revoked)),
            "time": "da070101000000000000000000000000",
        }]
    })
    .to_string()
}

/// The certificates a stock shim trusts by itself (its `.vendor_cert` section: a header of four
/// little-endian u32, then the authorised certificate), so they can be revoked in dbx.
pub fn shim_vendor_cert(section: &[u8]) -> Option<Vec<u8>> {
    let u = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(section.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let (size, offset) = (u(0)?, u(8)?);
    let der = section.get(offset..offset.checked_add(size)?)?;
    (size > 0 && der.first() == Some(&0x30)).then(|| der.to_vec())
}

/// The lines of a PE section dump (objcopy) as text: SBAT is CSV, NUL padded.
pub fn sbat_text(section: &[u8]) -> String {
    let end = section
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(section.len());
    String::from_utf8_lossy(&section[..end]).into_owned()
}

/// One section of a PE file, through objcopy.
pub fn pe_section(file: &Path, name: &str, work: &Path) -> Result<Vec<u8>> {
    let out = work.join(format!("section{name}"));
    let _ = std::fs::remove_file(&out);
    cmd::run(
        cmd::OBJCOPY,
        &[
            "-O".as_ref(),
            "binary".as_ref(),
            format!("--only-section={name}").as_ref(),
            file.as_os_str(),
            out.as_os_str(),
        ],
        None,
    )?;
    let b = std::fs::read(&out).at("read", &out)?;
    let _ = std::fs::remove_file(&out);
    if b.is_empty() {
        return Err(Error::Parse {
            path: file.into(),
            msg: format!("no {name} section"),
        });
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_lists_follow_the_uefi_layout() {
        let l = x509_signature_list(&[vec![0x30, 1, 2], vec![0x30, 9]]);
        assert_eq!(l.len(), (28 + 16 + 3) + (28 + 16 + 2));
        assert_eq!(&l[..4], &[0xa1, 0x59, 0xc0, 0xa5]);
        assert_eq!(u32::from_le_bytes(l[16..20].try_into().unwrap()), 47);
        assert_eq!(u32::from_le_bytes(l[24..28].try_into().unwrap()), 19);
        assert_eq!(&l[44..47], &[0x30, 1, 2]);
        let j: serde_json::Value = serde_json::from_str(&dbx_json(&[vec![0x30]])).unwrap();
        assert_eq!(j["variables"][0]["name"], "dbx");
    }

    #[test]
    fn append_times_and_owner_guids_are_as_efitools_and_firmware_read_them() {
        assert_eq!(time_text(0), "1970-01-01 00:00:00");
        assert_eq!(time_text(1_796_590_800), "2026-12-06 21:00:00");
        assert_eq!(time_text(951_782_400), "2000-02-29 00:00:00");
        let g = uuid_bytes("d719b2cb-3d3a-4596-a3bc-dad00e67656f");
        assert_eq!(g, platform::efisig::SECURITY_DATABASE_GUID);
    }

    #[test]
    fn a_dbx_append_is_signed_at_the_given_time_and_carries_the_hashes() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("keys");
        generate(&dir, "test").unwrap();
        let boot = BootKeys::open(&dir, "dev").unwrap();
        let out = t.path().join("dbx-append.auth");
        boot.dbx_append(&[[7; 32], [8; 32]], 1_796_590_800, t.path(), &out)
            .unwrap();
        let auth = std::fs::read(&out).unwrap();
        // EFI_TIME: year (LE), month, day, hour, minute, second.
        assert_eq!(&auth[..7], &[0xea, 0x07, 12, 6, 21, 0, 0]);
        let lists = platform::efisig::auth2_payload(&auth).unwrap();
        assert_eq!(
            platform::efisig::sha256s(lists).unwrap(),
            vec![[7; 32], [8; 32]]
        );
        let l = platform::efisig::parse_lists(lists).unwrap();
        assert_eq!(l[0].entries[0][..16], uuid_bytes(OWNER_GUID));
    }

    #[test]
    fn vendor_certificates_and_sbat_are_read_from_sections() {
        let mut s = Vec::new();
        for v in [3u32, 0, 16, 19] {
            s.extend_from_slice(&v.to_le_bytes());
        }
        s.extend_from_slice(&[0x30, 0xaa, 0xbb]);
        assert_eq!(shim_vendor_cert(&s), Some(vec![0x30, 0xaa, 0xbb]));
        assert_eq!(shim_vendor_cert(&s[..17]), None, "truncated");
        let mut not_der = s.clone();
        not_der[16] = 0;
        assert_eq!(shim_vendor_cert(&not_der), None);
        assert_eq!(sbat_text(b"sbat,1\ngrub,5\n\0\0\0"), "sbat,1\ngrub,5\n");
        assert_eq!(
            parse_creation("sec:u:3072:1:ABCD:1577836800:::u:::scESC:\nfpr:::"),
            Some(1_577_836_800)
        );
    }
}
