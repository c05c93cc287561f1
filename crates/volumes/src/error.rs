//! The crate's one error type: I/O errors name their path, commands their argv, specs their file
//! and field.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] platform::IoError),
    #[error("{path}: {msg}")]
    State { path: PathBuf, msg: String },
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Cmd(#[from] platform::CmdError),
    #[error(transparent)]
    Plan(#[from] ktarget::PlanError),
    #[error("configfs")]
    Cfs(#[from] ktarget::CfsError),
    #[error("volume `{0}` does not exist")]
    NoVolume(String),
    #[error("volume `{0}` already exists")]
    Exists(String),
    /// Another operation holds this volume; nothing was changed (try again when it is done).
    #[error("volume `{0}` is busy with another operation; nothing was changed, try again")]
    Busy(String),
    #[error("volume name {0}")]
    BadName(String),
    #[error("{0}")]
    Refused(String),
    /// The spool or the state is not on the unlocked vault; nothing is read or written.
    #[error("vault locked: {0}")]
    VaultLocked(String),
    #[error("{0} is not supported by this kernel")]
    Unsupported(String),
    #[error("{dev} did not appear within {secs} s")]
    DeviceTimeout { dev: PathBuf, secs: u64 },
    #[error("{} did not appear within {secs} s: their exports are held, every other step was applied", .devs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))]
    LinksMissing { devs: Vec<PathBuf>, secs: u64 },
    #[error("{path}: {msg}")]
    Import { path: PathBuf, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
