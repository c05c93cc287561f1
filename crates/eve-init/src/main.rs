//! eve-init entry point: PID 1 runs the stage it finds itself in; otherwise a CLI.

use clap::Parser;
use eve_init::cli::{Cli, Cmd};
use eve_init::{stage1, supervisor, INITRAMFS_MARKER};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    platform::log::set_name("eve-init");
    if std::process::id() == 1 {
        if Path::new(INITRAMFS_MARKER).exists() {
            stage1::run();
        }
        supervisor::Init::run();
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Status { json } => match supervisor::read_status(Path::new(supervisor::STATUS_PATH)) {
            Ok(st) if json => {
                println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(st) => {
                println!("slot: {}", st.slot.as_deref().unwrap_or("?"));
                for s in &st.onboot {
                    let res = s.error.clone().unwrap_or_else(|| {
                        format!("exit {}", s.exit.map_or("?".into(), |c| c.to_string()))
                    });
                    println!("onboot  {:<16} {res}", s.name);
                }
                for s in &st.services {
                    let pid = s.pid.map_or("-".into(), |p| p.to_string());
                    println!(
                        "service {:<16} {:<12} pid {pid:<6} starts {}",
                        s.name, s.state, s.starts
                    );
                }
                for e in &st.errors {
                    println!("error   {e}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("eve-init: {}: {e}", supervisor::STATUS_PATH);
                ExitCode::FAILURE
            }
        },
        Cmd::Reboot | Cmd::Poweroff => {
            let sig = if matches!(cli.cmd, Cmd::Reboot) {
                Signal::SIGTERM
            } else {
                Signal::SIGUSR2
            };
            match kill(Pid::from_raw(1), sig) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("eve-init: signal init: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
