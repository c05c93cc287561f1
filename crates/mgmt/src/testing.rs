//! For other crates' tests of the API's clients (`storagectl --remote`, `abupdate --remote`): CAs
//! and client certificates made on the spot, and a server over the recording [`Fake`] on a
//! thread of its own. Not used by the daemon.

use crate::backend::Fake;
use crate::limit::Limits;
use crate::tls::{Identity, Trust};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A CA that issues client certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its PKCS#8 key, DER.
#[derive(Debug, Clone)]
pub struct Cert {
    pub der: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("a key");
        let mut p = CertificateParams::new(vec![]).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: p.self_signed(&key).expect("a CA certificate"),
            key,
        }
    }
    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }
    /// A client certificate named `cn`.
    pub fn issue(&self, cn: &str) -> Cert {
        let key = KeyPair::generate().expect("a key");
        let mut p = CertificateParams::new(vec![]).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let c = p
            .signed_by(&key, &self.cert, &self.key)
            .expect("a certificate");
        Cert {
            der: c.der().to_vec(),
            key: key.serialize_der(),
        }
    }
}

/// PEM of `der` under `label` (`CERTIFICATE`, `PRIVATE KEY`).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A server over a [`Fake`], serving until the process ends.
#[derive(Debug)]
pub struct FakeBox {
    pub addr: std::net::SocketAddr,
    pub server_cert: Vec<u8>,
    pub fake: Arc<Fake>,
    pub audit: storaged::audit::Journal,
}

impl FakeBox {
    /// Serves on 127.0.0.1 with `admin` and `reader` as the operator CAs; the audit journal in
    /// `dir`.
    pub fn start(admin: &Ca, reader: &Ca, dir: &Path) -> FakeBox {
        let trust = Trust::new(
            &[CertificateDer::from(admin.der())],
            &[CertificateDer::from(reader.der())],
        )
        .expect("trust");
        let id = Identity::generate("box.test").expect("an identity");
        let tls = trust.server_config(&id).expect("a TLS config");
        let audit = storaged::audit::Journal::at(dir.join("audit.jsonl"));
        let fake = Arc::new(Fake::default());
        let server =
            crate::server::Server::new(trust, tls, fake.clone(), audit.clone(), Limits::default());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("a port");
                let _ = tx.send(l.local_addr().expect("its address"));
                server.serve(l).await;
            });
        });
        FakeBox {
            addr: rx.recv().expect("the server's address"),
            server_cert: id.cert_der.clone(),
            fake,
            audit,
        }
    }

    /// `--remote`, `--cert`, `--key` and `--ca` for `who`, the files written in `dir`.
    pub fn remote_args(&self, who: &Cert, dir: &Path, name: &str) -> Vec<String> {
        let f = |ext: &str, text: String| -> PathBuf {
            let p = dir.join(format!("{name}.{ext}"));
            std::fs::write(&p, text).expect("a file");
            p
        };
        vec![
            "--remote".into(),
            format!("https://{}", self.addr),
            "--cert".into(),
            f("pem", pem("CERTIFICATE", &who.der)).display().to_string(),
            "--key".into(),
            f("key", pem("PRIVATE KEY", &who.key)).display().to_string(),
            "--ca".into(),
            f("box.pem", pem("CERTIFICATE", &self.server_cert))
                .display()
                .to_string(),
        ]
    }
}
