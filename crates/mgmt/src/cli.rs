//! The command lines of the crate's daemons (`mgmtd`, `eve-net`), in the library so the
//! manuals and completions built into the image come from the definitions they parse.

pub mod eve_net;
pub mod mgmtd;
