//! The agent side: answers requests from a byte stream (the virtio-serial port in the guest).

use crate::{b64, unb64, Envelope, Request, Response};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn exec(argv: &[String], stdin: &[u8], timeout: Duration) -> Response {
    let Some((prog, args)) = argv.split_first() else {
        return Response::Error {
            message: "empty argv".into(),
        };
    };
    let mut c = Command::new(prog);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Response::Error {
                message: format!("cannot run {prog}: {e}"),
            }
        }
    };
    let pid = child.id() as i32;
    let input = stdin.to_vec();
    let mut sin = child.stdin.take();
    let w = std::thread::spawn(move || {
        if let Some(s) = sin.as_mut() {
            let _ = s.write_all(&input);
        }
    });
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > timeout => {
                timed_out = true;
                // SAFETY: kill(2) on the process group we created for this child.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Response::Error {
                    message: format!("wait {prog}: {e}"),
                }
            }
        }
    };
    let _ = w.join();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Response::Exec {
        status: code,
        stdout: b64(&stdout),
        stderr: b64(&stderr),
        timed_out,
    }
}

pub fn handle(req: Request) -> Response {
    match req {
        Request::Ping => Response::Pong {
            boot_id: boot_id(),
            uptime_s: uptime(),
        },
        Request::Exec {
            argv,
            stdin,
            timeout_ms,
        } => match unb64(&stdin) {
            Ok(input) => exec(&argv, &input, Duration::from_millis(timeout_ms)),
            Err(message) => Response::Error { message },
        },
        Request::Read { path } => match std::fs::read(&path) {
            Ok(d) => Response::Data { data: b64(&d) },
            Err(e) => Response::Error {
                message: format!("{path}: {e}"),
            },
        },
        Request::Write { path, data, mode } => {
            // Replaced whole, with exactly the mode asked.
            let r = unb64(&data).and_then(|d| {
                platform::fsx::write_atomic(std::path::Path::new(&path), &d, Some(mode))
                    .map_err(|e| platform::chain(&e))
            });
            match r {
                Ok(()) => Response::Done,
                Err(message) => Response::Error { message },
            }
        }
    }
}

/// Serves requests from `r`, answering on `w`, until EOF.
pub fn serve<R: Read, W: Write>(r: R, mut w: W) -> std::io::Result<()> {
    let mut br = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        if br.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Envelope<Request>>(&line) {
            Ok(env) => Envelope {
                id: env.id,
                body: handle(env.body),
            },
            Err(e) => Envelope {
                id: 0,
                body: Response::Error {
                    message: format!("bad request: {e}"),
                },
            },
        };
        let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
        out.push(b'\n');
        w.write_all(&out)?;
        w.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(reqs: &[Envelope<Request>]) -> Vec<Envelope<Response>> {
        let mut input = Vec::new();
        for r in reqs {
            input.extend(serde_json::to_vec(r).unwrap());
            input.push(b'\n');
        }
        input.extend(b"not json\n");
        let mut out = Vec::new();
        serve(&input[..], &mut out).unwrap();
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn exec_read_write_and_errors() {
        let t = std::env::temp_dir().join(format!("eve-agent-test-{}", std::process::id()));
        let p = t.to_string_lossy().to_string();
        let r = roundtrip(&[
            Envelope {
                id: 1,
                body: Request::Exec {
                    argv: vec!["sh".into(), "-c".into(), "cat; echo err >&2; exit 3".into()],
                    stdin: b64(b"in"),
                    timeout_ms: 10_000,
                },
            },
            Envelope {
                id: 2,
                body: Request::Write {
                    path: p.clone(),
                    data: b64(b"\x00bin"),
                    mode: 0o600,
                },
            },
            Envelope {
                id: 3,
                body: Request::Read { path: p.clone() },
            },
            Envelope {
                id: 4,
                body: Request::Exec {
                    argv: vec!["sleep".into(), "5".into()],
                    stdin: String::new(),
                    timeout_ms: 100,
                },
            },
            Envelope {
                id: 5,
                body: Request::Exec {
                    argv: vec!["/nonexistent".into()],
                    stdin: String::new(),
                    timeout_ms: 100,
                },
            },
        ]);
        let _ = std::fs::remove_file(&t);
        assert_eq!(
            r[0].body,
            Response::Exec {
                status: 3,
                stdout: b64(b"in"),
                stderr: b64(b"err\n"),
                timed_out: false
            }
        );
        assert_eq!(r[1].body, Response::Done);
        assert_eq!(
            r[2].body,
            Response::Data {
                data: b64(b"\x00bin")
            }
        );
        assert!(
            matches!(
                r[3].body,
                Response::Exec {
                    timed_out: true,
                    status: 137,
                    ..
                }
            ),
            "{:?}",
            r[3]
        );
        assert!(
            matches!(&r[4].body, Response::Error { message } if message.contains("/nonexistent"))
        );
        assert_eq!(r[5].id, 0);
        assert!(
            matches!(&r[5].body, Response::Error { message } if message.contains("bad request"))
        );
    }
}
