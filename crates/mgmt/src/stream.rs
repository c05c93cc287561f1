//! A request body handed to a blocking operation while it arrives: [`feed`] moves hyper's frames
//! into a small channel (so at most a few chunks are held in memory), and [`Receiver`] reads them
//! as a `std::io::Read` on the operation's thread.

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use std::io;
use std::time::Duration;
use tokio::sync::mpsc;

pub type Chunk = io::Result<Bytes>;

/// How long a streamed body may take, and what is drained of one that was refused.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nothing arriving for this long ends the stream.
    pub idle: Duration,
    /// The whole body must have arrived by then.
    pub total: Duration,
    /// After a refusal: at most this many bytes, for at most `drain_time`, are read and dropped.
    pub drain_max: u64,
    pub drain_time: Duration,
}

impl Limits {
    pub fn from(l: &crate::limit::Limits) -> Limits {
        Limits {
            idle: Duration::from_secs(l.stream_idle_secs),
            total: Duration::from_secs(l.stream_total_secs),
            drain_max: l.drain_max,
            drain_time: Duration::from_secs(l.request_secs),
        }
    }
}

/// Copies `body` into `tx` until it ends (the reader then sees end of file). A body that brings
/// nothing for `idle`, or is not whole within `total`, ends in a `TimedOut` error, a broken one
/// in an error of its own. When the operation stops reading early (it refused the stream), up to
/// `drain_max` more bytes are read and dropped for at most `drain_time`, so the client, still
/// sending, can read the answer instead of a reset; a client that trickles cannot hold the
/// connection longer than that.
pub async fn feed(mut body: Incoming, tx: mpsc::Sender<Chunk>, l: Limits) {
    let mut draining: Option<(u64, tokio::time::Instant)> = None;
    let end = tokio::time::Instant::now() + l.total;
    loop {
        let deadline = match draining {
            Some((_, until)) => until.min(end),
            None => end,
        };
        let wait = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(l.idle);
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => {
                let why = if tokio::time::Instant::now() >= end {
                    format!("not whole within {} s", l.total.as_secs())
                } else {
                    format!("nothing arrived for {} s", l.idle.as_secs())
                };
                let _ = tx
                    .send(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
                    .await;
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                let _ = tx
                    .send(Err(io::Error::other(format!("the upload broke off: {e}"))))
                    .await;
                return;
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if let Some((left, _)) = &mut draining {
            match left.checked_sub(data.len() as u64) {
                Some(n) => *left = n,
                None => return,
            }
            continue;
        }
        let n = data.len() as u64;
        if tx.send(Ok(data)).await.is_err() {
            draining = Some((
                l.drain_max.saturating_sub(n),
                tokio::time::Instant::now() + l.drain_time,
            ));
        }
    }
}

/// Reads and drops what the drain limits allow of `body`.
pub async fn drain(body: Incoming, l: Limits) {
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    feed(body, tx, l).await;
}

/// The reading end: blocking, for the operation's thread (never an async task's).
#[derive(Debug)]
pub struct Receiver {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
}

impl Receiver {
    pub fn new(rx: mpsc::Receiver<Chunk>) -> Receiver {
        Receiver {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl io::Read for Receiver {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => self.cur = b,
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// A body that arrives while the operation runs: the server feeds it chunk by chunk, and a
/// client that stops sending makes the read fail (the server's idle limit).
pub struct StreamBody(std::sync::Mutex<Option<Box<dyn std::io::Read + Send>>>);

impl StreamBody {
    pub fn new(r: Box<dyn std::io::Read + Send>) -> StreamBody {
        StreamBody(std::sync::Mutex::new(Some(r)))
    }
    /// The reader; `None` once taken.
    pub fn take(&self) -> Option<Box<dyn std::io::Read + Send>> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

impl std::fmt::Debug for StreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a streamed body")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn reads_chunks_in_order_then_the_end_or_the_error() {
        let (tx, rx) = mpsc::channel(4);
        let t = std::thread::spawn(move || {
            let mut r = Receiver::new(rx);
            let mut s = Vec::new();
            let e = r.read_to_end(&mut s);
            (s, e.map_err(|e| e.kind()))
        });
        tx.blocking_send(Ok(Bytes::from_static(b"EVE-"))).unwrap();
        tx.blocking_send(Ok(Bytes::new())).unwrap();
        tx.blocking_send(Ok(Bytes::from_static(b"UPDATE"))).unwrap();
        drop(tx);
        let (s, e) = t.join().unwrap();
        assert_eq!(s, b"EVE-UPDATE");
        assert_eq!(e, Ok(10));

        let (tx, rx) = mpsc::channel(4);
        tx.blocking_send(Ok(Bytes::from_static(b"ab"))).unwrap();
        tx.blocking_send(Err(io::Error::new(io::ErrorKind::TimedOut, "idle")))
            .unwrap();
        let mut r = Receiver::new(rx);
        let mut s = Vec::new();
        assert_eq!(
            r.read_to_end(&mut s).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(s, b"ab");
    }
}
