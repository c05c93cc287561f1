//! Man pages and shell completions for every command the image carries, made from the same
//! clap definitions the binaries parse (each crate keeps its `Cli` in its library for this), so
//! they cannot drift from what the commands accept. `eve-manuals --out DIR` writes them under
//! DIR as they sit in a root file system; the image build copies that tree into the image, and
//! an operator's host can take the same tree for `storagectl --remote`.

use clap::CommandFactory;
use platform::IoContext;
use std::path::{Path, PathBuf};

/// Every command of the image, by the name it is installed under.
pub fn commands() -> Vec<clap::Command> {
    vec![
        abupdate::cli::Cli::command().name("abupdate"),
        eve_init::cli::Cli::command().name("eve-init"),
        mgmt::cli::eve_net::Cli::command().name("eve-net"),
        mgmt::cli::mgmtd::Cli::command().name("mgmtd"),
        storage::cli::Cli::command().name("storage-init"),
        storagectl::cli::Cli::command().name("storagectl"),
        storaged::cli::Cli::command().name("storaged"),
        volumes::cli::Cli::command().name("volumed"),
    ]
}

pub const MAN: &str = "usr/share/man/man1";
pub const BASH: &str = "usr/share/bash-completion/completions";
pub const ZSH: &str = "usr/share/zsh/vendor-completions";
pub const FISH: &str = "usr/share/fish/vendor_completions.d";

/// One page per command and per subcommand (`storagectl-disk-selftest.1`), as `man` finds them.
fn pages(cmd: &clap::Command, prefix: &str, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let name = if prefix.is_empty() {
        cmd.get_name().to_string()
    } else {
        format!("{prefix}-{}", cmd.get_name())
    };
    let mut page = Vec::new();
    // Rendering into a Vec cannot fail.
    let _ = clap_mangen::Man::new(cmd.clone().name(name.clone())).render(&mut page);
    out.push((Path::new(MAN).join(format!("{name}.1")), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, &name, out);
    }
}

/// Every file, by its path under the root (`usr/share/man/man1/storagectl.1`), and its bytes.
pub fn files() -> Vec<(PathBuf, Vec<u8>)> {
    use clap_complete::Shell;
    let mut out = Vec::new();
    for cmd in commands() {
        let mut cmd = cmd;
        cmd.build();
        let name = cmd.get_name().to_string();
        pages(&cmd, "", &mut out);
        for (shell, dir, file) in [
            (Shell::Bash, BASH, name.clone()),
            (Shell::Zsh, ZSH, format!("_{name}")),
            (Shell::Fish, FISH, format!("{name}.fish")),
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, name.clone(), &mut buf);
            out.push((Path::new(dir).join(file), buf));
        }
    }
    out
}

/// Writes [`files`] under `root`.
pub fn write(root: &Path) -> Result<usize, platform::IoError> {
    let files = files();
    for (rel, body) in &files {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).at("create", d)?;
        }
        std::fs::write(&p, body).at("write", p)?;
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_subcommand_has_a_page_and_three_completions() {
        let f = files();
        let has = |rel: &str| {
            f.iter()
                .find(|(p, _)| p == Path::new(rel))
                .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| panic!("no {rel}"))
        };
        for name in [
            "abupdate",
            "eve-init",
            "eve-net",
            "mgmtd",
            "storage-init",
            "storagectl",
            "storaged",
            "volumed",
        ] {
            let page = has(&format!("{MAN}/{name}.1"));
            assert!(page.contains(".TH") && page.contains(name), "{name}.1");
            assert!(
                has(&format!("{BASH}/{name}"))
                    .contains(&format!("complete -F _{}", name.replace('-', "__")))
                    || has(&format!("{BASH}/{name}")).contains("complete "),
                "{name} bash"
            );
            assert!(has(&format!("{ZSH}/_{name}")).contains(&format!("#compdef {name}")));
            assert!(has(&format!("{FISH}/{name}.fish")).contains(&format!("complete -c {name}")));
        }
        // Subcommands down to the leaves, with their own options.
        let p = has(&format!("{MAN}/storagectl-disk-selftest.1"));
        assert!(p.contains("long"), "{p}");
        assert!(has(&format!("{MAN}/storagectl-volume-snapshot.1")).contains(".TH"));
        assert!(has(&format!("{MAN}/abupdate-install.1")).contains("allow\\-downgrade"));
        let bash = has(&format!("{BASH}/storagectl"));
        assert!(
            bash.contains("selftest") && bash.contains("bundle"),
            "bash completes subcommands"
        );
    }

    #[test]
    fn the_tree_is_written_under_the_root_given() {
        let d = tempfile::tempdir().unwrap();
        let n = write(d.path()).unwrap();
        assert!(n > 40, "{n} files");
        assert!(d.path().join(MAN).join("storagectl-bundle.1").is_file());
        assert!(d.path().join(FISH).join("storagectl.fish").is_file());
    }
}
