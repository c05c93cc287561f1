//! eve-vm: boots the appliance image interactively (`make run`) with the standard disk set.

use clap::{Parser, Subcommand};
use eve_vmtest::{DiskKind, DiskSpec, Machine, MachineSpec};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Boot the EVE storage appliance in qemu")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot with 4 blank disks (2 nvme, 1 virtio, 1 sata) and a TPM; the serial console is this terminal.
    Run {
        #[arg(long, default_value = "out/eve-storage-dev.raw")]
        image: PathBuf,
        /// Machine folder (disks, TPM state, console logs). Reused disks are recreated.
        #[arg(long, default_value = "out/run")]
        dir: PathBuf,
        #[arg(long, default_value_t = 4096)]
        memory_mib: u32,
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        /// Extra disks as TYPE:SIZE_MIB (nvme, virtio, sata, scsi, usb); replaces the default set.
        #[arg(long = "disk")]
        disks: Vec<String>,
        /// Boot with stock firmware and no enrolled keys instead of Secure Boot.
        #[arg(long)]
        no_secure_boot: bool,
    },
}

fn parse_disk(s: &str, i: usize) -> Result<DiskSpec, String> {
    let (k, size) = s
        .split_once(':')
        .ok_or_else(|| format!("--disk {s}: expected TYPE:SIZE_MIB"))?;
    let kind: DiskKind = k.parse()?;
    let size: u64 = size
        .parse()
        .map_err(|_| format!("--disk {s}: size `{size}` is not a number of MiB"))?;
    Ok(DiskSpec::blank(
        kind,
        size,
        &format!("{}{i}", k.to_uppercase()),
    ))
}

fn main() -> ExitCode {
    let Cmd::Run {
        image,
        dir,
        memory_mib,
        cpus,
        disks,
        no_secure_boot,
    } = Cli::parse().cmd;
    let mut spec = MachineSpec::new("run", &image);
    // `make run` boots as a shipped box does: under Secure Boot, when the build enrolled keys.
    spec.secure_boot = !no_secure_boot && eve_vmtest::secure_boot_vars(&image).exists();
    spec.memory_mib = memory_mib;
    spec.cpus = cpus;
    spec.disks = if disks.is_empty() {
        vec![
            DiskSpec::blank(DiskKind::Nvme, 8192, "NVME0"),
            DiskSpec::blank(DiskKind::Nvme, 8192, "NVME1"),
            DiskSpec::blank(DiskKind::Virtio, 8192, "VIRTIO0"),
            DiskSpec::blank(DiskKind::Sata, 8192, "SATA0"),
        ]
    } else {
        match disks
            .iter()
            .enumerate()
            .map(|(i, d)| parse_disk(d, i))
            .collect()
        {
            Ok(d) => d,
            Err(e) => {
                eprintln!("eve-vm: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let mut m = match Machine::create(spec, &dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("eve-vm: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "eve-vm: booting {} under OVMF{} (TCG, about a minute); console log in {}",
        image.display(),
        if m.spec.secure_boot {
            " with Secure Boot on (the image's enrolled keys)"
        } else {
            ", Secure Boot off"
        },
        m.dir.display()
    );
    eprintln!("eve-vm: Ctrl-A X quits qemu; `poweroff` in the guest shuts down cleanly");
    match m.run_interactive() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eve-vm: {e}");
            ExitCode::FAILURE
        }
    }
}
