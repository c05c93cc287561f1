//! The seam between the API and the box: [`Backend::call`] runs one operation with the same
//! library code `storagectl` runs (storaged's status, health and disks; the volumes crate's
//! operations). [`Host`] is the box; tests use a recording fake.

use crate::api::{ApiError, Op, Params};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

/// One decoded request.
#[derive(Debug)]
pub struct Request<'a> {
    pub op: Op,
    pub params: &'a Params,
    pub flags: &'a [&'static str],
    pub body: &'a [u8],
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
        self.flags.contains(&name)
    }

    /// The body as JSON of type `T`; unknown fields are refused by `T` itself. An empty body is
    /// `T`'s default where `empty_ok`.
    pub fn json<T: serde::de::DeserializeOwned + Default>(
        &self,
        empty_ok: bool,
    ) -> Result<T, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return if empty_ok {
                Ok(T::default())
            } else {
                Err(ApiError::bad(
                    "invalid_json",
                    "the request needs a JSON body",
                ))
            };
        }
        serde_json::from_slice(self.body)
            .map_err(|e| ApiError::bad("invalid_json", format!("request body: {e}")))
    }
}

/// What the API asks of the box.
pub trait Backend: Send + Sync + 'static {
    fn call(&self, req: &Request) -> Result<Value, ApiError>;
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

/// The box itself.
#[derive(Debug, Clone)]
pub struct Host {
    pub pool: String,
    /// The volume settings file (`/etc/volumes.toml` layered as the CLI does), if not the default.
    pub volumes_config: Option<PathBuf>,
    /// storaged's textfile.
    pub metrics: PathBuf,
}

fn value<T: serde::Serialize>(v: T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(500, "failed", e.to_string()))
}

fn failed(e: &dyn std::error::Error) -> ApiError {
    ApiError::new(500, "failed", platform::chain(e))
}

impl Host {
    /// Volume operations need the pool: 503 when it is not imported.
    fn env(&self) -> Result<volumes::reconcile::Env<'static>, ApiError> {
        if storage::zfs::list_pools(Some(&self.pool)).map_or(true, |p| p.is_empty()) {
            return Err(ApiError::new(
                503,
                "pool_absent",
                format!(
                    "pool {} is not imported; GET /v1/status says why",
                    self.pool
                ),
            ));
        }
        volumes::reconcile::Env::host(self.volumes_config.as_deref()).map_err(ApiError::from)
    }
}

impl Backend for Host {
    fn call(&self, r: &Request) -> Result<Value, ApiError> {
        use volumes::ops;
        let name = r.param("name");
        match r.op {
            Op::Status => value(storaged::status::full(&self.pool).map_err(|e| failed(&e))?),
            Op::Health => value(storaged::health_view(&self.pool, std::path::Path::new("/"))),
            Op::Disks => value(storaged::disks::list(&self.pool).map_err(|e| failed(&e))?),
            Op::Volumes => value(ops::list(&self.env()?)?),
            Op::VolumeShow => value(ops::show(&self.env()?, name)?),
            Op::VolumeCreate => {
                let text = std::str::from_utf8(r.body)
                    .map_err(|_| ApiError::bad("invalid_json", "request body: not UTF-8"))?;
                if !text.trim_start().starts_with('{') {
                    return Err(ApiError::bad(
                        "invalid_json",
                        "request body: a JSON object (a volume spec) is expected",
                    ));
                }
                let raw = volumes::spec::RawSpec::parse("request body", text)
                    .map_err(|e| ApiError::bad("invalid_spec", e.to_string()))?;
                let env = self.env()?;
                value(ops::create(&env, &raw, "request body")?)
            }
            Op::VolumeDelete => {
                ops::delete(&self.env()?, name, r.flag("force"))?;
                Ok(serde_json::json!({"deleted": name}))
            }
            Op::Snapshots => value(ops::snapshots(&self.env()?, name)?),
            Op::SnapshotCreate => {
                let b: SnapshotBody = r.json(true)?;
                value(ops::snapshot(&self.env()?, name, b.name.as_deref())?)
            }
            Op::Rollback => {
                let b: RollbackBody = r.json(false)?;
                value(ops::rollback(
                    &self.env()?,
                    name,
                    &b.snapshot,
                    b.destroy_newer,
                    b.force,
                )?)
            }
            Op::Whoami | Op::Audit | Op::Metrics | Op::OpenApi => Err(ApiError::new(
                500,
                "failed",
                "answered by the server, not the backend",
            )),
        }
    }

    fn metrics(&self) -> Result<String, ApiError> {
        std::fs::read_to_string(&self.metrics).map_err(|e| {
            ApiError::new(
                503,
                "metrics_unavailable",
                format!(
                    "{}: {e} (storaged writes it once the pool is up)",
                    self.metrics.display()
                ),
            )
        })
    }
}

/// One call the fake saw: the operation, its path parameters and body.
pub type Call = (Op, Params, Vec<u8>);

/// A recording fake for the server's tests: answers from a script, remembers every call.
#[derive(Debug, Default)]
pub struct Fake {
    pub calls: std::sync::Mutex<Vec<Call>>,
    /// Held for this long inside each call (to test one-operation-at-a-time).
    pub delay_ms: u64,
}

impl Backend for Fake {
    fn call(&self, r: &Request) -> Result<Value, ApiError> {
        if let Ok(mut c) = self.calls.lock() {
            c.push((r.op, r.params.clone(), r.body.to_vec()));
        }
        std::thread::sleep(std::time::Duration::from_millis(self.delay_ms));
        match r.op {
            Op::SnapshotCreate => {
                let b: SnapshotBody = r.json(true)?;
                Ok(serde_json::json!({"name": b.name}))
            }
            Op::VolumeShow if r.param("name") == "missing" => {
                Err(volumes::Error::NoVolume("missing".into()).into())
            }
            _ => Ok(serde_json::json!({"op": format!("{:?}", r.op)})),
        }
    }
    fn metrics(&self) -> Result<String, ApiError> {
        Ok("# TYPE eve_pool_healthy gauge\neve_pool_healthy 1\n".into())
    }
}
