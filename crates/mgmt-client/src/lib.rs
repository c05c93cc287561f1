//! The operator's side of the management API: where the box is and which certificate to show
//! ([`Remote`], from flags, the environment or a config file), and a blocking mutual-TLS client
//! ([`Client`]) for `storagectl --remote` and `abupdate install --remote`. The box's own
//! certificate is trusted when it is one of the `--ca` file's certificates (the one whose
//! fingerprint the console printed), or when it chains to a CA in that file.

use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame};
use platform::IoContext;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Io(#[from] platform::IoError),
    #[error("{path}: {msg}")]
    Pem { path: PathBuf, msg: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("{url}: {msg}")]
    Connect { url: String, msg: String },
    /// The box answered with an error: its HTTP status, stable code and message.
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A failure on the box keeps the kind its HTTP status means and the box's own code; one on the
/// way there (flags, certificates, the connection) is ours.
impl platform::exit::Classify for Error {
    fn kind(&self) -> platform::exit::Kind {
        match self {
            // 503 is also "busy" or "spool unavailable": only the box's own code says the pool.
            Error::Api {
                status: 503, code, ..
            } if code != "pool_absent" => platform::exit::Kind::Failed,
            Error::Api { status, .. } => platform::exit::Kind::of_http(*status),
            Error::Config(_) | Error::Pem { .. } => platform::exit::Kind::BadInput,
            Error::Io(_) | Error::Tls(_) | Error::Connect { .. } => platform::exit::Kind::Failed,
        }
    }
    fn code(&self) -> &str {
        match self {
            Error::Api { code, .. } => code,
            _ => self.kind().code(),
        }
    }
}

/// The environment variables read when a flag is not given.
pub const ENV_URL: &str = "EVE_REMOTE";
pub const ENV_CERT: &str = "EVE_REMOTE_CERT";
pub const ENV_KEY: &str = "EVE_REMOTE_KEY";
pub const ENV_CA: &str = "EVE_REMOTE_CA";
/// A config file other than the default (`$XDG_CONFIG_HOME/eve-storage/remote.toml`).
pub const ENV_CONFIG: &str = "EVE_REMOTE_CONFIG";

/// A box to call and the files to call it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `https://HOST[:PORT]`.
    pub url: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The box's certificate (as pinned from the console's fingerprint) or its CA.
    pub ca: PathBuf,
}

/// The flags a CLI takes, each optional: `--remote`, `--cert`, `--key`, `--ca`, global to
/// every subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// Run on a box through its management API, `https://HOST[:PORT]` (or set EVE_REMOTE).
    #[arg(long = "remote", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Client certificate, PEM (or EVE_REMOTE_CERT, or `cert` in
    /// ~/.config/eve-storage/remote.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Its private key, PEM (or EVE_REMOTE_KEY, or `key` in the config file).
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The box's certificate (pinned from the fingerprint its console printed) or its CA (or
    /// EVE_REMOTE_CA, or `ca` in the config file).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl Flags {
    /// The box these flags and the environment name, if any.
    pub fn remote(&self) -> Result<Option<Remote>> {
        Remote::resolve(self, &|k| std::env::var(k).ok())
    }
}

/// `s` as one path segment: every byte but the unreserved ones percent-encoded, so a name can
/// never add a segment or a query.
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The config file: `url`, `cert`, `key`, `ca`, each optional (relative paths are beside it).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
}

impl Remote {
    /// Pure but for reading the config file: each field from its flag, else its environment
    /// variable, else the config file. `None` when no URL comes from a flag or the environment
    /// (the command then runs on this box); a URL with a field missing is an error naming where
    /// to give it.
    pub fn resolve(f: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Remote>> {
        let Some(url) = f.url.clone().or_else(|| env(ENV_URL)) else {
            return Ok(None);
        };
        let cfg_path = env(ENV_CONFIG).map(PathBuf::from).or_else(|| {
            env("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))
                .map(|d| d.join("eve-storage/remote.toml"))
        });
        let cfg = match &cfg_path {
            Some(p) if p.exists() || env(ENV_CONFIG).is_some() => {
                let text = std::fs::read_to_string(p).at("read", p)?;
                let mut c: FileConfig = toml::from_str(&text)
                    .map_err(|e| Error::Config(format!("{}: {e}", p.display())))?;
                let base = p.parent().unwrap_or(Path::new("."));
                for f in [&mut c.cert, &mut c.key, &mut c.ca].into_iter().flatten() {
                    if f.is_relative() {
                        *f = base.join(&*f);
                    }
                }
                c
            }
            _ => FileConfig::default(),
        };
        let _ = cfg.url;
        let pick = |flag: &Option<PathBuf>, var: &str, from_file: &Option<PathBuf>, what: &str| {
            flag.clone()
                .or_else(|| env(var).map(PathBuf::from))
                .or_else(|| from_file.clone())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--remote {url}: no {what}: pass --{} FILE, set {var}, or put `{} = \"FILE\"` in {}",
                        what_flag(what),
                        what_flag(what),
                        cfg_path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "the config file".into())
                    ))
                })
        };
        check_url(&url)?;
        Ok(Some(Remote {
            cert: pick(&f.cert, ENV_CERT, &cfg.cert, "client certificate")?,
            key: pick(&f.key, ENV_KEY, &cfg.key, "client key")?,
            ca: pick(&f.ca, ENV_CA, &cfg.ca, "server certificate or CA")?,
            url,
        }))
    }
}

fn what_flag(what: &str) -> &'static str {
    match what {
        "client certificate" => "cert",
        "client key" => "key",
        _ => "ca",
    }
}

/// `https://HOST[:PORT]` -> (host, port); IPv6 hosts in brackets.
pub fn check_url(url: &str) -> Result<(String, u16)> {
    let bad = |why: &str| {
        Error::Config(format!(
            "--remote {url}: {why}; expected https://HOST[:PORT]"
        ))
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("not an https:// URL"))?
        .trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') || rest.is_empty() {
        return Err(bad("a host and port only, no path or user"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    let port = match port {
        None => 8443,
        Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host, port))
}

/// ring, as the daemon uses.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    Ok(std::fs::read(path).at("read", path)?)
}

/// Trusts the box's certificate when it is one of the pinned ones, or chains to a CA among them.
#[derive(Debug)]
struct Pinned {
    certs: Vec<CertificateDer<'static>>,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        ee: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self.certs.iter().any(|c| c.as_ref() == ee.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        let not_pinned = |why: String| {
            let fp = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(ee));
            rustls::Error::General(format!(
                "the box's certificate (SHA-256 {}) is not the one in --ca, nor issued by a CA in it{why}",
                hex::encode_upper(fp)
            ))
        };
        match &self.webpki {
            Some(v) => v
                .verify_server_cert(ee, intermediates, name, ocsp, now)
                .map_err(|e| not_pinned(format!(" ({e})"))),
            None => Err(not_pinned(String::new())),
        }
    }
    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A streamed request body read from a file, telling `progress` how much was sent.
struct Upload {
    file: std::fs::File,
    left: u64,
    sent: u64,
    progress: Box<dyn FnMut(u64) + Send>,
}

impl hyper::body::Body for Upload {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, std::io::Error>>> {
        let me = self.get_mut();
        if me.left == 0 {
            return Poll::Ready(None);
        }
        let mut buf = vec![0u8; me.left.min(256 << 10) as usize];
        // A local file: reading it here blocks only this command's own runtime.
        if let Err(e) = std::io::Read::read_exact(&mut me.file, &mut buf) {
            return Poll::Ready(Some(Err(e)));
        }
        me.left -= buf.len() as u64;
        me.sent += buf.len() as u64;
        (me.progress)(me.sent);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// A connection's worth of settings; each call opens its own connection.
pub struct Client {
    rt: tokio::runtime::Runtime,
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    url: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.url)
    }
}

/// A reply: HTTP status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    /// The JSON of a 200; otherwise the box's error (its code and message).
    pub fn json(self) -> Result<Value> {
        let v: Option<Value> = serde_json::from_slice(&self.body).ok();
        if self.status == 200 {
            return v.ok_or_else(|| Error::Api {
                status: 200,
                code: "bad_reply".into(),
                message: "the box answered with something other than JSON".into(),
            });
        }
        Err(api_error(self.status, v.as_ref(), &self.body))
    }
    /// The bytes of a 200 (a file); otherwise the box's error.
    pub fn bytes(self) -> Result<Bytes> {
        if self.status == 200 {
            return Ok(self.body);
        }
        let v: Option<Value> = serde_json::from_slice(&self.body).ok();
        Err(api_error(self.status, v.as_ref(), &self.body))
    }
    pub fn text(self) -> Result<String> {
        if self.status == 200 {
            return Ok(String::from_utf8_lossy(&self.body).into_owned());
        }
        let v: Option<Value> = serde_json::from_slice(&self.body).ok();
        Err(api_error(self.status, v.as_ref(), &self.body))
    }
}

fn api_error(status: u16, v: Option<&Value>, raw: &[u8]) -> Error {
    let e = v.and_then(|v| v.get("error"));
    Error::Api {
        status,
        code: e
            .and_then(|e| e["code"].as_str())
            .unwrap_or("http_error")
            .into(),
        message: e
            .and_then(|e| e["message"].as_str())
            .map(String::from)
            .unwrap_or_else(|| String::from_utf8_lossy(&raw[..raw.len().min(300)]).into_owned()),
    }
}

impl Client {
    pub fn new(r: &Remote) -> Result<Client> {
        let (host, port) = check_url(&r.url)?;
        let pem = |p: &Path| -> Result<Vec<CertificateDer<'static>>> {
            let text = read(p)?;
            let certs = CertificateDer::pem_slice_iter(&text)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Pem {
                    path: p.into(),
                    msg: format!("not a PEM certificate list: {e}"),
                })?;
            if certs.is_empty() {
                return Err(Error::Pem {
                    path: p.into(),
                    msg: "holds no certificate".into(),
                });
            }
            Ok(certs)
        };
        let pinned = pem(&r.ca)?;
        let chain = pem(&r.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&read(&r.key)?).map_err(|e| Error::Pem {
            path: r.key.clone(),
            msg: format!("not a PEM private key: {e}"),
        })?;
        let provider = provider();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(pinned.iter().cloned());
        let webpki = if added > 0 {
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .ok()
        } else {
            None
        };
        let verifier = Arc::new(Pinned {
            certs: pinned,
            webpki,
            provider: provider.clone(),
        });
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::Tls(format!("{} / {}: {e}", r.cert.display(), r.key.display())))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .at("start", "tokio runtime")?;
        Ok(Client {
            rt,
            tls: Arc::new(tls),
            host,
            port,
            url: r.url.clone(),
        })
    }

    fn connect_err(&self, msg: impl std::fmt::Display) -> Error {
        Error::Connect {
            url: self.url.clone(),
            msg: msg.to_string(),
        }
    }

    /// One request on a connection of its own.
    fn exchange<B>(&self, req: hyper::Request<B>) -> Result<Reply>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| self.connect_err(format!("host name: {e}")))?;
        self.rt.block_on(async {
            // Reaching the box and the handshake: bounded, so a dead address does not hang a
            // script. The request itself runs as long as the box takes (a change runs to its end).
            let limit = std::time::Duration::from_secs(30);
            let slow = || self.connect_err(format!("no connection within {} s", limit.as_secs()));
            let tcp = tokio::time::timeout(
                limit,
                tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
            )
            .await
            .map_err(|_| slow())?
            .map_err(|e| self.connect_err(e))?;
            let tls = tokio::time::timeout(
                limit,
                tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| slow())?
            .map_err(|e| self.connect_err(format!("TLS: {e}")))?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| self.connect_err(e))?;
            let work = async {
                let resp = send.send_request(req).await.map_err(|e| {
                    // A refused client certificate shows as the connection closing here.
                    self.connect_err(format!(
                        "{e} (was the client certificate refused? the box's log says why)"
                    ))
                })?;
                let status = resp.status().as_u16();
                // No answer of the API is near this; a box that sends more is cut off.
                let body = http_body_util::Limited::new(resp.into_body(), 64 << 20)
                    .collect()
                    .await
                    .map_err(|e| self.connect_err(format!("reading the answer: {e}")))?
                    .to_bytes();
                Ok(Reply { status, body })
            };
            let mut work = std::pin::pin!(work);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                biased;
                r = &mut work => r,
                c = &mut conn => match c {
                    Err(e) => Err(self.connect_err(e)),
                    Ok(()) => work.await,
                },
            }
        })
    }

    fn request(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
    }

    /// `method path` with an optional JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply> {
        self.call_as(method, path, body, "application/json")
    }

    /// `method path`, asking for the text the CLI prints (`Accept: text/plain`).
    pub fn text(&self, method: &str, path: &str, body: Option<&Value>) -> Result<String> {
        self.call_as(method, path, body, "text/plain")?.text()
    }

    fn call_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        accept: &str,
    ) -> Result<Reply> {
        let b = body
            .map(|v| serde_json::to_vec(v).unwrap_or_default())
            .unwrap_or_default();
        let mut r = self
            .request(method, path)
            .header(hyper::header::ACCEPT, accept);
        if body.is_some() {
            r = r.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = r
            .body(http_body_util::Full::new(Bytes::from(b)))
            .map_err(|e| self.connect_err(e))?;
        self.exchange(req)
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.call("GET", path, None)?.json()
    }

    /// Streams `file` (`len` bytes) as the body of `POST path`, telling `progress` the bytes sent.
    pub fn upload(
        &self,
        path: &str,
        file: std::fs::File,
        len: u64,
        progress: Box<dyn FnMut(u64) + Send>,
    ) -> Result<Reply> {
        let req = self
            .request("POST", path)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .header(hyper::header::CONTENT_LENGTH, len)
            .body(Upload {
                file,
                left: len,
                sent: 0,
                progress,
            })
            .map_err(|e| self.connect_err(e))?;
        self.exchange(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn names_stay_one_segment() {
        assert_eq!(segment("web-1.v2"), "web-1.v2");
        assert_eq!(segment("../a/b?c=d#e f"), "..%2Fa%2Fb%3Fc%3Dd%23e%20f");
    }

    #[test]
    fn urls_are_https_host_and_port_only() {
        assert_eq!(check_url("https://box:9443").unwrap(), ("box".into(), 9443));
        assert_eq!(
            check_url("https://10.0.0.5").unwrap(),
            ("10.0.0.5".into(), 8443)
        );
        assert_eq!(
            check_url("https://[fe80::1]:8443/").unwrap(),
            ("fe80::1".into(), 8443)
        );
        for bad in [
            "http://box",
            "https://",
            "https://box/v1",
            "https://u@box",
            "https://box:x",
            "box:8443",
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("https://HOST[:PORT]"), "{e}");
        }
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file() {
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("remote.toml");
        std::fs::write(
            &cfg,
            "cert = \"c.pem\"\nkey = \"/abs/k.pem\"\nca = \"box.pem\"\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let vars = [
            (ENV_URL, "https://box"),
            (ENV_CONFIG, c),
            (ENV_CA, "/env/ca.pem"),
        ];
        let f = Flags {
            key: Some("/flag/k.pem".into()),
            ..Flags::default()
        };
        let r = Remote::resolve(&f, &env(&vars)).unwrap().unwrap();
        assert_eq!(r.url, "https://box");
        assert_eq!(r.cert, t.path().join("c.pem"));
        assert_eq!(r.key, PathBuf::from("/flag/k.pem"));
        assert_eq!(r.ca, PathBuf::from("/env/ca.pem"));
        // No URL from a flag or the environment: the command runs on this box.
        assert_eq!(
            Remote::resolve(&Flags::default(), &env(&[(ENV_CONFIG, c)])).unwrap(),
            None
        );
    }

    #[test]
    fn a_missing_field_or_a_bad_file_is_named() {
        let e = Remote::resolve(
            &Flags {
                url: Some("https://box".into()),
                cert: Some("c".into()),
                ..Flags::default()
            },
            &env(&[("HOME", "/nonexistent")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no client key") && e.contains("--key") && e.contains(ENV_KEY),
            "{e}"
        );
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("remote.toml");
        std::fs::write(&cfg, "cert = \"c\"\npassword = \"x\"\n").unwrap();
        let c = cfg.to_str().unwrap();
        let e = Remote::resolve(
            &Flags::default(),
            &env(&[(ENV_URL, "https://box"), (ENV_CONFIG, c)]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(c) && e.contains("password"), "{e}");
    }
}
