//! The randomized fault campaign (`make campaign`): random operations on a development box,
//! a random fault at a random instant in each, and every invariant checked after recovery.
//! Each run is reproducible from its seed; results go to `results/campaign-*.json` and the
//! latest-run section of RELIABILITY.md.

pub mod guest;
pub mod model;
pub mod plan;
pub mod report;
pub mod rng;
pub mod run;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Harness(#[from] eve_vmtest::Error),
    #[error("guest: {0}")]
    Guest(String),
    #[error("setup: {0}")]
    Setup(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
