//! What stops storage-init's bring-up: a tool that failed, a partition table that could not be
//! written, a device link that never appeared, a plan that refuses. Each carries what it was
//! doing; everything short of "no pool" is logged and bring-up goes on.

use crate::cmd::CmdError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Gpt(#[from] crate::gptops::GptError),
    #[error(transparent)]
    Probe(#[from] crate::probe::ProbeError),
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {what} did not appear within {secs} s")]
    Timeout {
        path: PathBuf,
        what: &'static str,
        secs: u64,
    },
    #[error("{0}")]
    Parse(String),
    /// What a plan needed could not be read (said as the tool said it).
    #[error("{0}")]
    Unreadable(String),
}
