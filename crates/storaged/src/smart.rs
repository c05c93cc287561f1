//! A drive's own health report, read by pure functions: nvme-cli's `smart-log -o json` and
//! `id-ctrl -o json` for NVMe, smartctl's `--json -a` for SATA and SAS. Both tools print large
//! integers as strings and temperatures in their own units; the parsers normalise them.

use serde::Serialize;
use serde_json::Value;

/// What a drive says about itself. `None` where the drive or its protocol does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DriveHealth {
    /// `nvme-cli` or `smartctl`.
    pub source: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub temperature_c: Option<i64>,
    /// The drive's own warning and critical temperatures (NVMe `wctemp`/`cctemp`); for ATA the
    /// common 60/70 °C.
    pub temp_warning_c: Option<i64>,
    pub temp_critical_c: Option<i64>,
    /// NVMe critical-warning bits (spare, temperature, reliability, read-only, backup).
    pub critical_warning: Option<u8>,
    pub available_spare_pct: Option<u64>,
    pub spare_threshold_pct: Option<u64>,
    /// Share of the rated endurance used (may pass 100).
    pub percentage_used: Option<u64>,
    pub media_errors: Option<u64>,
    pub power_on_hours: Option<u64>,
    pub unsafe_shutdowns: Option<u64>,
    /// ATA/SCSI overall self-assessment.
    pub smart_passed: Option<bool>,
    pub reallocated_sectors: Option<u64>,
    pub pending_sectors: Option<u64>,
    pub offline_uncorrectable: Option<u64>,
    /// Whether the drive offers self-tests, what runs, and the last result.
    pub selftest: Option<crate::selftest::SelfTest>,
}

/// One device's health reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "reading", rename_all = "kebab-case")]
pub enum Reading {
    Data(Box<DriveHealth>),
    /// The device has no health report to give (a virtual disk, a USB bridge without
    /// pass-through, a SCSI disk without SMART): not a fault.
    NoData {
        reason: String,
    },
    /// The report could not be read (the tool failed or timed out): the drive's state is unknown,
    /// and earlier alerts about it stand.
    Unreadable {
        reason: String,
    },
}

fn num(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        // nvme-cli prints 128-bit counters as decimal strings.
        Value::String(s) => s
            .trim()
            .parse::<u128>()
            .ok()
            .map(|n| n.min(u64::MAX as u128) as u64),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Kelvin (NVMe reports temperatures so) to °C; 0 means "not reported".
fn kelvin(v: &Value) -> Option<i64> {
    num(v)
        .filter(|&k| k > 0)
        .map(|k| i64::try_from(k).unwrap_or(i64::MAX).saturating_sub(273))
}

/// `nvme smart-log DEV -o json`, with `nvme id-ctrl DEV -o json` for the thresholds and names
/// when it could be read.
pub fn parse_nvme(smart_log: &str, id_ctrl: Option<&str>) -> Result<DriveHealth, String> {
    let v: Value =
        serde_json::from_str(smart_log).map_err(|e| format!("smart-log is not JSON: {e}"))?;
    if !v.is_object() || v.get("critical_warning").is_none() {
        return Err("smart-log has no critical_warning".into());
    }
    let id: Value = id_ctrl
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    Ok(DriveHealth {
        source: "nvme-cli".into(),
        model: text(&id["mn"]),
        serial: text(&id["sn"]),
        temperature_c: kelvin(&v["temperature"]),
        temp_warning_c: kelvin(&id["wctemp"]),
        temp_critical_c: kelvin(&id["cctemp"]),
        critical_warning: num(&v["critical_warning"]).map(|n| n.min(255) as u8),
        available_spare_pct: num(&v["avail_spare"]),
        spare_threshold_pct: num(&v["spare_thresh"]),
        percentage_used: num(&v["percent_used"]),
        media_errors: num(&v["media_errors"]),
        power_on_hours: num(&v["power_on_hours"]),
        unsafe_shutdowns: num(&v["unsafe_shutdowns"]),
        // Unsupported is known from id-ctrl; a supported drive's log is read by the caller.
        selftest: (!id.is_null() && !crate::selftest::nvme_supported(&id))
            .then(crate::selftest::nvme_unsupported),
        ..DriveHealth::default()
    })
}

/// ATA drives give no temperature limits in a standard place; these are the usual ones.
const ATA_TEMP_WARNING_C: i64 = 60;
const ATA_TEMP_CRITICAL_C: i64 = 70;

/// `smartctl --json -a DEV` (whatever its exit status: its bits report findings, not only
/// failures).
pub fn parse_smartctl(json: &str) -> Reading {
    let v: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => {
            return Reading::Unreadable {
                reason: format!("smartctl printed no JSON: {e}"),
            }
        }
    };
    let exit = num(&v["smartctl"]["exit_status"]).unwrap_or(0);
    let message = v["smartctl"]["messages"]
        .as_array()
        .and_then(|m| m.iter().find_map(|x| text(&x["string"])));
    // Bit 1: the device could not be opened or identified (no protocol smartctl speaks).
    if exit & 0b11 != 0 || v.get("device").is_none() {
        return Reading::NoData {
            reason: message.unwrap_or_else(|| format!("smartctl exit status {exit}")),
        };
    }
    if v["smart_support"]["available"] == Value::Bool(false) {
        return Reading::NoData {
            reason: "the device does not support SMART".into(),
        };
    }
    let attr = |id: u64| {
        v["ata_smart_attributes"]["table"]
            .as_array()
            .and_then(|t| t.iter().find(|a| num(&a["id"]) == Some(id)))
            .and_then(|a| num(&a["raw"]["value"]))
    };
    let ata = v["device"]["protocol"] == "ATA";
    // Some drives report 0 when they have no sensor.
    let temperature_c = v["temperature"]["current"].as_i64().filter(|&t| t != 0);
    let nvme = &v["nvme_smart_health_information_log"];
    Reading::Data(Box::new(DriveHealth {
        source: "smartctl".into(),
        model: text(&v["model_name"]).or_else(|| text(&v["scsi_model_name"])),
        serial: text(&v["serial_number"]),
        temperature_c,
        temp_warning_c: temperature_c.and(ata.then_some(ATA_TEMP_WARNING_C)),
        temp_critical_c: v["scsi_temperature"]["drive_trip"]
            .as_i64()
            .filter(|&t| t > 0)
            .or(temperature_c.and(ata.then_some(ATA_TEMP_CRITICAL_C))),
        critical_warning: num(&nvme["critical_warning"]).map(|n| n.min(255) as u8),
        available_spare_pct: num(&nvme["available_spare"]),
        spare_threshold_pct: num(&nvme["available_spare_threshold"]),
        percentage_used: num(&nvme["percentage_used"]),
        media_errors: num(&nvme["media_errors"]),
        power_on_hours: num(&v["power_on_time"]["hours"]),
        unsafe_shutdowns: num(&nvme["unsafe_shutdowns"]),
        smart_passed: v["smart_status"]["passed"].as_bool(),
        reallocated_sectors: attr(5),
        pending_sectors: attr(197),
        offline_uncorrectable: attr(198),
        selftest: crate::selftest::from_smartctl(&v),
    }))
}

/// The NVMe critical-warning bits, in words.
pub fn warning_bits(bits: u8) -> Vec<&'static str> {
    [
        (0x01, "available spare below its threshold"),
        (0x02, "temperature beyond a threshold"),
        (0x04, "reliability degraded by media or internal errors"),
        (0x08, "media placed in read-only mode"),
        (0x10, "volatile memory backup failed"),
        (0x20, "persistent memory region unreliable"),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, w)| *w)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn nvme_reports_are_read_in_degrees_with_the_drive_s_own_limits() {
        let h = parse_nvme(
            &fixture("nvme-smart-log-ok.json"),
            Some(&fixture("nvme-id-ctrl.json")),
        )
        .unwrap();
        assert_eq!(h.temperature_c, Some(50));
        assert_eq!((h.temp_warning_c, h.temp_critical_c), (Some(70), Some(100)));
        assert_eq!(h.critical_warning, Some(0));
        assert_eq!((h.media_errors, h.percentage_used), (Some(0), Some(0)));
        assert_eq!(h.model.as_deref(), Some("QEMU NVMe Ctrl"));
        assert_eq!(h.serial.as_deref(), Some("NVMEA"));
        let bad = parse_nvme(&fixture("nvme-smart-log-reliability.json"), None).unwrap();
        assert_eq!(bad.critical_warning, Some(4));
        assert_eq!(bad.temp_warning_c, None, "no id-ctrl, no limits");
        assert_eq!(
            warning_bits(6),
            [
                "temperature beyond a threshold",
                "reliability degraded by media or internal errors"
            ]
        );
    }

    #[test]
    fn nvme_counters_printed_as_strings_and_garbage_are_handled() {
        let h = parse_nvme(
            r#"{"critical_warning":0,"temperature":0,"media_errors":"340282366920938463463374607431768211455","power_on_hours":"12"}"#,
            Some("not json"),
        )
        .unwrap();
        assert_eq!(h.media_errors, Some(u64::MAX));
        assert_eq!(h.power_on_hours, Some(12));
        assert_eq!(h.temperature_c, None, "0 K is no sensor");
        assert!(parse_nvme("", None).is_err());
        assert!(parse_nvme("[]", None).is_err());
        assert!(parse_nvme(r#"{"temperature":300}"#, None).is_err());
    }

    #[test]
    fn smartctl_reads_ata_attributes_and_tells_no_data_from_unreadable() {
        let Reading::Data(h) = parse_smartctl(&fixture("smartctl-sata.json")) else {
            panic!()
        };
        assert_eq!(h.smart_passed, Some(true));
        assert_eq!(h.temperature_c, Some(31));
        assert_eq!((h.temp_warning_c, h.temp_critical_c), (Some(60), Some(70)));
        assert_eq!(h.reallocated_sectors, Some(0));
        assert_eq!(h.power_on_hours, Some(1));
        assert_eq!(h.serial.as_deref(), Some("SATAA"));
        for (f, why) in [
            ("smartctl-scsi.json", "does not support SMART"),
            ("smartctl-usb.json", "Unknown USB bridge"),
            ("smartctl-virtio.json", "Unable to detect device type"),
        ] {
            match parse_smartctl(&fixture(f)) {
                Reading::NoData { reason } => assert!(reason.contains(why), "{f}: {reason}"),
                r => panic!("{f}: {r:?}"),
            }
        }
        assert!(matches!(parse_smartctl(""), Reading::Unreadable { .. }));
    }

    #[test]
    fn a_failing_ata_drive_is_read_as_failing() {
        let mut v: Value = serde_json::from_str(&fixture("smartctl-sata.json")).unwrap();
        v["smart_status"]["passed"] = Value::Bool(false);
        // Bit 3: "disk failing"; the report is still there.
        v["smartctl"]["exit_status"] = 8.into();
        v["ata_smart_attributes"]["table"][3]["raw"]["value"] = 12.into();
        let Reading::Data(h) = parse_smartctl(&v.to_string()) else {
            panic!()
        };
        assert_eq!(h.smart_passed, Some(false));
        assert_eq!(h.reallocated_sectors, Some(12));
    }
}
