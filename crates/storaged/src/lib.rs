//! Pool maintenance on a schedule: scrub every N days and trim every M days, one operation at a
//! time, as TrueNAS does. The pool's own records (`zpool status -j`: the last scan, each device's
//! last trim) say what was done; a small history kept on the pool covers what a later resilver
//! overwrites. It also watches health: drives' own reports, pool state, space and quotas,
//! as alerts in a journal on the pool and a Prometheus textfile. `storaged` runs both;
//! `storagectl status` and `storagectl health` show the same views.

pub mod alert;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod disks;
pub mod error;
pub mod gather;
pub mod health;
pub mod iostat;
pub mod journal;
pub mod maint;
pub mod metrics;
pub mod pool;
pub mod record;
pub mod selftest;
pub mod smart;
pub mod status;
pub mod views;

pub use error::{Error, Result};
pub use views::{health_view, maintain_now, now, policy, view};
