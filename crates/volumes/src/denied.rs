//! The places whose files are never read as guest content (a volume's import source), checked
//! by a spec's validation and again by the import once the path is resolved.

use std::path::Path;

/// Paths whose files are the kernel's or the box's own, never a guest's content.
pub const DENIED: &[&str] = &["/proc", "/sys", "/dev"];

/// Pure: why a resolved path may not be read as guest content, if it may not.
pub fn denied(real: &Path, also: &[&Path]) -> Option<String> {
    DENIED
        .iter()
        .map(Path::new)
        .chain(also.iter().copied())
        .find(|d| real.starts_with(d))
        .map(|d| {
            format!(
                "{} is under {}, which is never imported",
                real.display(),
                d.display()
            )
        })
}
