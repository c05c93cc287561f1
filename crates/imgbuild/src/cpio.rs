//! newc cpio archives for the initramfs: a sorted in-memory tree written deterministically
//! (uid/gid 0, mtime 0) so the same inputs give the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// Path (without leading '/') -> node. Parents sort before children, as the kernel needs.
#[derive(Debug, Default, Clone)]
pub struct Tree(pub BTreeMap<String, Node>);

impl Tree {
    /// Inserts `path` and any missing parent directories.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/');
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(p);
            self.0.entry(acc.clone()).or_insert(Node::Dir);
        }
        self.0.insert(path.to_string(), node);
    }

    pub fn write<W: Write>(&self, mut w: W) -> io::Result<W> {
        for (ino, (path, node)) in self.0.iter().enumerate() {
            let b = cpio::newc::Builder::new(path)
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(0);
            let (b, data): (_, &[u8]) = match node {
                Node::Dir => (b.mode(0o040755).nlink(2), &[]),
                Node::File { data, mode } => (b.mode(0o100000 | (mode & 0o7777)).nlink(1), data),
                Node::Symlink(t) => (b.mode(0o120777).nlink(1), t.as_bytes()),
                Node::CharDev { major, minor } => (
                    b.mode(0o020600)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            let len = u32::try_from(data.len())
                .map_err(|_| io::Error::other(format!("{path}: too large for cpio")))?;
            let mut fw = b.write(w, len);
            fw.write_all(data)?;
            w = fw.finish()?;
        }
        cpio::newc::trailer(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_cpio_reader_in_order() {
        let mut t = Tree::default();
        t.insert(
            "/lib/modules/k/nvme.ko",
            Node::File {
                data: b"ELF".to_vec(),
                mode: 0o644,
            },
        );
        t.insert(
            "init",
            Node::File {
                data: vec![1, 2, 3],
                mode: 0o755,
            },
        );
        t.insert("dev/console", Node::CharDev { major: 5, minor: 1 });
        t.insert("sbin", Node::Symlink("bin".into()));
        let bytes = t.write(Vec::new()).unwrap();

        let mut r: &[u8] = &bytes;
        let mut seen = Vec::new();
        loop {
            let e = cpio::newc::Reader::new(r).unwrap();
            if e.entry().is_trailer() {
                break;
            }
            let (name, mode, major) = (
                e.entry().name().to_string(),
                e.entry().mode(),
                e.entry().rdev_major(),
            );
            let mut data = Vec::new();
            let mut e = e;
            io::Read::read_to_end(&mut e, &mut data).unwrap();
            seen.push((name, mode, major, data));
            r = e.finish().unwrap();
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/k",
                "lib/modules/k/nvme.ko",
                "sbin"
            ]
        );
        assert_eq!(seen[1].1, 0o020600);
        assert_eq!(seen[1].2, 5);
        assert_eq!(seen[2].1, 0o100755);
        assert_eq!(seen[2].3, [1, 2, 3]);
        assert_eq!(seen[7].3, b"bin");
    }

    #[test]
    fn output_is_deterministic() {
        let mut a = Tree::default();
        a.insert(
            "x/y",
            Node::File {
                data: vec![9],
                mode: 0o600,
            },
        );
        a.insert("z", Node::Dir);
        let mut b = Tree::default();
        b.insert("z", Node::Dir);
        b.insert(
            "x/y",
            Node::File {
                data: vec![9],
                mode: 0o600,
            },
        );
        assert_eq!(a.write(Vec::new()).unwrap(), b.write(Vec::new()).unwrap());
    }
}
