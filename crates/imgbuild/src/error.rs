//! The builder's error type: every failure names the step, file or command involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] platform::IoError),
    #[error(transparent)]
    Cmd(#[from] platform::CmdError),
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

pub use platform::IoContext;
