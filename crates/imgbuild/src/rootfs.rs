//! Pure helpers for laying Debian packages into a merged-/usr root.

/// Where a package path lands in the image, or None to drop it (docs, man pages, init scripts).
/// Debian 12 packages still ship /bin, /sbin and /lib; the image is merged-/usr like the host.
pub fn map_path(p: &str) -> Option<String> {
    let p = p
        .trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/');
    if p.is_empty() || p == "." {
        return None;
    }
    const DROP: &[&str] = &[
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "usr/share/bug",
        "usr/share/bash-completion",
        "usr/share/zsh",
        "usr/share/fish",
        "usr/share/menu",
        "usr/share/doc-base",
        "usr/share/gdb",
        "usr/share/polkit-1",
        "etc/init.d",
        "etc/rc0.d",
        "etc/cron.d",
        "etc/cron.daily",
        "etc/logrotate.d",
        "lib/systemd/system",
        "usr/lib/systemd/system",
        "etc/systemd",
        "usr/lib/systemd/user",
        "usr/share/initramfs-tools",
        "etc/default",
        "usr/share/dracut",
        "usr/lib/dracut",
    ];
    for (from, to) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib64", "usr/lib64"),
        ("lib", "usr/lib"),
    ] {
        if p == from || p.starts_with(&format!("{from}/")) {
            let rest = &p[from.len()..];
            let mapped = format!("{to}{rest}");
            return map_path(&mapped);
        }
    }
    if DROP
        .iter()
        .any(|d| p == *d || p.starts_with(&format!("{d}/")))
    {
        return None;
    }
    Some(p.to_string())
}

/// Upstream version of a Debian version: `1:2.3.2-2~bpo12+2` -> `2.3.2`.
pub fn upstream_version(v: &str) -> &str {
    let no_epoch = v.split_once(':').map_or(v, |(_, r)| r);
    no_epoch.rsplit_once('-').map_or(no_epoch, |(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_and_drops() {
        assert_eq!(map_path("./bin/kmod").as_deref(), Some("usr/bin/kmod"));
        assert_eq!(map_path("./sbin/").as_deref(), Some("usr/sbin"));
        assert_eq!(
            map_path("./lib/x86_64-linux-gnu/libc.so.6").as_deref(),
            Some("usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(
            map_path("./lib64/ld-linux-x86-64.so.2").as_deref(),
            Some("usr/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(map_path("./libexec/x").as_deref(), Some("libexec/x"));
        assert_eq!(map_path("./usr/share/doc/kmod/copyright"), None);
        assert_eq!(map_path("./lib/systemd/system/zfs.service"), None);
        assert_eq!(
            map_path("./lib/systemd/systemd-udevd").as_deref(),
            Some("usr/lib/systemd/systemd-udevd")
        );
        assert_eq!(map_path("./"), None);
        assert_eq!(
            map_path("./etc/udev/rules.d").as_deref(),
            Some("etc/udev/rules.d")
        );
    }

    #[test]
    fn upstream_versions() {
        assert_eq!(upstream_version("2.3.2-2~bpo12+2"), "2.3.2");
        assert_eq!(
            upstream_version("1:10.0.2+ds-2+deb13u1~bpo12+1"),
            "10.0.2+ds"
        );
        assert_eq!(upstream_version("1.35.0"), "1.35.0");
    }
}
