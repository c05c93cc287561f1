//! Storage bring-up for the appliance: which drives exist, what each may be used for, and why.
//! (Issue #3; the pool, encryption and datasets build on this.)

pub mod apply;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod datasets;
pub mod dbx;
pub mod discover;
pub mod error;
pub mod floor;
pub mod gptops;
pub mod host;
pub mod init;
pub mod mounts;
pub mod nv;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod realhost;
pub mod status;
pub mod tpm;
pub mod tpmerr;
pub mod vault;
pub mod zfs;
