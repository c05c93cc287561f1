//! The builder's error type: every failure names the step, file or command involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {op}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("command `{argv}` failed ({status}): {stderr}")]
    Command {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("command `{argv}` could not be started")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("manifest {path}: {msg}")]
    Manifest { path: PathBuf, msg: String },
    #[error("package resolution: {0}")]
    Resolve(String),
    #[error("{path}: sha256 {actual} does not match the index ({expected})")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("update artifact {path}")]
    Update {
        path: PathBuf,
        #[source]
        source: abupdate::artifact::ArtifactError,
    },
    #[error("kernel modules: {0}")]
    Modules(String),
    #[error("disk layout: {0}")]
    Layout(String),
    #[error("GPT on {path}")]
    Gpt {
        path: PathBuf,
        #[source]
        source: gpt::GptError,
    },
    #[error("step `{step}` failed")]
    Step {
        step: String,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub trait IoContext<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.into(),
            source,
        })
    }
}
