//! The crate's one error type: every I/O error names its path, every command its argv.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    #[error("`{argv}` exited with {status}: {stderr}")]
    Command {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("what was written to {dev} reads back as sha256 {actual}, expected {expected}")]
    Readback {
        dev: String,
        expected: String,
        actual: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

pub trait IoContext<T> {
    fn at(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// `error: a: b: c` for a binary's one line on failure.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
