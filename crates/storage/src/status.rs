//! `storagectl status`: the pool, its members by stable id, capacity, and each dataset's usage
//! against its quota and reservation, with encryption and key status. Gathering is thin; the
//! assembly from tool output is pure.

use crate::zfs::{PoolInfo, Props};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Member {
    pub path: String,
    pub disk: Option<String>,
    pub stable_id: Option<String>,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DatasetStatus {
    pub name: String,
    pub used: u64,
    pub available: u64,
    pub quota: Option<u64>,
    pub reservation: Option<u64>,
    pub refreservation: Option<u64>,
    pub encryption: String,
    pub keystatus: String,
    pub mountpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Status {
    pub pool: Option<PoolInfo>,
    pub members: Vec<Member>,
    pub datasets: Vec<DatasetStatus>,
    /// The vault's state, and what to do about it when it is not unlocked.
    pub vault: Option<VaultView>,
    /// Secure Boot, and what the vault's key is sealed to.
    pub boot: Option<crate::vault::Binding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct VaultView {
    /// `unlocked`, `locked`, `unencrypted` or `absent`.
    pub state: String,
    pub dataset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// Pure: the vault as `status` shows it, from the datasets' encryption and key status.
pub fn vault_view(pool: &str, ds: &[DatasetStatus]) -> VaultView {
    let name = format!("{pool}/vault");
    let v = ds.iter().find(|d| d.name == name);
    let (state, advice) = match v {
        None => ("absent", Some(format!(
            "{name} does not exist: storage-init did not create it (see its log on the console); volumes and /{pool}/config are unavailable"
        ))),
        Some(d) if d.encryption == "off" => ("unencrypted", None),
        Some(d) if d.keystatus == "available" => ("unlocked", None),
        Some(_) => ("locked", Some(format!(
            "{name}'s key is not loaded: this box's TPM did not unseal it (a replaced or cleared TPM, a TPM in dictionary-attack lockout, or disks moved from another box). \
Nothing under the vault is read, changed or deleted: guest volumes are kept but not exported, and volumed waits. \
To recover, boot with the original TPM (and Secure Boot on with the project's keys, if the key is sealed to PCR 7); \
or unlock it with the recovery key shown when the vault was made: `storagectl vault recover` (reads it on stdin), \
which also seals a new key to this box's TPM; volumed resumes by itself"
        ))),
    };
    VaultView {
        state: state.into(),
        dataset: name,
        advice,
    }
}

pub const DATASET_PROPS: &str =
    "used,available,quota,reservation,refreservation,encryption,keystatus,mountpoint";

/// Device lines of `zpool status -P`: (path, state).
pub fn parse_status_members(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/dev/"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

pub fn datasets(props: &Props) -> Vec<DatasetStatus> {
    let num = |v: Option<&(String, String)>| v.and_then(|(v, _)| v.parse::<u64>().ok());
    let limit = |v: Option<&(String, String)>| num(v).filter(|&n| n > 0);
    let text =
        |v: Option<&(String, String)>| v.map(|(v, _)| v.clone()).unwrap_or_else(|| "-".into());
    props
        .iter()
        .map(|(name, p)| DatasetStatus {
            name: name.clone(),
            used: num(p.get("used")).unwrap_or(0),
            available: num(p.get("available")).unwrap_or(0),
            quota: limit(p.get("quota")),
            reservation: limit(p.get("reservation")),
            refreservation: limit(p.get("refreservation")),
            encryption: text(p.get("encryption")),
            keystatus: text(p.get("keystatus")),
            mountpoint: text(p.get("mountpoint")),
        })
        .collect()
}

fn mib(b: u64) -> String {
    format!("{}M", b >> 20)
}

pub fn render(s: &Status) -> String {
    let mut o = String::new();
    match &s.pool {
        None => o.push_str("pool: none imported\n"),
        Some(p) => o.push_str(&format!(
            "pool: {} guid {} {}  size {}  allocated {}  free {}\n",
            p.name,
            p.guid,
            p.health,
            mib(p.size),
            mib(p.allocated),
            mib(p.free)
        )),
    }
    for m in &s.members {
        o.push_str(&format!(
            "  member {:<10} {:<8} {}\n",
            m.disk.as_deref().unwrap_or("?"),
            m.state,
            m.stable_id.as_deref().unwrap_or(&m.path)
        ));
    }
    if let Some(b) = &s.boot {
        o.push_str(&format!("secure boot: {}\n", b.secure_boot.describe()));
    }
    if let Some(v) = &s.vault {
        o.push_str(&format!(
            "vault: {} {}\n",
            v.dataset,
            v.state.to_uppercase()
        ));
        if let Some(b) = &s.boot {
            o.push_str(&format!(
                "  key sealed to {}; recovery key: {}\n",
                b.sealed_to.as_deref().unwrap_or("no TPM (not sealed)"),
                if b.recovery_key { "set" } else { "none" }
            ));
        }
        if let Some(a) = &v.advice {
            o.push_str(&format!("  {a}\n"));
        }
    }
    let mut t = platform::table::Table::new(
        &[
            "DATASET",
            "USED",
            "AVAIL",
            "QUOTA",
            "RESERV",
            "ENCRYPTION",
            "KEY",
            "MOUNTPOINT",
        ],
        &[1, 2, 3, 4],
    );
    for d in &s.datasets {
        let opt = |v: Option<u64>| v.map(mib).unwrap_or_else(|| "-".into());
        t.row([
            d.name.clone(),
            mib(d.used),
            mib(d.available),
            opt(d.quota),
            opt(d.reservation.or(d.refreservation)),
            d.encryption.clone(),
            d.keystatus.clone(),
            d.mountpoint.clone(),
        ]);
    }
    o.push_str(&t.render());
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_vault_is_shown_with_what_to_do() {
        let d = |ks: &str, enc: &str| DatasetStatus {
            name: "persist/vault".into(),
            used: 0,
            available: 0,
            quota: None,
            reservation: None,
            refreservation: None,
            encryption: enc.into(),
            keystatus: ks.into(),
            mountpoint: "/persist/vault".into(),
        };
        let v = vault_view("persist", &[d("unavailable", "aes-256-gcm")]);
        assert_eq!(v.state, "locked");
        let a = v.advice.unwrap();
        assert!(
            a.contains("TPM") && a.contains("storagectl vault recover") && a.contains("kept"),
            "{a}"
        );
        assert_eq!(
            vault_view("persist", &[d("available", "aes-256-gcm")]).state,
            "unlocked"
        );
        assert_eq!(vault_view("persist", &[d("-", "off")]).state, "unencrypted");
        assert_eq!(vault_view("persist", &[]).state, "absent");
        let st = Status {
            pool: None,
            members: vec![],
            datasets: vec![],
            vault: Some(vault_view("persist", &[d("unavailable", "aes-256-gcm")])),
            boot: Some(crate::vault::binding(
                Some(&crate::vault::Observed {
                    sealed: Some("v1:7:AA==:AA==".into()),
                    recovery: Some("r1:x".into()),
                    ..Default::default()
                }),
                crate::vault::SecureBoot::Off,
            )),
        };
        let text = render(&st);
        assert!(text.contains("vault: persist/vault LOCKED"));
        assert!(text.contains("secure boot: off\n"), "{text}");
        assert!(
            text.contains(
                "key sealed to this TPM and PCR 7 (Secure Boot state and keys); recovery key: set"
            ),
            "{text}"
        );
        assert!(text.contains("storagectl vault recover"), "{text}");
    }

    #[test]
    fn members_from_zpool_status() {
        let out = "  pool: persist\n state: DEGRADED\nconfig:\n\n\tNAME                                   STATE     READ WRITE CKSUM\n\tpersist                                DEGRADED     0     0     0\n\t  mirror-0                             DEGRADED     0     0     0\n\t    /dev/disk/by-partuuid/aa           ONLINE       0     0     0\n\t    /dev/disk/by-partuuid/bb           UNAVAIL      0     0     0  was /dev/vda1\n";
        assert_eq!(
            parse_status_members(out),
            [
                ("/dev/disk/by-partuuid/aa".to_string(), "ONLINE".to_string()),
                (
                    "/dev/disk/by-partuuid/bb".to_string(),
                    "UNAVAIL".to_string()
                )
            ]
        );
    }

    #[test]
    fn datasets_and_rendering() {
        let props = crate::zfs::parse_get(
            "persist/newlog\tused\t1048576\t-\npersist/newlog\tavailable\t99614720\t-\npersist/newlog\tquota\t104857600\tlocal\npersist/newlog\treservation\t0\tdefault\npersist/newlog\tencryption\toff\tdefault\npersist/newlog\tkeystatus\t-\t-\npersist/newlog\tmountpoint\t/persist/newlog\tlocal\n",
        )
        .unwrap();
        let d = datasets(&props);
        assert_eq!(d[0].quota, Some(100 << 20));
        assert_eq!(d[0].reservation, None, "0 means no reservation");
        let s = Status {
            pool: Some(PoolInfo {
                name: "persist".into(),
                guid: 7,
                health: "ONLINE".into(),
                size: 1 << 30,
                allocated: 1 << 20,
                free: 1023 << 20,
            }),
            vault: None,
            boot: None,
            members: vec![Member {
                path: "/dev/disk/by-partuuid/aa".into(),
                disk: Some("nvme0n1".into()),
                stable_id: Some("eui.01".into()),
                state: "ONLINE".into(),
            }],
            datasets: d,
        };
        let text = render(&s);
        assert!(
            text.contains("pool: persist guid 7 ONLINE  size 1024M"),
            "{text}"
        );
        assert!(text.contains("member nvme0n1    ONLINE   eui.01"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("persist/newlog")
                && l.contains("100M")
                && l.contains("/persist/newlog")),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["datasets"][0]["quota"], 104857600);
    }
}
