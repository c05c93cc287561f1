//! The recovery key typed on a terminal is not echoed: `storagectl vault recover` run on a
//! pseudo-terminal (util-linux's `script`, essential on Debian), the key typed once the prompt
//! is up; nothing of it may come back.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` under `script` (a pseudo-terminal) and waits for the recovery-key prompt: the
/// child, its output so far, and the pipe its output goes on arriving on.
fn at_the_prompt(cmd: &str) -> (std::process::Child, Vec<u8>, std::process::ChildStdout) {
    let mut c = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = c.stdout.take().unwrap();
    let mut seen = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("recovery key: ") {
        assert!(start.elapsed() < Duration::from_secs(20), "no prompt");
        let n = out.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "ended before the prompt: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // Typed after the prompt: what the terminal echoes before the program turns echo off is
    // the terminal's, not the program's.
    std::thread::sleep(Duration::from_millis(300));
    (c, seen, out)
}

#[test]
fn the_recovery_key_is_read_without_echo() {
    let cmd = format!("{} vault recover", env!("CARGO_BIN_EXE_storagectl"));
    let (mut c, mut seen, mut out) = at_the_prompt(&cmd);
    c.stdin
        .take()
        .unwrap()
        .write_all(b"cbdefghi-TYPEDSECRET\n")
        .unwrap();
    out.read_to_end(&mut seen).unwrap();
    c.wait().unwrap();
    let text = String::from_utf8_lossy(&seen);
    assert!(!text.contains("TYPEDSECRET"), "echoed: {text}");
    assert!(text.contains("not a recovery key"), "{text}");
}

#[test]
fn ctrl_c_at_the_prompt_gives_the_terminal_its_echo_back() {
    // The shell traps SIGINT (a trap, not an ignore: storagectl starts with the default
    // disposition, so Ctrl-C would kill it as it stands) and goes on to show the terminal's
    // settings afterwards.
    let cmd = format!(
        "trap 'echo INT' INT; {} vault recover; echo STTY; stty -a",
        env!("CARGO_BIN_EXE_storagectl")
    );
    let (mut c, mut seen, mut out) = at_the_prompt(&cmd);
    let mut input = c.stdin.take().unwrap();
    input.write_all(b"cbdef\x03").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(input);
    out.read_to_end(&mut seen).unwrap();
    c.wait().unwrap();
    let text = String::from_utf8_lossy(&seen);
    let stty = text
        .split("STTY")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    let flags: Vec<&str> = stty.split_whitespace().collect();
    assert!(
        flags.contains(&"echo") && !flags.contains(&"-echo"),
        "echo not restored: {stty}"
    );
}
