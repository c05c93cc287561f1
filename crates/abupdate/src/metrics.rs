//! The A/B slots, the update trust and the boot's Secure Boot and vault binding as Prometheus
//! gauges, in `/run/metrics/eve-update.prom` beside storaged's textfile: node_exporter's textfile
//! collector and the management API's `/metrics` serve both. Rewritten (by rename) whenever
//! abupdate reads or changes the slots: the boot's health check, an install, `status`.

use crate::error::Result;
use crate::state::State;
use crate::system::{Report, System};
use platform::prom::Writer;

/// Under the runtime directory (`/run`).
pub const TEXTFILE: &str = "metrics/eve-update.prom";

/// Pure: the textfile for `r`.
pub fn render(r: &Report) -> String {
    let mut w = Writer::default();
    for s in &r.slots {
        let slot = s.slot.to_string();
        w.one(
            "eve_update_slot_running",
            "gauge",
            "1 for the slot this boot runs.",
            &[("slot", &slot)],
            if s.slot == r.running { 1.0 } else { 0.0 },
        );
    }
    for s in &r.slots {
        let slot = s.slot.to_string();
        w.one(
            "eve_update_slot_next_boot",
            "gauge",
            "1 for the slot GRUB tries first on the next boot.",
            &[("slot", &slot)],
            if s.slot == r.next { 1.0 } else { 0.0 },
        );
    }
    for s in &r.slots {
        let slot = s.slot.to_string();
        for st in [State::Empty, State::Trial, State::Good, State::Bad] {
            w.one(
                "eve_update_slot_state",
                "gauge",
                "1 for each slot's state (empty, trial, good, bad).",
                &[("slot", &slot), ("state", st.as_str())],
                if s.info.state == st { 1.0 } else { 0.0 },
            );
        }
    }
    for s in &r.slots {
        let slot = s.slot.to_string();
        let version = if s.info.version.is_empty() {
            "none"
        } else {
            s.info.version.as_str()
        };
        w.one(
            "eve_update_slot_info",
            "gauge",
            "1, with the version each slot holds as a label.",
            &[("slot", &slot), ("version", version)],
            1.0,
        );
    }
    if let Some(u) = &r.updates {
        for (name, help, v) in [
            (
                "eve_update_security_epoch",
                "The security epoch of the running release: updates below it are refused.",
                u.security_epoch,
            ),
            (
                "eve_update_key_serial",
                "The serial of the update-key list this release trusts.",
                u.key_serial,
            ),
            (
                "eve_update_key_floor",
                "The lowest key-list serial this box still accepts.",
                u.key_floor,
            ),
        ] {
            w.one(name, "gauge", help, &[], f64::from(v));
        }
        w.one(
            "eve_update_release_signed",
            "gauge",
            "1 when the running release is signed with the release key (0: a development key).",
            &[],
            if u.signing == "release" { 1.0 } else { 0.0 },
        );
    }
    w.one(
        "eve_boot_secure_boot_enabled",
        "gauge",
        "1 when the firmware booted with Secure Boot on.",
        &[],
        if r.boot.secure_boot.starts_with("on") {
            1.0
        } else {
            0.0
        },
    );
    let bound = r.boot.vault_bound_to.as_deref();
    w.one(
        "eve_boot_vault_sealed",
        "gauge",
        "1 when the vault's key is sealed to this box's TPM.",
        &[],
        if bound.is_some() { 1.0 } else { 0.0 },
    );
    w.one(
        "eve_boot_vault_bound_to_pcr7",
        "gauge",
        "1 when the vault's seal includes PCR 7 (the Secure Boot state and keys).",
        &[],
        if bound.is_some_and(|b| b.contains("PCR 7") || b.contains("7:")) {
            1.0
        } else {
            0.0
        },
    );
    w.finish()
}

/// Writes the textfile for the slots as they are now. A failure is the caller's to log: the
/// gauges are a view, never a reason for an update step to fail.
pub fn publish(sys: &System) -> Result<()> {
    let text = render(&sys.report(&sys.read()?));
    let path = sys.roots.run.join(TEXTFILE);
    crate::release::write_file(&path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        serde_json::from_value(serde_json::json!({
            "running": "B", "next": "B",
            "slots": [
                {"slot": "A", "device": "/dev/vda2", "state": "bad", "tries": 0, "version": "v1", "failure": "health: x"},
                {"slot": "B", "device": "/dev/vda3", "state": "good", "tries": 0, "version": "v2", "failure": ""}
            ],
            "updates": {"profile": "prod", "signing": "release", "security_epoch": 3, "key_serial": 2,
                "trusted_keys": ["k"], "key_floor": 2, "key_floor_source": "tpm"},
            "boot": {"secure_boot": "on", "vault": "persist/vault", "vault_state": "unlocked",
                "vault_bound_to": "this TPM and PCR 7 (Secure Boot state and keys)"}
        }))
        .unwrap()
    }

    #[test]
    fn slots_trust_and_binding_as_gauges_a_parser_reads() {
        let t = render(&report());
        for line in [
            "eve_update_slot_running{slot=\"B\"} 1",
            "eve_update_slot_running{slot=\"A\"} 0",
            "eve_update_slot_next_boot{slot=\"B\"} 1",
            "eve_update_slot_state{slot=\"A\",state=\"bad\"} 1",
            "eve_update_slot_state{slot=\"B\",state=\"good\"} 1",
            "eve_update_slot_state{slot=\"B\",state=\"trial\"} 0",
            "eve_update_slot_info{slot=\"B\",version=\"v2\"} 1",
            "eve_update_security_epoch 3",
            "eve_update_key_serial 2",
            "eve_update_release_signed 1",
            "eve_boot_secure_boot_enabled 1",
            "eve_boot_vault_sealed 1",
            "eve_boot_vault_bound_to_pcr7 1",
        ] {
            assert!(t.contains(line), "missing {line}\n{t}");
        }
        assert_eq!(platform::prom::check(&t), Vec::<String>::new(), "{t}");
        let scrape = prometheus_parse::Scrape::parse(t.lines().map(|l| Ok(l.to_string()))).unwrap();
        assert_eq!(
            scrape.samples.len(),
            t.lines().filter(|l| !l.starts_with('#')).count()
        );
        assert!(scrape
            .samples
            .iter()
            .all(|s| matches!(s.value, prometheus_parse::Value::Gauge(_))));
    }
}
