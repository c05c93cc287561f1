//! The seam between the API and the box: [`Backend::call`] runs one operation with the same
//! library code `storagectl` runs (storaged's status, health and disks; the volumes crate's
//! operations). [`Host`] is the box; tests use a recording fake.

use crate::api::{failed, shape, value, ApiError, Body, Op, Params};
use crate::stream::StreamBody;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

/// One request, its body decoded and checked before anything runs.
#[derive(Debug)]
pub struct Request<'a> {
    pub op: Op,
    pub params: &'a Params,
    pub query: &'a crate::api::Query,
    /// The client asked for text (`Accept: text/plain`) and the route has it.
    pub text: bool,
    pub body: Decoded,
}

impl Request<'_> {
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    pub fn flag(&self, name: &str) -> bool {
        self.query.flags.contains(&name)
    }
    pub fn number(&self, name: &str) -> Option<f64> {
        self.query
            .numbers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
    /// `x` as JSON, or as `render` prints it when the client asked for text.
    fn out<T: serde::Serialize>(
        &self,
        x: T,
        render: impl Fn(&T) -> String,
    ) -> Result<Out, ApiError> {
        if self.text {
            Ok(Out::Text(render(&x)))
        } else {
            value(x).map(Out::Json)
        }
    }
}

/// What an operation answers: JSON, or the text the CLI prints (when asked for and the route has
/// it).
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Json(Value),
    Text(String),
    /// A file: its media type and bytes (a support bundle).
    File(&'static str, Vec<u8>),
}

/// A request body, by its route's [`Body`] shape.
#[derive(Debug)]
pub enum Decoded {
    None,
    Spec(Box<volumes::spec::RawSpec>),
    Snapshot(SnapshotBody),
    Rollback(RollbackBody),
    Replace(ReplaceBody),
    Drives(DrivesBody),
    Member(MemberBody),
    Selftest(SelftestBody),
    Maintain(MaintainBody),
    Recover(RecoverBody),
    Resize(ResizeBody),
    Clone(CloneBody),
    /// A streamed body (an update), read once by the operation.
    Stream(StreamBody),
}

fn json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    empty_ok: bool,
) -> Result<T, ApiError> {
    if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    required(body)
}

/// A body that must be there, with no default to stand for it.
fn required<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad(
            "invalid_json",
            "the request needs a JSON body",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))
}

/// Decodes a body as its route says: JSON only, unknown fields refused (400).
pub fn decode(shape: Body, body: &[u8]) -> Result<Decoded, ApiError> {
    Ok(match shape {
        Body::None => Decoded::None,
        Body::Spec => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad("invalid_json", "request body: not UTF-8"))?;
            if !text.trim_start().starts_with('{') {
                return Err(ApiError::bad(
                    "invalid_json",
                    "request body: a JSON object (a volume spec) is expected",
                ));
            }
            let raw = volumes::spec::RawSpec::parse("request body", text)
                .map_err(|e| ApiError::bad("invalid_spec", e.to_string()))?;
            Decoded::Spec(Box::new(raw))
        }
        Body::Snapshot => Decoded::Snapshot(json(body, true)?),
        Body::Rollback => Decoded::Rollback(json(body, false)?),
        Body::Replace => Decoded::Replace(json(body, false)?),
        Body::Drives => Decoded::Drives(json(body, false)?),
        Body::Member => Decoded::Member(json(body, false)?),
        Body::Selftest => Decoded::Selftest(json(body, true)?),
        Body::Maintain => Decoded::Maintain(required(body)?),
        Body::Recover => Decoded::Recover(json(body, false)?),
        Body::Resize => Decoded::Resize(json(body, false)?),
        Body::Clone => Decoded::Clone(json(body, false)?),
        // The server hands these over as they arrive; never buffered here.
        Body::Stream => return Err(crate::api::shape()),
    })
}

/// What the API asks of the box.
pub trait Backend: Send + Sync + 'static {
    fn call(&self, req: &Request) -> Result<Out, ApiError>;
    /// The Prometheus textfile storaged keeps.
    fn metrics(&self) -> Result<String, ApiError>;
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBody {
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    pub snapshot: String,
    #[serde(default)]
    pub destroy_newer: bool,
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceBody {
    pub old: String,
    pub new: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrivesBody {
    pub drives: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelftestBody {
    #[serde(default)]
    pub drives: Vec<String>,
    #[serde(default)]
    pub kind: storaged::selftest::Kind,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeBody {
    pub size: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneBody {
    pub name: String,
    pub vm: Option<String>,
    pub transport: Option<volumes::spec::Transport>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    pub member: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintainBody {
    pub op: storaged::maint::Ask,
}

/// The recovery key is wiped from this copy when it is dropped (the request's own buffer is
/// hyper's and is freed with the request).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    pub recovery_key: String,
    #[serde(default)]
    pub accept_unproven: bool,
}

impl Drop for RecoverBody {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.recovery_key);
    }
}

impl std::fmt::Debug for RecoverBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoverBody")
            .field("accept_unproven", &self.accept_unproven)
            .finish()
    }
}

/// The box itself.
#[derive(Debug, Clone)]
pub struct Host {
    pub pool: String,
    /// The volume settings file (`/etc/volumes.toml` layered as the CLI does), if not the default.
    pub volumes_config: Option<PathBuf>,
    /// storaged's textfile.
    pub metrics: PathBuf,
    /// Where an uploaded update is kept until its checksum is known (a dataset of the pool);
    /// without it, an upload streams into the inactive slot as `abupdate install -` does.
    pub update_spool: PathBuf,
    /// The last install's progress (`GET /v1/update`).
    pub progress: std::sync::Arc<std::sync::Mutex<Value>>,
}

impl Host {
    pub fn new(pool: &str, volumes_config: Option<PathBuf>, metrics: PathBuf) -> Host {
        Host {
            pool: pool.into(),
            volumes_config,
            metrics,
            update_spool: PathBuf::from("/persist/update"),
            progress: std::sync::Arc::new(std::sync::Mutex::new(Value::Null)),
        }
    }
}

impl Host {
    /// 503 when the pool is not imported.
    fn pool(&self) -> Result<(), ApiError> {
        // Asked on every volume and disk request: the kernel's record costs no `zpool` process
        // (tens of ms on a slow box).
        let absent = || {
            ApiError::new(
                503,
                "pool_absent",
                format!(
                    "pool {} is not imported; GET /v1/status says why",
                    self.pool
                ),
            )
        };
        if platform::zfs::imported(&platform::Roots::host(), &self.pool) {
            Ok(())
        } else {
            Err(absent())
        }
    }

    /// Volume operations need the pool.
    fn env(&self) -> Result<volumes::env::Env<'static>, ApiError> {
        self.pool()?;
        volumes::env::Env::host(self.volumes_config.as_deref()).map_err(ApiError::from)
    }
}

impl Backend for Host {
    fn call(&self, r: &Request) -> Result<Out, ApiError> {
        use volumes::ops;
        let name = r.param("name");
        let bytes = r.flag("bytes");
        let json = |v: Value| Ok(Out::Json(v));
        match r.op {
            Op::Status => r.out(
                storaged::status::full(&self.pool).map_err(|e| failed(&e))?,
                |s| s.render(),
            ),
            Op::Health => r.out(
                storaged::health_view(&self.pool, std::path::Path::new("/")),
                |h| h.render(bytes),
            ),
            Op::Pool => {
                self.pool()?;
                value(storaged::cmd::status(&self.pool)?).map(Out::Json)
            }
            Op::Disks => r.out(
                storaged::disks::list(&self.pool).map_err(|e| failed(&e))?,
                |l| l.render(bytes),
            ),
            Op::Volumes => r.out(ops::list(&self.env()?)?, |l| l.render(bytes)),
            Op::VolumeShow => r.out(ops::show(&self.env()?, name)?, |s| s.render(bytes)),
            Op::VolumeConnect => {
                value(volumes::connect::connect(&self.env()?, name)?).map(Out::Json)
            }
            Op::VolumeCreate => {
                let Decoded::Spec(raw) = &r.body else {
                    return Err(shape());
                };
                r.out(ops::create(&self.env()?, raw, "request body")?, |s| {
                    s.render(false)
                })
            }
            Op::VolumeResize => {
                let Decoded::Resize(b) = &r.body else {
                    return Err(shape());
                };
                r.out(ops::resize(&self.env()?, name, &b.size)?, |s| {
                    s.render(false)
                })
            }
            Op::VolumeClone => {
                let Decoded::Clone(b) = &r.body else {
                    return Err(shape());
                };
                let from = format!("{name}@{}", r.param("snapshot"));
                r.out(
                    ops::clone(&self.env()?, &b.name, &from, b.vm.as_deref(), b.transport)?,
                    |s| s.render(false),
                )
            }
            Op::VolumeDelete => {
                ops::delete(&self.env()?, name, r.flag("force"))?;
                json(serde_json::json!({"deleted": name}))
            }
            Op::Snapshots => r.out(ops::snapshots(&self.env()?, name)?, |l| l.render(bytes)),
            Op::SnapshotCreate => {
                let Decoded::Snapshot(b) = &r.body else {
                    return Err(shape());
                };
                value(ops::snapshot(&self.env()?, name, b.name.as_deref())?).map(Out::Json)
            }
            Op::SnapshotDelete => {
                let snap = r.param("snapshot");
                ops::snapshot_delete(&self.env()?, name, snap)?;
                json(serde_json::json!({"deleted": format!("{name}@{snap}")}))
            }
            Op::Rollback => {
                let Decoded::Rollback(b) = &r.body else {
                    return Err(shape());
                };
                value(ops::rollback(
                    &self.env()?,
                    name,
                    &b.snapshot,
                    b.destroy_newer,
                    b.force,
                )?)
                .map(Out::Json)
            }
            Op::Iostat => {
                let secs = r.number("interval").unwrap_or(1.0);
                // It holds a read thread while it waits: kept short.
                if !(0.1..=5.0).contains(&secs) {
                    return Err(ApiError::bad(
                        "invalid_parameter",
                        format!("interval={secs}: give 0.1 to 5 seconds"),
                    ));
                }
                self.pool()?;
                let s = storaged::iostat::sample(&platform::Roots::host(), &self.pool, secs);
                value(s).map(Out::Json)
            }
            Op::Export => value(ops::export_save(&self.env()?)?).map(Out::Json),
            Op::Reconcile => {
                let env = self.env()?;
                env.check_vault()?;
                let dry_run = r.flag("dry_run");
                // Waits for a pass volumed may be running, as the CLI does.
                let (p, rep) = volumes::reconcile::lock(&env.roots)
                    .and_then(|_l| volumes::reconcile::pass(&env, dry_run))?;
                let text = if dry_run {
                    p.render()
                } else {
                    format!("{} steps, {} changed\n", rep.steps.len(), rep.changed())
                };
                let v = serde_json::json!({"dry_run": dry_run, "plan": p.render(),
                    "steps": rep.steps.len(), "changed": rep.changed()});
                Ok(if r.text {
                    Out::Text(text)
                } else {
                    Out::Json(v)
                })
            }
            Op::AdoptSpool => {
                let m = ops::adopt_spool(&self.env()?)?;
                r.out(serde_json::json!({"message": m}), |v| {
                    format!("{}\n", v["message"].as_str().unwrap_or(""))
                })
            }
            Op::DiskReplace => {
                let Decoded::Replace(b) = &r.body else {
                    return Err(shape());
                };
                self.pool()?;
                let part = storaged::disks::replace(&self.pool, &b.old, &b.new)?;
                json(
                    serde_json::json!({"replacing": b.old, "by": b.new, "partition": part,
                    "resilver": "running: GET /v1/pool shows its progress"}),
                )
            }
            Op::DiskAdd => {
                let Decoded::Drives(b) = &r.body else {
                    return Err(shape());
                };
                self.pool()?;
                json(serde_json::json!({"added": storaged::disks::add(&self.pool, &b.drives)?}))
            }
            Op::DiskOffline | Op::DiskOnline => {
                let Decoded::Member(b) = &r.body else {
                    return Err(shape());
                };
                self.pool()?;
                let online = r.op == Op::DiskOnline;
                let n = storaged::disks::set_online(&self.pool, &b.member, online)?;
                json(serde_json::json!({"member": n, "online": online}))
            }
            Op::Bundle => {
                let (bytes, _) =
                    support::make(&support::Sources::host(&self.pool), storaged::now())?;
                Ok(Out::File("application/gzip", bytes))
            }
            Op::Selftest => {
                let Decoded::Selftest(b) = &r.body else {
                    return Err(shape());
                };
                let rows = storaged::disks::selftest(&self.pool, &b.drives, b.kind)?;
                json(serde_json::json!({"kind": b.kind, "drives": rows}))
            }
            Op::Maintain => {
                let Decoded::Maintain(b) = &r.body else {
                    return Err(shape());
                };
                self.pool()?;
                storaged::maintain_now(&self.pool, b.op)?;
                json(serde_json::json!({"pool": self.pool, "op": b.op}))
            }
            Op::Vault => {
                let s = storaged::status::gather(&self.pool).map_err(|e| failed(&e))?;
                json(serde_json::json!({"vault": s.vault, "boot": s.boot}))
            }
            Op::VaultRecover => {
                let Decoded::Recover(b) = &r.body else {
                    return Err(shape());
                };
                self.pool()?;
                let rk = storage::vault::RecoveryKey::parse(&b.recovery_key)?;
                r.out(
                    storage::realhost::recover_here(&self.pool, &rk, b.accept_unproven)?,
                    |v| v.render(),
                )
            }
            Op::VaultRecoveryKey => {
                self.pool()?;
                let rk = storage::realhost::new_recovery_key_here(&self.pool)?;
                json(serde_json::json!({"recovery_key": rk.display(),
                    "note": "the vault key was rotated: the old recovery key and every old seal open nothing; this key is stored nowhere"}))
            }
            Op::Update => crate::update::status(&self.progress).map(Out::Json),
            Op::UpdateInstall => {
                let Decoded::Stream(b) = &r.body else {
                    return Err(shape());
                };
                crate::update::install(
                    &self.update_spool,
                    &self.progress,
                    b,
                    r.flag("allow_downgrade"),
                    r.flag("direct"),
                )
                .map(Out::Json)
            }
            Op::Reboot => crate::update::reboot().map(Out::Json),
            Op::Whoami | Op::Audit | Op::Metrics | Op::OpenApi => Err(ApiError::new(
                500,
                "failed",
                "answered by the server, not the backend",
            )),
        }
    }

    fn metrics(&self) -> Result<String, ApiError> {
        let mut text = std::fs::read_to_string(&self.metrics).map_err(|e| {
            ApiError::new(
                503,
                "metrics_unavailable",
                format!(
                    "{}: {e} (storaged writes it once the pool is up)",
                    self.metrics.display()
                ),
            )
        })?;
        text.push_str(&other_textfiles(&self.metrics));
        Ok(text)
    }
}

/// The other `*.prom` files beside storaged's (abupdate's slots and trust), as node_exporter's
/// textfile collector reads the directory; one that cannot be read is left out.
fn other_textfiles(storaged: &std::path::Path) -> String {
    let Some(dir) = storaged.parent() else {
        return String::new();
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "prom") && p.as_path() != storaged)
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|t| t.ends_with('\n'))
        .collect()
}

/// One call the fake saw: the operation, its path parameters and its decoded body (as Debug
/// shows it: a recovery key never appears).
pub type Call = (Op, Params, String);

/// A recording fake for the server's tests: answers from a script, remembers every call.
#[derive(Debug, Default)]
pub struct Fake {
    pub calls: std::sync::Mutex<Vec<Call>>,
    /// Held for this long inside each call (to test one-operation-at-a-time).
    pub delay_ms: u64,
}

impl Backend for Fake {
    fn call(&self, r: &Request) -> Result<Out, ApiError> {
        self.answer(r).map(|v| match (r.text, v) {
            (true, Value::String(t)) => Out::Text(t),
            (true, v) => Out::Text(format!("text of {v}\n")),
            (false, v) => Out::Json(v),
        })
    }
    fn metrics(&self) -> Result<String, ApiError> {
        Ok("# TYPE eve_pool_healthy gauge\neve_pool_healthy 1\n".into())
    }
}

impl Fake {
    fn answer(&self, r: &Request) -> Result<Value, ApiError> {
        if let Ok(mut c) = self.calls.lock() {
            c.push((r.op, r.params.clone(), format!("{:?}", r.body)));
        }
        std::thread::sleep(std::time::Duration::from_millis(self.delay_ms));
        match (&r.op, &r.body) {
            (Op::SnapshotCreate, Decoded::Snapshot(b)) => Ok(serde_json::json!({"name": b.name})),
            (Op::UpdateInstall, Decoded::Stream(b)) => {
                // Reads what the client sends, refusing (as a bad header would be) a stream that
                // does not start with the update magic.
                let mut rd = b.take().ok_or_else(shape)?;
                let mut all = Vec::new();
                let mut head = [0u8; 10];
                let n = abupdate::install::read_full(&mut rd, &mut head)
                    .map_err(crate::update::broken)?;
                if &head[..n] != abupdate::artifact::MAGIC.as_bytes() {
                    return Err(ApiError::bad("update_refused", "not an EVE update"));
                }
                all.extend_from_slice(&head);
                std::io::Read::read_to_end(&mut rd, &mut all).map_err(crate::update::broken)?;
                Ok(serde_json::json!({"bytes": all.len(),
                    "sha256": abupdate::artifact::sha256_hex(&all)}))
            }
            (Op::Maintain, Decoded::Maintain(b)) => {
                Ok(serde_json::json!({"pool": "persist", "op": b.op}))
            }
            // A degraded pool, as status and health report one: what is wrong and the exit code.
            (Op::Status | Op::Health, _) => Ok(serde_json::json!({"op": format!("{:?}", r.op),
                "problems": ["pool persist: DEGRADED"], "exit_code": 7})),
            // A volume's connection as the box sends it, secrets included.
            (Op::VolumeConnect, _) => Ok(serde_json::json!({"name": r.param("name"), "vm": "vm1",
                "transport": "nvme-tcp", "warnings": [],
                "nvme_tcp": {"traddr": "10.0.2.15", "trsvcid": 4420, "subsysnqn": "nqn.x:vol:web",
                    "hostnqn": "nqn.x:vm:vm1", "hostid": "0f0e0d0c-0000-4000-8000-000000000001",
                    "dhchap_secret": "DHHC-1:00:aG9zdA==:", "dhchap_ctrl_secret": "DHHC-1:00:Y3RybA==:"}})),
            (Op::VolumeShow, _) if r.param("name") == "missing" => {
                Err(volumes::Error::NoVolume("missing".into()).into())
            }
            _ => Ok(serde_json::json!({"op": format!("{:?}", r.op)})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/metrics` serves storaged's textfile and the others beside it (abupdate's), as
    /// node_exporter's textfile collector would; without storaged's, it is unavailable.
    #[test]
    fn metrics_are_every_textfile_in_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new("persist", None, d.path().join("eve-storage.prom"));
        assert_eq!(h.metrics().unwrap_err().status, 503);
        std::fs::write(
            d.path().join("eve-storage.prom"),
            "# TYPE eve_a gauge\neve_a 1\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("eve-update.prom"),
            "# TYPE eve_b gauge\neve_b 2\n",
        )
        .unwrap();
        std::fs::write(d.path().join("eve-update.new"), "half written").unwrap();
        std::fs::write(d.path().join("torn.prom"), "# TYPE eve_c gauge\neve_c").unwrap();
        assert_eq!(
            h.metrics().unwrap(),
            "# TYPE eve_a gauge\neve_a 1\n# TYPE eve_b gauge\neve_b 2\n"
        );
    }
}
