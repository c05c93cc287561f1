//! What an alert is: a condition that holds now, with its severity. Shared by the pure health
//! judgement that raises alerts and the journal that remembers them.

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Notice,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A condition that holds now. `key` names what it is about and stays the same while it lasts
/// (`disk:<stable id>:temperature`, `pool:persist:capacity`), so the journal can tell a new
/// alert from one that goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Alert {
    pub key: String,
    pub severity: Severity,
    pub message: String,
}
