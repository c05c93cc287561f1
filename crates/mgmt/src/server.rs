//! The HTTPS server: a TLS 1.3 handshake that needs a client certificate from an operator CA,
//! then HTTP/1.1 requests routed by [`crate::api::ROUTES`], each checked for its role, rate and
//! size, run on a blocking thread through the [`Backend`], answered as JSON, and (when it asks
//! for a change) written to the audit journal before the answer goes out.

use crate::api::{self, ApiError, Op};
use crate::backend::{self, Backend};
use crate::limit::{Limits, Rate};
use crate::tls::{Client, Trust};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storaged::audit::{self, Journal};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Default)]
struct Stats {
    requests: Mutex<BTreeMap<u16, u64>>,
    handshakes_refused: AtomicU64,
    connections_refused: AtomicU64,
}

pub struct Server {
    pub trust: Trust,
    pub tls: Arc<rustls::ServerConfig>,
    pub backend: Arc<dyn Backend>,
    pub audit: Journal,
    pub limits: Limits,
    rate: Mutex<Rate>,
    per_address: Arc<crate::limit::PerAddress>,
    stats: Stats,
    /// /proc, for the daemon's own memory figure.
    proc: std::path::PathBuf,
    /// Audit line ids: unique within a run, increasing across runs (seeded from the clock).
    next_id: AtomicU64,
    /// Blocking threads readers' reads may hold at once; changes are not counted here.
    reads: Arc<tokio::sync::Semaphore>,
    /// The same for admins' reads, so readers cannot starve them.
    admin_reads: Arc<tokio::sync::Semaphore>,
    /// Refused-handshake lines: (window start, shown, not shown).
    quiet: Mutex<(Instant, u32, u64)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("audit", &self.audit)
            .field("limits", &self.limits)
            .finish()
    }
}

/// An answer: JSON, the metrics, or the text the CLI prints.
enum Answer {
    Json(Value),
    Metrics(String),
    Plain(String),
    File(&'static str, Vec<u8>),
}

fn respond(status: u16, ct: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(ct) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

impl Server {
    pub fn new(
        trust: Trust,
        tls: Arc<rustls::ServerConfig>,
        backend: Arc<dyn Backend>,
        audit: Journal,
        limits: Limits,
    ) -> Arc<Server> {
        Arc::new(Server {
            trust,
            tls,
            backend,
            audit,
            rate: Mutex::new(Rate::new(limits.per_second, limits.burst)),
            per_address: Arc::default(),
            proc: platform::Roots::host().proc,
            next_id: AtomicU64::new(storaged::now().saturating_mul(1_000_000)),
            reads: Arc::new(tokio::sync::Semaphore::new(4)),
            admin_reads: Arc::new(tokio::sync::Semaphore::new(4)),
            quiet: Mutex::new((Instant::now(), 0, 0)),
            limits,
            stats: Stats::default(),
        })
    }

    /// Serves `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let acceptor = TlsAcceptor::from(self.tls.clone());
        let slots = Arc::new(tokio::sync::Semaphore::new(self.limits.connections));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    platform::log(format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(place) = self.per_address.take(peer.ip(), self.limits.per_address) else {
                self.stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                self.stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            };
            let me = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _held = (permit, place);
                me.connection(acceptor, stream, peer).await;
            });
        }
    }

    /// Serves `GET /metrics` alone, in plain HTTP, on `listener` (the address the network
    /// settings name): no certificate is asked, nothing else is answered, eight connections at
    /// most, each with the request time limit.
    pub async fn serve_metrics(self: Arc<Self>, listener: TcpListener) {
        let slots = Arc::new(tokio::sync::Semaphore::new(8));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                self.stats
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _held = permit;
                let limit = Duration::from_secs(me.limits.request_secs);
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let me = me.clone();
                    async move {
                        let r = if req.method() == hyper::Method::GET
                            && req.uri().path() == "/metrics"
                        {
                            let b = me.backend.clone();
                            match tokio::task::spawn_blocking(move || b.metrics()).await {
                                Ok(Ok(mut t)) => {
                                    t.push_str(&me.own_metrics());
                                    respond(
                                        200,
                                        "text/plain; version=0.0.4; charset=utf-8",
                                        t.into_bytes(),
                                    )
                                }
                                Ok(Err(e)) => respond(
                                    e.status,
                                    "application/json",
                                    serde_json::to_vec_pretty(&e.body()).unwrap_or_default(),
                                ),
                                Err(e) => respond(500, "text/plain", e.to_string().into_bytes()),
                            }
                        } else {
                            let e = ApiError::new(404, "no_such_endpoint", "this listener serves GET /metrics only; the API is on its HTTPS port");
                            respond(
                                404,
                                "application/json",
                                serde_json::to_vec_pretty(&e.body()).unwrap_or_default(),
                            )
                        };
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = tokio::time::timeout(
                    limit * 3,
                    hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limit)
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), svc),
                )
                .await;
            });
        }
    }

    async fn connection(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
    ) {
        let limit = Duration::from_secs(self.limits.request_secs);
        let tls = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.stats
                    .handshakes_refused
                    .fetch_add(1, Ordering::Relaxed);
                self.refusal(format!("{peer}: TLS handshake refused: {e}"));
                return;
            }
            Err(_) => {
                self.stats
                    .handshakes_refused
                    .fetch_add(1, Ordering::Relaxed);
                self.refusal(format!(
                    "{peer}: TLS handshake not finished within {} s",
                    limit.as_secs()
                ));
                return;
            }
        };
        let Some(client) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| self.trust.client(c))
        else {
            return;
        };
        let me = self.clone();
        let svc = hyper::service::service_fn(move |req| {
            let me = me.clone();
            let client = client.clone();
            async move { Ok::<_, std::convert::Infallible>(me.handle(&client, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limit)
            .max_buf_size(64 << 10)
            .serve_connection(TokioIo::new(tls), svc);
        if let Err(e) = conn.await {
            if !e.is_incomplete_message() {
                platform::log(format!("{peer}: {e}"));
            }
        }
    }

    async fn handle(
        self: &Arc<Self>,
        client: &Client,
        req: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let route = api::find(&method, &path).ok().map(|(r, _)| r);
        let mut recorded = false;
        let (parts, body) = req.into_parts();
        let mut body = Some(body);
        let answer = self.answer(client, &parts, &mut body, &mut recorded).await;
        // A streamed body refused before its operation read it (role, rate, parameters): read
        // and drop it (within limits) before answering, so the client, still sending, reads
        // the answer instead of a reset connection.
        if let (Err(_), Some(b), true) = (
            &answer,
            body.take(),
            route.is_some_and(|r| r.body == api::Body::Stream),
        ) {
            crate::stream::drain(b, crate::stream::Limits::from(&self.limits)).await;
        }
        let status = match &answer {
            Ok(_) => 200,
            Err(e) => e.status,
        };
        if let Ok(mut m) = self.stats.requests.lock() {
            *m.entry(status).or_default() += 1;
        }
        // A change that ran wrote its own lines; one refused before it ran is on record too (who
        // tried what), except a client over its rate, which would only flood the journal.
        if route.is_some_and(|r| r.audited()) && !recorded && status != 429 {
            let mut e = self.entry(client, &method, &path, None);
            e.status = status;
            if let Err(x) = &answer {
                e.code = Some(x.code.to_string());
                e.message = Some(x.message.clone());
            }
            if let Err(x) = self.audit.append(&e) {
                platform::log(format!("audit journal: {}", platform::chain(&x)));
            }
        }
        if status >= 400 || route.is_some_and(|r| r.audited()) {
            let what = answer
                .as_ref()
                .err()
                .map(|e| format!(" {}: {}", e.code, e.message))
                .unwrap_or_default();
            platform::log(format!(
                "{} ({}) {method} {} -> {status}{what}",
                client.subject,
                client.role.as_str(),
                short(&path, 256)
            ));
        }
        match answer {
            Ok(Answer::Json(v)) => respond(
                200,
                "application/json",
                serde_json::to_vec_pretty(&v).unwrap_or_default(),
            ),
            Ok(Answer::Metrics(t)) => respond(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                t.into_bytes(),
            ),
            Ok(Answer::Plain(t)) => respond(200, "text/plain; charset=utf-8", t.into_bytes()),
            Ok(Answer::File(ct, b)) => respond(200, ct, b),
            Err(e) => respond(
                e.status,
                "application/json",
                serde_json::to_vec_pretty(&e.body()).unwrap_or_default(),
            ),
        }
    }

    /// Logs a refused handshake: every one while they are few, then one line in ten seconds
    /// with how many were not shown, so a flood of them cannot flood the console and the logs.
    fn refusal(&self, line: String) {
        let Ok(mut q) = self.quiet.lock() else { return };
        let now = Instant::now();
        let (since, shown, hidden) = &mut *q;
        if now.duration_since(*since) >= Duration::from_secs(10) {
            if *hidden > 0 {
                platform::log(format!("{hidden} more TLS handshakes refused in the last {} s (counted in eve_mgmt_tls_handshakes_refused_total)", now.duration_since(*since).as_secs()));
            }
            (*since, *shown, *hidden) = (now, 0, 0);
        }
        if *shown < 5 {
            *shown += 1;
            platform::log(line);
        } else {
            *hidden += 1;
        }
    }

    /// An audit line for `client`'s request, status 0 (filled in by the caller).
    fn entry(
        &self,
        client: &Client,
        method: &str,
        path: &str,
        detail: Option<String>,
    ) -> audit::Entry {
        let t = storaged::now();
        audit::Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            time: t,
            when: audit::rfc3339(t),
            subject: client.subject.clone(),
            fingerprint: client.fingerprint.clone(),
            role: client.role.as_str().into(),
            method: method.into(),
            path: short(path, 256),
            status: 0,
            code: None,
            message: None,
            detail,
        }
    }

    async fn answer(
        self: &Arc<Self>,
        client: &Client,
        req: &hyper::http::request::Parts,
        body_in: &mut Option<Incoming>,
        recorded: &mut bool,
    ) -> Result<Answer, ApiError> {
        let allowed = self
            .rate
            .lock()
            .map(|mut r| r.allow(&client.fingerprint, Instant::now()))
            .unwrap_or(false);
        if !allowed {
            return Err(ApiError::new(
                429,
                "rate_limited",
                format!(
                    "more than {} requests a second from this certificate; slow down",
                    self.limits.per_second
                ),
            ));
        }
        let (route, params) = api::find(req.method.as_str(), req.uri.path())?;
        if client.role < route.role {
            return Err(ApiError::new(
                403,
                "forbidden",
                format!(
                    "{} {} needs the {} role; this certificate ({}) is a {}",
                    route.method,
                    route.path,
                    route.role.as_str(),
                    client.subject,
                    client.role.as_str()
                ),
            ));
        }
        let query = req.uri.query().map(str::to_string);
        let flags = api::query(route, query.as_deref())?;
        // Text, as the CLI prints it, for a client that asks for it and prefers it to JSON.
        let text = route.text()
            && req
                .headers
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.starts_with("text/plain"));
        let path = req.uri.path().to_string();
        let mut stream = None;
        let body = match route.body {
            api::Body::None => Bytes::new(),
            // Handed to the operation as it arrives (an update is larger than any buffer).
            api::Body::Stream => {
                stream = body_in.take();
                Bytes::new()
            }
            _ => match body_in.take() {
                Some(b) => self.read_body(b).await?,
                None => Bytes::new(),
            },
        };
        match route.op {
            Op::Whoami => {
                return serde_json::to_value(client)
                    .map(Answer::Json)
                    .map_err(|e| ApiError::new(500, "failed", e.to_string()))
            }
            Op::OpenApi => return Ok(Answer::Json(api::openapi())),
            Op::Audit => {
                let j = self.audit.clone();
                let n = flags
                    .numbers
                    .iter()
                    .find(|(k, _)| *k == "lines")
                    .map_or(1000, |(_, v)| (*v as usize).min(10_000));
                return tokio::task::spawn_blocking(move || j.tail(n))
                    .await
                    .map_err(|e| ApiError::new(500, "failed", e.to_string()))?
                    .map(|t| {
                        if text {
                            Answer::Plain(storaged::audit::render(&t))
                        } else {
                            Answer::Json(serde_json::json!({"entries": t}))
                        }
                    })
                    .map_err(|e| ApiError::new(503, "audit_unavailable", platform::chain(&e)));
            }
            Op::Metrics => {
                let b = self.backend.clone();
                let mut text = tokio::task::spawn_blocking(move || b.metrics())
                    .await
                    .map_err(|e| ApiError::new(500, "failed", e.to_string()))??;
                text.push_str(&self.own_metrics());
                return Ok(Answer::Metrics(text));
            }
            _ => {}
        }
        let (decoded, feed) = match stream {
            Some(incoming) => {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let r = Box::new(crate::stream::Receiver::new(rx));
                (
                    backend::Decoded::Stream(crate::stream::StreamBody::new(r)),
                    Some((incoming, tx)),
                )
            }
            None => (backend::decode(route.body, &body)?, None),
        };
        drop(body);
        // Reads share a few threads per role, so readers cannot hold every one while an admin
        // waits.
        let _read_slot = if route.mutates() {
            None
        } else {
            let slots = match client.role {
                crate::tls::Role::Admin => &self.admin_reads,
                crate::tls::Role::Reader => &self.reads,
            };
            Some(slots.clone().try_acquire_owned().map_err(|_| {
                ApiError::new(503, "busy", "too many reads at once; try again in a moment")
            })?)
        };
        let b = self.backend.clone();
        let op = route.op;
        let mutates = route.mutates();
        // A change is on record before it runs (refused, 503, when it cannot be), and its outcome
        // is written by the thread that ran it: a client that hangs up does not stop the change,
        // nor its record.
        let audit = if route.audited() {
            let detail = short(
                &format!(
                    "{}{decoded:?}",
                    query.map(|q| format!("?{q} ")).unwrap_or_default()
                ),
                1024,
            );
            let e = self.entry(client, route.method, &path, Some(detail));
            let mut started = e.clone();
            started.code = Some("started".into());
            let j = self.audit.clone();
            tokio::task::spawn_blocking(move || j.append(&started))
                .await
                .map_err(|e| ApiError::new(500, "failed", e.to_string()))?
                .map_err(|x| {
                    ApiError::new(
                        503,
                        "audit_unavailable",
                        format!(
                            "the audit journal cannot be written ({}); nothing was changed",
                            platform::chain(&x)
                        ),
                    )
                })?;
            *recorded = true;
            Some((self.audit.clone(), e))
        } else {
            None
        };
        let work = tokio::task::spawn_blocking(move || {
            let r = b.call(&backend::Request {
                op,
                params: &params,
                query: &flags,
                text,
                body: decoded,
            });
            if let Some((j, mut e)) = audit {
                e.detail = None;
                match &r {
                    Ok(_) => e.status = 200,
                    Err(x) => {
                        e.status = x.status;
                        e.code = Some(x.code.to_string());
                        e.message = Some(x.message.clone());
                    }
                }
                if let Err(x) = j.append(&e) {
                    platform::log(format!(
                        "audit journal: {} (outcome of request {})",
                        platform::chain(&x),
                        e.id
                    ));
                }
            }
            r
        });
        if let Some((incoming, tx)) = feed {
            tokio::spawn(crate::stream::feed(
                incoming,
                tx,
                crate::stream::Limits::from(&self.limits),
            ));
        }
        let joined = if mutates {
            // A change runs to its end: cutting the answer short would leave the caller unsure
            // whether it happened. Its outcome is in the audit journal either way.
            work.await
        } else {
            tokio::time::timeout(Duration::from_secs(self.limits.read_secs), work)
                .await
                .map_err(|_| {
                    ApiError::new(
                        504,
                        "timeout",
                        format!("no answer within {} s; try again", self.limits.read_secs),
                    )
                })?
        };
        joined
            .map_err(|e| ApiError::new(500, "failed", e.to_string()))?
            .map(|o| match o {
                backend::Out::Json(v) => Answer::Json(v),
                backend::Out::Text(t) => Answer::Plain(t),
                backend::Out::File(ct, b) => Answer::File(ct, b),
            })
    }

    async fn read_body(&self, req: Incoming) -> Result<Bytes, ApiError> {
        let max = self.limits.max_body;
        let too_big = || {
            ApiError::new(
                413,
                "body_too_large",
                format!("request bodies are limited to {max} bytes"),
            )
        };
        if hyper::body::Body::size_hint(&req).lower() > max as u64 {
            return Err(too_big());
        }
        let limit = Duration::from_secs(self.limits.request_secs);
        match tokio::time::timeout(limit, Limited::new(req, max).collect()).await {
            Err(_) => Err(ApiError::new(
                408,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    limit.as_secs()
                ),
            )),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(too_big())
            }
            Ok(Err(e)) => Err(ApiError::bad("bad_body", format!("request body: {e}"))),
            Ok(Ok(c)) => Ok(c.to_bytes()),
        }
    }

    /// The API's own counters, appended to storaged's textfile.
    fn own_metrics(&self) -> String {
        let mut t = String::from("# HELP eve_mgmt_requests_total API requests answered, by HTTP status.\n# TYPE eve_mgmt_requests_total counter\n");
        if let Ok(m) = self.stats.requests.lock() {
            for (code, n) in m.iter() {
                t.push_str(&format!("eve_mgmt_requests_total{{code=\"{code}\"}} {n}\n"));
            }
        }
        t.push_str(&format!(
            "# HELP eve_mgmt_tls_handshakes_refused_total TLS handshakes refused (no, foreign or expired client certificate) or not finished in time.\n# TYPE eve_mgmt_tls_handshakes_refused_total counter\neve_mgmt_tls_handshakes_refused_total {}\n# HELP eve_mgmt_connections_refused_total Connections closed unanswered because the connection limit was reached.\n# TYPE eve_mgmt_connections_refused_total counter\neve_mgmt_connections_refused_total {}\n",
            self.stats.handshakes_refused.load(Ordering::Relaxed),
            self.stats.connections_refused.load(Ordering::Relaxed)
        ));
        if let Some(rss) = resident_bytes(&self.proc) {
            t.push_str(&format!("# HELP eve_mgmt_resident_memory_bytes The API daemon's resident memory.\n# TYPE eve_mgmt_resident_memory_bytes gauge\neve_mgmt_resident_memory_bytes {rss}\n"));
        }
        t
    }
}

/// Resident memory of this process: `statm`'s second field, in pages.
fn resident_bytes(proc: &std::path::Path) -> Option<u64> {
    let statm = std::fs::read_to_string(proc.join("self/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// At most `max` characters of `s`, marked when cut.
fn short(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
