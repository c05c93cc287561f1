//! Where sysfs, /dev, /proc, /run and /etc are: `/` on the box, a fixture tree in tests.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub proc: PathBuf,
    pub run: PathBuf,
    pub etc: PathBuf,
}

impl Roots {
    pub fn under(base: &Path) -> Roots {
        Roots {
            sys: base.join("sys"),
            dev: base.join("dev"),
            proc: base.join("proc"),
            run: base.join("run"),
            etc: base.join("etc"),
        }
    }
    pub fn host() -> Roots {
        Roots::under(Path::new("/"))
    }
}
