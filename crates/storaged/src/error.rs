//! storaged's one error: what failed (a tool with its argv and stderr, a file with its path, a
//! state file that does not parse) or what was refused, classified for the exit codes.

/// The crate's one error type: I/O errors name their path, commands their argv.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] platform::IoError),
    #[error("{path}: {msg}")]
    State {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error(transparent)]
    Cmd(#[from] platform::CmdError),
    #[error("{0}")]
    Refused(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl platform::exit::Classify for Error {
    fn kind(&self) -> platform::exit::Kind {
        match self {
            Error::Refused(_) => platform::exit::Kind::Refused,
            Error::Io(_) | Error::State { .. } | Error::Cmd(_) => platform::exit::Kind::Failed,
        }
    }
}
