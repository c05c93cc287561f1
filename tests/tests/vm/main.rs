//! The VM tier as one test binary, so that `--test-threads=2` keeps two guests running from the
//! first test to the last (separate binaries run one after another and leave a core idle while
//! a binary's last test runs). libtest starts tests in name order: the longest, the A/B update
//! scenarios, sort first so that no long test starts at the end.

mod ab_update;
mod boot;
mod common;
mod production;
mod secureboot;
mod storage;
mod volumes;
