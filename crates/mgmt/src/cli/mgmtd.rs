//! The command line of `mgmtd.rs` (its clap types, here so that the manuals and completions
//! built into the image are made from the same definitions the binary parses).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(version, about = "The management API: HTTPS with client certificates")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// Address and port to serve on [default: every address, the port network.toml names or
    /// 8443].
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// The network settings (CONFIG partition): the API's port and the plain-HTTP metrics
    /// listener, if any.
    #[arg(long, default_value = netconf::PATH)]
    pub network: PathBuf,
    /// PEM file of the CA(s) whose certificates carry the admin role.
    #[arg(long, default_value = "/etc/eve/mgmt/admin-ca.pem")]
    pub admin_ca: PathBuf,
    /// PEM file of the CA(s) whose certificates carry the reader role.
    #[arg(long, default_value = "/etc/eve/mgmt/reader-ca.pem")]
    pub reader_ca: PathBuf,
    /// Where the box's server key and certificate are kept: on the vault, used only while it
    /// is unlocked.
    #[arg(long, default_value = "/persist/config/mgmt")]
    pub identity_dir: PathBuf,
    #[arg(long, default_value = "persist")]
    pub pool: String,
    /// storaged's Prometheus textfile.
    #[arg(long, default_value = "/run/metrics/eve-storage.prom")]
    pub metrics: PathBuf,
    /// Volume settings (default: /etc/volumes.toml layered as `storagectl volume` reads it).
    #[arg(long)]
    pub volumes_config: Option<PathBuf>,
    /// Where an uploaded update is kept until its checksum is checked: a dataset of the pool
    /// (the image's policy makes it). Without it, uploads stream into the inactive slot.
    #[arg(long, default_value = "/persist/update")]
    pub update_spool: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Serve (the default).
    Serve,
    /// Print the OpenAPI document (docs/api/openapi.json).
    Openapi,
}
