//! storagectl: the operator's CLI over the storagectl library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    platform::log::set_name("storagectl");
    storagectl::run(storagectl::cli::Cli::parse())
}
