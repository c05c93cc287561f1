//! A volume spec (TOML or JSON, from `storagectl volume create` or a file in the spool directory)
//! and its validation. Nothing is applied from a spec that does not validate; every error names
//! the file and the field.

use crate::snap::Schedule;
use platform::Size;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use crate::name::{check_name, MAX_NAME};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    NvmeTcp,
    NvmeLoop,
    VhostScsi,
    VhostNvme,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::NvmeTcp => "nvme-tcp",
            Transport::NvmeLoop => "nvme-loop",
            Transport::VhostScsi => "vhost-scsi",
            Transport::VhostNvme => "vhost-nvme",
        }
    }
    pub fn is_nvmet(self) -> bool {
        matches!(self, Transport::NvmeTcp | Transport::NvmeLoop)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Qcow2,
    Raw,
    Vmdk,
    /// A `zfs send` stream of a volume.
    ZfsStream,
}

impl Format {
    pub fn qemu_name(self) -> Option<&'static str> {
        match self {
            Format::Qcow2 => Some("qcow2"),
            Format::Raw => Some("raw"),
            Format::Vmdk => Some("vmdk"),
            Format::ZfsStream => None,
        }
    }
}

/// Initial content, written once when the zvol is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub path: PathBuf,
    pub format: Format,
}

/// The spec as written by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub name: String,
    /// `10G`, `512M`, bytes. Rounded up to a whole volblocksize.
    pub size: String,
    /// The VM the volume belongs to; it names the host NQN and the CHAP keys.
    pub vm: String,
    pub transport: Transport,
    /// `thin` (sparse, the default) or `thick` (space reserved up front).
    #[serde(default = "default_provisioning")]
    pub provisioning: String,
    #[serde(default = "default_volblocksize")]
    pub volblocksize: String,
    /// Under persist/vault (encrypted, the default) or persist/clear.
    #[serde(default = "default_true")]
    pub encrypted: bool,
    /// Queues for vhost-scsi (the VM's vCPU count).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Made as a clone of another volume's snapshot (`web@before-upgrade`) instead of empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default)]
    pub source: Option<Source>,
    /// Scheduled snapshots, each `[[snapshots]]` with `every = "1h"` and `keep = 24`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<RawSchedule>,
}

/// One snapshot schedule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// `30s`, `15m`, `1h`, `1d`, `1w`.
    pub every: String,
    /// How many of this schedule's snapshots are kept (the oldest beyond it are destroyed).
    pub keep: u32,
}

/// The snapshot a cloned volume starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub volume: String,
    pub snapshot: String,
}

pub const MAX_SCHEDULES: usize = 8;

fn default_provisioning() -> String {
    "thin".into()
}
fn default_volblocksize() -> String {
    "16k".into()
}
fn default_true() -> bool {
    true
}

/// A validated volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub size: u64,
    pub vm: String,
    pub transport: Transport,
    pub thin: bool,
    pub volblocksize: u64,
    pub encrypted: bool,
    pub vcpus: u32,
    pub source: Option<Source>,
    #[serde(default)]
    pub origin: Option<Origin>,
    #[serde(default)]
    pub snapshots: Vec<Schedule>,
}

impl Volume {
    /// Whether its zvol is made in place (empty, under the intent record) rather than built under
    /// the staging name (an import, a stream or a clone).
    pub fn in_place(&self) -> bool {
        self.source.is_none() && self.origin.is_none()
    }
}

pub use crate::error::SpecError;

fn parse_bytes(s: &str) -> Result<u64, String> {
    match Size::parse(s)? {
        Size::Bytes(b) => Ok(b),
        Size::Percent(_) => Err(format!(
            "`{s}`: a volume size is absolute (like 10G), not a share"
        )),
    }
}

impl RawSpec {
    /// Reads TOML or JSON (by extension; `-` or unknown tries JSON when it starts with `{`).
    pub fn parse(file: &str, text: &str) -> Result<RawSpec, SpecError> {
        let e = |field: &str, msg: String| SpecError {
            file: file.into(),
            field: field.into(),
            msg,
        };
        let json = file.ends_with(".json") || text.trim_start().starts_with('{');
        if json {
            serde_json::from_str(text).map_err(|x| {
                let m = x.to_string();
                let field = m.split('`').nth(1).unwrap_or("-").to_string();
                e(&field, m)
            })
        } else {
            toml::from_str(text).map_err(|x| {
                let m = x
                    .message()
                    .lines()
                    .next()
                    .unwrap_or("invalid TOML")
                    .to_string();
                let field = x
                    .span()
                    .and_then(|sp| {
                        text[..sp.start.min(text.len())]
                            .lines()
                            .last()
                            .map(String::from)
                    })
                    .and_then(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
                    .or_else(|| m.split('`').nth(1).map(String::from))
                    .unwrap_or_else(|| "-".into());
                e(&field, m)
            })
        }
    }

    pub fn validate(&self, file: &str) -> Result<Volume, SpecError> {
        let e = |field: &str, msg: String| SpecError {
            file: file.into(),
            field: field.into(),
            msg,
        };
        check_name(&self.name).map_err(|m| e("name", m))?;
        check_name(&self.vm).map_err(|m| e("vm", m))?;
        let thin = match self.provisioning.as_str() {
            "thin" => true,
            "thick" => false,
            o => return Err(e("provisioning", format!("`{o}` is not `thin` or `thick`"))),
        };
        let vbs = parse_bytes(&self.volblocksize).map_err(|m| e("volblocksize", m))?;
        if !vbs.is_power_of_two() || !(4096..=128 * 1024).contains(&vbs) {
            return Err(e(
                "volblocksize",
                format!(
                    "`{}` must be a power of two from 4k to 128k",
                    self.volblocksize
                ),
            ));
        }
        let size = parse_bytes(&self.size).map_err(|m| e("size", m))?;
        if size < 1 << 20 {
            return Err(e(
                "size",
                format!("`{}` is under the 1M minimum", self.size),
            ));
        }
        if size > 1 << 50 {
            return Err(e("size", format!("`{}` is over the 1P maximum", self.size)));
        }
        let size = size.div_ceil(vbs) * vbs;
        let vcpus = self.vcpus.unwrap_or(1);
        if !(1..=255).contains(&vcpus) {
            return Err(e("vcpus", format!("{vcpus} is outside 1-255")));
        }
        if self.vcpus.is_some() && self.transport != Transport::VhostScsi {
            return Err(e("vcpus", "only vhost-scsi has per-vCPU queues".into()));
        }
        if let Some(src) = &self.source {
            if !src.path.is_absolute() {
                return Err(e(
                    "source.path",
                    format!("`{}` must be an absolute path", src.path.display()),
                ));
            }
            if let Some(why) = crate::denied::denied(&src.path, &[]) {
                return Err(e("source.path", why));
            }
        }
        let origin = match &self.origin {
            None => None,
            Some(o) => {
                let (volume, snapshot) = crate::snap::parse_ref(o).map_err(|m| e("origin", m))?;
                if volume == self.name {
                    return Err(e("origin", format!("`{o}` is this volume's own snapshot")));
                }
                if self.provisioning != "thin" {
                    return Err(e(
                        "provisioning",
                        "a clone is thin: it shares its origin's blocks".into(),
                    ));
                }
                if self.source.is_some() {
                    return Err(e(
                        "origin",
                        "a volume starts from a clone or from a source, not both".into(),
                    ));
                }
                Some(Origin { volume, snapshot })
            }
        };
        if self.snapshots.len() > MAX_SCHEDULES {
            return Err(e(
                "snapshots",
                format!(
                    "{} schedules; at most {MAX_SCHEDULES}",
                    self.snapshots.len()
                ),
            ));
        }
        let mut snapshots: Vec<Schedule> = Vec::new();
        for (i, r) in self.snapshots.iter().enumerate() {
            let every = crate::snap::parse_every(&r.every)
                .map_err(|m| e(&format!("snapshots[{i}].every"), m))?;
            if !(1..=crate::snap::MAX_KEEP).contains(&r.keep) {
                return Err(e(
                    &format!("snapshots[{i}].keep"),
                    format!("{} is outside 1-{}", r.keep, crate::snap::MAX_KEEP),
                ));
            }
            if snapshots.iter().any(|s| s.every == every) {
                return Err(e(
                    &format!("snapshots[{i}].every"),
                    format!("a second schedule every `{}`", r.every),
                ));
            }
            snapshots.push(Schedule {
                every,
                keep: r.keep,
            });
        }
        Ok(Volume {
            origin,
            snapshots,
            name: self.name.clone(),
            size,
            vm: self.vm.clone(),
            transport: self.transport,
            thin,
            volblocksize: vbs,
            encrypted: self.encrypted,
            vcpus,
            source: self.source.clone(),
        })
    }
}

impl Volume {
    /// The spec that round-trips to this volume (what the spool keeps).
    pub fn to_raw(&self) -> RawSpec {
        RawSpec {
            name: self.name.clone(),
            size: self.size.to_string(),
            vm: self.vm.clone(),
            transport: self.transport,
            provisioning: if self.thin { "thin" } else { "thick" }.into(),
            volblocksize: self.volblocksize.to_string(),
            encrypted: self.encrypted,
            vcpus: (self.transport == Transport::VhostScsi).then_some(self.vcpus),
            source: self.source.clone(),
            origin: self
                .origin
                .as_ref()
                .map(|o| format!("{}@{}", o.volume, o.snapshot)),
            snapshots: self
                .snapshots
                .iter()
                .map(|s| RawSchedule {
                    every: crate::snap::every_label(s.every),
                    keep: s.keep,
                })
                .collect(),
        }
    }
}

/// Reads and validates one spool file; the file's stem must be the volume's name.
pub fn load_file(path: &Path) -> Result<Volume, SpecError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|x| SpecError {
        file: file.clone(),
        field: "-".into(),
        msg: format!("cannot read: {x}"),
    })?;
    let v = RawSpec::parse(&file, &text)?.validate(&file)?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if stem.as_deref() != Some(v.name.as_str()) {
        return Err(SpecError {
            file,
            field: "name".into(),
            msg: format!("`{}` does not match the file name", v.name),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Result<Volume, SpecError> {
        RawSpec::parse("t.toml", text)?.validate("t.toml")
    }

    #[test]
    fn defaults_are_thin_encrypted_16k_and_size_rounds_to_blocks() {
        let x = v("name = \"db\"\nsize = \"10000000\"\nvm = \"vm1\"\ntransport = \"nvme-tcp\"\n")
            .unwrap();
        assert!(x.thin && x.encrypted);
        assert_eq!(x.volblocksize, 16384);
        assert_eq!(x.size, 10_010_624);
        assert_eq!(x.size % 16384, 0);
    }

    #[test]
    fn json_specs_parse_too() {
        let x = RawSpec::parse(
            "a.json",
            r#"{"name":"a","size":"1G","vm":"v","transport":"vhost-scsi","vcpus":4,"provisioning":"thick"}"#,
        )
        .unwrap()
        .validate("a.json")
        .unwrap();
        assert_eq!((x.vcpus, x.thin, x.size), (4, false, 1 << 30));
    }

    #[test]
    fn bad_names_and_values_name_the_field() {
        let base = |k: &str, val: &str| {
            let mut m = vec![
                ("name", "\"a\""),
                ("size", "\"1G\""),
                ("vm", "\"v\""),
                ("transport", "\"nvme-tcp\""),
            ];
            m.retain(|(x, _)| *x != k);
            m.push((k, val));
            m.iter()
                .map(|(a, b)| format!("{a} = {b}\n"))
                .collect::<String>()
        };
        for (k, val) in [
            ("name", "\"../etc\""),
            ("name", "\"a/b\""),
            ("name", "\".hidden\""),
            ("name", "\"\""),
            ("vm", "\"vm 1\""),
            ("size", "\"10%\""),
            ("size", "\"lots\""),
            ("size", "\"1K\""),
            ("provisioning", "\"fat\""),
            ("volblocksize", "\"3k\""),
            ("volblocksize", "\"1M\""),
            ("transport", "\"iscsi\""),
        ] {
            let err = v(&base(k, val)).unwrap_err();
            assert_eq!(err.field, k, "{k}={val}: {err}");
            assert!(err.to_string().starts_with("t.toml: "), "{err}");
        }
        let long = "x".repeat(65);
        assert_eq!(
            v(&base("name", &format!("\"{long}\""))).unwrap_err().field,
            "name"
        );
        assert_eq!(v(&base("vcpus", "2")).unwrap_err().field, "vcpus");
        assert!(v(&base("colour", "\"red\"")).is_err());
        let rel = base("source", "{ path = \"img.qcow2\", format = \"qcow2\" }");
        assert_eq!(v(&rel).unwrap_err().field, "source.path");
        let dev = base("source", "{ path = \"/dev/sda\", format = \"raw\" }");
        assert_eq!(v(&dev).unwrap_err().field, "source.path");
    }

    #[test]
    fn a_spool_file_must_be_named_after_its_volume() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("other.toml");
        std::fs::write(
            &p,
            "name = \"a\"\nsize = \"1G\"\nvm = \"v\"\ntransport = \"nvme-loop\"\n",
        )
        .unwrap();
        let e = load_file(&p).unwrap_err();
        assert_eq!(e.field, "name");
        assert!(e.msg.contains("file name"));
    }

    #[test]
    fn the_stored_form_round_trips() {
        let x = v("name = \"a\"\nsize = \"3G\"\nvm = \"v\"\ntransport = \"vhost-scsi\"\nvcpus = 2\nencrypted = false\n").unwrap();
        let t = toml::to_string(&x.to_raw()).unwrap();
        assert_eq!(v(&t).unwrap(), x);
    }

    #[test]
    fn schedules_and_an_origin_validate_by_field_and_round_trip() {
        let base = "name = \"a\"\nsize = \"1G\"\nvm = \"v\"\ntransport = \"nvme-tcp\"\n";
        let x = v(&format!(
            "{base}origin = \"b@before\"\n[[snapshots]]\nevery = \"1h\"\nkeep = 24\n[[snapshots]]\nevery = \"1d\"\nkeep = 7\n"
        ))
        .unwrap();
        assert_eq!(
            x.snapshots,
            [
                Schedule {
                    every: 3600,
                    keep: 24
                },
                Schedule {
                    every: 86_400,
                    keep: 7
                }
            ]
        );
        assert_eq!(
            x.origin.as_ref().map(|o| o.snapshot.as_str()),
            Some("before")
        );
        assert!(!x.in_place());
        let t = toml::to_string(&x.to_raw()).unwrap();
        assert_eq!(v(&t).unwrap(), x);
        for (extra, field) in [
            ("[[snapshots]]\nevery = \"5s\"\nkeep = 1\n", "snapshots[0].every"),
            ("[[snapshots]]\nevery = \"1h\"\nkeep = 0\n", "snapshots[0].keep"),
            (
                "[[snapshots]]\nevery = \"1h\"\nkeep = 1\n[[snapshots]]\nevery = \"60m\"\nkeep = 2\n",
                "snapshots[1].every",
            ),
            ("origin = \"a@s\"\n", "origin"),
            ("origin = \"b\"\n", "origin"),
            ("origin = \"../b@s\"\n", "origin"),
            ("origin = \"b@s\"\nprovisioning = \"thick\"\n", "provisioning"),
            (
                "origin = \"b@s\"\nsource = { path = \"/tmp/x\", format = \"raw\" }\n",
                "origin",
            ),
        ] {
            let e = v(&format!("{base}{extra}")).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
        }
        let e = v(&format!(
            "{base}[[snapshots]]\nevery = \"1h\"\nkeep = 1\nprune = true\n"
        ))
        .unwrap_err();
        assert!(e.msg.contains("prune"), "{e}");
    }
}
