//! The one way an external tool is run: by absolute path, checked once per process, with argv,
//! exit status and stderr in every error. Key material reaches a tool through stdin, never argv.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of a tool's stderr (or log) kept in an error: the tail is where tools say what went wrong.
const TAIL_LINES: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("`{argv}` failed ({status}): {stderr}")]
    Failed {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("`{prog}` is not installed (no executable at that path)")]
    Missing { prog: String },
    #[error("`{argv}` could not be started")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}`: cannot create its log {}", path.display())]
    Log {
        argv: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{argv}`: unexpected output: {msg}")]
    Output { argv: String, msg: String },
    #[error("`{argv}` did not finish within {secs} s (killed)")]
    Timeout { argv: String, secs: u64 },
}

/// What a tool printed and how it ended, whatever the status (for tools such as smartctl,
/// whose exit bits report findings).
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// `exit status: 3`, `signal: 9 (SIGKILL)`.
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
enum Input {
    Null,
    /// Wiped when the command is dropped.
    Secret(zeroize::Zeroizing<Vec<u8>>),
    File(std::fs::File),
}

#[derive(Debug)]
enum Output {
    Capture,
    /// The tool's stdout is its progress: it goes to our stderr, live.
    Progress,
    /// stdout and stderr to a file, read back for the error (long builds).
    Log(PathBuf),
}

/// One invocation, built up and then run once.
#[derive(Debug)]
pub struct Cmd {
    prog: String,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
    input: Input,
    output: Output,
    timeout: Option<Duration>,
    /// Keep only the last this-many bytes of stdout (a history or a log: the newest matters).
    stdout_tail: Option<usize>,
}

/// `prog a b c`, as errors and logs show it.
pub fn render<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> String {
    let mut s = prog.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

static PRESENT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Whether `prog` is an executable file; asked of the filesystem once per process per tool, so a
/// missing tool is named as missing instead of as a failed start.
pub fn check(prog: &str) -> Result<(), CmdError> {
    if PRESENT.lock().map(|s| s.contains(prog)).unwrap_or(false) {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(prog) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            if let Ok(mut s) = PRESENT.lock() {
                s.insert(prog.to_string());
            }
            Ok(())
        }
        _ => Err(CmdError::Missing { prog: prog.into() }),
    }
}

impl Cmd {
    pub fn new(prog: &str) -> Cmd {
        Cmd {
            prog: prog.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            input: Input::Null,
            output: Output::Capture,
            timeout: None,
            stdout_tail: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, a: &[S]) -> Cmd {
        self.args
            .extend(a.iter().map(|x| x.as_ref().to_os_string()));
        self
    }

    pub fn cwd(mut self, d: &Path) -> Cmd {
        self.cwd = Some(d.to_path_buf());
        self
    }

    pub fn env(mut self, vars: &[(&str, String)]) -> Cmd {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.clone())));
        self
    }

    /// Feeds `data` on stdin; the copy kept here is wiped after use.
    pub fn secret_stdin(mut self, data: &[u8]) -> Cmd {
        self.input = Input::Secret(zeroize::Zeroizing::new(data.to_vec()));
        self
    }

    pub fn stdin_file(mut self, f: std::fs::File) -> Cmd {
        self.input = Input::File(f);
        self
    }

    /// The tool's stdout (its progress) goes to our stderr as it runs; its stderr is kept.
    pub fn progress(mut self) -> Cmd {
        self.output = Output::Progress;
        self
    }

    /// stdout and stderr to `log`; an error quotes the log's tail and names the file.
    pub fn log(mut self, log: &Path) -> Cmd {
        self.output = Output::Log(log.to_path_buf());
        self
    }

    /// Killed after `d`: for tools that hang on a failing device.
    pub fn timeout(mut self, d: Duration) -> Cmd {
        self.timeout = Some(d);
        self
    }

    pub fn argv(&self) -> String {
        render(&self.prog, &self.args)
    }

    /// Runs the tool to its end, whatever its status; only a tool that cannot start or does not
    /// finish in time is an error.
    /// Keeps only the last `max` bytes of stdout, read as it comes (memory stays bounded
    /// whatever the tool prints), from a line's start, after a `[first N bytes left out]` line.
    pub fn stdout_tail(mut self, max: usize) -> Cmd {
        self.stdout_tail = Some(max);
        self
    }

    pub fn finish(self) -> Result<Finished, CmdError> {
        let (code, status, stdout, stderr) = self.finish_raw()?;
        Ok(Finished {
            code,
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr,
        })
    }

    /// Runs the tool; anything but exit 0 is [`CmdError::Failed`]. Returns stdout as bytes (a
    /// tarball, an image).
    pub fn output_bytes(self) -> Result<Vec<u8>, CmdError> {
        let argv = self.argv();
        match self.finish_raw()? {
            (Some(0), _, stdout, _) => Ok(stdout),
            (_, status, _, stderr) => Err(CmdError::Failed {
                argv,
                status,
                stderr: stderr.trim().to_string(),
            }),
        }
    }

    /// Runs the tool; anything but exit 0 is [`CmdError::Failed`]. Returns stdout.
    pub fn output(self) -> Result<String, CmdError> {
        self.output_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// (exit code, status text, stdout, stderr or the log's tail on failure).
    fn finish_raw(self) -> Result<(Option<i32>, String, Vec<u8>, String), CmdError> {
        check(&self.prog)?;
        let argv = self.argv();
        let spawn_err = |source| CmdError::Spawn {
            argv: argv.clone(),
            source,
        };
        let mut c = Command::new(&self.prog);
        c.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        let secret = match self.input {
            Input::Null => {
                c.stdin(Stdio::null());
                None
            }
            Input::Secret(d) => {
                c.stdin(Stdio::piped());
                Some(d)
            }
            Input::File(f) => {
                c.stdin(Stdio::from(f));
                None
            }
        };
        match &self.output {
            Output::Capture => {
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            Output::Progress => {
                use std::os::fd::AsFd;
                let to_stderr = std::io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null());
                c.stdout(to_stderr).stderr(Stdio::piped());
            }
            Output::Log(p) => {
                let log_err = |source| CmdError::Log {
                    argv: argv.clone(),
                    path: p.clone(),
                    source,
                };
                let f = std::fs::File::create(p).map_err(log_err)?;
                let f2 = f.try_clone().map_err(log_err)?;
                c.stdout(f).stderr(f2);
            }
        }
        let mut child = c.spawn().map_err(spawn_err)?;
        if let (Some(d), Some(mut w)) = (secret, child.stdin.take()) {
            // A tool that exits before reading says why on stderr; that is the error reported.
            let _ = w.write_all(&d);
        }
        // The pipes are drained beside the wait, so a chatty tool cannot block on a full pipe.
        let out = drain(child.stdout.take(), self.stdout_tail);
        let err = drain(child.stderr.take(), Some(1 << 20));
        let status = match self.timeout {
            // The common case blocks in wait(2): no polling, no wakeups while a tool runs.
            None => child.wait().map_err(|source| CmdError::Spawn {
                argv: argv.clone(),
                source,
            })?,
            Some(t) => {
                let deadline = Instant::now() + t;
                loop {
                    match child.try_wait() {
                        Ok(Some(st)) => break st,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Ok(None) => {
                            let _ = child.kill();
                            // A process stuck in the kernel may never be reaped; the readers
                            // are left to end with it.
                            return Err(CmdError::Timeout {
                                argv,
                                secs: t.as_secs(),
                            });
                        }
                        Err(source) => return Err(CmdError::Spawn { argv, source }),
                    }
                }
            }
        };
        let stdout = out.join().unwrap_or_default();
        let mut stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        if !status.success() {
            stderr = match &self.output {
                Output::Log(p) => format!(
                    "{}\n(full log in {})",
                    tail(&std::fs::read_to_string(p).unwrap_or_default(), TAIL_LINES),
                    p.display()
                ),
                _ => tail(&stderr, TAIL_LINES),
            };
        }
        Ok((status.code(), status.to_string(), stdout, stderr))
    }
}

/// Reads `p` to its end; with `keep`, only its last `keep` bytes are kept.
fn drain<R: Read + Send + 'static>(
    p: Option<R>,
    keep: Option<usize>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let Some(mut p) = p else { return b };
        match keep {
            None => {
                let _ = p.read_to_end(&mut b);
            }
            Some(max) => {
                let mut chunk = vec![0u8; 64 << 10];
                let mut dropped = 0u64;
                loop {
                    match p.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            b.extend_from_slice(&chunk[..n]);
                            // Trimmed in bulk, so the copying stays linear.
                            if b.len() > max.saturating_mul(2) {
                                let cut = b.len() - max;
                                b.drain(..cut);
                                dropped += cut as u64;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                if b.len() > max {
                    let cut = b.len() - max;
                    b.drain(..cut);
                    dropped += cut as u64;
                }
                // What was left out is said, and the tail starts at a line's start.
                if dropped > 0 {
                    let line = b.iter().position(|&c| c == b'\n').map_or(0, |i| i + 1);
                    b.drain(..line);
                    let mut head =
                        format!("[first {} bytes left out]\n", dropped + line as u64).into_bytes();
                    head.append(&mut b);
                    b = head;
                }
            }
        }
        b
    })
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `prog args...`, stdout on exit 0.
pub fn run<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> Result<String, CmdError> {
    Cmd::new(prog).args(args).output()
}

/// [`run`], feeding `stdin` when given (key material goes this way, never through argv).
pub fn run_stdin<S: AsRef<OsStr>>(
    prog: &str,
    args: &[S],
    stdin: Option<&[u8]>,
) -> Result<String, CmdError> {
    let c = Cmd::new(prog).args(args);
    match stdin {
        Some(d) => c.secret_stdin(d),
        None => c,
    }
    .output()
}

/// A long tool whose progress (its stdout) goes to our stderr, reading `stdin` from a file.
pub fn run_progress<S: AsRef<OsStr>>(
    prog: &str,
    args: &[S],
    stdin: Option<std::fs::File>,
) -> Result<(), CmdError> {
    let c = Cmd::new(prog).args(args).progress();
    match stdin {
        Some(f) => c.stdin_file(f),
        None => c,
    }
    .output()
    .map(|_| ())
}

/// A tool that may hang on a failing device, killed after `timeout`; the caller judges the
/// exit status.
pub fn run_timed<S: AsRef<OsStr>>(
    prog: &str,
    args: &[S],
    timeout: Duration,
) -> Result<Finished, CmdError> {
    Cmd::new(prog).args(args).timeout(timeout).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_output_keeps_its_tail_only() {
        let f = Cmd::new("/bin/sh")
            .args(&["-c", "seq 1 200000"])
            .stdout_tail(1000)
            .finish()
            .unwrap();
        assert!(f.stdout.starts_with("[first "), "{}", &f.stdout[..40]);
        assert!(f.stdout.len() <= 1000 + 40, "{}", f.stdout.len());
        assert!(
            f.stdout.ends_with("199999\n200000\n"),
            "{}",
            &f.stdout[900..]
        );
        // The kept part starts at a line: after the note, whole numbers only.
        let second = f.stdout.lines().nth(1).unwrap();
        assert!(second.parse::<u32>().is_ok_and(|n| n > 190_000), "{second}");
    }

    #[test]
    fn a_failure_carries_argv_status_and_stderr() {
        let e = run("/bin/sh", &["-c", "echo out; echo bad >&2; exit 3"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/bin/sh -c echo out; echo bad >&2; exit 3` failed (exit status: 3): bad"
        );
    }

    #[test]
    fn stdout_comes_back_and_stdin_is_fed_without_argv() {
        let out = Cmd::new("/bin/cat").secret_stdin(b"key").output().unwrap();
        assert_eq!(out, "key");
        assert_eq!(run("/bin/echo", &["a", "b"]).unwrap(), "a b\n");
    }

    #[test]
    fn a_missing_tool_is_named_as_missing() {
        let e = run("/nonexistent/zpool", &["list"]).unwrap_err();
        assert!(matches!(e, CmdError::Missing { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("/nonexistent/zpool` is not installed"));
    }

    #[test]
    fn a_hung_tool_is_killed_and_any_status_is_a_finish() {
        let t = std::time::Instant::now();
        let e = Cmd::new("/bin/sleep")
            .arg("30")
            .timeout(Duration::from_millis(300))
            .finish()
            .unwrap_err();
        assert!(matches!(e, CmdError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        let f = Cmd::new("/bin/sh")
            .args(&["-c", "echo x; exit 4"])
            .timeout(Duration::from_secs(10))
            .finish()
            .unwrap();
        assert_eq!((f.code, f.stdout.as_str()), (Some(4), "x\n"));
    }

    #[test]
    fn a_logged_failure_quotes_the_log_tail_and_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("build.log");
        let e = Cmd::new("/bin/sh")
            .args(&["-c", "for i in $(seq 1 100); do echo line$i; done; exit 1"])
            .log(&log)
            .output()
            .unwrap_err()
            .to_string();
        assert!(e.contains("line100") && !e.contains("line50\n"), "{e}");
        assert!(e.contains(&format!("full log in {}", log.display())), "{e}");
    }

    #[test]
    fn a_chatty_tool_does_not_block_on_a_full_pipe() {
        let out = run(
            "/bin/sh",
            &["-c", "head -c 1000000 /dev/zero | tr '\\0' a; echo e >&2"],
        )
        .unwrap();
        assert_eq!(out.len(), 1_000_000);
    }
}
