//! What a VM's launcher needs to attach a volume (`storagectl volume connect`, and the admin-only
//! `GET /v1/volumes/{name}/connect`): for NVMe/TCP the address, the NQNs and the VM's
//! DH-HMAC-CHAP secrets, put in a file the kernel's `/dev/nvme-fabrics` takes in one write so
//! they never appear in a command line; for vhost-scsi the qemu arguments; for nvme-loop the
//! host's device. Warns when what it prints cannot work from a VM (a loopback listen address).

use crate::env::Env;
use crate::error::{Error, Result};
use crate::ids;
use crate::spec::{Transport, Volume};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// How a VM reaches a volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Connect {
    pub name: String,
    pub vm: String,
    pub transport: Transport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvme_tcp: Option<TcpConnect>,
    /// nvme-loop: the namespace on this box, to hand to the VM's qemu.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_args: Option<Vec<String>>,
    /// What keeps the lines above from working from a VM, said plainly.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Where `storagectl` wrote the connect options (secrets included), when asked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options_file: Option<PathBuf>,
}

/// An NVMe/TCP connection's fields, as `nvme connect` and `/dev/nvme-fabrics` name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TcpConnect {
    pub traddr: String,
    pub trsvcid: u16,
    pub subsysnqn: String,
    pub hostnqn: String,
    pub hostid: String,
    /// The VM's secrets. The API hands them to admins only; `storagectl` writes them to a file
    /// (mode 0600) and never prints them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhchap_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhchap_ctrl_secret: Option<String>,
}

impl TcpConnect {
    /// The options line `/dev/nvme-fabrics` takes (one write makes the controller).
    pub fn fabrics_options(&self) -> String {
        let mut s = format!(
            "transport=tcp,traddr={},trsvcid={},nqn={},hostnqn={},hostid={}",
            self.traddr, self.trsvcid, self.subsysnqn, self.hostnqn, self.hostid
        );
        if let Some(k) = &self.dhchap_secret {
            s.push_str(&format!(",dhchap_secret={k}"));
        }
        if let Some(k) = &self.dhchap_ctrl_secret {
            s.push_str(&format!(",dhchap_ctrl_secret={k}"));
        }
        s
    }
}

/// Why an NVMe/TCP listen address does not serve a VM, if it does not.
pub fn listen_warning(address: &str) -> Option<String> {
    let ip: IpAddr = address.parse().ok()?;
    if ip.is_loopback() {
        Some(format!(
            "NVMe/TCP listens on {ip}: only programs on this box reach it, no VM does. Name a bridge address as [nvme_tcp] listen in network.toml on CONFIG (or nvme_tcp.address in /persist/config/volumes.toml)"
        ))
    } else if ip.is_unspecified() {
        Some(format!(
            "NVMe/TCP listens on every address ({ip}): use one of this box's addresses that the VM reaches as traddr"
        ))
    } else {
        None
    }
}

/// The volume `name`'s connection, secrets included: the caller decides who sees them.
pub fn connect(env: &Env, name: &str) -> Result<Connect> {
    env.check_vault()?;
    let path = crate::ops::spool_file(env, name).ok_or_else(|| Error::NoVolume(name.into()))?;
    let v: Volume = crate::spec::load_file(&path)?;
    let store = env.store();
    let i = store
        .volume(name)?
        .ok_or_else(|| Error::Refused(format!("{name} has not been reconciled yet")))?;
    let mut warnings = Vec::new();
    let nqn = ids::subsystem_nqn(name);
    let nvme_tcp = if v.transport == Transport::NvmeTcp {
        let h = store.host(&v.vm)?.ok_or_else(|| {
            Error::Refused(format!(
                "{name}: VM {} has no secrets yet (the volume has not been exported)",
                v.vm
            ))
        })?;
        warnings.extend(listen_warning(&env.cfg.nvme_tcp.address));
        Some(TcpConnect {
            traddr: env.cfg.nvme_tcp.address.clone(),
            trsvcid: env.cfg.nvme_tcp.port,
            subsysnqn: nqn.clone(),
            hostnqn: ids::host_nqn(&v.vm),
            hostid: ids::host_id(&v.vm),
            dhchap_secret: Some(h.key),
            dhchap_ctrl_secret: Some(h.ctrl_key),
        })
    } else {
        None
    };
    let host_device = (v.transport == Transport::NvmeLoop)
        .then(|| crate::hostside::namespace_dev(&env.roots, &nqn))
        .flatten()
        .map(|p| p.display().to_string());
    if v.transport == Transport::NvmeLoop && host_device.is_none() {
        warnings.push(format!(
            "{name} is not connected on this box yet: its device appears after the next reconcile pass"
        ));
    }
    let qemu_args = match v.transport {
        Transport::VhostScsi => Some(vec![
            "-device".into(),
            format!("vhost-scsi-pci,wwpn={},num_queues={}", i.wwpn, v.vcpus),
        ]),
        Transport::NvmeLoop => host_device.as_ref().map(|d| {
            vec![
                "-blockdev".into(),
                format!("host_device,node-name={name},filename={d},cache.direct=on"),
                "-device".into(),
                format!("virtio-blk-pci,drive={name}"),
            ]
        }),
        _ => None,
    };
    Ok(Connect {
        name: v.name,
        vm: v.vm,
        transport: v.transport,
        nvme_tcp,
        host_device,
        qemu_args,
        warnings,
        options_file: None,
    })
}

impl Connect {
    /// Writes the NVMe/TCP options (secrets included) to `dir/<name>.nvmf`, mode 0600, and takes
    /// the secrets out of `self`, so what is printed afterwards holds none. Nothing to write for
    /// other transports.
    pub fn write_secrets(&mut self, dir: &Path) -> Result<()> {
        if let Some(t) = &mut self.nvme_tcp {
            let p = dir.join(format!("{}.nvmf", self.name));
            ids::write_private(&p, t.fabrics_options().as_bytes())?;
            self.options_file = Some(p);
        }
        self.redact();
        Ok(())
    }

    /// Takes the secrets out.
    pub fn redact(&mut self) {
        if let Some(t) = &mut self.nvme_tcp {
            t.dhchap_secret = None;
            t.dhchap_ctrl_secret = None;
        }
    }

    /// What `storagectl volume connect` prints: ready to paste, never a secret.
    pub fn render(&self) -> String {
        let mut s = format!(
            "# volume {} (vm {}): {}\n",
            self.name,
            self.vm,
            self.transport.as_str()
        );
        if let Some(t) = &self.nvme_tcp {
            s.push_str(&format!(
                "# traddr {} trsvcid {}\n# subsystem {}\n# host {} (host ID {})\n",
                t.traddr, t.trsvcid, t.subsysnqn, t.hostnqn, t.hostid
            ));
            match &self.options_file {
                Some(f) => s.push_str(&format!(
                    "# The options, the VM's DH-HMAC-CHAP secrets included, are in {} (mode 0600);\n# the kernel takes them in one write, so they never appear in a command line:\nmodprobe nvme-tcp\ncat {} > /dev/nvme-fabrics\n",
                    f.display(),
                    f.display()
                )),
                None => s.push_str(
                    "# The secrets are not printed: add --out DIR to write the connect options, secrets\n# included, to DIR/NAME.nvmf (mode 0600), then `cat DIR/NAME.nvmf > /dev/nvme-fabrics`.\n",
                ),
            }
        }
        if let Some(d) = &self.host_device {
            s.push_str(&format!("# host device {d}\n"));
        }
        if let Some(a) = &self.qemu_args {
            s.push_str(&format!("qemu-system-x86_64 ... {}\n", a.join(" ")));
        }
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp() -> Connect {
        Connect {
            name: "web".into(),
            vm: "vm1".into(),
            transport: Transport::NvmeTcp,
            nvme_tcp: Some(TcpConnect {
                traddr: "10.0.2.15".into(),
                trsvcid: 4420,
                subsysnqn: "nqn.x:vol:web".into(),
                hostnqn: "nqn.x:vm:vm1".into(),
                hostid: "0f0e0d0c-0000-4000-8000-000000000001".into(),
                dhchap_secret: Some("DHHC-1:00:aG9zdA==:".into()),
                dhchap_ctrl_secret: Some("DHHC-1:00:Y3RybA==:".into()),
            }),
            host_device: None,
            qemu_args: None,
            warnings: vec![],
            options_file: None,
        }
    }

    #[test]
    fn the_secrets_go_to_a_private_file_and_never_to_the_output() {
        let d = tempfile::tempdir().unwrap();
        let mut c = tcp();
        assert!(!c.render().contains("DHHC-1"), "{}", c.render());
        c.write_secrets(d.path()).unwrap();
        let f = d.path().join("web.nvmf");
        assert_eq!(c.options_file.as_deref(), Some(f.as_path()));
        let opts = std::fs::read_to_string(&f).unwrap();
        assert_eq!(
            opts,
            "transport=tcp,traddr=10.0.2.15,trsvcid=4420,nqn=nqn.x:vol:web,hostnqn=nqn.x:vm:vm1,hostid=0f0e0d0c-0000-4000-8000-000000000001,dhchap_secret=DHHC-1:00:aG9zdA==:,dhchap_ctrl_secret=DHHC-1:00:Y3RybA==:"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let out = c.render() + &serde_json::to_string(&c).unwrap();
        assert!(!out.contains("DHHC-1"), "{out}");
        assert!(out.contains(&format!("cat {} > /dev/nvme-fabrics", f.display())));
    }

    #[test]
    fn a_listen_address_no_vm_reaches_is_warned_about() {
        assert!(listen_warning("127.0.0.1").unwrap().contains("no VM does"));
        assert!(listen_warning("::1").is_some());
        assert!(listen_warning("0.0.0.0").unwrap().contains("every address"));
        assert_eq!(listen_warning("10.0.2.15"), None);
        assert_eq!(listen_warning("fd00::1"), None);
    }

    #[test]
    fn the_json_round_trips_for_the_remote_cli() {
        let c = tcp();
        let back: Connect = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
