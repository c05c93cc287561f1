//! `eve-campaign`: the randomized fault campaign's command line (see the crate's lib).

use clap::Parser;
use eve_campaign::{plan, report, run, Error, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Random operations under random faults on the development image; every invariant checked
/// after each recovery.
///
/// Exit codes: 0 no violation, 1 a violation was found, 2 the campaign could not run.
#[derive(Debug, Parser)]
#[command(name = "eve-campaign")]
struct Cli {
    /// The run's seed [default: drawn from the clock, and printed].
    #[arg(long)]
    seed: Option<u64>,
    /// How many scenarios to draw.
    #[arg(long, default_value_t = 100)]
    scenarios: usize,
    /// Replay one scenario of the run: the operations before it without faults, then it.
    #[arg(long)]
    scenario: Option<usize>,
    /// Stop starting scenarios after this many minutes.
    #[arg(long, default_value_t = 60.0)]
    minutes: f64,
    #[arg(long, default_value = "out/eve-storage-dev.raw")]
    image: PathBuf,
    #[arg(long, default_value = "out/eve-storage-dev.update")]
    update: PathBuf,
    /// OpenZFS's zinject for the image's ZFS release [default: taken from Debian's zfs-test
    /// package of that release, cached under ~/.cache/eve-storage/tools].
    #[arg(long)]
    zinject: Option<PathBuf>,
    /// Where the machine lives.
    #[arg(long, default_value = "target/campaign")]
    dir: PathBuf,
    #[arg(long, default_value = "results")]
    results: PathBuf,
    #[arg(long, default_value = "RELIABILITY.md")]
    reliability: PathBuf,
    /// Run nothing: print the run's scenarios (index, operation, fault, instant) and exit.
    #[arg(long)]
    list: bool,
    /// Run nothing: write RELIABILITY.md's latest-run section from this results file (a run cut
    /// short by a signal keeps its file, saved after every scenario).
    #[arg(long)]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match go(cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("eve-campaign: {e}");
            ExitCode::from(2)
        }
    }
}

fn go(cli: Cli) -> Result<usize> {
    if let Some(f) = &cli.report {
        let text = std::fs::read(f).map_err(|e| Error::Io(f.clone(), e))?;
        let mut r: report::Run = serde_json::from_slice(&text)
            .map_err(|e| Error::Setup(format!("{}: {e}", f.display())))?;
        if r.stopped.is_none() && r.scenarios.len() < cli.scenarios {
            r.stopped = Some(format!(
                "stopped by hand after {} scenarios",
                r.scenarios.len()
            ));
        }
        return publish(&cli, &r, true);
    }
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_000)
            .unwrap_or(1)
    });
    if cli.list {
        for s in plan::scenarios(seed, cli.scenarios) {
            println!(
                "{:>4} {:<11} {:<12} {:>6} ms",
                s.index, s.op, s.fault, s.instant_ms
            );
        }
        return Ok(0);
    }
    let zinject = match cli.zinject.clone() {
        Some(z) => z,
        None => zinject_for(&cli.image)?,
    };
    let n = cli
        .scenario
        .map(|s| s + 1)
        .unwrap_or(cli.scenarios)
        .max(cli.scenarios.min(1));
    let list = plan::scenarios(seed, cli.scenarios.max(n));
    let list: Vec<_> = list.into_iter().take(n).collect();
    eprintln!(
        "eve-campaign: seed {seed}, {} scenarios (replay: make campaign SEED={seed}{})",
        list.len(),
        cli.scenario
            .map(|s| format!(" SCENARIO={s}"))
            .unwrap_or_default()
    );
    let c = run::Campaign::start(run::Options {
        seed,
        scenarios: cli.scenarios,
        only: cli.scenario,
        image: cli.image.clone(),
        update: cli.update.clone(),
        zinject,
        dir: cli.dir.clone(),
        results: cli.results.clone(),
        reliability: cli.reliability.clone(),
        minutes: cli.minutes,
    })?;
    let r = c.run(list)?;
    publish(&cli, &r, cli.scenario.is_none())
}

/// Prints the run's section and writes it into RELIABILITY.md when `write`; the violations.
fn publish(cli: &Cli, r: &report::Run, write: bool) -> Result<usize> {
    let prev = report::previous(&cli.results, &r.file_name());
    let section = report::section(r, prev.as_ref());
    if write {
        let doc =
            std::fs::read_to_string(&cli.reliability).unwrap_or_else(|_| "# Reliability\n".into());
        std::fs::write(&cli.reliability, report::replace_section(&doc, &section))
            .map_err(|e| Error::Io(cli.reliability.clone(), e))?;
    }
    println!("{section}");
    let f = r.figures();
    eprintln!(
        "eve-campaign: {} scenarios, {} invariants checked, {} violations; results/{}",
        f.scenarios,
        f.invariants,
        f.violations,
        r.file_name()
    );
    Ok(f.violations)
}

/// zinject from Debian's zfs-test package of the image's ZFS userland release (it is not in the
/// image: a test tool), fetched once with apt-get and kept in the cache.
fn zinject_for(image: &Path) -> Result<PathBuf> {
    let manifest = image.with_extension("build.json");
    let text = std::fs::read(&manifest).map_err(|e| Error::Io(manifest.clone(), e))?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::Setup(format!("{}: {e}", manifest.display())))?;
    let version = v["zfs"]["userland_package"]
        .as_str()
        .ok_or_else(|| Error::Setup(format!("{}: no zfs.userland_package", manifest.display())))?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let dir = home
        .join(".cache/eve-storage/tools")
        .join(format!("zfs-test-{version}"));
    let bin = dir.join("zinject");
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
    let st = std::process::Command::new("apt-get")
        .args(["download", &format!("zfs-test={version}")])
        .current_dir(&dir)
        .status()
        .map_err(|e| Error::Io("apt-get".into(), e))?;
    if !st.success() {
        return Err(Error::Setup(format!(
            "apt-get download zfs-test={version} failed ({st}): the host needs bookworm-backports in its apt sources (make deps) and `apt-get update`"
        )));
    }
    let deb = std::fs::read_dir(&dir)
        .map_err(|e| Error::Io(dir.clone(), e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| Error::Setup(format!("no .deb in {}", dir.display())))?;
    let x = dir.join("x");
    let st = std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&x)
        .status()
        .map_err(|e| Error::Io("dpkg-deb".into(), e))?;
    if !st.success() {
        return Err(Error::Setup(format!("dpkg-deb -x {}: {st}", deb.display())));
    }
    for cand in ["usr/sbin/zinject", "sbin/zinject", "usr/bin/zinject"] {
        let p = x.join(cand);
        if p.exists() {
            std::fs::copy(&p, &bin).map_err(|e| Error::Io(p.clone(), e))?;
            let _ = std::fs::remove_dir_all(&x);
            let _ = std::fs::remove_file(&deb);
            return Ok(bin);
        }
    }
    Err(Error::Setup(format!("{} holds no zinject", deb.display())))
}
