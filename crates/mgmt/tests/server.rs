//! The server end to end in one process: real TLS 1.3 with certificates made here (rcgen), the
//! route table, roles, limits and the audit journal, over the recording fake backend.

#![allow(clippy::unwrap_used)]

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use mgmt::backend::Fake;
use mgmt::limit::Limits;
use mgmt::tls::{Identity, Trust};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use std::time::Duration;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

#[derive(Clone)]
struct Cert {
    der: Vec<u8>,
    key: Vec<u8>,
}

fn issue(ca: &Ca, cn: &str, validity: Option<(i64, i64)>) -> Cert {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if let Some((from, to)) = validity {
        let now = time_now();
        p.not_before = now + time::Duration::days(from);
        p.not_after = now + time::Duration::days(to);
    }
    let c = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Cert {
        der: c.der().to_vec(),
        key: key.serialize_der(),
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

struct Box_ {
    addr: std::net::SocketAddr,
    server_cert: Vec<u8>,
    fake: Arc<Fake>,
    audit: storaged::audit::Journal,
    _dir: tempfile::TempDir,
}

/// A server over a fake, not yet serving, with its certificate and audit journal.
fn server(
    admin: &Ca,
    reader: &Ca,
    limits: Limits,
) -> (
    Arc<mgmt::server::Server>,
    Vec<u8>,
    Arc<Fake>,
    storaged::audit::Journal,
    tempfile::TempDir,
) {
    let trust = Trust::new(
        &[CertificateDer::from(admin.cert.der().to_vec())],
        &[CertificateDer::from(reader.cert.der().to_vec())],
    )
    .unwrap();
    let id = Identity::generate("box.test").unwrap();
    let tls = trust.server_config(&id).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = storaged::audit::Journal::at(dir.path().join("audit.jsonl"));
    let fake = Arc::new(Fake::default());
    let server = mgmt::server::Server::new(trust, tls, fake.clone(), audit.clone(), limits);
    (server, id.cert_der.clone(), fake, audit, dir)
}

async fn start(admin: &Ca, reader: &Ca, limits: Limits) -> Box_ {
    let (server, server_cert, fake, audit, dir) = server(admin, reader, limits);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(server.serve(l));
    Box_ {
        addr,
        server_cert,
        fake,
        audit,
        _dir: dir,
    }
}

#[allow(deprecated)]
fn client_config(b: &Box_, me: Option<&Cert>, tls12: bool) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(b.server_cert.clone()))
        .unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    match me {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(c.der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// One request on a new connection: the status and JSON body, or why it failed.
async fn call_with(
    b: &Box_,
    cfg: rustls::ClientConfig,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(b.addr)
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("box.test").unwrap();
    let tls = conn
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(c);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "box.test")
        .body(Full::new(Bytes::from(body.to_vec())))
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

async fn call(
    b: &Box_,
    me: Option<&Cert>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String), String> {
    call_with(b, client_config(b, me, false), method, path, body).await
}

fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn roles_refusals_and_the_audit_journal() {
    let (admin_ca, reader_ca, other_ca) = (ca("admins"), ca("readers"), ca("elsewhere"));
    let b = start(&admin_ca, &reader_ca, Limits::default()).await;
    let admin = issue(&admin_ca, "ops-admin", None);
    let reader = issue(&reader_ca, "ops-reader", None);

    let (s, body) = call(&b, Some(&admin), "GET", "/v1/whoami", b"")
        .await
        .unwrap();
    assert_eq!(s, 200);
    let who: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(who["role"], "admin");
    assert_eq!(who["subject"], "CN=ops-admin");
    let (s, body) = call(&b, Some(&reader), "GET", "/v1/whoami", b"")
        .await
        .unwrap();
    assert_eq!(
        (
            s,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["role"].clone()
        ),
        (200, "reader".into())
    );

    // A reader reads, and may not change.
    assert_eq!(
        call(&b, Some(&reader), "GET", "/v1/status", b"")
            .await
            .unwrap()
            .0,
        200
    );
    let (s, body) = call(&b, Some(&reader), "POST", "/v1/volumes", br#"{"name":"x"}"#)
        .await
        .unwrap();
    assert_eq!((s, code(&body).as_str()), (403, "forbidden"));
    let (s, body) = call(&b, Some(&reader), "DELETE", "/v1/volumes/web", b"")
        .await
        .unwrap();
    assert_eq!((s, code(&body).as_str()), (403, "forbidden"));
    let (s, _) = call(&b, Some(&reader), "GET", "/v1/audit", b"")
        .await
        .unwrap();
    assert_eq!(s, 403);
    assert!(b
        .fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .all(|(op, ..)| *op == mgmt::api::Op::Status));

    // No certificate, another CA's, an expired one, one not yet valid: the handshake fails and
    // nothing runs.
    let foreign = issue(&other_ca, "ops-admin", None);
    let expired = issue(&admin_ca, "old", Some((-30, -1)));
    let future = issue(&admin_ca, "early", Some((1, 30)));
    for (what, c) in [
        ("none", None),
        ("foreign", Some(&foreign)),
        ("expired", Some(&expired)),
        ("future", Some(&future)),
    ] {
        let r = call(&b, c, "DELETE", "/v1/volumes/web", b"").await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    // TLS 1.2 is refused even with a good certificate.
    assert!(call_with(
        &b,
        client_config(&b, Some(&admin), true),
        "GET",
        "/v1/whoami",
        b""
    )
    .await
    .is_err());
    let calls = b.fake.calls.lock().unwrap().len();
    assert_eq!(calls, 1, "only the reader's status ran");

    // An admin changes, and every change (and every refused attempt) is on record.
    let (s, _) = call(
        &b,
        Some(&admin),
        "POST",
        "/v1/volumes/web/snapshots",
        br#"{"name":"before"}"#,
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    let (s, body) = call(&b, Some(&admin), "GET", "/v1/audit", b"")
        .await
        .unwrap();
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let e = v["entries"].as_array().unwrap();
    // Two refusals, then the change: its `started` line (with what was asked) before it ran,
    // and its outcome, paired by id.
    assert_eq!(e.len(), 4, "{body}");
    assert_eq!(
        (
            e[0]["status"].as_u64(),
            e[0]["subject"].as_str(),
            e[0]["code"].as_str()
        ),
        (Some(403), Some("CN=ops-reader"), Some("forbidden"))
    );
    assert_eq!(
        (
            e[2]["status"].as_u64(),
            e[2]["code"].as_str(),
            e[2]["path"].as_str()
        ),
        (Some(0), Some("started"), Some("/v1/volumes/web/snapshots"))
    );
    assert!(
        e[2]["detail"].as_str().unwrap().contains("before"),
        "{body}"
    );
    assert_eq!(
        (
            e[3]["status"].as_u64(),
            e[3]["role"].as_str(),
            e[3]["id"].as_u64()
        ),
        (Some(200), Some("admin"), e[2]["id"].as_u64())
    );
    assert_eq!(
        e[3]["fingerprint"].as_str().unwrap(),
        mgmt::tls::fingerprint(&admin.der)
    );
    assert_eq!(b.audit.tail(10).unwrap().len(), 4);
}

#[tokio::test]
async fn hostile_requests_get_their_status_and_change_nothing() {
    let (admin_ca, reader_ca) = (ca("admins"), ca("readers"));
    let b = start(
        &admin_ca,
        &reader_ca,
        Limits {
            max_body: 1024,
            ..Limits::default()
        },
    )
    .await;
    let admin = issue(&admin_ca, "ops", None);
    let a = Some(&admin);
    let cases: &[(&str, &str, &[u8], u16, &str)] = &[
        ("GET", "/v1/nothing", b"", 404, "no_such_endpoint"),
        ("GET", "/v1/volumes/../status", b"", 404, "no_such_endpoint"),
        ("PUT", "/v1/status", b"", 405, "method_not_allowed"),
        (
            "DELETE",
            "/v1/volumes/web?recursive=true",
            b"",
            400,
            "unknown_parameter",
        ),
        (
            "DELETE",
            "/v1/volumes/web?force=maybe",
            b"",
            400,
            "invalid_parameter",
        ),
        (
            "POST",
            "/v1/volumes/web/snapshots",
            b"{not json",
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/volumes/web/snapshots",
            br#"{"name":"a","extra":1}"#,
            400,
            "invalid_json",
        ),
        ("GET", "/v1/volumes/missing", b"", 404, "not_found"),
    ];
    for (m, p, body, want, c) in cases {
        let (s, text) = call(&b, a, m, p, body).await.unwrap();
        assert_eq!((s, code(&text).as_str()), (*want, *c), "{m} {p}");
    }
    let huge = vec![b'x'; 4096];
    let (s, text) = call(&b, a, "POST", "/v1/volumes", &huge).await.unwrap();
    assert_eq!((s, code(&text).as_str()), (413, "body_too_large"));
    // Nothing reached the backend but the lookup of `missing`: bad bodies are refused first.
    let ops: Vec<_> = b.fake.calls.lock().unwrap().iter().map(|c| c.0).collect();
    assert_eq!(ops, vec![mgmt::api::Op::VolumeShow]);
    // A reader cannot recover the vault or make a recovery key; an admin's body is checked.
    let reader = issue(&reader_ca, "r", None);
    let (s, _) = call(
        &b,
        Some(&reader),
        "POST",
        "/v1/vault/recover",
        br#"{"recovery_key":"x"}"#,
    )
    .await
    .unwrap();
    assert_eq!(s, 403);
    let (s, _) = call(&b, Some(&reader), "POST", "/v1/vault/recovery-key", b"")
        .await
        .unwrap();
    assert_eq!(s, 403);
    let (s, t) = call(
        &b,
        a,
        "POST",
        "/v1/vault/recover",
        br#"{"recovery_key":"x","extra":true}"#,
    )
    .await
    .unwrap();
    assert_eq!((s, code(&t).as_str()), (400, "invalid_json"));
    let (s, t) = call(&b, a, "POST", "/v1/disks/replace", br#"{"old":"nvme0n1"}"#)
        .await
        .unwrap();
    assert_eq!((s, code(&t).as_str()), (400, "invalid_json"), "{t}");
    let (s, _) = call(
        &b,
        a,
        "POST",
        "/v1/vault/recover",
        br#"{"recovery_key":"secret-words"}"#,
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    let calls = b.fake.calls.lock().unwrap();
    let last = calls.last().unwrap();
    assert_eq!(last.0, mgmt::api::Op::VaultRecover);
    assert!(
        !last.2.contains("secret-words"),
        "a recovery key in a debug view: {}",
        last.2
    );
}

#[tokio::test]
async fn a_client_over_its_rate_slows_down_and_others_go_on() {
    let (admin_ca, reader_ca) = (ca("admins"), ca("readers"));
    let b = start(
        &admin_ca,
        &reader_ca,
        Limits {
            per_second: 1.0,
            burst: 5.0,
            ..Limits::default()
        },
    )
    .await;
    let (one, two) = (
        issue(&reader_ca, "one", None),
        issue(&reader_ca, "two", None),
    );
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            call(&b, Some(&one), "GET", "/v1/whoami", b"")
                .await
                .unwrap()
                .0,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        call(&b, Some(&two), "GET", "/v1/whoami", b"")
            .await
            .unwrap()
            .0,
        200
    );
}

#[tokio::test]
async fn slow_and_piled_up_clients_do_not_take_the_server_down() {
    use tokio::io::AsyncWriteExt;
    let (admin_ca, reader_ca) = (ca("admins"), ca("readers"));
    let b = start(
        &admin_ca,
        &reader_ca,
        Limits {
            request_secs: 1,
            connections: 8,
            per_address: 8,
            per_second: 1000.0,
            burst: 1000.0,
            ..Limits::default()
        },
    )
    .await;
    let reader = issue(&reader_ca, "r", None);
    // Slow clients: TCP only, a handshake never begun, and a request never finished.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(b.addr).await.unwrap());
    }
    let tcp = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(client_config(&b, Some(&reader), false)));
    let started = std::time::Instant::now();
    // Until the idle ones time out, the slots are full: wait for a good request to get through.
    let mut ok = false;
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok((200, _)) = call(&b, Some(&reader), "GET", "/v1/whoami", b"").await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ok,
        "the server answers again once idle connections time out"
    );
    if let Ok(mut tls) = conn
        .connect(
            rustls::pki_types::ServerName::try_from("box.test").unwrap(),
            tcp,
        )
        .await
    {
        let _ = tls
            .write_all(b"GET /v1/whoami HTTP/1.1\r\nhost: x\r\n")
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut buf = [0u8; 256];
        use tokio::io::AsyncReadExt;
        // The server gave up on the unfinished request: the connection is closed (or answered 408).
        let n = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert!(
            n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // A pile of parallel requests: each is answered or turned away, and the server stays up.
    let mut tasks = Vec::new();
    let b = Arc::new(b);
    for _ in 0..200 {
        let (b, r) = (b.clone(), reader.clone());
        tasks.push(tokio::spawn(async move {
            call(&b, Some(&r), "GET", "/v1/status", b"")
                .await
                .map(|x| x.0)
        }));
    }
    let mut answered = 0;
    for t in tasks {
        if let Ok(Ok(200)) = t.await {
            answered += 1;
        }
    }
    assert!(answered > 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        call(&b, Some(&reader), "GET", "/v1/whoami", b"")
            .await
            .unwrap()
            .0,
        200
    );
    let (s, m) = call(&b, Some(&reader), "GET", "/metrics", b"")
        .await
        .unwrap();
    assert_eq!(s, 200);
    let rss: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("eve_mgmt_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1 << 20, "{m}");
    assert!(m.contains("eve_mgmt_connections_refused_total"), "{m}");
    drop(held);
}

#[test]
fn one_ca_as_both_roles_is_refused() {
    let a = ca("both");
    let der = [CertificateDer::from(a.cert.der().to_vec())];
    let e = Trust::new(&der, &der).unwrap_err().to_string();
    assert!(
        e.contains("CN=both") && e.contains("both the admin and the reader"),
        "{e}"
    );
}

#[test]
fn identity_is_kept_and_reused_and_never_replaced_when_unreadable() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("mgmt");
    let a = Identity::load_or_create(&dir, "box").unwrap();
    let b = Identity::load_or_create(&dir, "box").unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.join("server.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    std::fs::write(dir.join("server.pem"), "garbage").unwrap();
    let e = Identity::load_or_create(&dir, "box")
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.pem"), "{e}");
    assert_eq!(
        std::fs::read_to_string(dir.join("server.pem")).unwrap(),
        "garbage"
    );
    assert!(!format!("{a:?}").contains("PRIVATE"));
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// `mgmt_client`'s files for `who` calling `b`: the box's certificate pinned as `--ca`.
fn remote(b: &Box_, who: &Cert, dir: &std::path::Path, name: &str) -> mgmt_client::Remote {
    let f = |ext: &str, text: String| {
        let p = dir.join(format!("{name}.{ext}"));
        std::fs::write(&p, text).unwrap();
        p
    };
    mgmt_client::Remote {
        url: format!("https://{}", b.addr),
        cert: f("pem", pem("CERTIFICATE", &who.der)),
        key: f("key", pem("PRIVATE KEY", &who.key)),
        ca: f("box.pem", pem("CERTIFICATE", &b.server_cert)),
    }
}

/// A body that sends a few bytes and then nothing, ever.
struct Stalls(bool);

impl hyper::body::Body for Stalls {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if self.0 {
            return std::task::Poll::Pending;
        }
        self.0 = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"EVE-UPDATE 2\n",
        )))))
    }
}

/// The update upload end to end with the operators' client library (what `abupdate install
/// --remote` runs): the stream reaches the operation whole, a reader may not send one, a stream
/// the operation refuses gets its answer (not a reset) while the client is still sending, and
/// one that stalls is cut off. Each is in the audit journal.
#[test]
fn updates_stream_to_the_operation_and_refusals_reach_the_client() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (admin_ca, reader_ca) = (ca("admins"), ca("readers"));
    let limits = Limits {
        stream_idle_secs: 1,
        ..Limits::default()
    };
    let b = rt.block_on(start(&admin_ca, &reader_ca, limits));
    let admin = issue(&admin_ca, "ops-admin", None);
    let reader = issue(&reader_ca, "ops-reader", None);
    let dir = tempfile::tempdir().unwrap();

    let mut upd = b"EVE-UPDATE 2\n".to_vec();
    upd.extend((0..3_000_000u32).map(|i| (i % 253) as u8));
    let file = dir.path().join("u.update");
    std::fs::write(&file, &upd).unwrap();
    let c = mgmt_client::Client::new(&remote(&b, &admin, dir.path(), "admin")).unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = sent.clone();
    let v = c
        .upload(
            "/v1/update",
            std::fs::File::open(&file).unwrap(),
            upd.len() as u64,
            Box::new(move |n| s2.store(n, std::sync::atomic::Ordering::Relaxed)),
        )
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["bytes"], upd.len());
    assert_eq!(v["sha256"], abupdate::artifact::sha256_hex(&upd));
    assert_eq!(
        sent.load(std::sync::atomic::Ordering::Relaxed),
        upd.len() as u64
    );

    // A reader may not install.
    let r = mgmt_client::Client::new(&remote(&b, &reader, dir.path(), "reader")).unwrap();
    let e = r
        .upload(
            "/v1/update",
            std::fs::File::open(&file).unwrap(),
            upd.len() as u64,
            Box::new(|_| {}),
        )
        .unwrap()
        .json()
        .unwrap_err();
    assert!(
        matches!(&e, mgmt_client::Error::Api { status: 403, .. }),
        "{e}"
    );

    // Not an update: refused on its first bytes; the answer arrives though 8 MB are on their way.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![7u8; 8 << 20]).unwrap();
    let e = c
        .upload(
            "/v1/update",
            std::fs::File::open(&junk).unwrap(),
            8 << 20,
            Box::new(|_| {}),
        )
        .unwrap()
        .json()
        .unwrap_err();
    match &e {
        mgmt_client::Error::Api { status, code, .. } => {
            assert_eq!((*status, code.as_str()), (400, "update_refused"))
        }
        e => panic!("{e}"),
    }

    // A stream that stops: cut off after the idle limit, and said.
    let (s, body) = rt.block_on(async {
        let cfg = client_config(&b, Some(&admin), false);
        let tcp = tokio::net::TcpStream::connect(b.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("box.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method("POST")
            .uri("/v1/update")
            .header("host", "box.test")
            .header("content-length", "100000000")
            .body(Stalls(false))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
            .await
            .expect("an answer within the idle limit")
            .unwrap();
        let s = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (s, String::from_utf8_lossy(&body).into_owned())
    });
    assert_eq!(
        (s, code(&body).as_str()),
        (408, "request_timeout"),
        "{body}"
    );
    assert!(body.contains("nothing arrived for 1 s"), "{body}");

    let lines: Vec<(u16, String)> = b
        .audit
        .tail(100)
        .unwrap()
        .into_iter()
        .filter(|e| e.path == "/v1/update")
        .map(|e| (e.status, e.code.unwrap_or_default()))
        .collect();
    for want in [
        (200, ""),
        (403, "forbidden"),
        (400, "update_refused"),
        (408, "request_timeout"),
    ] {
        assert!(
            lines.iter().any(|(s, c)| *s == want.0 && c == want.1),
            "{want:?} not in {lines:?}"
        );
    }
    drop(rt);
}

/// The plain-HTTP metrics listener answers `GET /metrics` and nothing else, with no certificate.
#[tokio::test]
async fn the_metrics_listener_serves_metrics_only() {
    let (admin_ca, reader_ca) = (ca("admins"), ca("readers"));
    let (server, _, _, _, _dir) = server(&admin_ca, &reader_ca, Limits::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(server.serve_metrics(l));
    let get = |path: &'static str| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", "box")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let s = resp.status().as_u16();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        (s, String::from_utf8_lossy(&b).into_owned())
    };
    let (s, body) = get("/metrics").await;
    assert_eq!(s, 200);
    assert!(
        body.contains("eve_pool_healthy 1") && body.contains("eve_mgmt_requests_total"),
        "{body}"
    );
    for p in ["/v1/status", "/v1/volumes", "/metrics/../v1/audit"] {
        let (s, body) = get(p).await;
        assert_eq!(s, 404, "{p}: {body}");
    }
}

/// Reading every volume's identities, or one VM's secrets, is on the audit journal like a change,
/// and an admin's alone.
#[tokio::test]
async fn reading_the_export_or_a_connection_is_audited_and_admin_only() {
    let (admin_ca, reader_ca) = (ca("admins"), ca("readers"));
    let b = start(&admin_ca, &reader_ca, Limits::default()).await;
    let admin = issue(&admin_ca, "ops-admin", None);
    let reader = issue(&reader_ca, "ops-reader", None);
    for path in ["/v1/export", "/v1/volumes/web/connect"] {
        let (s, _) = call(&b, Some(&admin), "GET", path, b"").await.unwrap();
        assert_eq!(s, 200, "{path}");
        let (s, body) = call(&b, Some(&reader), "GET", path, b"").await.unwrap();
        assert_eq!(s, 403, "{path}");
        assert!(!body.contains("DHHC-1"), "{body}");
        let seen: Vec<(u16, String)> = b
            .audit
            .tail(10)
            .unwrap()
            .into_iter()
            .filter(|e| e.path == path)
            .map(|e| (e.status, e.subject))
            .collect();
        for want in [(200, "CN=ops-admin"), (403, "CN=ops-reader")] {
            assert!(
                seen.iter().any(|(s, who)| *s == want.0 && who == want.1),
                "{path}: {want:?} not in {seen:?}"
            );
        }
    }
}
