//! What the campaign runs in the guest to see the box, and the parsers of what it prints. The
//! parsers are pure and tested on captured text.

use crate::model::{Export, Seen, World, BLOCKS, INVENTORY_FAILED, UNREADABLE};

/// Where the campaign's volumes live (the encrypted vault's volumes dataset).
pub const VOLS: &str = "persist/vault/volumes";
pub const POOL: &str = "persist";
/// Where volumes the policy keeps unencrypted live.
pub const CLEAR_VOLS: &str = "persist/clear/volumes";
/// Where the volume daemon keeps its specs.
pub const SPECS: &str = "/persist/config/volumes/specs";

pub fn zvol(name: &str) -> String {
    format!("/dev/zvol/{VOLS}/{name}")
}

/// A shell script printing, for each of `names`: `V name zvol spec exported device`, then when
/// the zvol reads `R name` and a `B name k sha` line per block read whole (`k` a letter: `a` is
/// block 0), and an `S name snap` line per snapshot of any volume. Exported means an enabled
/// nvmet namespace on the zvol's device in a subsystem some port offers. A read stops at the
/// first block that fails: that block and the ones after it are unreadable, never data.
pub fn observe_script(names: &[String]) -> String {
    let mut s = String::from(
        "N=$(for ns in /sys/kernel/config/nvmet/subsystems/*/namespaces/*; do \
         [ -e \"$ns/device_path\" ] || continue; s=${ns%/namespaces/*}; s=${s##*/}; \
         p=$(ls -d /sys/kernel/config/nvmet/ports/*/subsystems/$s 2>/dev/null | wc -l); \
         echo \"$(readlink -f \"$(cat $ns/device_path)\") $(cat $ns/enable) $p\"; done)\n",
    );
    // The inventory: every zvol (in the vault and in the clear volumes dataset), spec and
    // offered nvmet export on the box, known to the model or not. A listing that fails says so.
    s.push_str(&format!(
        "for P in {VOLS} {CLEAR_VOLS}; do zfs list -H -o name $P >/dev/null 2>&1 || continue; \
         l=$(zfs list -H -o name -t volume -r $P 2>&1) || {{ echo \"IFAIL zfs list $P\"; continue; }}; \
         echo \"$l\" | sed -n \"s|^$P/||p\" | while read v; do d=$(readlink -f \"/dev/zvol/$P/$v\"); \
         n=$v; [ $P = {VOLS} ] || n=clear/$v; echo \"I $n 1 0 ${{d:--}}\"; done; done; \
         for f in {SPECS}/*.toml {SPECS}/*.json; do [ -e \"$f\" ] || continue; v=${{f##*/}}; echo \"I ${{v%.*}} 0 1 -\"; done; \
         for ns in /sys/kernel/config/nvmet/subsystems/*/namespaces/*; do [ -e \"$ns/device_path\" ] || continue; \
         [ \"$(cat $ns/enable)\" = 1 ] || continue; sd=${{ns%/namespaces/*}}; s=${{sd##*/}}; \
         t=$(for p in /sys/kernel/config/nvmet/ports/*/subsystems/$s; do [ -e \"$p\" ] && cat ${{p%/subsystems/*}}/addr_trtype; done | tr '\\n' ,); \
         [ -n \"$t\" ] || continue; h=$(ls $sd/allowed_hosts | tr '\\n' ,); \
         echo \"E $(readlink -f \"$(cat $ns/device_path)\") $s ${{h:--}} $(cat $sd/attr_allow_any_host) $t\"; done\n"
    ));
    // One listing of the zvols and one of the snapshots for every name, and per volume one
    // read of its blocks cut into files and hashed at once: a verify forks a handful of
    // processes per volume, not dozens (under TCG each fork costs milliseconds).
    s.push_str(&format!(
        "ZL=$(zfs list -H -o name -t volume -r {VOLS} 2>/dev/null)\n\
         zfs list -H -t snapshot -o name -r {VOLS} 2>/dev/null | sed -n 's|^{VOLS}/\\([^@/]*\\)@\\(.*\\)$|S \\1 \\2|p'\n"
    ));
    for n in names {
        s.push_str(&format!(
            "v={n}; z=0; echo \"$ZL\" | grep -qx \"{VOLS}/$v\" && z=1; \
             sp=0; [ -e {SPECS}/$v.toml ] && sp=1; \
             d=$(readlink -f {dev} 2>/dev/null); e=0; \
             [ -b \"$d\" ] && echo \"$N\" | grep -q \"^$d 1 [1-9]\" && e=1; \
             echo \"V $v $z $sp $e ${{d:--}}\"; \
             if [ $z = 1 ] && [ -b \"$d\" ]; then {}; fi\n",
            read_blocks("$v", "$d", "/run/campaign"),
            dev = zvol(n)
        ));
    }
    s
}

/// The world from the script's lines. `I` (inventory) and `E` (an enabled namespace a port
/// offers: device, subsystem, allowed hosts, any-host flag, the ports' transports) lines name
/// what is on the box whether the model knows it or not: an export of a device no zvol of the
/// inventory has is keyed `export of <device>`.
pub fn parse_world(out: &str) -> World {
    let mut w = World::new();
    let mut devs = std::collections::BTreeMap::new();
    let mut exports = Vec::new();
    let mut read = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["I", n, z, sp, dev] => {
                let s = w.entry(n.to_string()).or_default();
                s.zvol |= *z == "1";
                s.spec |= *sp == "1";
                if *dev != "-" {
                    devs.insert(dev.to_string(), n.to_string());
                }
            }
            ["E", dev, subsys, hosts, any, types] => {
                let list = |x: &str| -> Vec<String> {
                    x.split(',')
                        .filter(|h| !h.is_empty() && *h != "-")
                        .map(String::from)
                        .collect()
                };
                exports.push((
                    dev.to_string(),
                    Export {
                        subsystem: subsys.to_string(),
                        hosts: list(hosts),
                        any_host: *any == "1",
                        transports: list(types),
                    },
                ));
            }
            ["IFAIL", ..] => w.entry(INVENTORY_FAILED.into()).or_default().zvol = true,
            ["V", n, z, sp, e, dev] => {
                let s = w.entry(n.to_string()).or_default();
                s.zvol = *z == "1";
                s.spec = *sp == "1";
                s.exported = *e == "1";
                if *dev != "-" {
                    devs.insert(dev.to_string(), n.to_string());
                }
            }
            ["R", n] => {
                w.entry(n.to_string())
                    .or_default()
                    .blocks
                    .get_or_insert_with(Vec::new);
                read.push(n.to_string());
            }
            ["B", n, k, h] => {
                let s: &mut Seen = w.entry(n.to_string()).or_default();
                let b = s.blocks.get_or_insert_with(Vec::new);
                if block_index(k) == Some(b.len()) {
                    b.push(h.to_string());
                }
            }
            ["S", n, snap] => {
                w.entry(n.to_string())
                    .or_default()
                    .snapshots
                    .insert(snap.to_string());
            }
            _ => {}
        }
    }
    for n in read {
        if let Some(b) = w.get_mut(&n).and_then(|s| s.blocks.as_mut()) {
            while b.len() < BLOCKS {
                b.push(UNREADABLE.into());
            }
        }
    }
    for (dev, x) in exports {
        let name = devs
            .get(&dev)
            .cloned()
            .unwrap_or_else(|| format!("export of {dev}"));
        let s = w.entry(name).or_default();
        s.exported = true;
        s.exports.push(x);
    }
    w
}

/// The shell that prints `R name` and then `B name k sha` for each block of `dev` read whole:
/// one direct read of the volume into `dir`, cut into blocks there, all hashed by one
/// sha256sum (busybox has no `split`). A read that fails stops short: the blocks it did not
/// reach get no line.
fn read_blocks(name: &str, dev: &str, dir: &str) -> String {
    format!(
        "echo \"R {name}\"; rm -f {dir}/rb.*; \
         dd if={dev} of={dir}/rb.all bs=1M count={BLOCKS} iflag=direct 2>/dev/null; \
         n=$(( $(stat -c %s {dir}/rb.all 2>/dev/null || echo 0) / 1048576 )); k=0; \
         while [ $k -lt $n ]; do dd if={dir}/rb.all of={dir}/rb.$k bs=1M skip=$k count=1 2>/dev/null; k=$((k+1)); done; \
         [ $n -gt 0 ] && sha256sum $(k=0; while [ $k -lt $n ]; do echo {dir}/rb.$k; k=$((k+1)); done) \
         | sed -n \"s|^\\([0-9a-f]*\\)  {dir}/rb\\.\\([0-9]*\\)$|B {name} \\2 \\1|p\"; rm -f {dir}/rb.*"
    )
}

fn block_index(k: &str) -> Option<usize> {
    k.parse().ok()
}

/// The pool as one line each: `H health`, `K keystatus`, `E 0|1` (data errors), `W n` (scans
/// running).
pub const POOL_SCRIPT: &str = "echo \"H $(zpool list -H -o health persist 2>/dev/null || echo ABSENT)\"; \
     echo \"K $(zfs get -H -o value keystatus persist/vault 2>/dev/null || echo none)\"; \
     if zpool status persist 2>/dev/null | grep -q 'errors: No known data errors'; then echo 'E 0'; else echo 'E 1'; fi; \
     echo \"W $(zpool status persist 2>/dev/null | grep -c -E 'in progress')\"";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolSeen {
    pub health: String,
    pub key: String,
    pub data_errors: bool,
    pub scanning: bool,
}

pub fn parse_pool(out: &str) -> PoolSeen {
    let mut p = PoolSeen::default();
    for line in out.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "H" => p.health = rest.trim().into(),
            "K" => p.key = rest.trim().into(),
            "E" => p.data_errors = rest.trim() != "0",
            "W" => p.scanning = rest.trim().parse::<u32>().unwrap_or(0) > 0,
            _ => {}
        }
    }
    p
}

/// The pool's leaf vdevs as `zpool status -P` prints them: (path, state).
pub fn parse_members(status: &str) -> Vec<(String, String)> {
    status
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [p, state, ..] if p.starts_with("/dev/") => {
                    Some((p.to_string(), state.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// Lines of a console log that say a program or the kernel died.
pub fn crashes(console: &str) -> Vec<String> {
    console
        .lines()
        .filter(|l| {
            l.contains("panicked at")
                || l.contains("Kernel panic")
                || l.contains("BUG: ")
                || l.contains("Oops:")
                || l.contains("general protection fault")
        })
        .map(|l| l.trim().chars().take(200).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_stopped_leaves_the_rest_unreadable() {
        let w = parse_world("V a 1 1 1 /dev/zd0\nR a\nB a 0 h0\nB a 1 h1\nS a s1\n");
        let b = w["a"].blocks.as_ref().unwrap();
        assert_eq!(b.len(), BLOCKS);
        assert_eq!(&b[..2], &["h0".to_string(), "h1".to_string()]);
        assert!(b[2..].iter().all(|x| x == UNREADABLE));
        // Not read at all (no zvol): no blocks, not a row of unreadable ones.
        assert!(parse_world("V b 0 1 0 -\n")["b"].blocks.is_none());
        assert_eq!(block_index("3"), Some(3));
    }

    #[test]
    fn the_block_reader_hashes_each_block_and_stops_where_the_data_does() {
        use crate::model::{hash, BLOCK};
        // Beside the crate, not in /tmp: a tmpfs /tmp refuses the direct read.
        let t = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let img = t.path().join("vol");
        // Three and a half blocks: three whole ones are read, the half is not a block.
        let data: Vec<u8> = (0..BLOCK * 7 / 2).map(|i| (i % 251) as u8).collect();
        std::fs::write(&img, &data).unwrap();
        let dir = t.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &read_blocks("vx", img.to_str().unwrap(), dir.to_str().unwrap()),
            ])
            .output()
            .unwrap();
        let w = parse_world(&String::from_utf8_lossy(&out.stdout));
        let b = w["vx"].blocks.as_ref().unwrap();
        for k in 0..3 {
            assert_eq!(b[k], hash(&data[k * BLOCK..(k + 1) * BLOCK]), "block {k}");
        }
        assert!(b[3..].iter().all(|x| x == UNREADABLE), "{b:?}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "left files behind"
        );
    }

    #[test]
    fn the_world_is_read_from_tagged_lines() {
        let out = "V a 1 1 1 /dev/zd0\nB a 0 aa\nB a 1 bb\nS a s3\nV b 0 1 0 -\nnoise\n";
        let w = parse_world(out);
        assert_eq!(
            w["a"].blocks.as_deref(),
            Some(&["aa".to_string(), "bb".to_string()][..])
        );
        assert!(w["a"].exported && w["a"].snapshots.contains("s3"));
        assert!(!w["b"].zvol && w["b"].spec && w["b"].blocks.is_none());
        // A block out of order is not taken for another.
        assert_eq!(
            parse_world("V c 1 1 1 -\nB c 1 x\n")["c"].blocks.as_deref(),
            Some(&[][..])
        );
    }

    #[test]
    fn the_inventory_names_what_the_model_does_not_know() {
        let out = "I a 1 0 /dev/zd0\nI x:new 1 0 /dev/zd16\nI orphan 0 1 -\nE /dev/zd0 nqn.x:vol:a nqn.x:vm:vm1, 0 tcp,\nE /dev/zd32 nqn.x:vol:q - 1 loop,\nV a 1 1 1 /dev/zd0\nI nodev 1 0 -\nIFAIL zfs list persist/vault/volumes\n";
        let w = parse_world(out);
        assert!(w["nodev"].zvol);
        assert!(w[INVENTORY_FAILED].zvol);
        assert!(w["a"].zvol && w["a"].spec && w["a"].exported);
        assert!(w["x:new"].zvol && !w["x:new"].exported);
        assert!(w["orphan"].spec && !w["orphan"].zvol);
        assert!(w["export of /dev/zd32"].exported);
        assert_eq!(
            w["a"].exports,
            vec![Export {
                subsystem: "nqn.x:vol:a".into(),
                hosts: vec!["nqn.x:vm:vm1".into()],
                any_host: false,
                transports: vec!["tcp".into()],
            }]
        );
        assert!(w["export of /dev/zd32"].exports[0].any_host);
        assert!(w["export of /dev/zd32"].exports[0].hosts.is_empty());
        let s = observe_script(&[]);
        assert!(s.contains("for P in persist/vault/volumes persist/clear/volumes;"));
        assert!(s.contains("specs/*.toml /persist/config/volumes/specs/*.json"));
        assert!(s.contains("attr_allow_any_host"));
    }

    #[test]
    fn the_scripts_parse_as_sh() {
        for script in [
            observe_script(&["v1".into(), "c2".into()]),
            POOL_SCRIPT.to_string(),
        ] {
            let st = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .status()
                .unwrap();
            assert!(st.success(), "{script}");
        }
    }

    #[test]
    fn the_script_asks_for_every_name_and_every_block() {
        let s = observe_script(&["v1".into(), "c2".into()]);
        assert!(s.contains("v=v1;") && s.contains("v=c2;"));
        assert!(s.contains("/dev/zvol/persist/vault/volumes/c2"));
        assert!(s.contains(&format!("count={BLOCKS}")));
    }

    #[test]
    fn pool_members_and_health() {
        let st = "  pool: persist\n state: DEGRADED\nconfig:\n\n\tNAME                STATE     READ WRITE CKSUM\n\tpersist             DEGRADED     0     0     0\n\t  mirror-0          DEGRADED     0     0     0\n\t    /dev/sdb1       ONLINE       0     0     0\n\t    /dev/vdb1       REMOVED      0     0     0\n";
        assert_eq!(
            parse_members(st),
            vec![
                ("/dev/sdb1".to_string(), "ONLINE".to_string()),
                ("/dev/vdb1".to_string(), "REMOVED".to_string())
            ]
        );
        let p = parse_pool("H ONLINE\nK available\nE 0\nW 1\n");
        assert_eq!(p.health, "ONLINE");
        assert!(p.scanning && !p.data_errors && p.key == "available");
    }

    #[test]
    fn crashes_are_found_in_the_console() {
        let c = "ok\nthread 'main' panicked at src/x.rs:1:2:\n[ 1.0] BUG: unable to handle\nfine\n";
        assert_eq!(crashes(c).len(), 2);
        assert!(crashes("all fine\n").is_empty());
    }
}
