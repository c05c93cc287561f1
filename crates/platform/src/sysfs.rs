//! Reading sysfs the way every crate does: one trimmed attribute, a number, the sorted names in
//! a directory. Absent or empty reads as `None` (or no names): a device can vanish mid-read.

use std::path::Path;

/// The attribute's text, trimmed; `None` when absent, unreadable or empty.
pub fn attr(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn attr_u64(p: &Path) -> Option<u64> {
    attr(p)?.parse().ok()
}

/// The entries of `dir`, sorted; none when it cannot be read.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_trimmed_and_absent_or_empty_is_none() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("size"), "2048\n").unwrap();
        std::fs::write(d.path().join("model"), "  \n").unwrap();
        assert_eq!(attr_u64(&d.path().join("size")), Some(2048));
        assert_eq!(attr(&d.path().join("model")), None);
        assert_eq!(attr(&d.path().join("gone")), None);
        assert_eq!(names(d.path()), ["model", "size"]);
        assert!(names(&d.path().join("gone")).is_empty());
    }
}
