//! The VM tier as one test binary, so that `--test-threads=2` keeps two guests running from the
//! first test to the last (separate binaries run one after another and leave a core idle while
//! a binary's last test runs). libtest starts tests in name order, so the modules are named to
//! start the longest first (measured: A/B updates 12-15 min each, volumes 5-10, verified boot
//! about 10, storage 3-11, boot 1-3, production 2) and the short ones fill the end.

mod ab_update;
#[path = "volumes.rs"]
mod b_volumes;
#[path = "secureboot.rs"]
mod c_secureboot;
#[path = "trust.rs"]
mod c_trust;
#[path = "storage.rs"]
mod d_storage;
#[path = "boot.rs"]
mod e_boot;
#[path = "production.rs"]
mod f_production;

mod common;
