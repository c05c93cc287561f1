//! The crate's one error type: I/O errors name their path, commands their argv, specs their file
//! and field.

use std::path::PathBuf;

/// A volume spec that does not validate: the file, the field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {msg}")]
pub struct SpecError {
    pub file: String,
    pub field: String,
    pub msg: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] platform::IoError),
    #[error("{path}: {msg}")]
    State { path: PathBuf, msg: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
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
    /// Nothing is read or written without the pool.
    #[error("pool {0} is not imported; `storagectl status` says why")]
    PoolAbsent(String),
}

impl platform::exit::Classify for Error {
    fn kind(&self) -> platform::exit::Kind {
        use platform::exit::Kind;
        match self {
            Error::Spec(_) | Error::BadName(_) | Error::Unsupported(_) => Kind::BadInput,
            Error::NoVolume(_) => Kind::NotFound,
            // An import a check turned away (a backing file, a path outside the import
            // directory, too large) is refused with its reason, like any other refusal.
            Error::Exists(_) | Error::Busy(_) | Error::Refused(_) | Error::Import { .. } => {
                Kind::Refused
            }
            Error::VaultLocked(_) => Kind::VaultLocked,
            Error::PoolAbsent(_) => Kind::PoolAbsent,
            Error::Io(_)
            | Error::State { .. }
            | Error::Cmd(_)
            | Error::Plan(_)
            | Error::Cfs(_)
            | Error::DeviceTimeout { .. }
            | Error::LinksMissing { .. } => Kind::Failed,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
