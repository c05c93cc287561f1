//! Per-service log routing: each line goes to the console with the service's name, and to
//! /run/log/<name>.log; once /persist is mounted, to /persist/log/<name>.log as well, so logs
//! from before storage came up are not lost from the console and later ones survive reboots.
//!
//! In the files every line starts with its UTC time and a level (`2026-12-07T08:17:35Z WARN
//! volumed: ...`): `ERROR` or `WARN` when the program said `error:` or `warning:` after its name
//! (as `platform::log::error` and `warn` write) or panicked, else `INFO`. Each file is rotated
//! by size (`<name>.log.1` and so on, a bounded number kept), in /run (RAM) as in /persist. A line
//! that repeats (digits aside: counters, times) is written once; its repeats are summarised when
//! another line comes, and while it goes on at growing intervals ([`Limits::summary_first`],
//! doubling up to [`Limits::summary_max`]), so a wait that lasts a month leaves a few lines.

use platform::units::rfc3339;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How big the files grow and how often a repeat is summarised.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub run_bytes: u64,
    pub run_keep: usize,
    pub persist_bytes: u64,
    pub persist_keep: usize,
    pub summary_first: u64,
    pub summary_max: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // /run is RAM: a service's logs there stay under 1 MiB + 1 kept.
            run_bytes: 512 << 10,
            run_keep: 1,
            persist_bytes: 4 << 20,
            persist_keep: 4,
            summary_first: 120,
            summary_max: 3600,
        }
    }
}

/// One log file rotated by size: `path` is renamed `path.1` (`.1` to `.2`, and so on, the
/// oldest dropped) before a line would take it past `max`.
#[derive(Debug)]
struct Rotating {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
    keep: usize,
}

impl Rotating {
    /// A regular file only: /persist/log is on the pool's clear part, where someone holding the
    /// disk could plant a symlink (root's appends would land in its target), a FIFO (PID 1 would
    /// block opening it) or a directory. Those leave the file unwritten, never followed.
    fn open(path: PathBuf, max: u64, keep: usize) -> Rotating {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()));
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Rotating {
            path,
            file,
            size,
            max,
            keep,
        }
    }

    fn aside(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    fn rotate(&mut self) {
        self.file = None;
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(self.aside(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(self.aside(n), self.aside(n + 1));
            }
            let _ = std::fs::rename(&self.path, self.aside(1));
        }
        *self = Rotating::open(self.path.clone(), self.max, self.keep);
    }

    fn write(&mut self, text: &str) {
        let n = text.len() as u64;
        if self.size > 0 && self.size + n > self.max {
            self.rotate();
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(text.as_bytes()).is_ok() {
                self.size += n;
            }
        }
    }
}

/// A line that keeps coming: how often, since when, and when it was last summarised.
#[derive(Debug, Default)]
struct Repeat {
    key: String,
    line: String,
    /// Repeats since the line was last written or summarised.
    pending: u64,
    /// Repeats since it was first written.
    total: u64,
    since: u64,
    next_summary: u64,
    interval: u64,
}

#[derive(Debug)]
pub struct Sink {
    name: String,
    console: Option<File>,
    run_log: Option<Rotating>,
    persist_dir: PathBuf,
    persist_log: Option<Rotating>,
    last_check: Option<Instant>,
    limits: Limits,
    repeat: Repeat,
    clock: fn() -> u64,
}

/// `[name] line` as shown on the console.
pub fn console_line(name: &str, line: &str) -> String {
    format!("[{name}] {}\n", line.trim_end_matches(['\r', '\n']))
}

/// The level a program's line says it is (see the module's comment).
pub fn level_of(line: &str) -> &'static str {
    let msg = line.split_once(": ").map_or(line, |(_, m)| m);
    if msg.starts_with("error: ") || line.contains("panicked at") {
        "ERROR"
    } else if msg.starts_with("warning: ") {
        "WARN"
    } else {
        "INFO"
    }
}

/// What makes two lines the same message: the text with a counter in parentheses, `(2880)`, as
/// `(#)`. Nothing else is masked: lines that differ in an address, a name or a number of their
/// own are different lines, so no one can hide a line among look-alikes.
fn repeat_key(line: &str) -> String {
    let mut k = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find('(') {
        let (head, tail) = rest.split_at(i + 1);
        k.push_str(head);
        let n = tail.bytes().take_while(u8::is_ascii_digit).count();
        if n > 0 && tail[n..].starts_with(')') {
            k.push('#');
            rest = &tail[n..];
        } else {
            rest = tail;
        }
    }
    k.push_str(rest);
    k
}

/// Control characters shown, not obeyed: a line cannot move the console's cursor, clear it, or
/// forge a line of its own in the files.
fn printable(line: &str) -> String {
    line.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Lines longer than this are cut into pieces of it, so one endless line neither grows PID 1's
/// memory nor a file past its size.
const MAX_LINE: u64 = 4096;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sink {
    pub fn new(name: &str, console: Option<File>, run_dir: &Path, persist_root: &Path) -> Sink {
        Sink::with(name, console, run_dir, persist_root, Limits::default(), now)
    }

    pub fn with(
        name: &str,
        console: Option<File>,
        run_dir: &Path,
        persist_root: &Path,
        limits: Limits,
        clock: fn() -> u64,
    ) -> Sink {
        let _ = std::fs::create_dir_all(run_dir);
        Sink {
            name: name.to_string(),
            console,
            run_log: Some(Rotating::open(
                run_dir.join(format!("{name}.log")),
                limits.run_bytes,
                limits.run_keep,
            )),
            persist_dir: persist_root.join("log"),
            persist_log: None,
            last_check: None,
            limits,
            repeat: Repeat::default(),
            clock,
        }
    }

    fn persist_ready(&mut self) {
        if self.persist_log.is_some()
            || self
                .last_check
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.last_check = Some(Instant::now());
        let Some(root) = self.persist_dir.parent() else {
            return;
        };
        if root.exists()
            && crate::sys::is_mountpoint(root)
            && std::fs::create_dir_all(&self.persist_dir).is_ok()
        {
            self.persist_log = Some(Rotating::open(
                self.persist_dir.join(format!("{}.log", self.name)),
                self.limits.persist_bytes,
                self.limits.persist_keep,
            ));
        }
    }

    /// Writes one line to the console and the files, stamped now.
    fn emit(&mut self, line: &str, t: u64) {
        if let Some(c) = self.console.as_mut() {
            let _ = c.write_all(console_line(&self.name, line).as_bytes());
        }
        let stamped = format!("{} {} {line}\n", rfc3339(t), level_of(line));
        if let Some(f) = self.run_log.as_mut() {
            f.write(&stamped);
        }
        self.persist_ready();
        if let Some(f) = self.persist_log.as_mut() {
            f.write(&stamped);
        }
    }

    /// Says how often the repeated line came since it was last written or summarised.
    fn summarise(&mut self, t: u64) {
        let r = &self.repeat;
        if r.pending == 0 {
            return;
        }
        let text = format!(
            "[repeated {} times since {}, {} in all] {}",
            r.pending,
            rfc3339(r.since),
            r.total,
            r.line
        );
        self.repeat.pending = 0;
        self.emit(&text, t);
    }

    pub fn line(&mut self, line: &str) {
        let line = printable(line.trim_end_matches(['\r', '\n']));
        let t = (self.clock)();
        let key = repeat_key(&line);
        if key == self.repeat.key {
            let r = &mut self.repeat;
            r.pending += 1;
            r.total += 1;
            r.line = line;
            if t >= r.next_summary {
                r.interval = (r.interval * 2).min(self.limits.summary_max);
                r.next_summary = t + r.interval;
                self.summarise(t);
            }
            return;
        }
        self.summarise(t);
        self.repeat = Repeat {
            key,
            line: line.clone(),
            pending: 0,
            total: 0,
            since: t,
            next_summary: t + self.limits.summary_first,
            interval: self.limits.summary_first,
        };
        self.emit(&line, t);
    }

    /// Says what repeats are still unsaid (the output they came from closed).
    pub fn flush(&mut self) {
        let t = (self.clock)();
        self.summarise(t);
    }
}

/// Copies lines from `r` to `sink` until EOF (the process closed its output). A service's
/// stdout and stderr share one sink, so its files rotate and repeats count as one stream.
pub fn pump<R: Read>(sink: &std::sync::Mutex<Sink>, r: R) {
    let mut br = BufReader::new(r);
    let mut buf = Vec::new();
    while std::io::Read::by_ref(&mut br)
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        if let Ok(mut s) = sink.lock() {
            s.line(&String::from_utf8_lossy(&buf));
        }
        buf.clear();
    }
    if let Ok(mut s) = sink.lock() {
        s.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// 2026-12-07T08:00:00Z, moved by the tests that need time to pass.
    static NOW: AtomicU64 = AtomicU64::new(1_796_630_400);
    fn clock() -> u64 {
        NOW.load(Ordering::SeqCst)
    }

    fn body(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn lines_go_to_console_and_run_log_and_persist_only_once_mounted() {
        let t = tempfile::tempdir().unwrap();
        let console_path = t.path().join("console");
        let console = File::create(&console_path).unwrap();
        // A plain directory is not a mountpoint, so /persist logging stays off.
        let persist = t.path().join("persist");
        std::fs::create_dir_all(&persist).unwrap();
        let s = std::sync::Mutex::new(Sink::new(
            "zed",
            Some(console),
            &t.path().join("run/log"),
            &persist,
        ));
        pump(&s, &b"first\nsecond\r\npartial"[..]);
        assert_eq!(
            body(&console_path),
            "[zed] first\n[zed] second\n[zed] partial\n"
        );
        let log = body(&t.path().join("run/log/zed.log"));
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        for (l, want) in lines.iter().zip(["first", "second", "partial"]) {
            // `2026-12-07T08:00:00Z INFO first`
            assert_eq!(l.len(), 20 + 1 + 4 + 1 + want.len(), "{l}");
            assert!(l.as_bytes()[4] == b'-' && l.as_bytes()[19] == b'Z', "{l}");
            assert!(l.ends_with(&format!(" INFO {want}")), "{l}");
        }
        assert!(!persist.join("log").exists());
    }

    #[test]
    fn a_planted_symlink_fifo_or_directory_is_never_written_through() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("run/log");
        std::fs::create_dir_all(&run).unwrap();
        let target = t.path().join("vault-file");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, run.join("a.log")).unwrap();
        nix::unistd::mkfifo(&run.join("b.log"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::create_dir(run.join("c.log")).unwrap();
        for name in ["a", "b", "c"] {
            // Returns at once (no reader on the FIFO blocks nothing) and writes nowhere.
            let mut s = Sink::with(name, None, &run, t.path(), Limits::default(), clock);
            s.line("hostile");
        }
        assert_eq!(body(&target), "precious\n");
    }

    #[test]
    fn lines_are_shown_not_obeyed_cut_when_endless_and_folded_only_when_the_same() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("run/log");
        let s = std::sync::Mutex::new(Sink::with(
            "svc",
            None,
            &run,
            t.path(),
            Limits::default(),
            clock,
        ));
        let long = "y".repeat(10_000);
        let input = format!(
            "fake\r\n2026-01-01T00:00:00Z ERROR forged\x1b[2J\nfrom 10.9.0.2\nfrom 10.9.0.3\nwait (1)\nwait (2)\n{long}\n"
        );
        pump(&s, input.as_bytes());
        let log = body(&run.join("svc.log"));
        let lines: Vec<&str> = log.lines().collect();
        assert!(
            lines[1].ends_with("INFO 2026-01-01T00:00:00Z ERROR forged\\x1b[2J"),
            "{log}"
        );
        assert!(!log.contains('\x1b'), "{log}");
        // Addresses differ: both kept. The counter in parentheses: folded, then summarised.
        assert!(
            log.contains("INFO from 10.9.0.2") && log.contains("INFO from 10.9.0.3"),
            "{log}"
        );
        assert!(
            log.contains("INFO wait (1)") && !log.contains("INFO wait (2)"),
            "{log}"
        );
        assert!(log.contains("[repeated 1 times since "), "{log}");
        // The endless line comes in pieces of at most MAX_LINE.
        let pieces: Vec<&&str> = lines.iter().filter(|l| l.ends_with("yyyy")).collect();
        assert!(pieces.len() >= 2, "{log}");
        assert!(pieces.iter().all(|l| l.len() <= MAX_LINE as usize + 120));
    }

    #[test]
    fn levels_come_from_what_the_program_said() {
        assert_eq!(level_of("volumed: pass: 3 steps"), "INFO");
        assert_eq!(level_of("volumed: warning: the pool is 91% full"), "WARN");
        assert_eq!(level_of("storaged: error: textfile: EIO"), "ERROR");
        assert_eq!(
            level_of("thread 'main' panicked at src/main.rs:3:5:"),
            "ERROR"
        );
        assert_eq!(level_of("no colon at all"), "INFO");
    }

    #[test]
    fn files_rotate_by_size_and_keep_a_bounded_number() {
        let t = tempfile::tempdir().unwrap();
        let limits = Limits {
            run_bytes: 200,
            run_keep: 2,
            ..Limits::default()
        };
        let run = t.path().join("run/log");
        let mut s = Sink::with("svc", None, &run, t.path(), limits, clock);
        for i in 0..40 {
            // Each line differs in more than digits, so none is a repeat.
            s.line(&format!("line {i} {}", "x".repeat(i % 7)));
        }
        let log = run.join("svc.log");
        let sizes: Vec<u64> = ["svc.log", "svc.log.1", "svc.log.2"]
            .iter()
            .map(|n| std::fs::metadata(run.join(n)).map_or(0, |m| m.len()))
            .collect();
        assert!(sizes.iter().all(|n| *n > 0 && *n <= 200), "{sizes:?}");
        assert!(!run.join("svc.log.3").exists(), "more kept than asked");
        assert!(body(&log).contains("line 39"), "{}", body(&log));
        assert!(body(&run.join("svc.log.1")).lines().count() > 1);
        // A rotated file starts whole lines: every one of them stamped.
        for n in ["svc.log", "svc.log.1", "svc.log.2"] {
            for l in body(&run.join(n)).lines() {
                assert!(l.contains(" INFO line "), "{n}: {l}");
            }
        }
    }

    #[test]
    fn a_repeating_line_is_written_once_then_summarised_at_growing_intervals() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("run/log");
        let limits = Limits {
            summary_first: 120,
            summary_max: 3600,
            ..Limits::default()
        };
        let mut s = Sink::with("volumed", None, &run, t.path(), limits, clock);
        let start = clock();
        // The locked-vault wait: every 30 s for a day, its counter rising.
        for n in 1..=2880u64 {
            NOW.store(start + n * 30, Ordering::SeqCst);
            s.line(&format!("volumed: pass skipped ({n}): vault locked"));
        }
        NOW.store(start + 2881 * 30, Ordering::SeqCst);
        s.line("volumed: watching /persist/config/volumes/specs");
        let log = body(&run.join("volumed.log"));
        let lines: Vec<&str> = log.lines().collect();
        assert!(
            lines[0].ends_with("INFO volumed: pass skipped (1): vault locked"),
            "{log}"
        );
        // Summaries after 2 min, 4, 8, ... then hourly: about 30 lines for a day, not 2,880.
        assert!(lines.len() < 40, "{} lines:\n{log}", lines.len());
        let summaries: Vec<&&str> = lines.iter().filter(|l| l.contains("[repeated ")).collect();
        assert!(summaries.len() > 20, "{log}");
        // The last one, written when another line came, counts every repeat.
        let last = lines[lines.len() - 2];
        assert!(
            last.contains("in all] volumed: pass skipped (2880): vault locked")
                && last.contains(" 2879 in all"),
            "{last}"
        );
        assert!(lines[lines.len() - 1].ends_with("volumed: watching /persist/config/volumes/specs"));
    }
}
