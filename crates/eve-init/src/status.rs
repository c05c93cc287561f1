//! The state init publishes in /run/eve-init/status.json for `eve-init status`, tests and health checks.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub slot: Option<String>,
    pub onboot: Vec<Step>,
    pub services: Vec<Service>,
    /// Bundles that could not be loaded, with the reason.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    /// Milliseconds since boot (CLOCK_BOOTTIME).
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
    /// Exit code, or 128+signal; None while running or when it could not start.
    pub exit: Option<i32>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Service {
    pub name: String,
    pub pid: Option<i32>,
    pub state: String,
    pub starts: u32,
    pub last_exit: Option<i32>,
}
