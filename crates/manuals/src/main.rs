//! `eve-manuals --out DIR`: writes every command's man pages and bash, zsh and fish
//! completions under DIR, laid out as in a root file system (see the library).

use clap::Parser;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Man pages and shell completions for the image's commands"
)]
struct Cli {
    /// The root to write under (`DIR/usr/share/man/man1/...`).
    #[arg(long)]
    out: std::path::PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match manuals::write(&cli.out) {
        Ok(n) => {
            println!("{n} files under {}", cli.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eve-manuals: {}", platform::chain(&e));
            ExitCode::FAILURE
        }
    }
}
