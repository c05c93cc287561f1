//! The management API of a production box: HTTPS with TLS 1.3 and client certificates only, two
//! roles taken from which operator CA signed the client's certificate, one route table that
//! drives both dispatch and the committed OpenAPI document, an audit journal of every change on
//! the pool, and limits on what one client can cost. The endpoints call the same library code
//! as `storagectl` (storaged, volumes), through the [`backend::Backend`] seam.

pub mod api;
pub mod backend;
pub mod cli;
pub mod limit;
pub mod net;
pub mod server;
pub mod stream;
pub mod testing;
pub mod tls;
pub mod update;

/// The crate's one error type, for setting the daemon up; a request's own failures are
/// [`api::ApiError`]s, sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] platform::IoError),
    #[error("{path}: {msg}")]
    Pem {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("{what}: {msg}")]
    Tls { what: &'static str, msg: String },
    #[error("server identity: {0}")]
    Identity(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
