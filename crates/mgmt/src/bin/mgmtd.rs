//! mgmtd: the management API daemon (see the crate's documentation), and `mgmtd openapi`, which
//! prints the API's OpenAPI document.
//!
//! Exit codes: 0 done (openapi); 1 it could not start (a CA file, the server identity, the
//! port); 2 usage.

use clap::Parser;
use mgmt::cli::mgmtd::{Cli, Cmd};
use mgmt::tls::{Identity, Trust};
use platform::IoContext;
use std::process::ExitCode;
use std::sync::Arc;

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "eve-storage".into())
}

/// The kept identity when the vault holding it is open; one for this run otherwise (said).
fn identity(cli: &Cli) -> mgmt::Result<Identity> {
    let roots = platform::Roots::host();
    let d = &cli.identity_dir;
    match volumes::guard::vault_ready(&volumes::cmd::SYSTEM, &roots.mountinfo(), d, d, &cli.pool) {
        Ok(()) => Identity::load_or_create(d, &hostname()),
        Err(e) => {
            platform::log(format!(
                "{} is not on the unlocked vault ({}): a server key for this run only; its fingerprint changes when mgmtd next starts",
                d.display(),
                platform::chain(&e)
            ));
            Identity::generate(&hostname())
        }
    }
}

fn serve(cli: &Cli) -> mgmt::Result<()> {
    let trust = Trust::load(&cli.admin_ca, &cli.reader_ca)?;
    let id = identity(cli)?;
    let tls = trust.server_config(&id)?;
    let mut host =
        mgmt::backend::Host::new(&cli.pool, cli.volumes_config.clone(), cli.metrics.clone());
    host.update_spool = cli.update_spool.clone();
    // An upload cut short by a power cut or a kill: nothing in it is worth keeping.
    let stale = cli.update_spool.join(mgmt::update::SPOOL_FILE);
    if std::fs::remove_file(&stale).is_ok() {
        platform::log(format!(
            "{}: an interrupted upload's spool; removed",
            stale.display()
        ));
    }
    let backend = Arc::new(host);
    let audit =
        storaged::audit::Journal::at(storaged::audit::path(std::path::Path::new("/"), &cli.pool));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
        .at("start", "tokio runtime")?;
    // eve-net says when the file is refused; the defaults apply here too.
    let (net, _) = netconf::NetPolicy::load(&cli.network);
    let listen = cli
        .listen
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], net.api_port)));
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.at("listen", listen.to_string())?;
        platform::log(format!(
            "serving https://{} (TLS 1.3, client certificates from {} and {}); server certificate SHA-256 {}",
            listen,
            cli.admin_ca.display(),
            cli.reader_ca.display(),
            id.fingerprint()
        ));
        let server = mgmt::server::Server::new(trust, tls, backend, audit, Default::default());
        if let Some(m) = &net.metrics {
            // A metrics listener that cannot bind is said; the API serves regardless.
            match tokio::net::TcpListener::bind(m.listen).await {
                Ok(l) => {
                    platform::log(format!("serving http://{}/metrics (plain HTTP, GET /metrics only)", m.listen));
                    tokio::spawn(server.clone().serve_metrics(l));
                }
                Err(e) => platform::log(format!("metrics listener {}: {e}; not serving it", m.listen)),
            }
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .at("listen for", "SIGTERM")?;
        // On SIGTERM or SIGINT no new request is taken; changes already running finish and
        // write their outcome before the runtime (and the process) ends.
        tokio::select! {
            _ = server.serve(listener) => {}
            _ = tokio::signal::ctrl_c() => platform::log("stopping (SIGINT)"),
            _ = term.recv() => platform::log("stopping (SIGTERM): changes already running finish first"),
        }
        Ok(())
    })
}

fn main() -> ExitCode {
    platform::log::set_name("mgmtd");
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Openapi) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&mgmt::api::openapi()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Some(Cmd::Serve) | None => match serve(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                platform::log(platform::chain(&e));
                ExitCode::FAILURE
            }
        },
    }
}
