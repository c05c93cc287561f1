//! The two things every crate's errors share: an I/O failure that names its operation and path,
//! and the one-line chain a binary prints on failure.

use std::path::{Path, PathBuf};

/// An I/O failure with the operation and the path it was on; crates wrap it with `#[from]`.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// `.map_err(io(op, path))`: the closure that names an I/O failure (where `.at` does not fit).
pub fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> IoError + 'a {
    move |source| IoError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// `.at(op, path)` on an `io::Result`: the failure names its operation and path.
pub trait IoContext<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T, IoError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: impl AsRef<Path>) -> Result<T, IoError> {
        self.map_err(|source| IoError {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}

/// `a: b: c` from an error and its sources, for a binary's one line on failure.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_the_path_once_and_the_cause_once() {
        let e = std::fs::read("/nonexistent/x").map_err(io("read", Path::new("/nonexistent/x")));
        let e = e.unwrap_err();
        assert_eq!(
            chain(&e),
            "read /nonexistent/x: No such file or directory (os error 2)"
        );
    }
}
