//! Mutual TLS: the operator CAs the image trusts (one for admins, one for readers), the box's
//! own server identity (made on first use, kept on the vault when it is open), and who a
//! connected client is: its role, subject and certificate fingerprint.

use crate::{Error, Result};
use platform::io;
use platform::IoContext;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Serialize;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a client may do: a reader reads (status, health, lists, metrics), an admin does all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

/// Who is asking, from the certificate the handshake verified.
#[derive(Debug, Clone, Serialize)]
pub struct Client {
    pub role: Role,
    pub subject: String,
    /// SHA-256 of the client certificate (DER), as `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint: String,
}

/// `AB:CD:...`: SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let d = sha2::Sha256::digest(der);
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// ring: small, and built without cmake. rustls 0.23.48 deprecates it for lacking post-quantum
/// key exchange (X25519MLKEM768 needs aws-lc-rs); see the issue note for the trade.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; a file with none is an error, never "trust nothing".
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path).at("read", path)?;
    certs_from_pem(&text).map_err(|msg| Error::Pem {
        path: path.into(),
        msg,
    })
}

pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate list: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// The operator CAs: a client certificate must chain to one of them, and its role is which.
#[derive(Debug)]
pub struct Trust {
    admin: Arc<dyn ClientCertVerifier>,
    any: Arc<dyn ClientCertVerifier>,
}

fn verifier(
    what: &'static str,
    certs: &[CertificateDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c.clone()).map_err(|e| Error::Tls {
            what,
            msg: format!("a CA certificate was refused: {e}"),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| Error::Tls {
            what,
            msg: e.to_string(),
        })
}

impl Trust {
    pub fn new(
        admin: &[CertificateDer<'static>],
        reader: &[CertificateDer<'static>],
    ) -> Result<Trust> {
        // One CA in both files would make every reader an admin: a mistake to refuse, not run.
        if let Some(c) = admin.iter().find(|a| reader.contains(a)) {
            return Err(Error::Tls {
                what: "operator CAs",
                msg: format!(
                    "the CA {} is in both the admin and the reader file; every reader would be an admin",
                    subject(c)
                ),
            });
        }
        let all: Vec<_> = admin.iter().chain(reader).cloned().collect();
        Ok(Trust {
            admin: verifier("admin CA", admin)?,
            any: verifier("operator CAs", &all)?,
        })
    }

    /// The trusted CA files: admins' and readers'.
    pub fn load(admin: &Path, reader: &Path) -> Result<Trust> {
        Trust::new(&load_certs(admin)?, &load_certs(reader)?)
    }

    /// Who the verified peer chain (end entity first) belongs to. The handshake already checked
    /// it against both CAs; here it is checked against the admins' alone, without the
    /// intermediates the client sent: only a certificate an admin CA signed itself is an admin's,
    /// so no chain a client assembles (a cross-certificate, a reader CA under an admin root)
    /// makes a reader an admin.
    pub fn client(&self, chain: &[CertificateDer<'_>]) -> Option<Client> {
        let ee = chain.first()?;
        let admin = self
            .admin
            .verify_client_cert(ee, &[], UnixTime::now())
            .is_ok();
        Some(Client {
            role: if admin { Role::Admin } else { Role::Reader },
            subject: subject(ee),
            fingerprint: fingerprint(ee),
        })
    }

    /// TLS 1.3 only, a client certificate required, HTTP/1.1.
    pub fn server_config(&self, id: &Identity) -> Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone()));
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls {
                what: "server config",
                msg: e.to_string(),
            })?
            .with_client_cert_verifier(self.any.clone())
            .with_single_cert(vec![CertificateDer::from(id.cert_der.clone())], key)
            .map_err(|e| Error::Tls {
                what: "server certificate",
                msg: e.to_string(),
            })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// The certificate's subject as RFC 4514 text (`CN=ops,O=Example`), or `?` if it cannot be read.
pub fn subject(der: &[u8]) -> String {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(der)
        .map(|c| c.tbs_certificate.subject.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The box's own server certificate and key. Operators pin its fingerprint (printed on the
/// console): it is self-signed, since no CA can vouch for a box's address in the field.
#[derive(Clone)]
pub struct Identity {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    pub key_der: Vec<u8>,
    key_pem: String,
    /// Where it is kept, or `None` for one made for this run only (the vault is locked).
    pub kept: Option<PathBuf>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .field("kept", &self.kept)
            .finish()
    }
}

impl Identity {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// A new P-256 key and a self-signed certificate naming `host`.
    pub fn generate(host: &str) -> Result<Identity> {
        let e = |e: rcgen::Error| Error::Identity(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(e)?;
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(e)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("eve-storage {host}"));
        let cert = params.self_signed(&key).map_err(e)?;
        Ok(Identity {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
            kept: None,
        })
    }

    /// The identity kept in `dir` (`server.pem`: the key and its certificate in one file, so a
    /// power cut leaves the old pair, none, or the new one, never half), made there on first use.
    /// A file that is there but unreadable is an error: it is never replaced behind the
    /// operator's back, since clients pin its certificate.
    pub fn load_or_create(dir: &Path, host: &str) -> Result<Identity> {
        let p = dir.join("server.pem");
        if p.exists() {
            let text = std::fs::read(&p).map_err(io("read", &p))?;
            let key_der = PrivatePkcs8KeyDer::from_pem_slice(&text)
                .map_err(|e| Error::Pem {
                    path: p.clone(),
                    msg: format!("no PKCS#8 private key: {e}"),
                })?
                .secret_pkcs8_der()
                .to_vec();
            let cert = certs_from_pem(&text).map_err(|msg| Error::Pem {
                path: p.clone(),
                msg,
            })?;
            let cert_der = cert[0].to_vec();
            let cert_pem = String::from_utf8_lossy(&text)
                .split_inclusive('\n')
                .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
                .collect();
            return Ok(Identity {
                cert_der,
                cert_pem,
                key_der,
                key_pem: String::new(),
                kept: Some(dir.into()),
            });
        }
        let mut id = Identity::generate(host)?;
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        write_private(&p, format!("{}{}", id.key_pem, id.cert_pem).as_bytes())?;
        id.kept = Some(dir.into());
        Ok(id)
    }
}

/// Written whole ([`platform::fsx::write_atomic`]), owner-only. A temporary an earlier release
/// left beside it (`<name>.pem.tmp`, after a cut write: a private key) goes too.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    platform::fsx::write_atomic(path, data, Some(0o600))?;
    let old = path.with_extension("pem.tmp");
    if old.is_file() {
        let _ = std::fs::remove_file(&old);
    }
    Ok(())
}
