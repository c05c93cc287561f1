//! Per-service log routing: each line goes to the console with the service's name, and to
//! /run/log/<name>.log; once /persist is mounted, to /persist/log/<name>.log as well, so logs
//! from before storage came up are not lost from the console and later ones survive reboots.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Sink {
    name: String,
    console: Option<File>,
    run_log: Option<File>,
    persist_dir: PathBuf,
    persist_log: Option<File>,
    last_check: Option<Instant>,
}

/// `[name] line` as shown on the console.
pub fn console_line(name: &str, line: &str) -> String {
    format!("[{name}] {}\n", line.trim_end_matches(['\r', '\n']))
}

impl Sink {
    pub fn new(name: &str, console: Option<File>, run_dir: &Path, persist_root: &Path) -> Sink {
        let _ = std::fs::create_dir_all(run_dir);
        let run_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join(format!("{name}.log")))
            .ok();
        Sink {
            name: name.to_string(),
            console,
            run_log,
            persist_dir: persist_root.join("log"),
            persist_log: None,
            last_check: None,
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
            self.persist_log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.persist_dir.join(format!("{}.log", self.name)))
                .ok();
        }
    }

    pub fn line(&mut self, line: &str) {
        let text = console_line(&self.name, line);
        if let Some(c) = self.console.as_mut() {
            let _ = c.write_all(text.as_bytes());
        }
        let plain = &text[self.name.len() + 3..];
        if let Some(f) = self.run_log.as_mut() {
            let _ = f.write_all(plain.as_bytes());
        }
        self.persist_ready();
        if let Some(f) = self.persist_log.as_mut() {
            let _ = f.write_all(plain.as_bytes());
        }
    }

    /// Copies lines from `r` until EOF (the process closed its output).
    pub fn pump<R: Read>(mut self, r: R) {
        let mut br = BufReader::new(r);
        let mut buf = Vec::new();
        while br
            .read_until(b'\n', &mut buf)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            self.line(&String::from_utf8_lossy(&buf));
            buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_to_console_and_run_log_and_persist_only_once_mounted() {
        let t = tempfile::tempdir().unwrap();
        let console_path = t.path().join("console");
        let console = File::create(&console_path).unwrap();
        // A plain directory is not a mountpoint, so /persist logging stays off.
        let persist = t.path().join("persist");
        std::fs::create_dir_all(&persist).unwrap();
        let s = Sink::new("zed", Some(console), &t.path().join("run/log"), &persist);
        s.pump(&b"first\nsecond\r\npartial"[..]);
        assert_eq!(
            std::fs::read_to_string(&console_path).unwrap(),
            "[zed] first\n[zed] second\n[zed] partial\n"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("run/log/zed.log")).unwrap(),
            "first\nsecond\npartial\n"
        );
        assert!(!persist.join("log").exists());
    }
}
