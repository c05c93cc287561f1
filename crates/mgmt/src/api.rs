//! The API's one route table: it drives dispatch (method, path, role) and the OpenAPI document
//! (`mgmtd openapi`, committed as docs/api/openapi.json and checked for drift in the unit tier),
//! so the two cannot disagree. Errors are JSON with a stable code.

use crate::tls::Role;
use serde_json::{json, Value};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Whoami,
    Status,
    Health,
    Disks,
    Volumes,
    VolumeShow,
    VolumeConnect,
    VolumeCreate,
    VolumeDelete,
    Snapshots,
    SnapshotCreate,
    Rollback,
    Audit,
    Metrics,
    OpenApi,
    DiskReplace,
    DiskAdd,
    DiskOffline,
    DiskOnline,
    Vault,
    VaultRecover,
    VaultRecoveryKey,
    Update,
    UpdateInstall,
    Reboot,
    Pool,
    VolumeResize,
    VolumeClone,
    SnapshotDelete,
    Iostat,
    Export,
    Reconcile,
    AdoptSpool,
    Maintain,
    Selftest,
    Bundle,
}

/// A request body's shape, for the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// A volume spec, as `storagectl volume create --spec FILE.json` takes it.
    Spec,
    /// `{"name": "..."}` (optional).
    Snapshot,
    /// `{"snapshot": "...", "destroy_newer": false, "force": false}`.
    Rollback,
    /// `{"old": "...", "new": "..."}`.
    Replace,
    /// `{"drives": ["..."]}`.
    Drives,
    /// `{"member": "..."}`.
    Member,
    /// `{"drives": ["..."], "kind": "short" | "long"}` (both optional).
    Selftest,
    /// `{"op": "scrub-now" | "scrub-stop" | "trim-now"}`.
    Maintain,
    /// `{"recovery_key": "...", "accept_unproven": false}`.
    Recover,
    /// `{"size": "20G"}`.
    Resize,
    /// `{"name": "...", "vm": "...", "transport": "..."}` (vm and transport: the origin's).
    Clone,
    /// An update artifact as `make image` writes it, streamed (`application/octet-stream`): no
    /// size limit but its own header's, checked before a byte is kept.
    Stream,
}

#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub op: Op,
    pub role: Role,
    pub summary: &'static str,
    pub body: Body,
    /// Query parameters it takes: boolean flags, or numbers for those in [`NUMBERS`].
    pub query: &'static [&'static str],
    /// The error statuses it can answer with, besides 400/401/403/429 common to all.
    pub errors: &'static [u16],
}

impl Route {
    /// A change to the box.
    pub fn mutates(&self) -> bool {
        self.method != "GET"
    }
    /// Written to the audit journal: every change, and the reads that hand out secrets.
    pub fn audited(&self) -> bool {
        self.mutates() || matches!(self.op, Op::Export | Op::VolumeConnect | Op::Bundle)
    }
    pub fn name(&self) -> String {
        format!("{:?}", self.op)
    }
    /// Answers `text/plain` when asked (`Accept: text/plain`): what `storagectl` prints, made by
    /// the same code, so `storagectl --remote` prints exactly what it prints on the box.
    pub fn text(&self) -> bool {
        matches!(
            self.op,
            Op::Status
                | Op::Health
                | Op::Disks
                | Op::Volumes
                | Op::VolumeShow
                | Op::VolumeCreate
                | Op::VolumeResize
                | Op::VolumeClone
                | Op::Snapshots
                | Op::VaultRecover
                | Op::Audit
                | Op::Reconcile
                | Op::AdoptSpool
        )
    }
}

/// Query parameters that are numbers; the rest are boolean flags.
pub const NUMBERS: &[&str] = &["interval", "lines"];

use Body as B;
use Role::{Admin, Reader};

pub const ROUTES: &[Route] = &[
    Route { method: "GET", path: "/v1/whoami", op: Op::Whoami, role: Reader, body: B::None, query: &[], errors: &[],
        summary: "The role, subject and fingerprint of the calling certificate" },
    Route { method: "GET", path: "/v1/status", op: Op::Status, role: Reader, body: B::None, query: &[], errors: &[500],
        summary: "Pool, members, datasets, vault and boot binding, maintenance, alerts (storagectl status --json)" },
    Route { method: "GET", path: "/v1/health", op: Op::Health, role: Reader, body: B::None, query: &["bytes"], errors: &[],
        summary: "A fresh health look: drives, pool, space, alerts and recent events (storagectl health --json)" },
    Route { method: "GET", path: "/v1/pool", op: Op::Pool, role: Reader, body: B::None, query: &[], errors: &[500, 503],
        summary: "The pool's state and its current or last scan (scrub or resilver) with progress" },
    Route { method: "GET", path: "/v1/disks", op: Op::Disks, role: Reader, body: B::None, query: &["bytes"], errors: &[500],
        summary: "Every drive, its role in the pool and its health (storagectl disk list --json)" },
    Route { method: "POST", path: "/v1/disks/replace", op: Op::DiskReplace, role: Admin, body: B::Replace, query: &[], errors: &[409, 413, 500, 503],
        summary: "Replace a pool member by a new drive; the resilver runs on (GET /v1/status shows it)" },
    Route { method: "POST", path: "/v1/disks/add", op: Op::DiskAdd, role: Admin, body: B::Drives, query: &[], errors: &[409, 413, 500, 503],
        summary: "Grow the pool with new drives, as the policy's layout says" },
    Route { method: "POST", path: "/v1/disks/offline", op: Op::DiskOffline, role: Admin, body: B::Member, query: &[], errors: &[409, 413, 500, 503],
        summary: "Take a member offline (the pool keeps its redundancy elsewhere)" },
    Route { method: "POST", path: "/v1/disks/online", op: Op::DiskOnline, role: Admin, body: B::Member, query: &[], errors: &[409, 413, 500, 503],
        summary: "Bring a member back online" },
    Route { method: "POST", path: "/v1/disks/selftest", op: Op::Selftest, role: Admin, body: B::Selftest, query: &[], errors: &[409, 413, 500, 503],
        summary: "Start the drives' own self-test (SMART on SATA, Device Self-test on NVMe) on the pool's drives or the ones named; each drive says whether it started, was skipped (and why) or failed; GET /v1/disks shows progress and results" },
    Route { method: "POST", path: "/v1/pool/maintenance", op: Op::Maintain, role: Admin, body: B::Maintain, query: &[], errors: &[409, 413, 500, 503],
        summary: "Scrub now, stop the scrub, or trim now (storagectl scrub now|stop, trim now); refused while the pool is busy with what would clash" },
    Route { method: "GET", path: "/v1/vault", op: Op::Vault, role: Reader, body: B::None, query: &[], errors: &[500],
        summary: "The vault (locked or not, what its key is sealed to) and the boot binding" },
    Route { method: "POST", path: "/v1/vault/recover", op: Op::VaultRecover, role: Admin, body: B::Recover, query: &[], errors: &[409, 413, 500, 503],
        summary: "Unlock the vault with its recovery key and seal it to this TPM (storagectl vault recover)" },
    Route { method: "POST", path: "/v1/vault/recovery-key", op: Op::VaultRecoveryKey, role: Admin, body: B::None, query: &[], errors: &[423, 500, 503],
        summary: "A new recovery key; the old one and every old seal open nothing after it (storagectl vault recovery-key)" },
    Route { method: "GET", path: "/v1/volumes", op: Op::Volumes, role: Reader, body: B::None, query: &["bytes"], errors: &[423, 500, 503],
        summary: "Guest volumes (storagectl volume list --json)" },
    Route { method: "POST", path: "/v1/volumes", op: Op::VolumeCreate, role: Admin, body: B::Spec, query: &[], errors: &[409, 413, 423, 500, 503],
        summary: "Create a volume from a spec and export it" },
    Route { method: "GET", path: "/v1/volumes/{name}", op: Op::VolumeShow, role: Reader, body: B::None, query: &["bytes"], errors: &[404, 423, 500, 503],
        summary: "One volume, its export and connection details (storagectl volume show --json)" },
    Route { method: "GET", path: "/v1/volumes/{name}/connect", op: Op::VolumeConnect, role: Admin, body: B::None, query: &[], errors: &[404, 409, 423, 500, 503],
        summary: "What the VM's launcher needs (storagectl volume connect): NVMe/TCP address, NQNs and the VM's DH-HMAC-CHAP secrets, so admin only and audited; qemu arguments for vhost-scsi" },
    Route { method: "DELETE", path: "/v1/volumes/{name}", op: Op::VolumeDelete, role: Admin, body: B::None, query: &["force"], errors: &[404, 409, 423, 500, 503],
        summary: "Delete a volume (force=true while a host is connected)" },
    Route { method: "GET", path: "/v1/volumes/{name}/snapshots", op: Op::Snapshots, role: Reader, body: B::None, query: &["bytes"], errors: &[404, 423, 500, 503],
        summary: "A volume's snapshots" },
    Route { method: "POST", path: "/v1/volumes/{name}/snapshots", op: Op::SnapshotCreate, role: Admin, body: B::Snapshot, query: &[], errors: &[404, 409, 413, 423, 500, 503],
        summary: "Snapshot a volume (a name, or a UTC time stamp)" },
    Route { method: "DELETE", path: "/v1/volumes/{name}/snapshots/{snapshot}", op: Op::SnapshotDelete, role: Admin, body: B::None, query: &[], errors: &[404, 409, 423, 500, 503],
        summary: "Destroy a snapshot (refused while a clone depends on it)" },
    Route { method: "POST", path: "/v1/volumes/{name}/snapshots/{snapshot}/clone", op: Op::VolumeClone, role: Admin, body: B::Clone, query: &[], errors: &[404, 409, 413, 423, 500, 503],
        summary: "A new volume from a snapshot: its own identity and export, sharing unchanged blocks" },
    Route { method: "POST", path: "/v1/volumes/{name}/resize", op: Op::VolumeResize, role: Admin, body: B::Resize, query: &[], errors: &[404, 409, 413, 423, 500, 503],
        summary: "Grow a volume; connected NVMe hosts are told the new size" },
    Route { method: "POST", path: "/v1/volumes/reconcile", op: Op::Reconcile, role: Admin, body: B::None, query: &["dry_run"], errors: &[423, 500, 503],
        summary: "One reconcile pass now, as volumed runs them (dry_run=true: the plan only, nothing changed)" },
    Route { method: "POST", path: "/v1/volumes/adopt-spool", op: Op::AdoptSpool, role: Admin, body: B::None, query: &[], errors: &[409, 423, 500, 503],
        summary: "Accept the spool as it is now (after restoring or moving it): volumes whose specs are missing from it are then deleted" },
    Route { method: "GET", path: "/v1/iostat", op: Op::Iostat, role: Reader, body: B::None, query: &["interval"], errors: &[500, 503],
        summary: "I/O per volume over `interval` seconds (default 1, at most 5): IOPS, throughput, latency, busy (storagectl volume iostat --json)" },
    Route { method: "GET", path: "/v1/export", op: Op::Export, role: Admin, body: B::None, query: &[], errors: &[423, 500, 503],
        summary: "Every volume's identity in nvmetcli's JSON layout, for a new box (storagectl export save); hosts by NQN, no secrets; admin only" },
    Route { method: "POST", path: "/v1/volumes/{name}/rollback", op: Op::Rollback, role: Admin, body: B::Rollback, query: &[], errors: &[404, 409, 413, 423, 500, 503],
        summary: "Roll a volume back to a snapshot (refused while a host is connected unless force)" },
    Route { method: "GET", path: "/v1/update", op: Op::Update, role: Reader, body: B::None, query: &[], errors: &[500],
        summary: "The A/B slots (abupdate status --json), the health check's verdict now, and the progress of an install" },
    Route { method: "POST", path: "/v1/update", op: Op::UpdateInstall, role: Admin, body: B::Stream, query: &["allow_downgrade", "direct"], errors: &[408, 409, 500, 503],
        summary: "Install an update streamed as the body: its header is checked (signature, architecture, profile, epoch, version) before a byte is kept, its payload's checksum before a byte is written to the inactive slot; tried on the next boot" },
    Route { method: "POST", path: "/v1/reboot", op: Op::Reboot, role: Admin, body: B::None, query: &[], errors: &[500],
        summary: "Reboot the box (services stopped and the pool exported first), e.g. into an installed update" },
    Route { method: "GET", path: "/v1/bundle", op: Op::Bundle, role: Admin, body: B::None, query: &[], errors: &[409, 500],
        summary: "A support bundle (application/gzip: a tar of status, health, drives, zpool status, history and events, volumes and their nvmet export, logs, versions; no key, CHAP secret or recovery key) (storagectl bundle); admin only and audited" },
    Route { method: "GET", path: "/v1/audit", op: Op::Audit, role: Admin, body: B::None, query: &["lines"], errors: &[500, 503],
        summary: "The audit journal: every change asked of the API, who asked and the result" },
    Route { method: "GET", path: "/v1/openapi.json", op: Op::OpenApi, role: Reader, body: B::None, query: &[], errors: &[],
        summary: "This document" },
    Route { method: "GET", path: "/metrics", op: Op::Metrics, role: Reader, body: B::None, query: &[], errors: &[503],
        summary: "Prometheus text format: storaged's gauges and the API's own counters" },
];

/// An error sent to the client: an HTTP status, a stable code scripts can test, and a message
/// that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, code, message)
    }
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl From<volumes::Error> for ApiError {
    fn from(e: volumes::Error) -> ApiError {
        use volumes::Error as E;
        let msg = platform::chain(&e);
        let (status, code) = match &e {
            E::Spec(_) => (400, "invalid_spec"),
            E::BadName(_) => (400, "invalid_name"),
            E::Unsupported(_) => (400, "unsupported"),
            E::Import { .. } => (400, "import_refused"),
            E::NoVolume(_) => (404, "not_found"),
            E::Exists(_) => (409, "exists"),
            E::Busy(_) => (409, "volume_busy"),
            E::Refused(_) => (409, "refused"),
            E::VaultLocked(_) => (423, "vault_locked"),
            E::PoolAbsent(_) => (503, "pool_absent"),
            _ => (500, "failed"),
        };
        ApiError::new(status, code, msg)
    }
}

impl From<support::Error> for ApiError {
    fn from(e: support::Error) -> ApiError {
        let msg = platform::chain(&e);
        match e {
            support::Error::Busy(_) => ApiError::new(409, "busy", msg),
            _ => ApiError::new(500, "failed", msg),
        }
    }
}

impl From<storaged::Error> for ApiError {
    fn from(e: storaged::Error) -> ApiError {
        let msg = platform::chain(&e);
        match e {
            storaged::Error::Refused(_) => ApiError::new(409, "refused", msg),
            _ => ApiError::new(500, "failed", msg),
        }
    }
}

impl From<storage::vault::VaultError> for ApiError {
    fn from(e: storage::vault::VaultError) -> ApiError {
        use storage::vault::VaultError as V;
        let msg = platform::chain(&e);
        let (status, code) = match e {
            V::BadRecoveryKey(_) => (400, "invalid_recovery_key"),
            V::WrongRecoveryKey => (400, "wrong_recovery_key"),
            V::NoRecovery(_) => (409, "no_recovery_key"),
            V::NotThisVault(_) => (409, "not_this_vault"),
            V::Unproven(_) => (409, "unproven_vault"),
            V::Locked(_) => (423, "vault_locked"),
            _ => (500, "failed"),
        };
        ApiError::new(status, code, msg)
    }
}

impl From<abupdate::error::Error> for ApiError {
    fn from(e: abupdate::error::Error) -> ApiError {
        use abupdate::error::Error as E;
        let msg = platform::chain(&e);
        let (status, code) = match e {
            E::Artifact { .. } => (400, "update_refused"),
            E::State(_) => (409, "update_not_allowed"),
            E::Busy(_) => (409, "update_busy"),
            _ => (500, "failed"),
        };
        ApiError::new(status, code, msg)
    }
}

/// Path parameters, by name.
pub type Params = Vec<(&'static str, String)>;

/// The route for `method path`: 404 when no path matches, 405 when only the method differs.
pub fn find(method: &str, path: &str) -> Result<(&'static Route, Params), ApiError> {
    let segs: Vec<&str> = path.split('/').collect();
    let mut path_known = false;
    for r in ROUTES {
        let pat: Vec<&str> = r.path.split('/').collect();
        if pat.len() != segs.len() {
            continue;
        }
        let mut params = Params::new();
        let ok = pat
            .iter()
            .zip(&segs)
            .all(|(p, s)| match p.strip_prefix('{') {
                Some(n) => {
                    params.push((n.trim_end_matches('}'), (*s).to_string()));
                    !s.is_empty()
                }
                None => p == s,
            });
        if !ok {
            continue;
        }
        if r.method == method {
            return Ok((r, params));
        }
        path_known = true;
    }
    if path_known {
        Err(ApiError::new(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        ))
    } else {
        Err(ApiError::new(
            404,
            "no_such_endpoint",
            format!("no endpoint {path}; GET /v1/openapi.json lists them"),
        ))
    }
}

/// A request's query: the flags set and the numbers given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub flags: Vec<&'static str>,
    pub numbers: Vec<(&'static str, f64)>,
}

/// The query string's parameters, each as its route takes it; anything unknown, a flag not
/// `true`/`false`, or a number that is not a finite number is refused.
pub fn query(route: &Route, query: Option<&str>) -> Result<Query, ApiError> {
    let mut q = Query::default();
    for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
        let Some(known) = route.query.iter().find(|q| **q == k) else {
            return Err(ApiError::bad(
                "unknown_parameter",
                format!(
                    "unknown query parameter `{k}`; this endpoint takes: {}",
                    route.query.join(", ")
                ),
            ));
        };
        if NUMBERS.contains(known) {
            match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n >= 0.0 => q.numbers.push((*known, n)),
                _ => {
                    return Err(ApiError::bad(
                        "invalid_parameter",
                        format!("`{k}` must be a number"),
                    ))
                }
            }
            continue;
        }
        match v {
            "true" | "1" => q.flags.push(*known),
            "false" | "0" => {}
            _ => {
                return Err(ApiError::bad(
                    "invalid_parameter",
                    format!("`{k}` must be true or false"),
                ))
            }
        }
    }
    Ok(q)
}

fn status_text(s: u16) -> &'static str {
    match s {
        200 => "Done",
        400 => "Bad input: malformed JSON, an unknown field or parameter, an invalid name",
        401 => "No client certificate (the TLS handshake fails first)",
        403 => "The certificate's role may not do this",
        404 => "No such volume, snapshot or endpoint",
        408 => "The body stopped arriving: nothing was kept",
        409 => "A conflict: the volume exists, is busy with another operation, or the change is refused as it stands",
        413 => "The body is larger than the limit",
        423 => "The vault is locked: recover it first",
        429 => "Too many requests from this client: slow down",
        500 => "The operation failed: the message says why",
        503 => "The pool is not imported",
        _ => "",
    }
}

fn body_schema(b: Body) -> Option<Value> {
    let s = match b {
        Body::None => return None,
        Body::Spec => {
            json!({"type": "object", "required": ["name", "size", "vm", "transport"], "additionalProperties": false,
            "properties": {"name": {"type": "string"}, "size": {"type": "string"}, "vm": {"type": "string"},
                "transport": {"type": "string", "enum": ["nvme-tcp", "nvme-loop", "vhost-scsi"]},
                "provisioning": {"type": "string", "enum": ["thin", "thick"]}, "volblocksize": {"type": "string"},
                "encrypted": {"type": "boolean"}, "vcpus": {"type": "integer"},
                "source": {"type": "object"}, "snapshots": {"type": "array"}}})
        }
        Body::Snapshot => {
            json!({"type": "object", "additionalProperties": false, "properties": {"name": {"type": "string"}}})
        }
        Body::Rollback => {
            json!({"type": "object", "required": ["snapshot"], "additionalProperties": false,
            "properties": {"snapshot": {"type": "string"}, "destroy_newer": {"type": "boolean"}, "force": {"type": "boolean"}}})
        }
        Body::Replace => {
            json!({"type": "object", "required": ["old", "new"], "additionalProperties": false,
            "properties": {"old": {"type": "string"}, "new": {"type": "string"}}})
        }
        Body::Drives => {
            json!({"type": "object", "required": ["drives"], "additionalProperties": false,
            "properties": {"drives": {"type": "array", "items": {"type": "string"}}}})
        }
        Body::Maintain => {
            json!({"type": "object", "required": ["op"], "additionalProperties": false,
            "properties": {"op": {"type": "string", "enum": ["scrub-now", "scrub-stop", "trim-now"]}}})
        }
        Body::Member => {
            json!({"type": "object", "required": ["member"], "additionalProperties": false,
            "properties": {"member": {"type": "string"}}})
        }
        Body::Selftest => {
            json!({"type": "object", "additionalProperties": false,
            "properties": {"drives": {"type": "array", "items": {"type": "string"}},
                "kind": {"type": "string", "enum": ["short", "long"]}}})
        }
        Body::Recover => {
            json!({"type": "object", "required": ["recovery_key"], "additionalProperties": false,
            "properties": {"recovery_key": {"type": "string"}, "accept_unproven": {"type": "boolean"}}})
        }
        Body::Stream => json!({"type": "string", "contentMediaType": "application/octet-stream"}),
        Body::Resize => {
            json!({"type": "object", "required": ["size"], "additionalProperties": false,
            "properties": {"size": {"type": "string"}}})
        }
        Body::Clone => {
            json!({"type": "object", "required": ["name"], "additionalProperties": false,
            "properties": {"name": {"type": "string"}, "vm": {"type": "string"},
                "transport": {"type": "string", "enum": ["nvme-tcp", "nvme-loop", "vhost-scsi", "vhost-nvme"]}}})
        }
    };
    Some(s)
}

/// The OpenAPI 3.1 document, generated from [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{'))
            .map(|n| json!({"name": n.trim_end_matches('}'), "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(r.query.iter().map(|q| {
            let t = if NUMBERS.contains(q) {
                "number"
            } else {
                "boolean"
            };
            json!({"name": q, "in": "query", "required": false, "schema": {"type": t}})
        }));
        let mut codes: Vec<u16> = vec![200, 400, 401, 403, 429];
        codes.extend(r.errors);
        codes.sort_unstable();
        codes.dedup();
        let responses: serde_json::Map<String, Value> = codes
            .iter()
            .map(|c| {
                let v = if *c == 200 {
                    let ct = if r.op == Op::Metrics { "text/plain; version=0.0.4" } else { "application/json" };
                    let mut content = json!({ct: {}});
                    if r.text() {
                        content["text/plain"] = json!({});
                    }
                    json!({"description": status_text(*c), "content": content})
                } else {
                    json!({"description": status_text(*c), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
                };
                (c.to_string(), v)
            })
            .collect();
        let mut op = json!({
            "operationId": r.name(),
            "summary": r.summary,
            "x-role": r.role.as_str(),
            "responses": responses,
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(s) = body_schema(r.body) {
            let ct = if r.body == Body::Stream {
                "application/octet-stream"
            } else {
                "application/json"
            };
            op["requestBody"] =
                json!({"required": r.body != Body::Snapshot, "content": {ct: {"schema": s}}});
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "eve-storage management API", "version": "1",
            "description": "Mutual TLS only: a client certificate from the admin CA (role admin) or the reader CA (role reader)."},
        "security": [{"mtls": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"mtls": {"type": "mutualTLS"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}
        }
    })
}

/// `v` as JSON, or a 500 that says why it could not be.
pub(crate) fn value<T: serde::Serialize>(v: T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(500, "failed", e.to_string()))
}

/// A body that does not match its route's shape: the server decodes by the same table.
pub(crate) fn shape() -> ApiError {
    ApiError::new(500, "failed", "the request body does not match its route")
}

/// A 500 carrying the whole error chain.
pub(crate) fn failed(e: &dyn std::error::Error) -> ApiError {
    ApiError::new(500, "failed", platform::chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_routes_and_params_and_refuses_the_rest() {
        let (r, p) = find("GET", "/v1/volumes/web").unwrap();
        assert_eq!(r.op, Op::VolumeShow);
        assert_eq!(p, vec![("name", "web".to_string())]);
        assert_eq!(
            find("DELETE", "/v1/volumes/web").unwrap().0.op,
            Op::VolumeDelete
        );
        assert_eq!(find("PUT", "/v1/volumes/web").unwrap_err().status, 405);
        assert_eq!(find("GET", "/v1/volumes/").unwrap_err().status, 404);
        assert_eq!(find("GET", "/v1/volumes/a/b").unwrap_err().status, 404);
        assert_eq!(find("GET", "/v2/status").unwrap_err().status, 404);
        assert_eq!(find("GET", "/v1/status/").unwrap_err().status, 404);
    }

    #[test]
    fn every_change_is_admin_only() {
        for r in ROUTES {
            if r.mutates() {
                assert_eq!(r.role, Role::Admin, "{} {}", r.method, r.path);
            }
        }
    }

    #[test]
    fn query_parameters_are_strict() {
        let (r, _) = find("DELETE", "/v1/volumes/x").unwrap();
        assert_eq!(query(r, Some("force=true")).unwrap().flags, vec!["force"]);
        assert!(query(r, Some("force=false")).unwrap().flags.is_empty());
        assert_eq!(
            query(r, Some("force=yes")).unwrap_err().code,
            "invalid_parameter"
        );
        assert_eq!(
            query(r, Some("recursive=true")).unwrap_err().code,
            "unknown_parameter"
        );
        let (r, _) = find("GET", "/v1/iostat").unwrap();
        assert_eq!(
            query(r, Some("interval=2.5")).unwrap().numbers,
            vec![("interval", 2.5)]
        );
        for bad in [
            "interval=x",
            "interval=NaN",
            "interval=inf",
            "interval=-1",
            "interval",
        ] {
            assert_eq!(
                query(r, Some(bad)).unwrap_err().code,
                "invalid_parameter",
                "{bad}"
            );
        }
    }

    /// The committed document is what the code generates (regenerate: `mgmtd openapi >
    /// docs/api/openapi.json`).
    #[test]
    fn committed_openapi_matches_the_code() {
        let p =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.json");
        let committed = std::fs::read_to_string(&p).expect("docs/api/openapi.json");
        let now = serde_json::to_string_pretty(&openapi()).unwrap() + "\n";
        assert!(
            committed == now,
            "{} is stale: run `cargo run -p mgmt --bin mgmtd -- openapi > docs/api/openapi.json`",
            p.display()
        );
    }

    #[test]
    fn volume_errors_map_to_statuses_that_mean_what_they_say() {
        use volumes::Error as E;
        assert_eq!(ApiError::from(E::NoVolume("x".into())).status, 404);
        assert_eq!(ApiError::from(E::Busy("x".into())).status, 409);
        assert_eq!(ApiError::from(E::VaultLocked("x".into())).status, 423);
        assert_eq!(ApiError::from(E::BadName("x".into())).status, 400);
        assert_eq!(ApiError::from(E::Exists("x".into())).code, "exists");
    }
}
