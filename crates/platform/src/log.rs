//! One logger for every binary: a line on stderr behind the running program's name, so library
//! code shared by several programs (disk replacement runs in storaged and in storagectl) says who
//! is speaking. Writing never fails and never panics: init logs through it too, and a closed
//! stderr must not take PID 1 down.

use std::io::Write;
use std::sync::OnceLock;

static NAME: OnceLock<String> = OnceLock::new();

/// Names the program in every line; called first thing in `main`. Without it the name is
/// argv[0]'s file name (PID 1 is started as `/init`, so eve-init names itself).
pub fn set_name(name: &str) {
    let _ = NAME.set(name.to_string());
}

fn name() -> &'static str {
    NAME.get_or_init(|| {
        std::env::args_os()
            .next()
            .as_deref()
            .and_then(|a| std::path::Path::new(a).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "eve".into())
    })
}

/// `<program>: <msg>` on stderr.
pub fn log(msg: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{}: {msg}", name());
}

/// `<program>: warning: <msg>`: something is wrong and the program goes on (eve-init's log files
/// mark the line WARN).
pub fn warn(msg: impl std::fmt::Display) {
    log(format!("warning: {msg}"));
}

/// `<program>: error: <msg>`: an operation failed (marked ERROR).
pub fn error(msg: impl std::fmt::Display) {
    log(format!("error: {msg}"));
}
