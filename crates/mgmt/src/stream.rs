//! A request body handed to a blocking operation while it arrives: [`feed`] moves hyper's frames
//! into a small channel (so at most a few chunks are held in memory), and [`Receiver`] reads them
//! as a `std::io::Read` on the operation's thread.

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use std::io;
use std::time::Duration;
use tokio::sync::mpsc;

pub type Chunk = io::Result<Bytes>;

/// Copies `body` into `tx` until it ends (the reader then sees end of file). A body that brings
/// nothing for `idle` ends in a `TimedOut` error, a broken one in an error of its own. When the
/// operation stops reading early (it refused the stream), up to `drain_max` more bytes are read
/// and dropped, so the client, still sending, can read the answer instead of a reset.
pub async fn feed(mut body: Incoming, tx: mpsc::Sender<Chunk>, idle: Duration, drain_max: u64) {
    let mut draining: Option<u64> = None;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing arrived for {} s", idle.as_secs()),
                    )))
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
        if let Some(left) = &mut draining {
            match left.checked_sub(data.len() as u64) {
                Some(l) => *left = l,
                None => return,
            }
            continue;
        }
        let n = data.len() as u64;
        if tx.send(Ok(data)).await.is_err() {
            draining = Some(drain_max.saturating_sub(n));
        }
    }
}

/// Reads and drops up to `max` bytes of `body` (within the idle limit).
pub async fn drain(body: Incoming, idle: Duration, max: u64) {
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    feed(body, tx, idle, max).await;
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
