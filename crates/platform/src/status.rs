//! The state eve-init publishes in /run/eve-init/status.json, read by `eve-init status`, the
//! boot health check (abupdate) and tests. One schema: a field added here is seen by all readers,
//! and a reader of an older file gets defaults, not an error.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Status {
    pub slot: Option<String>,
    pub onboot: Vec<Step>,
    pub services: Vec<Service>,
    /// Bundles that could not be loaded, with the reason.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
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
#[serde(default)]
pub struct Service {
    pub name: String,
    pub pid: Option<i32>,
    pub state: String,
    pub starts: u32,
    pub last_exit: Option<i32>,
}

/// Where eve-init writes it, under the run root.
pub fn path(run: &std::path::Path) -> std::path::PathBuf {
    run.join("eve-init/status.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_an_older_file_reads_with_defaults() {
        let s = Status {
            slot: Some("A".into()),
            onboot: vec![Step {
                name: "storage-init".into(),
                exit: Some(0),
                ..Step::default()
            }],
            ..Status::default()
        };
        let back: Status = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let old: Status =
            serde_json::from_str(r#"{"onboot":[{"name":"x","exit":1}],"services":[]}"#).unwrap();
        assert_eq!((old.onboot[0].exit, old.slot), (Some(1), None));
    }
}
