//! nvmet state in the JSON layout `nvmetcli save` writes, so operators can read and diff it with
//! familiar tools. Secrets are left out: hosts are listed by NQN only.

use crate::nvmet::Nvmet;
use serde_json::{json, Value};

pub fn to_json(n: &Nvmet) -> Value {
    let hosts: Vec<Value> = n.hosts.keys().map(|h| json!({ "nqn": h })).collect();
    let ports: Vec<Value> = n
        .ports
        .iter()
        .map(|(id, p)| {
            json!({
                "addr": {
                    "adrfam": p.adrfam,
                    "traddr": p.traddr,
                    "treq": "not specified",
                    "trsvcid": p.trsvcid,
                    "trtype": p.trtype,
                },
                "portid": id,
                "referrals": [],
                "subsystems": p.subsystems.iter().collect::<Vec<_>>(),
            })
        })
        .collect();
    let subsystems: Vec<Value> = n
        .subsystems
        .iter()
        .map(|(nqn, s)| {
            json!({
                "allowed_hosts": s.allowed_hosts.iter().collect::<Vec<_>>(),
                "attr": {
                    "allow_any_host": if s.allow_any_host { "1" } else { "0" },
                    "model": s.model,
                    "serial": s.serial,
                },
                "namespaces": s.namespaces.iter().map(|(nsid, ns)| json!({
                    "device": { "nguid": ns.nguid, "path": ns.device_path, "uuid": ns.uuid },
                    "enable": u8::from(ns.enabled),
                    "nsid": nsid,
                })).collect::<Vec<_>>(),
                "nqn": nqn,
            })
        })
        .collect();
    json!({ "hosts": hosts, "ports": ports, "subsystems": subsystems })
}
