//! The vault's side of a firmware `dbx` update (a signed update revoking an older boot loader).
//! PCR 7, which the vault's seal binds, measures `dbx`, so the next boot after the write measures
//! another value. Before `abupdate` writes it, the vault key is rotated to a transition seal that
//! opens in this boot state and in the one the write leads to ([`crate::tpm::Transition`]); the
//! first unlock after that rotates it to a plain seal of the new state. Both states are computed
//! from this boot's event log, checked to reproduce PCR 7, so nothing on the disk can name them.

use crate::tpm::Transition;
use platform::{efisig, eventlog, Roots};

/// This boot's PCR 7 measurements, checked against the TPM's PCR 7.
#[derive(Debug, Clone)]
pub struct Boot {
    events: Vec<eventlog::Event>,
    /// The `dbx` data the firmware measured at this boot.
    pub measured: Vec<u8>,
}

/// Reads the event log under `roots.sys` and checks that it replays to `pcr7_now`.
pub fn observe(roots: &Roots, pcr7_now: &[u8]) -> Result<Boot, String> {
    let p = roots.sys.join(eventlog::IN_SYS);
    let raw = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let events = eventlog::parse(&raw).map_err(|e| format!("{}: {e}", p.display()))?;
    if eventlog::replay(&events, 7)[..] != *pcr7_now {
        return Err(format!(
            "{}: its PCR 7 events do not reproduce the TPM's PCR 7, so no later value can be predicted from them",
            p.display()
        ));
    }
    let (_, measured) = eventlog::variable(&events, &efisig::SECURITY_DATABASE_GUID, efisig::DBX)?;
    Ok(Boot { events, measured })
}

impl Boot {
    /// PCR 7 of a boot that measured `dbx` as `data`.
    pub fn pcr7_with(&self, data: &[u8]) -> Result<[u8; 32], String> {
        eventlog::pcr7_with(
            &self.events,
            &efisig::SECURITY_DATABASE_GUID,
            efisig::DBX,
            data,
        )
    }

    /// The PCR 7 values of transition `t` as seen from this boot: `dbx` as its first `keep`
    /// bytes, then those followed by each of its appends. Only a boot whose own `dbx` starts with
    /// those bytes can compute them; which of them this boot is in, the TPM checks.
    pub fn states(&self, t: &Transition) -> Result<Vec<[u8; 32]>, String> {
        let before = self.measured.get(..t.keep).ok_or_else(|| {
            format!(
                "it was made for a dbx of at least {} bytes and this boot measured {}",
                t.keep,
                self.measured.len()
            )
        })?;
        let mut out = vec![self.pcr7_with(before)?];
        for a in &t.appends {
            let mut after = before.to_vec();
            after.extend_from_slice(a);
            out.push(self.pcr7_with(&after)?);
        }
        Ok(out)
    }

    /// The transition a seal made now needs: the firmware's `dbx` as it is now (`now`, written
    /// this boot if it differs from what was measured) and, if the running release carries a
    /// signed append, as that append leaves it (with entries already held dropped, as edk2 does,
    /// or not, as other firmware may). `None` when every one is what this boot measured.
    pub fn transition(
        &self,
        now: &[u8],
        append: Option<&[u8]>,
    ) -> Result<Option<Transition>, String> {
        let mut candidates = vec![now.to_vec()];
        // Only an append that still adds something is ever written.
        if let Some(a) = append {
            let filtered = efisig::after_append(now, a)?;
            if filtered != now {
                candidates.push(filtered);
                candidates.push([now, a].concat());
            }
        }
        let mut appends: Vec<Vec<u8>> = Vec::new();
        for c in candidates {
            if c == self.measured {
                continue;
            }
            let rest = c.strip_prefix(&self.measured[..]).ok_or(
                "the firmware's dbx no longer starts with what this boot measured (it was replaced, not appended to)",
            )?;
            if !appends.iter().any(|a| a == rest) {
                appends.push(rest.to_vec());
            }
        }
        Ok((!appends.is_empty()).then_some(Transition {
            keep: self.measured.len(),
            appends,
        }))
    }
}

/// The signed lists the running release carries for `dbx` (under `roots.usr`), if any.
pub fn carried(roots: &Roots) -> Result<Option<Vec<u8>>, String> {
    let p = roots.usr.join(efisig::CARRIED);
    match std::fs::read(&p) {
        Ok(auth) => efisig::auth2_payload(&auth)
            .map(|b| Some(b.to_vec()))
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// What [`update`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The running release carries no `dbx` update.
    NoneCarried,
    /// It waits: the running slot is not good yet, or the ESP does not hold its boot loader.
    Waiting(String),
    /// The firmware's `dbx` already forbids all `n` images the update names.
    Held(usize),
    /// Would write (dry run): `n` images not yet forbidden.
    WouldWrite(usize),
    /// Written: `n` images newly forbidden; what the vault needed.
    Written(usize, crate::vault::DbxReady),
}

impl Outcome {
    pub fn text(&self) -> String {
        use crate::vault::DbxReady;
        match self {
            Outcome::NoneCarried => "this release carries no firmware dbx update".into(),
            Outcome::Waiting(why) => format!("the firmware dbx update waits: {why}"),
            Outcome::Held(n) => format!(
                "the firmware's dbx already forbids the {n} boot loader image(s) this release revokes"
            ),
            Outcome::WouldWrite(n) => format!(
                "would add {n} revoked boot loader image(s) to the firmware's dbx"
            ),
            Outcome::Written(n, ready) => format!(
                "the firmware's dbx now forbids {n} more boot loader image(s); the vault {}",
                match ready {
                    DbxReady::Unaffected(why) => format!("needed nothing ({why})"),
                    DbxReady::Covered => "was already sealed for it".into(),
                    DbxReady::Rotated => {
                        "key was rotated first to a seal that opens before and after it".into()
                    }
                }
            ),
        }
    }
}

/// Pure: the entries (of any kind) a signed append forbids that `now` does not forbid yet.
pub fn newly_forbidden(now: &[u8], append: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let held = efisig::parse_lists(now).map_err(|e| format!("the firmware's dbx: {e}"))?;
    let adding = efisig::parse_lists(append)?;
    Ok(adding
        .iter()
        .flat_map(|l| {
            l.entries
                .iter()
                .filter(|e| {
                    !held
                        .iter()
                        .any(|h| h.kind == l.kind && h.entries.contains(e))
                })
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect())
}

/// Applies the running release's signed `dbx` append to the firmware, once its slot is good and
/// the ESP holds its boot loader, never while a program on the ESP is among the revoked images,
/// and only after the vault's seal opens in the state the write leads to
/// ([`crate::vault::prepare_dbx`]). Takes the floor lock (rotations take turns).
pub fn update(
    host: &mut dyn crate::host::Host,
    pool: &str,
    enc: &crate::policy::Encryption,
    sb: crate::vault::SecureBoot,
    dry_run: bool,
) -> Result<Outcome, String> {
    let roots = host.roots().clone();
    let p = roots.usr.join(efisig::CARRIED);
    let Some(append) = carried(&roots)? else {
        return Ok(Outcome::NoneCarried);
    };
    let revoked = efisig::sha256s(&append).map_err(|e| format!("{}: {e}", p.display()))?;
    let sys = abupdate::system::System::open(roots.clone()).map_err(|e| platform::chain(&e))?;
    let esp = sys.esp_programs().map_err(|e| platform::chain(&e))?;
    use abupdate::loader::Action;
    match &esp.loader {
        Action::Current { .. } | Action::Newer { .. } => {}
        Action::NotGood { state } => {
            return Ok(Outcome::Waiting(format!(
                "the running slot is {state}, not good"
            )))
        }
        Action::Install { .. } => {
            return Ok(Outcome::Waiting(
                "the ESP does not hold this release's boot loader yet (`abupdate bootloader`)"
                    .into(),
            ))
        }
        Action::Revoked { file } => {
            return Ok(Outcome::Waiting(format!(
                "this release's own {file} is already revoked (an older release, fallen back to)"
            )))
        }
    }
    // The older slot must not be able to boot and run its own ab-health (whose loader this
    // update may revoke): only once the floor stands at this release's epoch.
    if host.tpm_present() {
        match (host.tpm_floor_now(), host.floor_target()) {
            (Some(f), Some(t)) if f[0] >= u64::from(t[0]) => {}
            (f, t) => {
                return Ok(Outcome::Waiting(format!(
                    "the TPM's rollback floor (epoch {}) is not yet at this release's epoch ({}): an older slot could still boot",
                    f.map_or_else(|| "none".into(), |f| f[0].to_string()),
                    t.map_or_else(|| "unknown".into(), |t| t[0].to_string())
                )))
            }
        }
    }
    let warnings = abupdate::loader::check_revocable(&esp.programs, &revoked)
        .map_err(|e| format!("{e}; the firmware's dbx is not changed"))?;
    let now = efisig::read_dbx(&roots.sys).map_err(|e| platform::chain(&e))?;
    let new = newly_forbidden(&now, &append)?;
    if new.is_empty() {
        return Ok(Outcome::Held(revoked.len()));
    }
    for w in &warnings {
        platform::log(format!("WARNING: {w}"));
    }
    if dry_run {
        return Ok(Outcome::WouldWrite(new.len()));
    }
    let _lock = sys.floor_lock().map_err(|e| platform::chain(&e))?;
    let ready = crate::vault::prepare_dbx(host, pool, enc, sb)
        .map_err(|e| format!("{}; the firmware's dbx is not changed", platform::chain(&e)))?;
    let auth = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    write_append(&roots.sys, &auth)?;
    let after = efisig::read_dbx(&roots.sys).map_err(|e| platform::chain(&e))?;
    // The seal was made for the results firmware gives; if this one gave another, seal again
    // for what it holds now, before anything reboots.
    let expected = [
        efisig::after_append(&now, &append)?,
        [&now[..], &append[..]].concat(),
    ];
    if !expected.contains(&after) {
        platform::log(
            "WARNING: the firmware's dbx after the update is not what was predicted: sealing the vault again for it",
        );
        crate::vault::prepare_dbx(host, pool, enc, sb).map_err(|e| {
            format!(
                "the firmware's dbx was written, but the vault could not be sealed for what it holds now ({}): the next boot will ask for the recovery key",
                platform::chain(&e)
            )
        })?;
    }
    if !newly_forbidden(&after, &append)?.is_empty() {
        return Err(format!(
            "the firmware took the signed dbx update but does not forbid all {} images",
            revoked.len()
        ));
    }
    Ok(Outcome::Written(new.len(), ready))
}

/// Writes a signed append to `dbx` through efivarfs: the attributes, then the signed data, in
/// one write. efivarfs marks the variable immutable (so no stray write reaches the firmware); the
/// flag is lifted for this write and put back.
pub fn write_append(sys: &std::path::Path, auth: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let p = sys.join(efisig::EFIVARS).join(efisig::DBX_EFIVAR);
    let existed = p.exists();
    if existed {
        set_immutable(&p, false)?;
    }
    let mut buf = efisig::APPEND_ATTRIBUTES.to_le_bytes().to_vec();
    buf.extend_from_slice(auth);
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .and_then(|mut f| f.write(&buf));
    if existed || p.exists() {
        let _ = set_immutable(&p, true);
    }
    match r {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(format!("{}: wrote {n} of {} bytes", p.display(), buf.len())),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EINVAL)) => Err(format!(
            "{}: the firmware refused the signed dbx update ({e}): it is not signed by a KEK enrolled in this firmware",
            p.display()
        )),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn set_immutable(p: &std::path::Path, on: bool) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    const GETFLAGS: libc::c_ulong = 0x8008_6601;
    const SETFLAGS: libc::c_ulong = 0x4008_6602;
    const IMMUTABLE: libc::c_int = 0x10;
    let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut flags: libc::c_int = 0;
    // SAFETY: both ioctls read or write one int through a pointer to a live local.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), GETFLAGS, &mut flags as *mut libc::c_int) };
    if r != 0 {
        return Err(format!(
            "{}: read its flags: {}",
            p.display(),
            std::io::Error::last_os_error()
        ));
    }
    let want = if on {
        flags | IMMUTABLE
    } else {
        flags & !IMMUTABLE
    };
    if want == flags {
        return Ok(());
    }
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), SETFLAGS, &want as *const libc::c_int) };
    if r != 0 {
        return Err(format!(
            "{}: set its flags: {}",
            p.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::efisig::{encode_lists, SigList, CERT_SHA256_GUID};

    fn hashes(hs: &[u8]) -> Vec<u8> {
        encode_lists(&[SigList {
            kind: CERT_SHA256_GUID,
            header: Vec::new(),
            entries: hs
                .iter()
                .map(|h| {
                    let mut e = vec![1u8; 16];
                    e.extend_from_slice(&[*h; 32]);
                    e
                })
                .collect(),
            entry_size: 48,
        }])
    }

    /// A boot whose log measured `dbx` as `measured`, with a plain event before and after.
    fn boot(measured: &[u8]) -> Boot {
        let ev = |data: Vec<u8>| eventlog::Event {
            pcr: 7,
            kind: eventlog::EV_EFI_VARIABLE_DRIVER_CONFIG,
            sha256: efisig::sha256(&data),
            data,
        };
        Boot {
            events: vec![
                ev(b"SecureBoot".to_vec()),
                ev(efisig::variable_data(
                    &efisig::SECURITY_DATABASE_GUID,
                    efisig::DBX,
                    measured,
                )),
                ev(vec![0; 4]),
            ],
            measured: measured.to_vec(),
        }
    }

    #[test]
    fn the_states_of_a_transition_are_the_same_from_both_sides_of_the_write() {
        let old = hashes(&[1, 2]);
        let add = hashes(&[3]);
        let before = boot(&old);
        let t = before.transition(&old, Some(&add)).unwrap().unwrap();
        // Nothing of it held: both kinds of firmware leave the same bytes.
        assert_eq!(t.keep, old.len());
        assert_eq!(t.appends, vec![add.clone()]);
        let s1 = before.states(&t).unwrap();
        // After the write and a reboot, the firmware measured old + add.
        let new = [&old[..], &add[..]].concat();
        let after = boot(&new);
        assert_eq!(after.states(&t).unwrap(), s1);
        assert_eq!(s1[0], eventlog::replay(&before.events, 7));
        assert_eq!(s1[1], eventlog::replay(&after.events, 7));
        // Written this boot, not yet measured: the same transition.
        assert_eq!(
            before.transition(&new, Some(&add)).unwrap(),
            Some(t.clone())
        );
        assert_eq!(before.transition(&new, None).unwrap(), Some(t.clone()));
        // A boot that measured less than the seal kept cannot compute the states.
        let e = boot(&old[..48]).states(&t).unwrap_err();
        assert!(e.contains("at least"), "{e}");
    }

    #[test]
    fn nothing_is_needed_once_the_boot_measured_the_append_and_a_partly_held_one_gets_both_results()
    {
        let old = hashes(&[1, 2]);
        let add = hashes(&[3]);
        let new = [&old[..], &add[..]].concat();
        let after = boot(&new);
        assert_eq!(after.transition(&new, Some(&add)).unwrap(), None);
        assert_eq!(after.transition(&new, None).unwrap(), None);
        // An append with one hash held and one new: two possible results.
        let both = hashes(&[2, 4]);
        let t = boot(&old).transition(&old, Some(&both)).unwrap().unwrap();
        assert_eq!(t.appends.len(), 2);
        assert_eq!(t.appends[0], hashes(&[4]));
        assert_eq!(t.appends[1], both);
    }

    #[test]
    fn only_images_not_yet_forbidden_count() {
        let n = newly_forbidden(&hashes(&[1, 2]), &hashes(&[2, 3])).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0][16..], [3; 32]);
        assert!(newly_forbidden(&hashes(&[1, 2]), &hashes(&[1]))
            .unwrap()
            .is_empty());
        assert!(newly_forbidden(&[7], &hashes(&[1]))
            .unwrap_err()
            .contains("firmware's dbx"));
    }

    #[test]
    fn a_dbx_replaced_rather_than_appended_to_is_refused() {
        let b = boot(&hashes(&[1, 2]));
        let e = b
            .transition(&hashes(&[9]), Some(&hashes(&[3])))
            .unwrap_err();
        assert!(e.contains("replaced"), "{e}");
    }

    #[test]
    fn the_log_must_reproduce_pcr7_and_the_carried_append_must_parse() {
        let t = tempfile::tempdir().unwrap();
        let roots = Roots::under(t.path());
        let e = observe(&roots, &[0; 32]).unwrap_err();
        assert!(
            e.contains("kernel/security/tpm0/binary_bios_measurements"),
            "{e}"
        );
        // The log the kernel exposed in a VM test, where the kernel puts it.
        let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../platform/tests/fixtures/eventlog");
        let log = roots.sys.join(eventlog::IN_SYS);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::copy(fx.join("ovmf-secureboot-shim-grub.bin"), &log).unwrap();
        let hex = std::fs::read_to_string(fx.join("pcr7.hex")).unwrap();
        let pcr7: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex.trim()[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let b = observe(&roots, &pcr7).unwrap();
        assert_eq!(
            b.measured,
            std::fs::read(fx.join("dbx-efivar.bin")).unwrap()[4..]
        );
        let e = observe(&roots, &[0; 32]).unwrap_err();
        assert!(e.contains("do not reproduce the TPM's PCR 7"), "{e}");
        // A revocation of one image: the states before and after, the first this boot's.
        let add = hashes(&[5]);
        let t = b.transition(&b.measured, Some(&add)).unwrap().unwrap();
        let s = b.states(&t).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0][..], pcr7[..]);
        assert_ne!(s[1], s[0]);
        assert_eq!(carried(&roots).unwrap(), None);
        let p = roots.usr.join(efisig::CARRIED);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"not signed").unwrap();
        assert!(carried(&roots).unwrap_err().contains("dbx-append.auth"));
    }
}
