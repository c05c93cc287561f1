//! Where the kernel's trees are: the real ones on the box, a temporary tree in tests.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub run: PathBuf,
    pub proc: PathBuf,
    pub configfs: PathBuf,
    pub debugfs: PathBuf,
}

impl Roots {
    pub fn under(base: &Path) -> Roots {
        Roots {
            sys: base.join("sys"),
            dev: base.join("dev"),
            run: base.join("run"),
            proc: base.join("proc"),
            configfs: base.join("sys/kernel/config"),
            debugfs: base.join("sys/kernel/debug"),
        }
    }
    pub fn host() -> Roots {
        Roots::under(Path::new("/"))
    }
}
