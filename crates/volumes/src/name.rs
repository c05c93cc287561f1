//! The one rule for names the box builds paths, datasets and NQNs from (volumes, VMs,
//! snapshots), so that no name given to the API or dropped in the spool can escape its place.

/// The longest name, in bytes.
pub const MAX_NAME: usize = 64;

/// A name used as a dataset component, an NQN suffix and a file name: letters, digits and `-_.`,
/// starting with a letter or digit, at most 64 bytes (no `/`, no `..`, nothing hidden).
pub fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(format!("`{s}` must be 1 to {MAX_NAME} characters"));
    }
    if !s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("`{s}` must start with a letter or digit"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(format!(
            "`{s}` contains `{c}`; use letters, digits, `-`, `_` and `.`"
        ));
    }
    if s.contains("..") {
        return Err(format!("`{s}` contains `..`"));
    }
    Ok(())
}
