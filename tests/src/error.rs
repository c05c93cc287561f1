//! Harness errors: each says which machine, what was being waited for and what the console showed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] platform::IoError),
    #[error(transparent)]
    Cmd(#[from] platform::CmdError),
    #[error("`{argv}` could not be started")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{machine}: timed out after {secs} s waiting for {what}; last console lines ({log}):\n{tail}")]
    Timeout {
        machine: String,
        what: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("{machine}: qemu exited ({status}) while waiting for {what}; last console lines ({log}):\n{tail}")]
    QemuExited {
        machine: String,
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{machine}: boot failed (console shows `{marker}`); last console lines ({log}):\n{tail}"
    )]
    BootFailed {
        machine: String,
        marker: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{machine}: agent: {msg}")]
    Agent { machine: String, msg: String },
    #[error("{machine}: `{cmd}` exited {status}\nstdout:\n{stdout}\nstderr:\n{stderr}")]
    Guest {
        machine: String,
        cmd: String,
        status: i32,
        stdout: String,
        stderr: String,
    },
    #[error("QMP {what}: {msg}")]
    Qmp { what: String, msg: String },
    #[error("{0}")]
    Spec(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
