//! Kernel command line parsing (pure).

/// `key=value` words (and bare flags as `key=""`), in order; later duplicates come later.
pub fn params(cmdline: &str) -> Vec<(String, String)> {
    cmdline
        .split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.trim_matches('"').to_string()),
            None => (w.to_string(), String::new()),
        })
        .collect()
}

pub fn get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The tty behind /dev/console: the kernel uses the last `console=` (`ttyS0,115200` -> `ttyS0`).
pub fn primary_console(params: &[(String, String)]) -> Option<String> {
    get(params, "console")
        .map(|v| v.split(',').next().unwrap_or(v).to_string())
        .filter(|s| !s.is_empty())
}

/// What the root is: `root=PARTUUID=<uuid>`.
pub fn root_partuuid(params: &[(String, String)]) -> Option<uuid::Uuid> {
    get(params, "root")?.strip_prefix("PARTUUID=")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_root_console_and_flags() {
        let p = params("BOOT_IMAGE=/boot/vmlinuz root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4 console=tty0 console=ttyS0,115200 quiet eve.slot=B");
        assert_eq!(
            root_partuuid(&p).unwrap().to_string(),
            "0fc63daf-8483-4772-8e79-3d69d8477de4"
        );
        assert_eq!(primary_console(&p).as_deref(), Some("ttyS0"));
        assert_eq!(get(&p, "quiet"), Some(""));
        assert_eq!(get(&p, "eve.slot"), Some("B"));
        assert!(root_partuuid(&params("root=/dev/sda2")).is_none());
        assert!(root_partuuid(&params("root=PARTUUID=nope")).is_none());
        assert!(primary_console(&params("quiet")).is_none());
    }
}
