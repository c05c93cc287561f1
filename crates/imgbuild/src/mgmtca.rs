//! The operator CAs the management API trusts: `MGMT_CA=dir` names a directory with the
//! vendor's (or customer's) `admin-ca.pem` and `reader-ca.pem`; without it the builder makes a
//! development set once in its cache, with an admin and a reader client certificate beside it
//! for `make run`, the VM tests and a newcomer's first calls. A release refuses the development
//! set. The image carries the two CA files in /etc/eve/mgmt, on the verified root, so only a
//! signed update changes them.

use crate::context::Profile;
use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};

/// In the image's root.
pub const ADMIN_CA: &str = "etc/eve/mgmt/admin-ca.pem";
pub const READER_CA: &str = "etc/eve/mgmt/reader-ca.pem";

#[derive(Debug, Clone)]
pub struct MgmtCa {
    pub dir: PathBuf,
    /// `release` (given) or `dev` (the cache's).
    pub kind: &'static str,
    pub admin_pem: String,
    pub reader_pem: String,
}

fn read_ca(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).at("read", &p)?;
    check_ca(&text).map_err(|msg| Error::Parse { path: p, msg })?;
    Ok(text)
}

/// Each certificate's base64 body, whitespace removed (what the two CA files are compared by).
fn pem_bodies(pem: &str) -> Vec<String> {
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            block
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect()
        })
        .collect()
}

/// At least one certificate, each parsed and marked as a CA.
fn check_ca(pem: &str) -> std::result::Result<(), String> {
    let mut n = 0;
    for b64 in pem_bodies(pem) {
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("certificate {}: not base64: {e}", n + 1))?;
        use x509_cert::der::oid::AssociatedOid;
        use x509_cert::der::Decode;
        let cert = x509_cert::Certificate::from_der(&der)
            .map_err(|e| format!("certificate {}: {e}", n + 1))?;
        let is_ca = cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|x| x.extn_id == x509_cert::ext::pkix::BasicConstraints::OID)
            .filter_map(|x| {
                x509_cert::ext::pkix::BasicConstraints::from_der(x.extn_value.as_bytes()).ok()
            })
            .any(|b| b.ca);
        if !is_ca {
            return Err(format!(
                "certificate {} is not a CA (no basicConstraints CA:TRUE)",
                n + 1
            ));
        }
        n += 1;
    }
    if n == 0 {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

impl MgmtCa {
    pub fn for_build(
        given: Option<&Path>,
        release: bool,
        cache: &Path,
        _profile: Profile,
    ) -> Result<MgmtCa> {
        match given {
            Some(dir) => {
                let (admin_pem, reader_pem) = (read_ca(dir, "admin-ca.pem")?, read_ca(dir, "reader-ca.pem")?);
                // mgmtd refuses to start on such a pair; a build must not make that image.
                let reader = pem_bodies(&reader_pem);
                if pem_bodies(&admin_pem).iter().any(|b| reader.contains(b)) {
                    return Err(Error::Parse {
                        path: dir.join("reader-ca.pem"),
                        msg: "holds a CA that admin-ca.pem holds too: every reader would be an admin".into(),
                    });
                }
                Ok(MgmtCa {
                    dir: dir.into(),
                    kind: "release",
                    admin_pem,
                    reader_pem,
                })
            }
            None if release => Err(Error::Parse {
                path: "MGMT_CA".into(),
                msg: "a release needs the operators' CAs (MGMT_CA=dir with admin-ca.pem and reader-ca.pem); it never trusts the development CA".into(),
            }),
            None => {
                let dir = cache.join("keys/mgmt-dev");
                if !dir.join("reader.key").exists() {
                    make_dev(&dir)?;
                }
                Ok(MgmtCa {
                    kind: "dev",
                    admin_pem: read_ca(&dir, "admin-ca.pem")?,
                    reader_pem: read_ca(&dir, "reader-ca.pem")?,
                    dir,
                })
            }
        }
    }
}

fn rc(e: rcgen::Error) -> Error {
    Error::Parse {
        path: "development management CA".into(),
        msg: e.to_string(),
    }
}

/// Two CAs (admins, readers) and one client certificate from each: `admin.pem`/`admin.key`,
/// `reader.pem`/`reader.key`. Written last-file-last, so a set cut short is made again.
pub fn make_dev(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).at("create", dir)?;
    let write = |name: &str, text: &str| -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&p)
            .at("create", &p)?;
        f.write_all(text.as_bytes()).at("write", &p)?;
        Ok(())
    };
    for role in ["admin", "reader"] {
        let ca_key = rcgen::KeyPair::generate().map_err(rc)?;
        let mut p = rcgen::CertificateParams::new(vec![]).map_err(rc)?;
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("eve-storage development {role} CA"),
        );
        let ca = p.self_signed(&ca_key).map_err(rc)?;
        let key = rcgen::KeyPair::generate().map_err(rc)?;
        let mut c = rcgen::CertificateParams::new(vec![]).map_err(rc)?;
        c.distinguished_name
            .push(rcgen::DnType::CommonName, format!("dev-{role}"));
        c.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = c.signed_by(&key, &ca, &ca_key).map_err(rc)?;
        write(&format!("{role}-ca.pem"), &ca.pem())?;
        write(&format!("{role}-ca.key"), &ca_key.serialize_pem())?;
        write(&format!("{role}.pem"), &cert.pem())?;
        write(&format!("{role}.key"), &key.serialize_pem())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_set_is_made_once_and_a_release_needs_its_own() {
        let d = tempfile::tempdir().unwrap();
        let a = MgmtCa::for_build(None, false, d.path(), Profile::Prod).unwrap();
        let b = MgmtCa::for_build(None, false, d.path(), Profile::Dev).unwrap();
        assert_eq!((a.kind, &a.admin_pem), ("dev", &b.admin_pem));
        assert_ne!(a.admin_pem, a.reader_pem);
        assert!(a.dir.join("admin.key").exists());
        let e = MgmtCa::for_build(None, true, d.path(), Profile::Prod)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MGMT_CA"), "{e}");
        // A given directory: both files, each a CA.
        let given = d.path().join("given");
        std::fs::create_dir(&given).unwrap();
        std::fs::copy(a.dir.join("admin-ca.pem"), given.join("admin-ca.pem")).unwrap();
        let e = MgmtCa::for_build(Some(&given), true, d.path(), Profile::Prod)
            .unwrap_err()
            .to_string();
        assert!(e.contains("reader-ca.pem"), "{e}");
        // A client certificate is not a CA.
        std::fs::copy(a.dir.join("reader.pem"), given.join("reader-ca.pem")).unwrap();
        let e = MgmtCa::for_build(Some(&given), true, d.path(), Profile::Prod)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a CA"), "{e}");
        // The same CA for both roles.
        std::fs::copy(a.dir.join("admin-ca.pem"), given.join("reader-ca.pem")).unwrap();
        let e = MgmtCa::for_build(Some(&given), true, d.path(), Profile::Prod)
            .unwrap_err()
            .to_string();
        assert!(e.contains("every reader would be an admin"), "{e}");
        std::fs::copy(a.dir.join("reader-ca.pem"), given.join("reader-ca.pem")).unwrap();
        let r = MgmtCa::for_build(Some(&given), true, d.path(), Profile::Prod).unwrap();
        assert_eq!(r.kind, "release");
    }
}
