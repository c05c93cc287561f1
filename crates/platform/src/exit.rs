//! How a command failed, told apart the same way by every tool's exit code, by the JSON error a
//! tool prints with `--json`, and by the management API: one [`Kind`] per failure, each with one
//! exit code and one stable code string. Documented in the README ("Exit codes"); scripts rely on
//! them, so a number never changes meaning.

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The operation ran and failed (a command, an I/O error): the message says why.
    Failed,
    /// The request was malformed: a usage error, a bad name, an invalid spec.
    BadInput,
    /// What it names does not exist.
    NotFound,
    /// Refused as things stand (in use, busy, exists, a policy or a check says no); the message
    /// gives the reason and, where there is one, the override.
    Refused,
    /// The vault is locked: recover it first.
    VaultLocked,
    /// The pool is not imported.
    PoolAbsent,
}

/// `status` and `health`: the command worked and what it shows is degraded (a pool not ONLINE, a
/// critical alert), as `zpool status -x` tells a script.
pub const DEGRADED: u8 = 7;

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Failed,
        Kind::BadInput,
        Kind::NotFound,
        Kind::Refused,
        Kind::VaultLocked,
        Kind::PoolAbsent,
    ];

    /// The process exit code (2 is also what clap exits with on a usage error).
    pub const fn exit_code(self) -> u8 {
        match self {
            Kind::Failed => 1,
            Kind::BadInput => 2,
            Kind::NotFound => 3,
            Kind::Refused => 4,
            Kind::VaultLocked => 5,
            Kind::PoolAbsent => 6,
        }
    }

    /// The stable code in a JSON error, `{"error": {"code": ..., "message": ...}}`.
    pub const fn code(self) -> &'static str {
        match self {
            Kind::Failed => "failed",
            Kind::BadInput => "bad_input",
            Kind::NotFound => "not_found",
            Kind::Refused => "refused",
            Kind::VaultLocked => "vault_locked",
            Kind::PoolAbsent => "pool_absent",
        }
    }

    /// The kind an HTTP status of the management API stands for.
    pub const fn of_http(status: u16) -> Kind {
        match status {
            400 | 413 => Kind::BadInput,
            404 => Kind::NotFound,
            403 | 409 | 429 => Kind::Refused,
            423 => Kind::VaultLocked,
            503 => Kind::PoolAbsent,
            _ => Kind::Failed,
        }
    }
}

/// An error that knows its [`Kind`].
pub trait Classify {
    fn kind(&self) -> Kind;
    /// The code a JSON error carries: the kind's, or a finer one an API answer named.
    fn code(&self) -> &str {
        self.kind().code()
    }
}

/// A command that failed, an I/O error: the operation failed.
impl Classify for crate::CmdError {
    fn kind(&self) -> Kind {
        Kind::Failed
    }
}

impl Classify for crate::IoError {
    fn kind(&self) -> Kind {
        Kind::Failed
    }
}

/// The JSON error a tool prints on stdout with `--json`: the API's shape.
pub fn json_error(code: &str, message: &str) -> String {
    let esc: String = message
        .chars()
        .flat_map(|c| match c {
            '"' => "\\\"".chars().collect::<Vec<_>>(),
            '\\' => "\\\\".chars().collect(),
            '\n' => "\\n".chars().collect(),
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect();
    format!("{{\"error\": {{\"code\": \"{code}\", \"message\": \"{esc}\"}}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_exit_code_and_code() {
        let mut exits: Vec<u8> = Kind::ALL.iter().map(|k| k.exit_code()).collect();
        exits.push(DEGRADED);
        exits.push(0);
        let n = exits.len();
        exits.sort_unstable();
        exits.dedup();
        assert_eq!(exits.len(), n, "exit codes collide");
        assert_eq!(exits, vec![0, 1, 2, 3, 4, 5, 6, 7]);
        let mut codes: Vec<&str> = Kind::ALL.iter().map(|k| k.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Kind::ALL.len());
    }

    #[test]
    fn http_statuses_map_to_the_kinds_they_mean() {
        for (s, k) in [
            (400, Kind::BadInput),
            (403, Kind::Refused),
            (404, Kind::NotFound),
            (409, Kind::Refused),
            (423, Kind::VaultLocked),
            (500, Kind::Failed),
            (503, Kind::PoolAbsent),
        ] {
            assert_eq!(Kind::of_http(s), k, "{s}");
        }
    }

    #[test]
    fn the_json_error_is_valid_json_whatever_the_message() {
        let m = "a \"quoted\"\\path\nnext\u{1}";
        let v: serde_json::Value = serde_json::from_str(&json_error("refused", m)).unwrap();
        assert_eq!(v["error"]["code"], "refused");
        assert_eq!(v["error"]["message"], m);
    }
}
