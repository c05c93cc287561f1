//! eve-agent: serves the VM test harness on a virtio-serial port (dev/test images only).

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Runs commands and moves files for the VM test harness"
)]
struct Cli {
    /// virtio-serial port name (as given to qemu's virtserialport name=).
    #[arg(long, default_value = "org.eve.agent")]
    port: String,
    /// Where the kernel lists virtio-serial ports.
    #[arg(long, default_value = "/sys/class/virtio-ports")]
    sysfs: PathBuf,
    #[arg(long, default_value = "/dev")]
    dev: PathBuf,
}

/// udev makes /dev/virtio-ports/<name>; fall back to finding vportNpM by its sysfs name.
fn find_port(cli: &Cli) -> Option<PathBuf> {
    let link = cli.dev.join("virtio-ports").join(&cli.port);
    if link.exists() {
        return Some(link);
    }
    std::fs::read_dir(&cli.sysfs)
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let name = std::fs::read_to_string(e.path().join("name")).ok()?;
            (name.trim() == cli.port).then(|| cli.dev.join(e.file_name()))
        })
}

fn main() {
    let cli = Cli::parse();
    let mut waited = false;
    let mut announced: Option<PathBuf> = None;
    loop {
        let Some(path) = find_port(&cli) else {
            if !waited {
                eprintln!("eve-agent: waiting for virtio-serial port {}", cli.port);
                waited = true;
            }
            std::thread::sleep(Duration::from_secs(1));
            continue;
        };
        // With no host on the other end the port reads EOF at once; say so once, then poll quietly.
        if announced.as_ref() != Some(&path) {
            eprintln!("eve-agent: serving on {}", path.display());
            announced = Some(path.clone());
        }
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => {
                let w = match f.try_clone() {
                    Ok(w) => w,
                    Err(e) => {
                        eprintln!("eve-agent: {}: {e}", path.display());
                        std::process::exit(1);
                    }
                };
                if let Err(e) = eve_agent::server::serve(f, w) {
                    eprintln!("eve-agent: {}: {e}", path.display());
                    announced = None;
                }
            }
            Err(e) => {
                eprintln!("eve-agent: open {}: {e}", path.display());
                announced = None;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
