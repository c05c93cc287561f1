//! The zvols behind volumes: zfs and qemu-img by absolute path, and a pure parser of `zfs list`.
//! Ours carry the user property `org.lfedge.eve:volume`; others are never touched.

use crate::cmd::{CmdError, Tools, QEMU_IMG, UDEVADM, ZFS};
use crate::error::{Error, Result};
use crate::import;
use crate::spec::{Format, Source, Volume};
use platform::Roots;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const PROP_VOLUME: &str = "org.lfedge.eve:volume";
pub const PROP_VM: &str = "org.lfedge.eve:vm";
/// `ready` once the initial content is in; a zvol without it is an interrupted creation.
pub const PROP_CONTENT: &str = "org.lfedge.eve:content";
/// A zvol filled from an image or a stream is built under `<name>:new` and renamed into place
/// when complete: under the staging name an interrupted import is recognisably ours, and is
/// discarded. An empty zvol is created in place instead (see [`Intent`]).
pub const STAGING_SUFFIX: &str = ":new";

/// The datasets a pass is about to create in place, written (and synced) to the vault before the
/// first `zfs create`. `zfs create` sets properties in a later transaction group than the
/// dataset, so a power cut can leave an untagged zvol; one named here and created no earlier
/// than the record is that interrupted creation and is discarded like a staging zvol. Anything
/// else untagged is someone else's and is never touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Intent {
    /// Seconds since the epoch when the record was written (ZFS's `creation` has seconds).
    pub at: u64,
    pub datasets: std::collections::BTreeSet<String>,
}

impl Intent {
    pub const FILE: &str = "creating.json";

    /// Whether an untagged zvol is the interrupted creation this record announced.
    pub fn claims(&self, ds: &str, creation: u64) -> bool {
        self.datasets.contains(ds) && creation >= self.at
    }

    pub fn read(state: &Path) -> Result<Option<Intent>> {
        crate::ids::read_json(&state.join(Self::FILE))
    }

    pub fn write(&self, state: &Path) -> Result<()> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        crate::ids::write_private(&state.join(Self::FILE), &body)
    }

    /// Once a pass has finished its zvol steps, nothing it announced is pending.
    pub fn clear(state: &Path) -> Result<()> {
        let p = state.join(Self::FILE);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io(platform::io("remove", &p)(e)))
            }
            _ => Ok(()),
        }
    }
}

pub fn staging(ds: &str) -> String {
    format!("{ds}{STAGING_SUFFIX}")
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Zvol {
    pub dataset: String,
    pub volume: String,
    pub vm: String,
    pub volsize: u64,
    pub volblocksize: u64,
    pub refreservation: u64,
    /// Bytes the zvol uses in the pool (thin volumes use only what was written).
    pub used: u64,
    /// Of `used`, what only its snapshots hold.
    pub snapshots_used: u64,
    pub ready: bool,
    /// An interrupted creation under the staging name.
    pub staging: bool,
}

const LIST_PROPS: &str =
    "name,volsize,volblocksize,refreservation,used,org.lfedge.eve:volume,org.lfedge.eve:vm,org.lfedge.eve:content,creation,usedbysnapshots";

/// `zfs list -H -p -t volume -o LIST_PROPS`: our zvols (tagged), staging zvols under our
/// parents in `pool` (tagged or not), and untagged ones that `intent` claims.
pub fn parse_list(out: &str, pool: &str, intent: Option<&Intent>) -> Result<Vec<Zvol>, String> {
    let parents = [parent(pool, true), parent(pool, false)];
    let mut v = Vec::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != 10 {
            return Err(format!("expected 10 fields, got {}: `{l}`", f.len()));
        }
        let n = |i: usize| {
            f[i].parse::<u64>()
                .map_err(|_| format!("field {} is not a number: `{l}`", i + 1))
        };
        let under_ours = f[0]
            .rsplit_once('/')
            .filter(|(p, _)| parents.iter().any(|x| x == p));
        let claimed = f[5] == "-" && intent.is_some_and(|i| i.claims(f[0], n(8).unwrap_or(0)));
        let staged = under_ours
            .filter(|(_, c)| c.ends_with(STAGING_SUFFIX))
            .map(|(_, c)| c.trim_end_matches(STAGING_SUFFIX).to_string())
            .or_else(|| under_ours.filter(|_| claimed).map(|(_, c)| c.to_string()));
        // Ours: directly under one of our parents, tagged with its own name. A tag elsewhere, or
        // one that names another dataset (as an inherited tag would), is someone else's zvol.
        let tagged = f[0]
            .rsplit_once('/')
            .is_some_and(|(p, c)| parents.iter().any(|x| x == p) && c == f[5]);
        if !tagged && staged.is_none() {
            continue;
        }
        v.push(Zvol {
            dataset: f[0].into(),
            volume: staged.clone().unwrap_or_else(|| f[5].into()),
            vm: f[6].into(),
            volsize: n(1)?,
            volblocksize: n(2)?,
            refreservation: n(3)?,
            used: n(4)?,
            snapshots_used: n(9)?,
            ready: f[7] == "ready",
            staging: staged.is_some(),
        });
    }
    Ok(v)
}

pub fn list(t: &dyn Tools, pool: &str) -> Result<Vec<Zvol>> {
    list_claiming(t, pool, None)
}

/// [`list`], with the untagged zvols `intent` claims as interrupted creations.
pub fn list_claiming(t: &dyn Tools, pool: &str, intent: Option<&Intent>) -> Result<Vec<Zvol>> {
    let args: Vec<String> = [
        "list", "-H", "-p", "-t", "volume", "-r", "-o", LIST_PROPS, pool,
    ]
    .map(String::from)
    .into();
    let out = t.run(ZFS, &args, None)?;
    parse_list(&out, pool, intent).map_err(|msg| {
        Error::Cmd(CmdError::Output {
            argv: format!("{ZFS} {}", args.join(" ")),
            msg,
        })
    })
}

pub fn parent(pool: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{pool}/vault/volumes")
    } else {
        format!("{pool}/clear/volumes")
    }
}

pub fn dataset(pool: &str, v: &Volume) -> String {
    format!("{}/{}", parent(pool, v.encrypted), v.name)
}

fn zfs_args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn exists(t: &dyn Tools, ds: &str) -> bool {
    t.run(ZFS, &zfs_args(&["list", "-H", "-o", "name", ds]), None)
        .is_ok()
}

/// The parent dataset chain, unmounted; the vault's volumes dataset comes from the storage
/// policy. The parent carries `volmode=dev` (no partition scanning on the host) for its zvols to
/// inherit: set at `zfs create`, volmode is a transaction group sync of its own per zvol.
pub fn ensure_parent(t: &dyn Tools, pool: &str, encrypted: bool) -> Result<()> {
    let p = parent(pool, encrypted);
    if exists(t, &p) {
        return ensure_parent_volmode(t, &p);
    }
    if encrypted {
        // Created under the vault so it inherits its key; never a clear fallback.
        if !exists(t, &format!("{pool}/vault")) {
            return Err(Error::Refused(format!(
                "{pool}/vault does not exist (is the vault unlocked?); encrypted volumes need it"
            )));
        }
    } else if !exists(t, &format!("{pool}/clear")) {
        t.run(
            ZFS,
            &zfs_args(&["create", "-o", "mountpoint=none", &format!("{pool}/clear")]),
            None,
        )?;
    }
    t.run(
        ZFS,
        &zfs_args(&["create", "-o", "mountpoint=none", "-o", "volmode=dev", &p]),
        None,
    )?;
    Ok(())
}

fn ensure_parent_volmode(t: &dyn Tools, p: &str) -> Result<()> {
    let cur = t.run(
        ZFS,
        &zfs_args(&["get", "-H", "-o", "value,source", "volmode", p]),
        None,
    )?;
    if cur.split_whitespace().collect::<Vec<_>>() != ["dev", "local"] {
        t.run(ZFS, &zfs_args(&["set", "volmode=dev", p]), None)?;
    }
    Ok(())
}

/// What every zvol of ours carries locally. `volmode=dev` is here for received zvols; a created
/// one inherits it from its parent (see [`ensure_parent`]).
fn volume_props(v: &Volume) -> Vec<String> {
    vec![
        "compression=zstd".into(),
        // The zvol is a whole disk for a guest: no partition scanning on the host.
        "volmode=dev".into(),
        "logbias=throughput".into(),
        format!("{PROP_VOLUME}={}", v.name),
        format!("{PROP_VM}={}", v.vm),
    ]
}

/// At `zfs create`: only properties that are set together with the tags (one sync). A sparse
/// zvol (`-s`) has no refreservation, so none is set.
fn create_props(v: &Volume) -> Vec<String> {
    let mut a = vec![format!("volblocksize={}", v.volblocksize)];
    a.extend(
        volume_props(v)
            .into_iter()
            .filter(|p| !p.starts_with("volmode=")),
    );
    a
}

/// Creates the zvol `ds` (sparse when thin) under a parent made by [`ensure_parent`]. `ready`
/// sets the content marker at once, for a volume whose initial content is its zeros.
pub fn create(t: &dyn Tools, v: &Volume, ds: &str, ready: bool) -> Result<()> {
    let mut args = vec!["create".to_string()];
    if v.thin {
        args.push("-s".into());
    }
    args.extend(["-V".into(), v.size.to_string()]);
    let mut props = create_props(v);
    if ready {
        props.push(format!("{PROP_CONTENT}=ready"));
    }
    for p in props {
        args.extend(["-o".into(), p]);
    }
    args.push(ds.into());
    t.run(ZFS, &args, None)?;
    Ok(())
}

pub fn rename(t: &dyn Tools, from: &str, to: &str) -> Result<()> {
    t.run(ZFS, &zfs_args(&["rename", from, to]), None)?;
    Ok(())
}

pub fn mark_ready(t: &dyn Tools, ds: &str) -> Result<()> {
    t.run(
        ZFS,
        &zfs_args(&["set", &format!("{PROP_CONTENT}=ready"), ds]),
        None,
    )?;
    Ok(())
}

/// One zvol's size, without listing the pool (which costs per zvol).
pub fn volsize(t: &dyn Tools, ds: &str) -> Result<u64> {
    let args = zfs_args(&["get", "-H", "-p", "-o", "value", "volsize", ds]);
    let out = t.run(ZFS, &args, None)?;
    out.trim().parse().map_err(|_| {
        Error::Cmd(CmdError::Output {
            argv: format!("{ZFS} {}", args.join(" ")),
            msg: format!("volsize `{}` is not a number", out.trim()),
        })
    })
}

pub fn resize(t: &dyn Tools, ds: &str, size: u64) -> Result<()> {
    t.run(
        ZFS,
        &zfs_args(&["set", &format!("volsize={size}"), ds]),
        None,
    )?;
    Ok(())
}

/// Destroys a volume's zvol after checking that its tag is set on it (not inherited): the one
/// destructive step a spec-less pass takes is only ever taken on a zvol we made.
pub fn destroy_volume(t: &dyn Tools, ds: &str) -> Result<()> {
    let args = zfs_args(&["get", "-H", "-o", "source", PROP_VOLUME, ds]);
    let src = t.run(ZFS, &args, None)?;
    if src.trim() != "local" {
        return Err(Error::Refused(format!(
            "{ds}: {PROP_VOLUME} is {} (not set locally); not ours to destroy",
            src.trim()
        )));
    }
    destroy(t, ds)
}

pub fn destroy(t: &dyn Tools, ds: &str) -> Result<()> {
    t.run(ZFS, &zfs_args(&["destroy", "-r", ds]), None)?;
    Ok(())
}

pub fn dev_path(roots: &Roots, ds: &str) -> PathBuf {
    roots.dev.join("zvol").join(ds)
}

/// The path nvmet and LIO are given: the udev link as the box sees it (`/dev/zvol/...`).
pub fn export_path(ds: &str) -> String {
    format!("/dev/zvol/{ds}")
}

/// Waits for a zvol's udev link, which udev makes shortly after `zfs create` (see [`wait_devs`]).
pub fn wait_dev(t: &dyn Tools, roots: &Roots, ds: &str, timeout: Duration) -> Result<PathBuf> {
    match wait_devs(t, roots, &[ds.to_string()], timeout).pop() {
        Some(ds) => Err(Error::DeviceTimeout {
            dev: dev_path(roots, &ds),
            secs: timeout.as_secs(),
        }),
        None => Ok(dev_path(roots, ds)),
    }
}

/// Waits up to `timeout` in all for the udev links of the zvols `dss`; returns those whose link
/// is still missing. udev can lose a zvol's event (seen once after a power cut, under TCG load:
/// one link never made), so after a third of `timeout` with a link missing, every zvol's block
/// device is triggered again, once.
pub fn wait_devs(t: &dyn Tools, roots: &Roots, dss: &[String], timeout: Duration) -> Vec<String> {
    let mut missing = dss.to_vec();
    let t0 = Instant::now();
    let mut retriggered = false;
    loop {
        missing.retain(|ds| !dev_path(roots, ds).exists());
        if missing.is_empty() || t0.elapsed() > timeout {
            return missing;
        }
        if !retriggered && t0.elapsed() > timeout / 3 {
            retriggered = true;
            platform::log(format!(
                "{} missing after {} s: asking udev to process the zvols again",
                dev_path(roots, &missing[0]).display(),
                t0.elapsed().as_secs()
            ));
            if let Err(e) = t.run(
                UDEVADM,
                &zfs_args(&[
                    "trigger",
                    "--action=add",
                    "--subsystem-match=block",
                    "--sysname-match=zd*",
                ]),
                None,
            ) {
                platform::log(e);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens and checks an image source (see [`crate::import`]); returns it with its virtual size.
/// Only files in the import directory `from` are opened.
pub fn check_image(
    t: &dyn Tools,
    src: &Source,
    from: &import::ImportDir,
) -> Result<(import::Opened, u64)> {
    let fmt = src.format.qemu_name().unwrap_or("raw");
    let o = import::open(src, from)?;
    let own = o.path();
    let out = t
        .run(
            QEMU_IMG,
            &zfs_args(&["info", "--output=json", "--backing-chain", "-f", fmt, &own]),
            None,
        )
        .map_err(|e| Error::Import {
            path: src.path.clone(),
            msg: format!("not a readable {fmt} image: {e}"),
        })?;
    let size = import::check_info(&out, &own).map_err(|msg| Error::Import {
        path: src.path.clone(),
        msg,
    })?;
    Ok((o, size))
}

/// Checks a source before anything is created for it: an image's checks and size, or a
/// stream's first record.
pub fn check_source(
    t: &dyn Tools,
    src: &Source,
    volsize: u64,
    from: &import::ImportDir,
) -> Result<()> {
    if src.format == Format::ZfsStream {
        return import::open_stream(src, from).map(|_| ());
    }
    let (_, size) = check_image(t, src, from)?;
    if size > volsize {
        return Err(Error::Import {
            path: src.path.clone(),
            msg: format!("the image's virtual size {size} is larger than the volume ({volsize})"),
        });
    }
    Ok(())
}

/// Writes an image onto a freshly created (all-zero) zvol, skipping zero regions. The image is
/// read through the file checked, with any backing file switched off.
pub fn import_image(
    t: &dyn Tools,
    src: &Source,
    dev: &Path,
    volsize: u64,
    from: &import::ImportDir,
) -> Result<()> {
    let fmt = src.format.qemu_name().unwrap_or("raw");
    let (o, size) = check_image(t, src, from)?;
    if size > volsize {
        return Err(Error::Import {
            path: src.path.clone(),
            msg: format!("the image's virtual size {size} is larger than the volume ({volsize})"),
        });
    }
    let mut args: Vec<String> = ["convert", "-p", "-n", "--target-is-zero"]
        .map(String::from)
        .into();
    args.extend(import::qemu_source(&o, fmt));
    args.extend([
        "-O".into(),
        "raw".into(),
        dev.to_string_lossy().into_owned(),
    ]);
    let r = t.run_progress(QEMU_IMG, &args, None);
    drop(o);
    Ok(r?)
}

/// Properties a received volume stream may carry that would expose it on the host or re-tag it
/// or claim it is complete: none is taken from a stream. (Mount and share properties do not
/// apply: only volume streams get this far.)
pub const RECEIVE_EXCLUDED: &[&str] = &["volmode", "snapdev", PROP_VOLUME, PROP_VM, PROP_CONTENT];

/// Receives a checked `zfs send` stream of one volume as the dataset `ds`, unmounted and with
/// none of [`RECEIVE_EXCLUDED`] taken from it. Whatever a failed receive leaves is destroyed.
pub fn receive(t: &dyn Tools, src: &Source, ds: &str, from: &import::ImportDir) -> Result<()> {
    let o = import::open_stream(src, from)?;
    let mut args = zfs_args(&["receive", "-u"]);
    for p in RECEIVE_EXCLUDED {
        args.extend(["-x".into(), (*p).into()]);
    }
    args.push(ds.into());
    let r = t.run_progress(ZFS, &args, Some(o.file));
    if let Err(e) = r {
        if exists(t, ds) {
            let _ = destroy(t, ds);
        }
        return Err(e.into());
    }
    // Belt and braces: the header said volume; what arrived must be one.
    let kind = t.run(
        ZFS,
        &zfs_args(&["get", "-H", "-o", "value", "type", ds]),
        None,
    )?;
    if kind.trim() != "volume" {
        destroy(t, ds)?;
        return Err(Error::Import {
            path: src.path.clone(),
            msg: format!(
                "received a {} instead of a volume; destroyed it",
                kind.trim()
            ),
        });
    }
    Ok(())
}

/// Makes `ds` a clone of `origin` (`dataset@snapshot`) with our properties; its volblocksize and
/// encryption are the origin's (ZFS gives a clone no choice).
pub fn clone_from(t: &dyn Tools, v: &Volume, origin: &str, ds: &str) -> Result<()> {
    let mut args = vec!["clone".to_string()];
    for p in volume_props(v) {
        args.extend(["-o".into(), p]);
    }
    args.extend([origin.into(), ds.into()]);
    t.run(ZFS, &args, None)?;
    Ok(())
}

/// After a receive: the properties a created zvol would have had.
pub fn set_props(t: &dyn Tools, ds: &str, v: &Volume) -> Result<()> {
    let mut args = vec!["set".to_string()];
    args.extend(volume_props(v));
    if v.thin {
        args.push("refreservation=none".into());
    }
    args.push(ds.into());
    t.run(ZFS, &args, None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_our_zvols() {
        let out = "persist/vault/volumes/a\t1073741824\t16384\t0\t12288\ta\tvm1\tready\t100\t0\n\
                   persist/other\t1048576\t8192\t1081344\t1081344\t-\t-\t-\t100\t0\n\
                   persist/elsewhere/e\t1048576\t8192\t0\t0\te\tvm1\tready\t100\t0\n\
                   persist/vault/volumes/f\t1048576\t8192\t0\t0\tg\tvm1\tready\t100\t0\n\
                   persist/clear/volumes/b\t2147483648\t16384\t2181038080\t2181038080\tb\tvm2\t-\t100\t0\n\
                   persist/vault/volumes/c:new\t1048576\t16384\t0\t0\t-\t-\t-\t100\t0\n\
                   persist/elsewhere/d:new\t1048576\t16384\t0\t0\t-\t-\t-\t100\t0\n";
        let v = parse_list(out, "persist", None).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].volume, "a");
        assert!(v[0].ready && !v[1].ready);
        assert_eq!(v[1].refreservation, 2181038080);
        assert!(
            v[2].staging && v[2].volume == "c",
            "an untagged staging zvol is ours"
        );
        assert!(parse_list("a\tb\n", "persist", None).is_err());
        assert!(parse_list(
            "persist/clear/volumes/v\tnan\t1\t1\t1\tv\tvm\t-\t100\t0\n",
            "persist",
            None
        )
        .is_err());
    }

    #[test]
    fn an_untagged_zvol_is_ours_only_when_the_intent_record_names_it_and_it_is_not_older() {
        let out = "persist/vault/volumes/new\t1048576\t16384\t0\t0\t-\t-\t-\t200\t0\n\
                   persist/vault/volumes/old\t1048576\t16384\t0\t0\t-\t-\t-\t150\t0\n\
                   persist/vault/volumes/other\t1048576\t16384\t0\t0\t-\t-\t-\t300\t0\n\
                   persist/elsewhere/new\t1048576\t16384\t0\t0\t-\t-\t-\t300\t0\n\
                   persist/vault/volumes/done\t1048576\t16384\t0\t0\tdone\tvm\tready\t200\t0\n";
        assert!(
            parse_list(out, "persist", None).unwrap().len() == 1,
            "without a record, untagged zvols are someone else's"
        );
        let i = Intent {
            at: 200,
            datasets: [
                "persist/vault/volumes/new",
                "persist/vault/volumes/old",
                "persist/elsewhere/new",
                "persist/vault/volumes/done",
            ]
            .map(String::from)
            .into(),
        };
        let v = parse_list(out, "persist", Some(&i)).unwrap();
        let names: Vec<(&str, bool)> = v.iter().map(|z| (z.dataset.as_str(), z.staging)).collect();
        assert_eq!(
            names,
            [
                ("persist/vault/volumes/new", true),
                ("persist/vault/volumes/done", false)
            ],
            "older than the record, not named, or outside our parents: left alone; tagged: complete"
        );
        assert_eq!(v[0].volume, "new");
    }

    #[test]
    fn a_damaged_intent_record_is_an_error_naming_it_and_a_missing_one_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Intent::read(d.path()).unwrap(), None);
        std::fs::write(d.path().join(Intent::FILE), "{\"at\":\"soon\"}").unwrap();
        let e = Intent::read(d.path()).unwrap_err().to_string();
        assert!(e.contains(Intent::FILE), "{e}");
        let i = Intent {
            at: 5,
            datasets: ["p/vault/volumes/a".to_string()].into(),
        };
        i.write(d.path()).unwrap();
        assert_eq!(Intent::read(d.path()).unwrap(), Some(i));
        Intent::clear(d.path()).unwrap();
        Intent::clear(d.path()).unwrap();
        assert_eq!(Intent::read(d.path()).unwrap(), None);
    }
}
