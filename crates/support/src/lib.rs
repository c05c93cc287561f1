//! Support bundles: one gzip'd tar with what a support engineer asks for first (the box's
//! status, health, drives and maintenance; `zpool status`, history and events; the volumes and
//! their nvmet export; the kernel's and the services' logs; versions), written by
//! `storagectl bundle` on the box or through `GET /v1/bundle`.
//!
//! Secrets stay out twice over: by construction (no key file, secrets directory or nvmet key
//! attribute is ever read), and by a redaction pass over every text that goes in (DH-HMAC-CHAP
//! secrets, PEM private keys, anything shaped like a recovery key, `dhchap_*=` values). A source
//! that fails is named in the bundle with its error; it never stops the rest.

use platform::Roots;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The bundle's layout; raised when an item changes name or meaning.
pub const FORMAT_VERSION: u32 = 1;

/// Of each log file, only its end goes in (the rotated logs are bounded already).
const LOG_TAIL: usize = 1 << 20;
/// Of a tool's output, at most this much.
const TOOL_MAX: usize = 4 << 20;
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] platform::IoError),
    #[error("writing the bundle: {0}")]
    Write(#[source] std::io::Error),
    #[error("{0}")]
    Busy(String),
}

impl platform::exit::Classify for Error {
    fn kind(&self) -> platform::exit::Kind {
        match self {
            Error::Busy(_) => platform::exit::Kind::Refused,
            _ => platform::exit::Kind::Failed,
        }
    }
}

/// One file of the bundle.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its path inside the bundle (`zpool/status.txt`).
    pub name: String,
    pub body: Vec<u8>,
    /// Where it came from (a command line, a file, a library call).
    pub from: String,
    /// Why it is empty or partial.
    pub error: Option<String>,
}

impl Item {
    fn ok(name: &str, from: impl Into<String>, body: Vec<u8>) -> Item {
        Item {
            name: name.into(),
            body,
            from: from.into(),
            error: None,
        }
    }
    fn failed(name: &str, from: impl Into<String>, error: String) -> Item {
        Item {
            name: name.into(),
            body: Vec::new(),
            from: from.into(),
            error: Some(error),
        }
    }
    fn json<T: Serialize, E: std::error::Error>(name: &str, from: &str, r: Result<T, E>) -> Item {
        match r {
            Ok(v) => Item::ok(
                name,
                from,
                serde_json::to_vec_pretty(&v).unwrap_or_default(),
            ),
            Err(e) => Item::failed(name, from, platform::chain(&e)),
        }
    }
}

/// What the bundle says about itself (`MANIFEST.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub version: u32,
    pub created: String,
    pub pool: String,
    pub items: Vec<ManifestItem>,
    /// Secrets the redaction pass took out, in all.
    pub redacted: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestItem {
    pub name: String,
    pub from: String,
    pub bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub redacted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Pure: `text` with every secret it holds replaced by `<redacted ...>`, and how many there were.
pub fn redact(text: &str) -> (String, usize) {
    // Built once per call: a bundle redacts a few dozen texts.
    let rules: [(&str, &str); 9] = [
        // PEM private keys (PKCS#8, RSA, EC, encrypted), whole blocks.
        (
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?-----END ([A-Z0-9 ]*)PRIVATE KEY-----",
            "<redacted private key>",
        ),
        // A block cut by a log's tail or a size cap: the base64 body before an end without its
        // start, or after a start without its end (a line break may be written `\n` in JSON).
        (
            r"(?:[A-Za-z0-9+/=]|\\n|\s)*-----END ([A-Z0-9 ]*)PRIVATE KEY-----",
            "<redacted private key>",
        ),
        (
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----(?:[A-Za-z0-9+/=]|\\n|\s)*",
            "<redacted private key>",
        ),
        // NVMe DH-HMAC-CHAP secrets: `DHHC-1:<hash>:<base64>:`.
        (
            r"DHHC-1:[0-9a-fA-F]{2}:[A-Za-z0-9+/=]+:?",
            "DHHC-1:<redacted>:",
        ),
        // `dhchap_secret=...`, `"dhchap_key": "..."` and the like.
        (
            r"(?i)(dhchap_[a-z_]*(secret|key)[\x22']?\s*[=:]\s*[\x22']?)[^\s,\x22'<(=:][^\s,\x22']*",
            "${1}<redacted>",
        ),
        // nvme-cli's options: `--dhchap-secret=...` or `--dhchap-ctrl-secret ...`.
        (
            r"(?i)(--dhchap-[a-z-]*(secret|key)(=|\s+))[^\s,\x22'<(=:-][^\s,\x22']*",
            "${1}<redacted>",
        ),
        // The kernel's words for a secret it could not parse, and key bytes it printed as
        // space-separated hex (nvmet's debug output before 6.12's stable fix).
        (r"(?i)(DH-?CHAP (secret|key) )\S+", "${1}<redacted>"),
        (
            r"(?i)(\b(key|secret)\b:?\s+)([0-9a-f]{2}[ :]){15,}[0-9a-f]{2}",
            "${1}<redacted bytes>",
        ),
        // A vault recovery key: its 64 modhex letters, with dashes, spaces or line breaks
        // anywhere between them, as `vault recover` accepts it.
        (
            r"(?i)[cbdefghijklnrtuv](?:[-_\s]{0,3}[cbdefghijklnrtuv]){63}",
            "<redacted recovery key>",
        ),
    ];
    let mut out = text.to_string();
    let mut n = 0;
    for (pat, with) in rules {
        let Ok(re) = regex_lite::Regex::new(pat) else {
            continue;
        };
        n += re.find_iter(&out).count();
        out = re.replace_all(&out, with).into_owned();
    }
    (out, n)
}

/// Where the bundle reads from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub roots: Roots,
    pub pool: String,
    /// The directory the pool is mounted under (`/`: the pool at `/persist`).
    pub root: PathBuf,
}

impl Sources {
    pub fn host(pool: &str) -> Sources {
        Sources {
            roots: Roots::host(),
            pool: pool.into(),
            root: PathBuf::from("/"),
        }
    }
}

/// How long the whole collection may take: under the API's 60 s answer limit, above each
/// tool's own [`TOOL_TIMEOUT`]. Every source runs at once, so one that hangs (a zpool on a
/// wedged pool) costs this much, not a deadline per source.
const DEADLINE: Duration = Duration::from_secs(45);

/// Source threads still running, across bundles: one that hangs in the kernel never ends, so
/// a new bundle is refused once too many have piled up.
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const MAX_LIVE: usize = 64;

type Job = Box<dyn FnOnce() -> Item + Send>;

/// One source: its name in the bundle, where it comes from, and the work.
struct Source {
    name: String,
    from: String,
    job: Job,
}

fn source(name: &str, from: &str, job: impl FnOnce() -> Item + Send + 'static) -> Source {
    Source {
        name: name.into(),
        from: from.into(),
        job: Box::new(job),
    }
}

/// A library call that answers JSON (it may run zpool or zfs inside).
fn lib<T, E>(
    name: &'static str,
    from: &'static str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Source
where
    T: Serialize,
    E: std::error::Error,
{
    source(name, from, move || Item::json(name, from, f()))
}

struct Live;
impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs every source at once and takes what came within `deadline`, in the sources' order; a
/// source that panicked or did not answer in time is an item saying so.
fn run_all(sources: Vec<Source>, deadline: Duration) -> Vec<Item> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut labels = Vec::new();
    for (i, s) in sources.into_iter().enumerate() {
        labels.push((s.name.clone(), s.from.clone()));
        let tx = tx.clone();
        LIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::spawn(move || {
            let _live = Live;
            let Source { name, from, job } = s;
            let item = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                .unwrap_or_else(|_| Item::failed(&name, from, "the source panicked".into()));
            let _ = tx.send((i, item));
        });
    }
    drop(tx);
    let mut got: Vec<Option<Item>> = labels.iter().map(|_| None).collect();
    let end = std::time::Instant::now() + deadline;
    while got.iter().any(Option::is_none) {
        match rx.recv_timeout(end.saturating_duration_since(std::time::Instant::now())) {
            Ok((i, item)) => got[i] = Some(item),
            Err(_) => break,
        }
    }
    got.into_iter()
        .zip(labels)
        .map(|(g, (name, from))| {
            g.unwrap_or_else(|| {
                Item::failed(
                    &name,
                    from,
                    format!(
                        "no answer within {} s (a zpool or zfs command hangs?)",
                        deadline.as_secs()
                    ),
                )
            })
        })
        .collect()
}

fn tool(name: &str, prog: &str, args: &[&str]) -> Item {
    let from = std::iter::once(prog)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    // The newest output is what support needs (a long `zpool history`): its tail is kept, read
    // as it comes, so memory stays bounded.
    let run = platform::cmd::Cmd::new(prog)
        .args(args)
        .timeout(TOOL_TIMEOUT)
        .stdout_tail(TOOL_MAX)
        .finish();
    match run {
        Ok(f) => {
            let body = f.stdout.into_bytes();
            let error = (f.code != Some(0)).then(|| {
                format!(
                    "{} ({})",
                    f.status,
                    f.stderr.lines().last().unwrap_or("").trim()
                )
            });
            Item {
                name: name.into(),
                body,
                from,
                error,
            }
        }
        Err(e) => Item::failed(name, from, e.to_string()),
    }
}

/// The last [`LOG_TAIL`] bytes of `path`, from a line's start.
/// A regular file only, opened without following a symlink and without blocking (the pool's
/// clear part can be edited by someone holding the disk: a FIFO or a link to /proc/kmsg there
/// must not hang or widen the bundle).
fn tail(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file: left out".into());
    }
    let len = meta.len();
    let from = len.saturating_sub(LOG_TAIL as u64);
    f.seek(SeekFrom::Start(from)).map_err(|e| e.to_string())?;
    let mut b = Vec::new();
    f.take(LOG_TAIL as u64)
        .read_to_end(&mut b)
        .map_err(|e| e.to_string())?;
    if from > 0 {
        let cut = b.iter().position(|&c| c == b'\n').map_or(0, |i| i + 1);
        let mut head = format!("[first {} bytes left out]\n", from + cut as u64).into_bytes();
        head.extend_from_slice(&b[cut..]);
        b = head;
    }
    Ok(b)
}

/// Every regular file directly in `dir` (logs, textfiles), sorted. `dir` itself must be a
/// directory, not a symlink to one (on the pool's clear part it could point into the vault);
/// the files' own links are not followed either.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Vec::new();
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// nvmet's configfs tree as `path = value` lines, leaving out every attribute that holds a key.
fn nvmet_tree(root: &Path) -> Result<Vec<u8>, String> {
    fn walk(dir: &Path, base: &Path, out: &mut String, depth: usize) {
        if depth > 8 || out.len() > TOOL_MAX {
            return;
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
            let name = e.file_name().to_string_lossy().to_lowercase();
            let Ok(t) = e.file_type() else { continue };
            if t.is_symlink() {
                let to = std::fs::read_link(&p)
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                out.push_str(&format!("{rel} -> {to}\n"));
            } else if t.is_dir() {
                walk(&p, base, out, depth + 1);
            } else if name.contains("key") || name.contains("secret") {
                out.push_str(&format!("{rel} (left out: it holds a key)\n"));
            } else if let Ok(v) = std::fs::read(&p) {
                let v = String::from_utf8_lossy(&v[..v.len().min(512)])
                    .trim()
                    .replace('\n', "\\n");
                out.push_str(&format!("{rel} = {v}\n"));
            }
        }
    }
    if !root.is_dir() {
        return Err(format!("{}: not there (nvmet not loaded?)", root.display()));
    }
    let mut out = String::new();
    walk(root, root, &mut out, 0);
    Ok(out.into_bytes())
}

/// Reads every source (each bounded in time and size); a failure is recorded in its item.
pub fn collect(src: &Sources) -> Vec<Item> {
    run_all(sources(src), DEADLINE)
}

fn sources(src: &Sources) -> Vec<Source> {
    use storage::zfs::{ZFS, ZPOOL};
    let pool = src.pool.clone();
    let mut v = Vec::new();
    let file = |name: &'static str, p: PathBuf| {
        let from = p.display().to_string();
        source(name, &from.clone(), move || match std::fs::read(&p) {
            Ok(b) => Item::ok(name, from, b),
            Err(e) => Item::failed(name, from, e.to_string()),
        })
    };
    let tool_src = |name: &'static str, prog: &'static str, args: Vec<String>| {
        let from = std::iter::once(prog.to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        source(name, &from, move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            tool(name, prog, &a)
        })
    };
    let strs = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // Versions: the OS (its release facts), the kernel, ZFS, the A/B slots.
    v.push(file(
        "version/release.json",
        src.roots.etc.join("eve/release.json"),
    ));
    v.push(file("version/kernel.txt", src.roots.proc.join("version")));
    v.push(file("version/cmdline.txt", src.roots.proc.join("cmdline")));
    v.push(file("version/uptime.txt", src.roots.proc.join("uptime")));
    v.push(tool_src("version/zfs.txt", ZFS, strs(&["version"])));
    v.push(tool_src(
        "version/slots.json",
        ABUPDATE,
        strs(&["status", "--json"]),
    ));
    // The box as storagectl shows it.
    let p = pool.clone();
    v.push(lib(
        "storage/status.json",
        "storaged::status::full",
        move || storaged::status::full(&p),
    ));
    let (p, r) = (pool.clone(), src.root.clone());
    v.push(lib(
        "storage/health.json",
        "storaged::health_view",
        move || Ok::<_, std::io::Error>(storaged::health_view(&p, &r)),
    ));
    let p = pool.clone();
    v.push(lib(
        "storage/disks.json",
        "storaged::disks::list",
        move || storaged::disks::list(&p),
    ));
    let (p, r) = (pool.clone(), src.root.clone());
    v.push(lib(
        "storage/maintenance.json",
        "storaged::view",
        move || storaged::view(&p, &r),
    ));
    let audit = storaged::audit::Journal::at(storaged::audit::path(&src.root, &pool));
    v.push(lib(
        "storage/audit.json",
        "storaged::audit (last 500)",
        move || audit.tail(500),
    ));
    // ZFS's own words.
    v.push(tool_src(
        "zpool/status.txt",
        ZPOOL,
        strs(&["status", "-v", &pool]),
    ));
    v.push(tool_src(
        "zpool/history.txt",
        ZPOOL,
        strs(&["history", "-il", &pool]),
    ));
    v.push(tool_src("zpool/events.txt", ZPOOL, strs(&["events", "-v"])));
    v.push(tool_src(
        "zpool/get.txt",
        ZPOOL,
        strs(&["get", "all", &pool]),
    ));
    v.push(tool_src(
        "zpool/datasets.txt",
        ZFS,
        strs(&[
            "list",
            "-t",
            "all",
            "-o",
            "name,used,avail,refer,quota,reservation,volsize,compressratio,encryption,keystatus,mounted",
            "-r",
            &pool,
        ]),
    ));
    // Volumes and what the kernel exports.
    v.push(lib("volumes/list.json", "volumes::ops::list", || {
        volumes::env::Env::host(None).and_then(|env| volumes::ops::list(&env))
    }));
    v.push(lib(
        "volumes/nvmet-export.json",
        "volumes::ops::export_save",
        || volumes::env::Env::host(None).and_then(|env| volumes::ops::export_save(&env)),
    ));
    let nvmet = src.roots.configfs.join("nvmet");
    let from = nvmet.display().to_string();
    v.push(source(
        "volumes/nvmet-configfs.txt",
        &from.clone(),
        move || match nvmet_tree(&nvmet) {
            Ok(b) => Item::ok("volumes/nvmet-configfs.txt", from, b),
            Err(e) => Item::failed("volumes/nvmet-configfs.txt", from, e),
        },
    ));
    // Logs: the kernel's, this boot's services' (/run/log) and the kept ones (on the pool).
    // Debug messages left out: nvmet's printed key bytes at that level on older kernels.
    v.push(tool_src(
        "log/dmesg.txt",
        DMESG,
        strs(&[
            "--time-format=iso",
            "--level=emerg,alert,crit,err,warn,notice,info",
        ]),
    ));
    for (dir, under) in [
        (src.roots.run.join("log"), "log/run"),
        (src.root.join(&pool).join("log"), "log/persist"),
        (src.roots.run.join("metrics"), "metrics"),
    ] {
        let files = files_in(&dir);
        if files.is_empty() {
            let (name, from) = (format!("{under}/"), dir.display().to_string());
            v.push(source(&name.clone(), &from.clone(), move || {
                Item::failed(&name, from, "no files".into())
            }));
        }
        for f in files {
            let name = format!(
                "{under}/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            let from = f.display().to_string();
            v.push(source(&name.clone(), &from.clone(), move || {
                match tail(&f) {
                    Ok(b) => Item::ok(&name, from, b),
                    Err(e) => Item::failed(&name, from, e),
                }
            }));
        }
    }
    v
}

pub const ABUPDATE: &str = "/usr/bin/abupdate";
pub const DMESG: &str = "/usr/bin/dmesg";

/// Redacts every item and writes the bundle (`<dir>/MANIFEST.json` first, then the items) as a
/// gzip'd tar to `w`. Returns the manifest.
pub fn write(
    items: Vec<Item>,
    pool: &str,
    now: u64,
    dir: &str,
    w: impl Write,
) -> Result<Manifest, Error> {
    let mut manifest = Manifest {
        version: FORMAT_VERSION,
        created: platform::units::utc_stamp(now),
        pool: pool.into(),
        items: Vec::new(),
        redacted: 0,
    };
    let mut bodies = Vec::new();
    for it in items {
        let (body, n) = redact(&String::from_utf8_lossy(&it.body));
        let (from, _) = redact(&it.from);
        let error = it.error.map(|e| redact(&e).0);
        manifest.redacted += n;
        manifest.items.push(ManifestItem {
            name: it.name.clone(),
            from,
            bytes: body.len(),
            error,
            redacted: n,
        });
        bodies.push((it.name, body.into_bytes()));
    }
    let gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, body: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(now);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, format!("{dir}/{name}"), body)
    };
    let m = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    add("MANIFEST.json", &m).map_err(Error::Write)?;
    for (name, body) in &bodies {
        if name.ends_with('/') {
            continue;
        }
        add(name, body).map_err(Error::Write)?;
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .map_err(Error::Write)?
        .flush()
        .map_err(Error::Write)?;
    Ok(manifest)
}

/// The manifest of a bundle `write` made (its first entry), read back from its bytes.
pub fn read_manifest(bundle: &[u8]) -> Option<serde_json::Value> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bundle));
    let mut e = ar.entries().ok()?.next()?.ok()?;
    if !e.path().ok()?.ends_with("MANIFEST.json") {
        return None;
    }
    let mut s = String::new();
    std::io::Read::read_to_string(&mut e, &mut s).ok()?;
    serde_json::from_str(&s).ok()
}

/// Collects and writes a bundle of `pool` now, in memory. Refused while the sources of earlier
/// bundles still hang (each such thread waits on a tool the kernel does not let go of).
pub fn make(src: &Sources, now: u64) -> Result<(Vec<u8>, Manifest), Error> {
    let live = LIVE.load(std::sync::atomic::Ordering::Relaxed);
    if live >= MAX_LIVE {
        return Err(Error::Busy(format!(
            "{live} sources of earlier bundles still hang (zpool or zfs do not answer); \
             the pool needs looking at first"
        )));
    }
    let items = collect(src);
    let mut buf = Vec::new();
    let m = write(items, &src.pool, now, &name(now), &mut buf)?;
    Ok((buf, m))
}

/// Writes `bundle` to `path`, readable by its owner only (it holds logs), replacing it whole.
pub fn save(path: &Path, bundle: &[u8]) -> Result<(), volumes::Error> {
    volumes::ids::write_private(path, bundle)
}

/// The bundle's folder name and default file name: `eve-bundle-<UTC>`.
pub fn name(now: u64) -> String {
    format!("eve-bundle-{}", platform::units::utc_stamp(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAP: &str = "DHHC-1:00:3Y0mWsuU8Uq0m2Cw6Vn4N3bQ5tDL3sSZDsWcb/2R4x0HMbiw:";

    #[test]
    fn every_kind_of_secret_is_taken_out_and_the_rest_kept() {
        let pem =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIH0J\n-----END PRIVATE KEY-----";
        let ec = "-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----";
        let rk = "cbdefghi-jklnrtuv-cbdefghi-jklnrtuv-cbdefghi-jklnrtuv-cbdefghi-jklnrtuv";
        let text = format!(
            "host key {CHAP}\nnvme connect -t tcp ...,dhchap_secret=abc123,dhchap_ctrl_secret=def456\n\
             {pem}\n{ec}\nrecovery {rk}\nRECOVERY {}\n{{\"dhchap_key\": \"xyz\"}}\n\
             digest 5f2b8c1e9a0d4f3b6c7e8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d\n\
             -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            rk.replace('-', "").to_uppercase()
        );
        let (out, n) = redact(&text);
        for secret in [
            "3Y0mWsuU8Uq0m2Cw6Vn4N3bQ5tDL3sSZDsWcb",
            "abc123",
            "def456",
            "MC4CAQAwBQYDK2VwBCIEIH0J",
            "\nabc\n",
            "cbdefghi-jklnrtuv",
            "CBDEFGHIJKLNRTUV",
            "xyz",
        ] {
            assert!(!out.contains(secret), "{secret} left in:\n{out}");
        }
        assert_eq!(n, 8, "{out}");
        // What support needs stays: digests, certificates, the words around the secrets.
        for kept in [
            "digest 5f2b8c1e",
            "-----BEGIN CERTIFICATE-----\nMIIB",
            "nvme connect -t tcp",
            "DHHC-1:<redacted>:",
            "<redacted recovery key>",
        ] {
            assert!(out.contains(kept), "{kept} lost:\n{out}");
        }
        assert_eq!(
            redact("nothing secret here"),
            ("nothing secret here".into(), 0)
        );
        // A placeholder is not a secret to take out.
        assert_eq!(redact("dhchap_key = <none>").1, 0);
    }

    #[test]
    fn secrets_in_other_spellings_or_cut_by_a_tail_are_taken_out_too() {
        let rk = "cbdefghi jklnrtuv cbdefghi jklnrtuv\ncbdefghi jklnrtuv cbdefghi jklnrtuv";
        for (text, gone) in [
            (format!("recovery key:\n{rk}\n"), "jklnrtuv"),
            (
                format!("x_{}_y", "cbdefghijklnrtuv".repeat(4)),
                "cbdefghijklnrtuv",
            ),
            (
                "nvme connect --dhchap-secret=QUJDREVGR0hJSktMTU5PUA --dhchap-ctrl-secret c2VjcmV0".into(),
                "QUJDREVGR0hJSktMTU5PUA",
            ),
            ("nvme_fabrics: Invalid DH-CHAP secret QUJDREVGR0g=".into(), "QUJDREVGR0g="),
            (
                "nvmet: host nqn.x: using hash hmac(sha256) key 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11".into(),
                "0d 0e 0f",
            ),
            (
                "[first 9 bytes left out]\nMC4CAQAwBQYDK2VwBCIEIH0J\n-----END PRIVATE KEY-----\nafter".into(),
                "MC4CAQAw",
            ),
            (
                "before\n-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIH0J".into(),
                "MC4CAQAw",
            ),
        ] {
            let (out, n) = redact(&text);
            assert!(n >= 1 && !out.contains(gone), "{gone} left in: {out}");
        }
        assert!(redact("before\n-----BEGIN PRIVATE KEY-----\nx")
            .0
            .starts_with("before\n"));
        assert!(redact("a\n-----END PRIVATE KEY-----\nafter")
            .0
            .ends_with("\nafter"));
        // Groups of four, or wider spacing, as `vault recover` takes them.
        let fours = "cbde fghi jkln rtuv ".repeat(4);
        assert!(!redact(&fours).0.contains("rtuv"), "{}", redact(&fours).0);
        // A cut key in one audit entry takes nothing after its own body.
        let audit = "[{\"details\": \"-----BEGIN PRIVATE KEY-----\\nMC4CAQAw\"}, {\"path\": \"/v1/status\"}]";
        let (out, _) = redact(audit);
        assert!(
            out.contains("/v1/status") && !out.contains("MC4CAQAw"),
            "{out}"
        );
        // Not secrets: prose about a key, a public key's fingerprint, a digest.
        for plain in [
            "dhchap_key not set for this host",
            "Loaded X.509 cert 'Build time autogenerated kernel key: 5f2b8c1e9a0d4f3b6c7e8a9b0c1d2e3f4a5b6c7d'",
            "sha256 5f2b8c1e9a0d4f3b6c7e8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d",
        ] {
            assert_eq!(redact(plain), (plain.to_string(), 0), "{plain}");
        }
    }

    #[test]
    fn a_log_folder_that_is_a_link_or_a_log_that_is_a_fifo_is_left_out() {
        let d = tempfile::tempdir().unwrap();
        let vault = d.path().join("vault");
        std::fs::create_dir_all(&vault).unwrap();
        std::fs::write(vault.join("secret.json"), "DHHC").unwrap();
        let log = d.path().join("log");
        std::os::unix::fs::symlink(&vault, &log).unwrap();
        assert!(files_in(&log).is_empty(), "a linked folder is not read");
        let real = d.path().join("real");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("a.log"), "line\n").unwrap();
        std::os::unix::fs::symlink(vault.join("secret.json"), real.join("b.log")).unwrap();
        let fifo = real.join("c.log");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(files_in(&real), [real.join("a.log")]);
        // Reached by name anyway, neither the link nor the FIFO is followed or blocks.
        assert!(tail(&real.join("b.log")).is_err());
        assert!(tail(&fifo).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn sources_run_at_once_and_one_that_hangs_or_panics_is_named_not_waited_for() {
        let t0 = std::time::Instant::now();
        let items = run_all(
            vec![
                source("a", "fast", || Item::ok("a", "fast", b"1".to_vec())),
                source("b", "hangs", || {
                    std::thread::sleep(Duration::from_secs(30));
                    Item::ok("b", "hangs", vec![])
                }),
                source("c", "panics", || panic!("boom")),
                source("d", "slow", || {
                    std::thread::sleep(Duration::from_millis(300));
                    Item::ok("d", "slow", b"4".to_vec())
                }),
            ],
            Duration::from_secs(2),
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "one deadline for all"
        );
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"], "in order");
        assert_eq!(items[0].body, b"1");
        assert!(items[1]
            .error
            .as_deref()
            .unwrap()
            .contains("no answer within 2 s"));
        assert_eq!(items[2].error.as_deref(), Some("the source panicked"));
        assert_eq!(items[3].body, b"4");
    }

    #[test]
    fn the_bundle_is_a_gzip_tar_with_its_manifest_first_and_no_secret_inside() {
        let items = vec![
            Item::ok(
                "log/run/volumed.log",
                "/run/log/volumed.log",
                format!("line {CHAP}\n").into_bytes(),
            ),
            Item::failed(
                "zpool/status.txt",
                "zpool status -v persist",
                "exit status: 1 (no pool)".into(),
            ),
        ];
        let mut buf = Vec::new();
        let m = write(items, "persist", 1_799_000_000, "eve-bundle-x", &mut buf).unwrap();
        assert_eq!((m.version, m.redacted, m.items.len()), (1, 1, 2));
        assert_eq!(
            m.items[1].error.as_deref(),
            Some("exit status: 1 (no pool)")
        );
        let mut names = Vec::new();
        let mut all = String::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&buf[..]));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
            assert_eq!(e.header().mode().unwrap(), 0o600);
            std::io::Read::read_to_string(&mut e, &mut all).unwrap();
        }
        assert_eq!(
            names,
            [
                "eve-bundle-x/MANIFEST.json",
                "eve-bundle-x/log/run/volumed.log",
                "eve-bundle-x/zpool/status.txt"
            ]
        );
        assert!(!all.contains("3Y0mWsuU8"), "{all}");
        assert!(all.contains("\"created\": \"20270103T181320Z\""), "{all}");
        let back = read_manifest(&buf).unwrap();
        assert_eq!(back["redacted"], 1);
        assert!(read_manifest(b"not a bundle").is_none());
    }

    #[test]
    fn logs_keep_their_end_from_a_line_start_and_nvmet_keys_are_left_out() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("big.log");
        let mut text = String::new();
        for i in 0..200_000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&log, &text).unwrap();
        let t = String::from_utf8(tail(&log).unwrap()).unwrap();
        assert!(t.starts_with("[first "), "{}", &t[..40]);
        assert!(t.ends_with("line 199999\n"));
        assert!(t.lines().nth(1).unwrap().starts_with("line "));
        assert!(t.len() <= LOG_TAIL + 40);

        let n = d.path().join("nvmet");
        std::fs::create_dir_all(n.join("hosts/nqn.h")).unwrap();
        std::fs::create_dir_all(n.join("subsystems/nqn.s/namespaces/1")).unwrap();
        std::fs::write(n.join("hosts/nqn.h/dhchap_key"), CHAP).unwrap();
        std::fs::write(n.join("hosts/nqn.h/dhchap_ctrl_key"), CHAP).unwrap();
        std::fs::write(
            n.join("subsystems/nqn.s/namespaces/1/device_path"),
            "/dev/zd0\n",
        )
        .unwrap();
        let out = String::from_utf8(nvmet_tree(&n).unwrap()).unwrap();
        assert!(
            out.contains("hosts/nqn.h/dhchap_key (left out: it holds a key)"),
            "{out}"
        );
        assert!(
            out.contains("subsystems/nqn.s/namespaces/1/device_path = /dev/zd0"),
            "{out}"
        );
        assert!(!out.contains("DHHC"), "{out}");
        assert_eq!(
            redact(&out).1,
            0,
            "the marker is not taken for a secret: {out}"
        );
        assert!(nvmet_tree(&d.path().join("none")).is_err());
    }
}
