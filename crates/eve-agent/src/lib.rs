//! The harness <-> guest agent protocol: one JSON object per line each way, matched by `id`.
//! Binary data travels base64-encoded. Used by eve-agent (guest) and eve-vmtest (host).

pub mod server;

use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Exec {
        argv: Vec<String>,
        #[serde(default)]
        stdin: String,
        timeout_ms: u64,
    },
    Read {
        path: String,
    },
    Write {
        path: String,
        data: String,
        mode: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Pong {
        boot_id: String,
        uptime_s: f64,
    },
    Exec {
        status: i32,
        stdout: String,
        stderr: String,
        timed_out: bool,
    },
    Data {
        data: String,
    },
    Done,
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope<T> {
    pub id: u64,
    #[serde(flatten)]
    pub body: T,
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("bad base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_one_flat_object() {
        let r = Envelope {
            id: 7,
            body: Request::Exec {
                argv: vec!["true".into()],
                stdin: String::new(),
                timeout_ms: 5,
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"id":7,"op":"exec","argv":["true"],"stdin":"","timeout_ms":5}"#
        );
        assert_eq!(serde_json::from_str::<Envelope<Request>>(&s).unwrap(), r);
        let p: Envelope<Response> = serde_json::from_str(r#"{"id":1,"result":"done"}"#).unwrap();
        assert_eq!(p.body, Response::Done);
        assert_eq!(unb64(&b64(b"\x00\xffdata")).unwrap(), b"\x00\xffdata");
        assert!(unb64("***").is_err());
    }
}
