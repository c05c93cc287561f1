//! The volume service's settings (`/etc/volumes.toml`, optional): where specs and identities live,
//! the pool's free-space floor for new volumes, and where NVMe/TCP listens.

use crate::error::{Error, Result};
use platform::Size;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/volumes.toml";
/// An operator's settings on the vault take precedence over the image's and survive OS updates.
pub const OVERRIDE_PATH: &str = "/persist/config/volumes.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub pool: String,
    /// Spec files, one per volume (`<name>.toml` or `.json`), on the encrypted vault.
    pub spool: PathBuf,
    /// Persisted identities and CHAP secrets, on the encrypted vault.
    pub state: PathBuf,
    /// The one directory volume sources (images, streams) are imported from, on the pool.
    pub import_dir: PathBuf,
    /// New volumes are refused while the pool's free space is under this (bytes or `%` of pool).
    pub free_floor: String,
    pub nvme_tcp: TcpConfig,
    /// nvmet port ids this service owns.
    pub loop_port: u16,
    pub tcp_port_id: u16,
    /// The LIO HBA index whose iblock backstores this service owns.
    pub iblock_hba: u32,
    /// zvols created, grown or destroyed at once in a pass. ZFS commits each of these in a
    /// transaction group sync; concurrent ones share a sync instead of waiting for one each.
    pub zfs_workers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Loopback by default; a host-only bridge address in production; never `0.0.0.0` unless set.
    pub address: String,
    pub port: u16,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            address: "127.0.0.1".into(),
            port: 4420,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pool: "persist".into(),
            spool: "/persist/config/volumes/specs".into(),
            state: "/persist/config/volumes/state".into(),
            import_dir: "/persist/import".into(),
            free_floor: "10%".into(),
            nvme_tcp: TcpConfig::default(),
            loop_port: 1,
            tcp_port_id: 2,
            iblock_hba: 100,
            zfs_workers: 8,
        }
    }
}

impl Config {
    /// Where imports come from: [`Config::import_dir`], on the pool.
    pub fn imports(&self) -> crate::import::ImportDir {
        crate::import::ImportDir::on_pool(&self.import_dir)
    }

    /// The file when it exists, the defaults when it does not.
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => return Err(Error::Io(platform::io("read", path)(source))),
        };
        Config::parse(path, &text)
    }

    /// `path` alone when given; otherwise this host's settings (see [`Config::load_host`]).
    pub fn load_layered(path: Option<&Path>) -> Result<Config> {
        match path {
            Some(p) => Config::load(p),
            None => Config::load_host(
                Path::new(OVERRIDE_PATH),
                Path::new(DEFAULT_PATH),
                Path::new(netconf::PATH),
            ),
        }
    }

    /// The vault's `over`ride when present, else the `image`'s file; then the NVMe/TCP address
    /// the box's `network` settings name, over either: a production box has no other way to
    /// set it. A network file that is wrong names no address (eve-net logs why at boot), so the
    /// exports stay where the volume settings put them.
    pub fn load_host(over: &Path, image: &Path, network: &Path) -> Result<Config> {
        let mut c = if over.exists() {
            Config::load(over)?
        } else {
            Config::load(image)?
        };
        if let Some(ip) = netconf::NetPolicy::load(network).0.nvme_tcp_listen {
            c.nvme_tcp.address = ip.to_string();
        }
        Ok(c)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let bad = |msg: String| Error::State {
            path: path.into(),
            msg,
        };
        let c: Config = toml::from_str(text)
            .map_err(|e| bad(e.message().lines().next().unwrap_or("invalid").into()))?;
        Size::parse(&c.free_floor).map_err(|m| bad(format!("free_floor: {m}")))?;
        c.nvme_tcp
            .address
            .parse::<std::net::IpAddr>()
            .map_err(|_| {
                bad(format!(
                    "nvme_tcp.address: `{}` is not an IP address",
                    c.nvme_tcp.address
                ))
            })?;
        if !(1..=64).contains(&c.zfs_workers) {
            return Err(bad(format!(
                "zfs_workers: {} is not between 1 and 64",
                c.zfs_workers
            )));
        }
        if c.loop_port == c.tcp_port_id {
            return Err(bad("loop_port and tcp_port_id must differ".into()));
        }
        Ok(c)
    }

    pub fn floor_bytes(&self, pool_size: u64) -> u64 {
        Size::parse(&self.free_floor)
            .map(|s| s.bytes(pool_size))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_only_and_bad_fields_are_named() {
        let c = Config::parse(Path::new("/etc/volumes.toml"), "").unwrap();
        assert_eq!(c.nvme_tcp.address, "127.0.0.1");
        assert_eq!(c.floor_bytes(1000), 100);
        let e = Config::parse(
            Path::new("/etc/volumes.toml"),
            "[nvme_tcp]\naddress = \"any\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("/etc/volumes.toml: nvme_tcp.address"), "{e}");
        let e = Config::parse(Path::new("/x"), "free_floor = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("free_floor"), "{e}");
        assert!(Config::parse(Path::new("/x"), "colour = 1\n").is_err());
        let e = Config::parse(Path::new("/x"), "zfs_workers = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zfs_workers"), "{e}");
    }

    #[test]
    fn the_network_settings_name_where_nvme_tcp_listens_over_either_file() {
        let d = tempfile::tempdir().unwrap();
        let (over, image, net) = (
            d.path().join("over.toml"),
            d.path().join("image.toml"),
            d.path().join("network.toml"),
        );
        std::fs::write(&image, "[nvme_tcp]\naddress = \"127.0.0.2\"\n").unwrap();
        let addr = || {
            Config::load_host(&over, &image, &net)
                .unwrap()
                .nvme_tcp
                .address
        };
        assert_eq!(addr(), "127.0.0.2", "no network file: the image's");
        std::fs::write(&over, "free_floor = \"5%\"\n").unwrap();
        assert_eq!(
            addr(),
            "127.0.0.1",
            "the vault's file replaces the image's whole"
        );
        std::fs::write(
            &net,
            "[nvme_tcp]\nlisten = \"10.0.2.15\"\nallow = [\"10.0.2.2\"]\n",
        )
        .unwrap();
        assert_eq!(addr(), "10.0.2.15");
        std::fs::remove_file(&over).unwrap();
        assert_eq!(addr(), "10.0.2.15");
        // Wrong (beyond loopback, nobody allowed): refused whole, the exports stay on loopback.
        std::fs::write(&net, "[nvme_tcp]\nlisten = \"0.0.0.0\"\n").unwrap();
        assert_eq!(addr(), "127.0.0.2");
        // A broken volume file is still an error, network file or not.
        std::fs::write(&image, "zfs_workers = 0\n").unwrap();
        assert!(Config::load_host(&over, &image, &net).is_err());
    }
}
