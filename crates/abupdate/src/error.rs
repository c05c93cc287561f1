//! The crate's one error type: every I/O error names its path, every command its argv.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] platform::IoError),
    #[error("{path}")]
    Env {
        path: PathBuf,
        #[source]
        source: crate::grubenv::EnvError,
    },
    #[error("no readable slot state on the ESP: {0}")]
    NoState(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{path}")]
    Artifact {
        path: String,
        #[source]
        source: crate::artifact::ArtifactError,
    },
    #[error("{0}")]
    Device(String),
    /// A call to a box's management API (`--remote`).
    #[cfg(feature = "remote")]
    #[error(transparent)]
    Remote(mgmt_client::Error),
    /// Another install holds the install lock.
    #[error("{0}")]
    Busy(String),
    /// The health check failed (`abupdate health`): exit 7, as `storagectl status` does for a
    /// degraded pool, so the boot's service can tell it from an error of abupdate's own.
    #[error("{0}")]
    Unhealthy(String),
    #[error(transparent)]
    Cmd(#[from] platform::CmdError),
    #[error("what was written to {dev} reads back as sha256 {actual}, expected {expected}")]
    Readback {
        dev: String,
        expected: String,
        actual: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

pub use platform::IoContext;
