//! Initial content from outside the box (a VM image or a `zfs send` stream) is hostile until
//! checked: it may name a backing file, an external data file or extents anywhere on the host, or
//! be a device, a FIFO or a kernel file. Sources come from one place only, the import directory
//! on the pool: each is opened beneath it with `openat2` (no symlink, no magic link, no other
//! mount on the way), checked on the open file, and then read by the tools through that same
//! open file (`/proc/<pid>/fd/<n>`), so what was checked is what is read.

use crate::error::{Error, Result};
use crate::spec::{Format, Source};
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// A source opened and checked: the tools read `path()`, which is this open file.
#[derive(Debug)]
pub struct Opened {
    pub file: std::fs::File,
    /// The source after resolving symlinks.
    pub real: PathBuf,
}

impl Opened {
    pub fn path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd())
    }
}

fn refuse(p: &Path, msg: impl Into<String>) -> Error {
    Error::Import {
        path: p.into(),
        msg: msg.into(),
    }
}

pub use crate::denied::{denied, DENIED};

/// Pure: what a non-regular file is.
pub fn kind_of(ft: &std::fs::FileType) -> Option<&'static str> {
    if ft.is_file() {
        None
    } else if ft.is_block_device() {
        Some("a block device")
    } else if ft.is_char_device() {
        Some("a character device")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_socket() {
        Some("a socket")
    } else if ft.is_dir() {
        Some("a directory")
    } else {
        Some("not a regular file")
    }
}

/// `statfs`'s `f_type` of ZFS.
pub const ZFS_SUPER_MAGIC: i64 = 0x2fc1_2fc1;

/// Where imports come from: one directory, on a filesystem of one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportDir {
    pub dir: PathBuf,
    /// The filesystem the directory must be on (`statfs` `f_type`); `None` in unit tests.
    pub fs_type: Option<i64>,
}

impl ImportDir {
    /// The box's: `dir` on the pool (ZFS).
    pub fn on_pool(dir: &Path) -> ImportDir {
        ImportDir {
            dir: dir.into(),
            fs_type: Some(ZFS_SUPER_MAGIC),
        }
    }
}

/// Pure: `path` as a name beneath `dir`: a relative name, or an absolute path under `dir`. No
/// `..` component: `openat2` would refuse it too, but the error reads better here.
pub fn beneath(path: &Path, dir: &Path) -> std::result::Result<PathBuf, String> {
    let rel = if path.is_absolute() {
        path.strip_prefix(dir)
            .map_err(|_| {
                format!(
                    "imports come from {} only: put the file there",
                    dir.display()
                )
            })?
            .to_path_buf()
    } else {
        path.to_path_buf()
    };
    use std::path::Component;
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "`{}` is not a file name beneath {}",
            path.display(),
            dir.display()
        ));
    }
    Ok(rel)
}

/// Opens `src` beneath the import directory, without following any symlink or leaving its
/// filesystem, and checks on the open file that it is a regular file.
pub fn open(src: &Source, from: &ImportDir) -> Result<Opened> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let p = &src.path;
    if let Some(why) = denied(p, &[]) {
        return Err(refuse(p, why));
    }
    let rel = beneath(p, &from.dir).map_err(|m| refuse(p, m))?;
    let dir = nix::fcntl::open(
        &from.dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        refuse(
            p,
            format!(
                "the import directory {} cannot be opened: {e}",
                from.dir.display()
            ),
        )
    })?;
    if let Some(want) = from.fs_type {
        let got = nix::sys::statfs::fstatfs(&dir)
            .map(|s| s.filesystem_type().0)
            .map_err(|e| refuse(p, format!("{}: statfs: {e}", from.dir.display())))?;
        if got != want {
            return Err(refuse(
                p,
                format!(
                    "the import directory {} is not on the pool (filesystem type {got:#x})",
                    from.dir.display()
                ),
            ));
        }
    }
    // O_NONBLOCK: opening a FIFO must not hang waiting for a writer; the type is checked next.
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = nix::fcntl::openat2(&dir, &rel, how).map_err(|e| {
        refuse(
            p,
            match e {
                nix::errno::Errno::ELOOP | nix::errno::Errno::EXDEV => format!(
                    "leaves {} (through a symlink or another mount); only files in it are imported",
                    from.dir.display()
                ),
                e => format!("cannot be opened beneath {}: {e}", from.dir.display()),
            },
        )
    })?;
    let file = std::fs::File::from(fd);
    let real = from.dir.join(&rel);
    let md = file
        .metadata()
        .map_err(|e| refuse(p, format!("cannot be examined: {e}")))?;
    if let Some(kind) = kind_of(&md.file_type()) {
        return Err(refuse(
            p,
            format!(
                "is {kind} ({}); only regular files are imported",
                real.display()
            ),
        ));
    }
    Ok(Opened { file, real })
}

/// Pure: checks `qemu-img info --output=json --backing-chain` of an image opened as `own` and
/// returns its virtual size. Refuses a backing file, an external data file, and vmdk extents
/// other than the image itself.
pub fn check_info(json: &str, own: &str) -> Result<u64, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let chain: Vec<&serde_json::Value> = match &v {
        serde_json::Value::Array(a) => a.iter().collect(),
        o => vec![o],
    };
    let top = chain.first().ok_or("qemu-img printed no image")?;
    for img in &chain {
        for k in ["backing-filename", "full-backing-filename"] {
            if let Some(b) = img.get(k).and_then(|b| b.as_str()) {
                return Err(format!(
                    "has a backing file `{b}`; images with backing files are refused (flatten it first: qemu-img convert -O qcow2)"
                ));
            }
        }
    }
    if chain.len() > 1 {
        return Err("has a backing chain; images with backing files are refused".into());
    }
    let data = &top["format-specific"]["data"];
    if let Some(f) = data.get("data-file").and_then(|f| f.as_str()) {
        return Err(format!(
            "has an external data file `{f}`; only self-contained images are imported"
        ));
    }
    if let Some(ext) = data.get("extents").and_then(|e| e.as_array()) {
        for e in ext {
            let f = e["filename"].as_str().unwrap_or("");
            if f != own {
                return Err(format!(
                    "has an extent in `{f}`, outside the image; only single-file vmdk images are imported"
                ));
            }
        }
    }
    top["virtual-size"]
        .as_u64()
        .ok_or_else(|| "no virtual-size".to_string())
}

/// What a tool is given to read an opened image: for qcow2 a `json:` name that also switches
/// any backing file off, so a header changed after the check still reads nothing else.
pub fn qemu_source(o: &Opened, fmt: &str) -> Vec<String> {
    if fmt == "qcow2" {
        let spec = serde_json::json!({
            "driver": "qcow2",
            "backing": null,
            "file": { "driver": "file", "filename": o.path() },
        });
        vec![format!("json:{spec}")]
    } else {
        vec!["-f".into(), fmt.into(), o.path()]
    }
}

/// The first record of a `zfs send` stream (DRR_BEGIN), as far as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    /// 1: one dataset; 2: a compound stream (`zfs send -R` or `-p`) that wraps others.
    pub hdrtype: u64,
    /// Bytes of payload (a compound stream's property list) after this record.
    pub payload_len: u32,
    /// dmu_objset_type_t: 2 is a filesystem, 3 a volume.
    pub objset_type: u32,
    pub features: u64,
    pub toname: String,
}

const DRR_BEGIN: u32 = 0;
const BACKUP_MAGIC: u64 = 0x2_f5ba_cbac;
const FEATURE_RAW: u64 = 1 << 24;
/// dmu_objset_type_t: DMU_OST_META 1, DMU_OST_ZFS 2, DMU_OST_ZVOL 3.
pub const OST_ZFS: u32 = 2;
pub const OST_ZVOL: u32 = 3;

/// Pure: parses the BEGIN record (312 bytes: type, payload length, then drr_begin), in either
/// byte order.
pub fn parse_stream_head(b: &[u8]) -> Result<StreamHead, String> {
    if b.len() < 312 {
        return Err(format!(
            "{} bytes is too short for a zfs send stream",
            b.len()
        ));
    }
    let u32le = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64le = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let magic = u64le(8);
    let swap = if magic == BACKUP_MAGIC {
        false
    } else if magic.swap_bytes() == BACKUP_MAGIC {
        true
    } else {
        return Err("not a zfs send stream (no DRR_BEGIN magic)".into());
    };
    let r32 = |o: usize| {
        if swap {
            u32le(o).swap_bytes()
        } else {
            u32le(o)
        }
    };
    let r64 = |o: usize| {
        if swap {
            u64le(o).swap_bytes()
        } else {
            u64le(o)
        }
    };
    if r32(0) != DRR_BEGIN {
        return Err("the stream does not start with a BEGIN record".into());
    }
    let versioninfo = r64(16);
    let name = &b[56..56 + 256];
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    Ok(StreamHead {
        hdrtype: versioninfo & 0x3,
        payload_len: r32(4),
        features: versioninfo >> 2,
        objset_type: r32(32),
        toname: String::from_utf8_lossy(&name[..end]).into_owned(),
    })
}

fn what(objset_type: u32) -> &'static str {
    match objset_type {
        OST_ZVOL => "a volume",
        OST_ZFS => "a filesystem",
        1 => "a metadata object set",
        _ => "an unknown object set",
    }
}

/// Pure: refuses streams that are not of one volume. A compound stream (`zfs send -R` or `-p`)
/// is accepted when the first dataset in it (`inner`) is a volume: volumes have no children, so
/// it carries that volume alone (with its snapshots and properties; the properties that matter
/// are excluded at receive). One whose first dataset is a filesystem, or cannot be read, is not.
pub fn check_stream(h: &StreamHead, inner: Option<&StreamHead>) -> Result<(), String> {
    let one = if h.hdrtype == 1 {
        h
    } else {
        match inner {
            Some(i) if i.objset_type == OST_ZVOL && i.hdrtype == 1 => i,
            Some(i) => {
                return Err(format!(
                    "is a compound stream (`zfs send -R` or `-p`) of {} (`{}`); only a stream of one volume is imported",
                    what(i.objset_type),
                    i.toname
                ))
            }
            None => {
                return Err(
                    "is a compound stream (`zfs send -R` or `-p`) whose first dataset cannot be read; only a stream of one volume is imported".into(),
                )
            }
        }
    };
    if one.objset_type != OST_ZVOL {
        return Err(format!(
            "is a stream of {} (`{}`); only a stream of one volume is imported",
            what(one.objset_type),
            one.toname
        ));
    }
    if (h.features | one.features) & FEATURE_RAW != 0 {
        return Err(format!(
            "is a raw (encrypted, `zfs send -w`) stream of `{}`; its key is not this box's, send it decrypted",
            one.toname
        ));
    }
    Ok(())
}

fn read_up_to(f: &mut std::fs::File, n: usize) -> std::io::Result<Vec<u8>> {
    let mut b = Vec::new();
    f.take(n as u64).read_to_end(&mut b)?;
    Ok(b)
}

/// Opens a stream, checks its BEGIN record and rewinds it for `zfs receive`.
pub fn open_stream(src: &Source, from: &ImportDir) -> Result<Opened> {
    debug_assert_eq!(src.format, Format::ZfsStream);
    let mut o = open(src, from)?;
    let unreadable = |e: std::io::Error| refuse(&src.path, format!("cannot be read: {e}"));
    let head = read_up_to(&mut o.file, 312).map_err(unreadable)?;
    let h = parse_stream_head(&head).map_err(|m| refuse(&src.path, m))?;
    // A compound stream's property list is followed by an END record, then the first dataset's
    // own BEGIN record.
    let inner = if h.hdrtype != 1 && h.payload_len <= 16 << 20 {
        let n = h.payload_len as usize;
        read_up_to(&mut o.file, n + 2 * 312).ok().and_then(|b| {
            [n, n + 312]
                .iter()
                .find_map(|&at| parse_stream_head(b.get(at..)?).ok())
        })
    } else {
        None
    };
    check_stream(&h, inner.as_ref()).map_err(|m| refuse(&src.path, m))?;
    use std::io::Seek;
    o.file
        .seek(std::io::SeekFrom::Start(0))
        .map_err(|e| refuse(&src.path, format!("cannot be rewound: {e}")))?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(objset: u32, hdrtype: u64, features: u64, swap: bool) -> Vec<u8> {
        let mut b = vec![0u8; 312];
        let w32 = |b: &mut Vec<u8>, o: usize, v: u32| {
            let v = if swap { v.swap_bytes() } else { v };
            b[o..o + 4].copy_from_slice(&v.to_le_bytes())
        };
        let w64 = |b: &mut Vec<u8>, o: usize, v: u64| {
            let v = if swap { v.swap_bytes() } else { v };
            b[o..o + 8].copy_from_slice(&v.to_le_bytes())
        };
        w32(&mut b, 0, DRR_BEGIN);
        w64(&mut b, 8, BACKUP_MAGIC);
        w64(&mut b, 16, (features << 2) | hdrtype);
        w32(&mut b, 32, objset);
        b[56..56 + 8].copy_from_slice(b"pool/x@s");
        b
    }

    #[test]
    fn only_a_plain_stream_of_one_volume_is_accepted() {
        let ok = parse_stream_head(&head(OST_ZVOL, 1, 0, false)).unwrap();
        assert_eq!(ok.toname, "pool/x@s");
        assert!(check_stream(&ok, None).is_ok());
        assert!(check_stream(
            &parse_stream_head(&head(OST_ZVOL, 1, 0, true)).unwrap(),
            None
        )
        .is_ok());
        let fs = check_stream(
            &parse_stream_head(&head(OST_ZFS, 1, 0, false)).unwrap(),
            None,
        )
        .unwrap_err();
        assert!(fs.contains("filesystem"), "{fs}");
        let outer = parse_stream_head(&head(OST_ZVOL, 2, 0, false)).unwrap();
        let compound = check_stream(&outer, None).unwrap_err();
        assert!(compound.contains("compound"), "{compound}");
        let inner = parse_stream_head(&head(OST_ZFS, 1, 0, false)).unwrap();
        let e = check_stream(&outer, Some(&inner)).unwrap_err();
        assert!(e.contains("compound") && e.contains("a filesystem"), "{e}");
        // `zfs send -p` or `-R` of a volume: one volume, with its properties.
        let vol = parse_stream_head(&head(OST_ZVOL, 1, 0, false)).unwrap();
        assert!(check_stream(&outer, Some(&vol)).is_ok());
        let raw_vol = parse_stream_head(&head(OST_ZVOL, 1, FEATURE_RAW, false)).unwrap();
        assert!(check_stream(&outer, Some(&raw_vol))
            .unwrap_err()
            .contains("raw"));
        let raw = check_stream(
            &parse_stream_head(&head(OST_ZVOL, 1, FEATURE_RAW, false)).unwrap(),
            None,
        )
        .unwrap_err();
        assert!(raw.contains("raw"), "{raw}");
        assert!(parse_stream_head(&[0u8; 100]).is_err());
        assert!(parse_stream_head(&[0u8; 400])
            .unwrap_err()
            .contains("magic"));
    }

    #[test]
    fn images_that_reach_outside_themselves_are_refused() {
        let own = "/proc/1/fd/3";
        let plain = r#"[{"virtual-size": 67108864, "filename": "/proc/1/fd/3", "format": "qcow2", "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}]"#;
        assert_eq!(check_info(plain, own).unwrap(), 64 << 20);
        let backing = r#"[{"virtual-size": 1, "filename": "/proc/1/fd/3", "backing-filename": "/etc/shadow", "format": "qcow2"}, {"virtual-size": 1, "filename": "/etc/shadow"}]"#;
        assert!(check_info(backing, own)
            .unwrap_err()
            .contains("/etc/shadow"));
        let data_file = r#"{"virtual-size": 1, "filename": "x", "format-specific": {"type": "qcow2", "data": {"data-file": "/dev/sda"}}}"#;
        assert!(check_info(data_file, own).unwrap_err().contains("/dev/sda"));
        let flat = r#"[{"virtual-size": 1048576, "filename": "/proc/1/fd/3", "format-specific": {"type": "vmdk", "data": {"create-type": "monolithicFlat", "extents": [{"filename": "/tmp/secret.txt"}]}}}]"#;
        assert!(check_info(flat, own)
            .unwrap_err()
            .contains("/tmp/secret.txt"));
        let sparse = r#"[{"virtual-size": 1048576, "filename": "/proc/1/fd/3", "format-specific": {"type": "vmdk", "data": {"extents": [{"filename": "/proc/1/fd/3"}]}}}]"#;
        assert_eq!(check_info(sparse, own).unwrap(), 1 << 20);
        assert!(check_info("[]", own).is_err());
        assert!(check_info("{", own).is_err());
    }

    #[test]
    fn only_regular_files_in_the_import_directory_are_opened() {
        let d = tempfile::tempdir().unwrap();
        let imports = d.path().join("import");
        std::fs::create_dir_all(imports.join("sub")).unwrap();
        let from = ImportDir {
            dir: imports.clone(),
            fs_type: None,
        };
        let src = |p: &Path| Source {
            path: p.into(),
            format: Format::Raw,
        };
        std::fs::write(imports.join("img.raw"), b"data").unwrap();
        std::fs::write(imports.join("sub/b.raw"), b"sub").unwrap();
        // By absolute path or by name, in the directory or below it.
        for p in [imports.join("img.raw"), PathBuf::from("img.raw")] {
            let o = open(&src(&p), &from).unwrap();
            assert!(o.path().starts_with("/proc/"));
            assert_eq!(std::fs::read(o.path()).unwrap(), b"data");
        }
        assert_eq!(
            std::fs::read(open(&src(Path::new("sub/b.raw")), &from).unwrap().path()).unwrap(),
            b"sub"
        );
        // Anything elsewhere on the box, however named: the box's own files, the kernel's, a
        // secret next to the import directory.
        std::fs::write(d.path().join("secret.key"), b"secret").unwrap();
        for (p, why) in [
            (d.path().join("secret.key"), "come from"),
            (PathBuf::from("/proc/self/environ"), "/proc"),
            (PathBuf::from("/dev/null"), "/dev"),
            (PathBuf::from("../secret.key"), "not a file name"),
            (imports.join("sub/../../secret.key"), "not a file name"),
            (PathBuf::from(""), "not a file name"),
        ] {
            let e = open(&src(&p), &from).unwrap_err().to_string();
            assert!(e.contains(why), "{}: {e}", p.display());
        }
        // A symlink in the directory, to a file outside it or inside it, or a symlinked
        // directory on the way: never followed.
        std::os::unix::fs::symlink(d.path().join("secret.key"), imports.join("out")).unwrap();
        std::os::unix::fs::symlink("img.raw", imports.join("in")).unwrap();
        std::os::unix::fs::symlink(d.path(), imports.join("up")).unwrap();
        for name in ["out", "in", "up/secret.key"] {
            let e = open(&src(Path::new(name)), &from).unwrap_err().to_string();
            assert!(e.contains("symlink"), "{name}: {e}");
        }
        // Not a regular file.
        let e = open(&src(Path::new("sub")), &from).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        nix::unistd::mkfifo(
            &imports.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = open(&src(Path::new("fifo")), &from)
            .unwrap_err()
            .to_string();
        assert!(e.contains("FIFO"), "{e}");
        assert!(open(&src(Path::new("missing")), &from).is_err());
        // The directory on another filesystem than the pool: refused.
        let wrong = ImportDir {
            fs_type: Some(ZFS_SUPER_MAGIC),
            ..from.clone()
        };
        let fs = nix::sys::statfs::statfs(&imports)
            .unwrap()
            .filesystem_type()
            .0 as i64;
        if fs != ZFS_SUPER_MAGIC {
            let e = open(&src(Path::new("img.raw")), &wrong)
                .unwrap_err()
                .to_string();
            assert!(e.contains("not on the pool"), "{e}");
        }
    }
}
