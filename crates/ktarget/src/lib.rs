//! The kernel's storage targets as plain data: nvmet (NVMe over Fabrics) and LIO (iblock
//! backstores behind vhost-scsi). Each follows observe -> diff -> apply over configfs, which no
//! maintained crate writes, so this crate does.

pub mod cfs;
pub mod lio;
pub mod nvmet;
pub mod nvmetcli;

pub use cfs::{Cfs, CfsError, HostFs, PlanError};
