//! Drive self-tests: SMART short and extended tests on ATA drives (smartctl), device self-tests
//! on NVMe drives (nvme-cli). Whether a drive offers them, what runs now, the last result, and
//! the pure choice of which drives to start; the tool calls are in `gather`.
//!
//! The drive runs the test itself, beside normal I/O, and keeps the outcome in its own log: the
//! box reads that log back rather than keeping a copy, so a result is never stale or lost.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How thorough: a short test takes minutes, an extended one reads the whole medium (hours).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Short,
    Long,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Long => "long",
        }
    }
    /// `short` or `long` (also `extended`), as the policy and the CLI spell it.
    pub fn parse(s: &str) -> Option<Kind> {
        match s.trim() {
            "short" => Some(Kind::Short),
            "long" | "extended" => Some(Kind::Long),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    /// Stopped before the end (a reset, a new test, a format): says nothing of the medium.
    Aborted,
    /// Still running when logged, or a status the drive does not define: says nothing either.
    Unknown,
}

/// The newest entry of the drive's self-test log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Last {
    /// `short`, `long`, or the drive's own word for another kind.
    pub kind: String,
    pub outcome: Outcome,
    /// The drive's words (`Completed without error`, `failed in segment 3`).
    pub result: String,
    /// Power-on hours since the test, when the drive says both.
    pub hours_ago: Option<u64>,
}

/// What a drive says about self-tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SelfTest {
    /// The drive does not offer self-tests; the reason says how it said so.
    Unsupported {
        reason: String,
    },
    Idle {
        last: Option<Last>,
    },
    Running {
        kind: String,
        /// Percent done, when the drive says.
        done_pct: Option<u64>,
        last: Option<Last>,
    },
}

impl SelfTest {
    pub fn last(&self) -> Option<&Last> {
        match self {
            SelfTest::Unsupported { .. } => None,
            SelfTest::Idle { last } | SelfTest::Running { last, .. } => last.as_ref(),
        }
    }

    /// One cell for `disk list`: `passed 3 h ago`, `short 40%`, `FAILED`, `unsupported`, `-`.
    pub fn cell(&self) -> String {
        match self {
            SelfTest::Unsupported { .. } => "unsupported".into(),
            SelfTest::Running { kind, done_pct, .. } => match done_pct {
                Some(p) => format!("{kind} {p}%"),
                None => format!("{kind} running"),
            },
            SelfTest::Idle { last: None } => "never run".into(),
            SelfTest::Idle { last: Some(l) } => {
                let word = match l.outcome {
                    Outcome::Passed => "passed",
                    Outcome::Failed => "FAILED",
                    Outcome::Aborted => "aborted",
                    Outcome::Unknown => "unknown",
                };
                match l.hours_ago {
                    Some(0) => format!("{word} <1 h ago"),
                    Some(h) => format!("{word} {h} h ago"),
                    None => word.to_string(),
                }
            }
        }
    }
}

fn num(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// From smartctl's `--json -a` of an ATA drive (its capabilities, the self-test status byte and
/// the standard self-test log). `None` for a drive smartctl does not read as ATA.
pub fn from_smartctl(v: &Value) -> Option<SelfTest> {
    let data = &v["ata_smart_data"];
    if v["device"]["protocol"] != "ATA" || data.is_null() {
        return None;
    }
    if data["capabilities"]["self_tests_supported"] != Value::Bool(true) {
        return Some(SelfTest::Unsupported {
            reason: "the drive does not offer SMART self-tests".into(),
        });
    }
    let poh = num(&v["power_on_time"]["hours"]);
    // The newest entry that ended: many drives log the running test as entry 1.
    let last = v["ata_smart_self_test_log"]["standard"]["table"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|e| num(&e["status"]["value"]).is_none_or(|s| s >> 4 != 15))
        })
        .map(|e| {
            let kind = e["type"]["string"].as_str().unwrap_or("").trim();
            let kind = match kind {
                "Short offline" | "Short captive" => "short".to_string(),
                "Extended offline" | "Extended captive" => "long".to_string(),
                other => other.to_lowercase(),
            };
            let result = e["status"]["string"]
                .as_str()
                .unwrap_or("")
                .trim()
                .to_string();
            // The status value's high nibble decides: 0 done, 1 aborted by the host, 2
            // interrupted by a reset, 3-8 failed, 15 still running (smartctl calls that and the
            // reserved 9-14 "passed", which they are not). `passed` only without a value.
            let code = num(&e["status"]["value"]).map(|s| s >> 4);
            let outcome = match (code, e["status"]["passed"].as_bool()) {
                (Some(0), _) => Outcome::Passed,
                (Some(1 | 2), _) => Outcome::Aborted,
                (Some(3..=8), _) => Outcome::Failed,
                (Some(_), _) => Outcome::Unknown,
                (None, Some(true)) => Outcome::Passed,
                (None, _) => Outcome::Unknown,
            };
            Last {
                kind,
                outcome,
                result,
                hours_ago: poh
                    .zip(num(&e["lifetime_hours"]))
                    // A log hour after the clock's (QEMU's drives do that) says nothing.
                    .and_then(|(now, then)| now.checked_sub(then)),
            }
        });
    let status = &data["self_test"]["status"];
    Some(match num(&status["value"]) {
        Some(s) if s >> 4 == 15 => SelfTest::Running {
            kind: "self-test".into(),
            done_pct: num(&status["remaining_percent"]).map(|r| 100u64.saturating_sub(r)),
            last,
        },
        _ => SelfTest::Idle { last },
    })
}

/// NVMe: Optional Admin Command Support bit 4 says the controller takes Device Self-test.
pub fn nvme_supported(id_ctrl: &Value) -> bool {
    num(&id_ctrl["oacs"]).is_some_and(|o| o & 0x10 != 0)
}

pub fn nvme_unsupported() -> SelfTest {
    SelfTest::Unsupported {
        reason: "the drive does not offer device self-tests (NVMe OACS bit 4 is clear)".into(),
    }
}

fn nvme_kind(code: u64) -> String {
    match code {
        1 => "short".into(),
        2 => "long".into(),
        0xe => "vendor".into(),
        n => format!("code {n}"),
    }
}

/// `nvme self-test-log DEV -o json` (nvme-cli's keys), with the drive's power-on hours now.
pub fn from_nvme_log(log: &Value, poh: Option<u64>) -> Result<SelfTest, String> {
    let op = num(&log["Current Device Self-Test Operation"])
        .ok_or("self-test-log has no \"Current Device Self-Test Operation\"")?;
    let entries: Vec<&Value> = log
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    let last = entries
        .iter()
        .find(|e| num(&e["Self test result"]).is_some_and(|r| r != 0xf))
        .map(|e| {
            let r = num(&e["Self test result"]).unwrap_or(0xf);
            let seg = num(&e["Segment number"]).unwrap_or(0);
            let (outcome, result) = match r {
                0 => (Outcome::Passed, "completed without error".to_string()),
                1 => (Outcome::Aborted, "aborted by a self-test command".into()),
                2 => (Outcome::Aborted, "aborted by a controller reset".into()),
                3 => (Outcome::Aborted, "aborted: a namespace was removed".into()),
                4 => (Outcome::Aborted, "aborted by a format".into()),
                5 => (Outcome::Failed, "fatal or unknown test error".into()),
                6 => (Outcome::Failed, "failed in an unknown segment".into()),
                7 => (Outcome::Failed, format!("failed in segment {seg}")),
                9 => (Outcome::Aborted, "aborted by a sanitize".into()),
                n => (Outcome::Aborted, format!("aborted (result {n})")),
            };
            Last {
                kind: nvme_kind(num(&e["Self test code"]).unwrap_or(0)),
                outcome,
                result,
                hours_ago: poh
                    .zip(num(&e["Power on hours"]))
                    // A log hour after the clock's (QEMU's drives do that) says nothing.
                    .and_then(|(now, then)| now.checked_sub(then)),
            }
        });
    Ok(if op & 0xf == 0 {
        SelfTest::Idle { last }
    } else {
        SelfTest::Running {
            kind: nvme_kind(op & 0xf),
            done_pct: num(&log["Current Device Self-Test Completion"]).map(|c| c & 0x7f),
            last,
        }
    })
}

/// What to do with one drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "lowercase")]
pub enum Step {
    Start,
    Skip { reason: String },
}

/// Pure: which of `drives` (name, what it says, `None` when it gives no report) to start a test
/// on. A drive that runs a test already keeps it (starting another would abort it).
pub fn plan(drives: &[(String, Option<SelfTest>)]) -> Vec<(String, Step)> {
    drives
        .iter()
        .map(|(name, st)| {
            let step = match st {
                None => Step::Skip {
                    reason: "the drive gives no self-test report (not an ATA or NVMe drive, or \
                             its report could not be read)"
                        .into(),
                },
                Some(SelfTest::Unsupported { reason }) => Step::Skip {
                    reason: reason.clone(),
                },
                Some(SelfTest::Running {
                    kind: k, done_pct, ..
                }) => Step::Skip {
                    reason: format!(
                        "a {k} self-test is running{}; it would be aborted",
                        done_pct
                            .map(|p| format!(" ({p}% done)"))
                            .unwrap_or_default()
                    ),
                },
                Some(SelfTest::Idle { .. }) => Step::Start,
            };
            (name.clone(), step)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/tests/fixtures/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn ata_drives_say_whether_they_test_what_runs_and_how_the_last_one_ended() {
        let fresh = fixture("smartctl-sata.json");
        assert_eq!(from_smartctl(&fresh), Some(SelfTest::Idle { last: None }));
        // After `smartctl -t short` on QEMU's SATA drive (captured in the guest).
        let done = fixture("smartctl-sata-selftested.json");
        let st = from_smartctl(&done).unwrap();
        let last = st.last().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.outcome, last.result.as_str()),
            ("short", Outcome::Passed, "Completed without error")
        );
        // QEMU's drive logs the test at hour 4660 while its power-on time says 1: no age.
        assert_eq!(last.hours_ago, None);
        assert_eq!(st.cell(), "passed");

        let mut running = done.clone();
        running["ata_smart_data"]["self_test"]["status"] = serde_json::json!({"value": 249, "string": "in progress, 90% remaining", "remaining_percent": 90});
        let st = from_smartctl(&running).unwrap();
        assert!(
            matches!(
                st,
                SelfTest::Running {
                    done_pct: Some(10),
                    ..
                }
            ),
            "{st:?}"
        );
        assert_eq!(st.cell(), "self-test 10%");

        let mut failed = done.clone();
        failed["power_on_time"]["hours"] = 4663.into(); // 3 h after the logged test
        failed["ata_smart_self_test_log"]["standard"]["table"][0]["status"] =
            serde_json::json!({"value": 116, "string": "Completed: read failure", "passed": false});
        let l = from_smartctl(&failed).unwrap().last().cloned().unwrap();
        assert_eq!((l.outcome, l.hours_ago), (Outcome::Failed, Some(3)));
        // A test still running, logged as entry 1 with smartctl's "passed": the result shown
        // is the entry before it; alone, it is no result at all.
        let mut logged_running = failed.clone();
        logged_running["ata_smart_self_test_log"]["standard"]["table"] = serde_json::json!([
            {"type": {"value": 1, "string": "Short offline"},
             "status": {"value": 249, "string": "Self-test routine in progress", "passed": true},
             "lifetime_hours": 4663},
            failed["ata_smart_self_test_log"]["standard"]["table"][0].clone()
        ]);
        assert_eq!(
            from_smartctl(&logged_running)
                .unwrap()
                .last()
                .unwrap()
                .outcome,
            Outcome::Failed
        );
        let mut reserved = done.clone();
        reserved["ata_smart_self_test_log"]["standard"]["table"][0]["status"] =
            serde_json::json!({"value": 160, "string": "Unknown status (0xa)", "passed": true});
        assert_eq!(
            from_smartctl(&reserved).unwrap().last().unwrap().outcome,
            Outcome::Unknown
        );
        let mut aborted = done.clone();
        aborted["ata_smart_self_test_log"]["standard"]["table"][0]["status"] =
            serde_json::json!({"value": 16, "string": "Aborted by host", "passed": false});
        assert_eq!(
            from_smartctl(&aborted).unwrap().last().unwrap().outcome,
            Outcome::Aborted
        );

        let mut no = fresh.clone();
        no["ata_smart_data"]["capabilities"]["self_tests_supported"] = false.into();
        assert!(matches!(
            from_smartctl(&no),
            Some(SelfTest::Unsupported { .. })
        ));
        for f in [
            "smartctl-scsi.json",
            "smartctl-usb.json",
            "smartctl-virtio.json",
        ] {
            assert_eq!(from_smartctl(&fixture(f)), None, "{f}");
        }
    }

    #[test]
    fn nvme_drives_say_so_in_oacs_and_their_log_gives_progress_and_results() {
        // QEMU's emulated controller (OACS 0x12a): no Device Self-test.
        assert!(!nvme_supported(&fixture("nvme-id-ctrl.json")));
        assert!(nvme_supported(&serde_json::json!({"oacs": 0x17})));
        assert!(!nvme_supported(&serde_json::json!({})));

        let log = fixture("nvme-self-test-log.json");
        let st = from_nvme_log(&log, Some(1210)).unwrap();
        assert_eq!(
            st,
            SelfTest::Running {
                kind: "long".into(),
                done_pct: Some(37),
                last: Some(Last {
                    kind: "short".into(),
                    outcome: Outcome::Failed,
                    result: "failed in segment 3".into(),
                    hours_ago: Some(10),
                }),
            }
        );
        let mut idle = log.clone();
        idle["Current Device Self-Test Operation"] = 0.into();
        assert_eq!(from_nvme_log(&idle, None).unwrap().cell(), "FAILED");
        let mut empty = idle.clone();
        for e in empty["List of Valid Reports"].as_array_mut().unwrap() {
            e["Self test result"] = 15.into();
        }
        assert_eq!(from_nvme_log(&empty, None).unwrap().cell(), "never run");
        assert!(from_nvme_log(&serde_json::json!({}), None).is_err());
    }

    #[test]
    fn only_idle_drives_that_offer_tests_are_started_and_the_rest_say_why() {
        let drives = vec![
            ("sda".to_string(), Some(SelfTest::Idle { last: None })),
            ("nvme0n1".to_string(), Some(nvme_unsupported())),
            (
                "sdb".to_string(),
                Some(SelfTest::Running {
                    kind: "long".into(),
                    done_pct: Some(5),
                    last: None,
                }),
            ),
            ("vda".to_string(), None),
        ];
        let p = plan(&drives);
        assert_eq!(p[0].1, Step::Start);
        let why = |i: usize| match &p[i].1 {
            Step::Skip { reason } => reason.clone(),
            s => panic!("{s:?}"),
        };
        assert!(why(1).contains("OACS bit 4"), "{}", why(1));
        assert!(
            why(2).contains("long self-test is running (5% done)"),
            "{}",
            why(2)
        );
        assert!(why(3).contains("no self-test report"), "{}", why(3));
        assert_eq!(Kind::parse("extended"), Some(Kind::Long));
        assert_eq!(Kind::parse("weekly"), None);
    }
}
