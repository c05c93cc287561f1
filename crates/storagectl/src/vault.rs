//! `storagectl vault`: unlock with the recovery key after a board or TPM change, or make a new
//! recovery key.

use crate::cli::VaultCmd;
use crate::output::{emit, fail};
use std::process::ExitCode;

/// The terminal's settings while echo is off, for [`restore_and_die`].
static SAVED: std::sync::OnceLock<nix::libc::termios> = std::sync::OnceLock::new();

/// Ctrl-C (or a hangup or kill) at the prompt: the terminal gets its echo back before the
/// signal ends the process as it would have (only async-signal-safe calls here).
extern "C" fn restore_and_die(sig: nix::libc::c_int) {
    if let Some(t) = SAVED.get() {
        // SAFETY: tcsetattr, signal and raise are async-signal-safe; `t` is a valid termios.
        unsafe {
            nix::libc::tcsetattr(0, nix::libc::TCSANOW, t);
        }
    }
    // SAFETY: as above.
    unsafe {
        nix::libc::signal(sig, nix::libc::SIG_DFL);
        nix::libc::raise(sig);
    }
}

/// The recovery key, one line on stdin (wiped when dropped); on failure, what to exit with. On a
/// terminal it is asked for on stderr and not echoed, as a password is.
pub fn read_recovery_key() -> Result<zeroize::Zeroizing<String>, ExitCode> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    // Echo off while the key is typed; put back whatever happens, a signal included.
    let saved = tcgetattr(&stdin).ok();
    // The dispositions this process had, put back once the key is read; one the parent set
    // to "ignore" stays ignored.
    let mut before = Vec::new();
    if let Some(t) = &saved {
        let _ = SAVED.set(nix::libc::termios::from(t.clone()));
        let act = SigAction::new(
            SigHandler::Handler(restore_and_die),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for sig in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            // SAFETY: the handler only makes async-signal-safe calls.
            if let Ok(old) = unsafe { sigaction(sig, &act) } {
                if matches!(old.handler(), SigHandler::SigIgn) {
                    // SAFETY: putting back what was there.
                    let _ = unsafe { sigaction(sig, &old) };
                } else {
                    before.push((sig, old));
                }
            }
        }
        eprint!("recovery key: ");
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    let r = stdin.read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    for (sig, old) in before {
        // SAFETY: putting back the disposition the process had before the prompt.
        let _ = unsafe { sigaction(sig, &old) };
    }
    match r {
        Ok(_) => Ok(line),
        Err(e) => {
            eprintln!("storagectl: reading the recovery key on stdin: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

pub fn vault(pool: &str, cmd: VaultCmd) -> ExitCode {
    use storage::vault;
    match cmd {
        VaultCmd::Recover {
            json,
            accept_unproven,
        } => {
            let line = match read_recovery_key() {
                Ok(l) => l,
                Err(code) => return code,
            };
            let rk = match vault::RecoveryKey::parse(&line) {
                Ok(k) => k,
                Err(e) => return fail(&e),
            };
            let r = storage::realhost::recover_here(pool, &rk, accept_unproven);
            emit(r, json, |v| v.render())
        }
        VaultCmd::RecoveryKey { json } => match storage::realhost::new_recovery_key_here(pool) {
            Ok(rk) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"recovery_key": rk.display().to_string()})
                    );
                } else {
                    println!("{}", rk.display());
                }
                eprintln!("storagectl: new recovery key for {pool}/vault; the vault key was rotated, so the old recovery key and every old seal or copy of them open nothing; the new key is not stored anywhere");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}
