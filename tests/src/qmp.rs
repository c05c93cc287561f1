//! A minimal QMP client (qemu's JSON machine protocol on a unix socket): enough to unplug and
//! plug drives while the guest runs, which `device_del` / `blockdev-add` + `device_add` do.

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Asynchronous events read while waiting for a command's answer, oldest first.
    pub events: Vec<Value>,
    /// A line a timed-out read left unfinished; the next read goes on with it.
    partial: String,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path) -> Result<Qmp> {
        let s = UnixStream::connect(path).map_err(|e| Error::Qmp {
            what: format!("connect {}", path.display()),
            msg: e.to_string(),
        })?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| Error::Qmp {
                what: "set timeout".into(),
                msg: e.to_string(),
            })?;
        let writer = s.try_clone().map_err(|e| Error::Qmp {
            what: "clone socket".into(),
            msg: e.to_string(),
        })?;
        let mut q = Qmp {
            reader: BufReader::new(s),
            writer,
            events: Vec::new(),
            partial: String::new(),
        };
        let hello = q.read()?;
        if hello.get("QMP").is_none() {
            return Err(Error::Qmp {
                what: "greeting".into(),
                msg: hello.to_string(),
            });
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value> {
        let n = self
            .reader
            .read_line(&mut self.partial)
            .map_err(|e| Error::Qmp {
                what: if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    "read (timed out)".into()
                } else {
                    "read".into()
                },
                msg: e.to_string(),
            })?;
        if n == 0 && self.partial.is_empty() {
            return Err(Error::Qmp {
                what: "read".into(),
                msg: "qemu closed the QMP socket".into(),
            });
        }
        let line = std::mem::take(&mut self.partial);
        serde_json::from_str(&line).map_err(|e| Error::Qmp {
            what: "parse".into(),
            msg: format!("{e}: {line}"),
        })
    }

    /// Runs `cmd` with `args`; its `return` value, or its error as [`Error::Qmp`].
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value> {
        let msg = json!({"execute": cmd, "arguments": args});
        writeln!(self.writer, "{msg}").map_err(|e| Error::Qmp {
            what: cmd.into(),
            msg: e.to_string(),
        })?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            return Err(Error::Qmp {
                what: format!("{cmd} {args}", args = msg["arguments"]),
                msg: v["error"]["desc"].as_str().unwrap_or("no answer").into(),
            });
        }
    }

    /// Waits for the event `name` whose `data.device` is `device` (seen earlier or arriving
    /// within `timeout`).
    pub fn wait_event(&mut self, name: &str, device: &str, timeout: Duration) -> Result<()> {
        let hit = |e: &Value| e["event"] == name && e["data"]["device"] == device;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(hit) {
                self.events.remove(i);
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Qmp {
                    what: format!("wait for {name} of {device}"),
                    msg: format!("none within {} s", timeout.as_secs()),
                });
            }
            match self.read() {
                Ok(v) => self.events.push(v),
                Err(Error::Qmp { what, .. }) if what.ends_with("(timed out)") => {}
                Err(e) => return Err(e),
            }
        }
    }
}
