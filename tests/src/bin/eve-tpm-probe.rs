//! An attacker's process for the VM tests, copied into the guest: it talks to the box's TPM with
//! the product's own sealing code, to show what a process that is not storage-init (later in the
//! same boot, or on a live USB) can and cannot do. Never part of an image.
//!
//! `eve-tpm-probe unseal BLOB_FILE`: unseal a stored seal (exit 0 and the byte count when it opens).
//! `eve-tpm-probe seal-ungated KEY_FILE GUID`: seal a vault key of the caller's choosing for the
//! vault GUID under the TPM's ungated parent (what anyone holding the TPM can do), print the blob.
//! `eve-tpm-probe wrap KEY_FILE RECOVERY_PROPERTY_FILE`: wrap a key of the caller's choosing to
//! the recovery key's public half found in a recovery property (public, on the disk), copying
//! that property's proof: what anyone holding the disks can make.
//! `eve-tpm-probe floor`: the rollback floor as the TPM holds it.
//! `eve-tpm-probe undefine-floor`: delete the floor's counters with the owner's (empty) auth, as
//! anyone with a shell on the box or a live USB can.
//! `eve-tpm-probe legacy-seal RECOVERY_KEY_FILE RECOVERY_PROPERTY_FILE GUID`: what a box from
//! before the built-in key-list floor holds: the vault key (opened with the operator's recovery
//! key) sealed as that release sealed it, to stage 1's older "floor checked"; printed as a blob.
//! `eve-tpm-probe forget-origins`: delete the key-list counter and the origin record (with the
//! first, a box from before them).
//! `eve-tpm-probe origins`: the origin record, if any.
//! `eve-tpm-probe clear`: `TPM2_Clear` with the lockout hierarchy's (empty) auth, as the
//! firmware's "clear TPM" does: new storage seeds, every owner NV index gone.

use std::process::ExitCode;
use storage::tpm::{self, Tpm};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = Tpm::at(&platform::Roots::host());
    let r = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["unseal", blob] => std::fs::read_to_string(blob)
            .map_err(|e| format!("{blob}: {e}"))
            .and_then(|b| tpm::unseal(&t, b.trim()).map_err(|e| platform::chain(&e)))
            .map(|k| format!("unsealed {} bytes", k.len())),
        ["seal-ungated", key, guid] => std::fs::read(key)
            .map_err(|e| format!("{key}: {e}"))
            .and_then(|k| {
                let g: u64 = guid.parse().map_err(|_| format!("guid `{guid}`"))?;
                let data = storage::vault::payload(g, &k);
                tpm::seal(&t, &data, &[]).map_err(|e| platform::chain(&e))
            }),
        ["wrap", key, prop] => std::fs::read(key)
            .map_err(|e| format!("{key}: {e}"))
            .and_then(|k| {
                let text = std::fs::read_to_string(prop).map_err(|e| format!("{prop}: {e}"))?;
                let f: Vec<&str> = text.trim().split(':').collect();
                use base64::Engine;
                let rpub: [u8; 32] = f
                    .get(1)
                    .and_then(|r| base64::engine::general_purpose::STANDARD.decode(r).ok())
                    .and_then(|r| r.try_into().ok())
                    .ok_or("no public half in the property")?;
                storage::vault::wrap_to(&k, &rpub, f.get(6).copied())
                    .map_err(|e| platform::chain(&e))
            }),
        ["floor"] => storage::floor::read(&t)
            .map(|(e, s)| format!("epoch {e:?} serial {s:?}"))
            .map_err(|e| platform::chain(&e)),
        ["undefine-floor"] => undefine(&[
            platform::rollback::EPOCH_INDEX,
            platform::rollback::SERIAL_INDEX,
        ]),
        ["forget-origins"] => undefine(&[
            platform::rollback::BUILTIN_INDEX,
            platform::rollback::ORIGIN_INDEX,
        ]),
        ["origins"] => platform::tpmcmd::Device::open(std::path::Path::new("/dev/tpmrm0"))
            .map_err(|e| e.to_string())
            .and_then(|mut d| platform::tpmcmd::read_origins(&mut d))
            .map(|o| format!("{o:?}")),
        ["legacy-seal", rk, prop, guid] => legacy_seal(&t, rk, prop, guid),
        ["clear"] => clear(),
        _ => Err("usage: eve-tpm-probe unseal BLOB_FILE | seal-ungated KEY_FILE GUID | floor | undefine-floor | forget-origins | origins | legacy-seal RK PROP GUID | clear".into()),
    };
    match r {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eve-tpm-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn clear() -> Result<String, String> {
    use tss_esapi::handles::AuthHandle;
    let dev: tss_esapi::tcti_ldr::DeviceConfig =
        "/dev/tpmrm0".parse().map_err(|e| format!("{e}"))?;
    let mut ctx = tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::Device(dev))
        .map_err(|e| format!("open the TPM: {e}"))?;
    ctx.execute_with_nullauth_session(|c| c.clear(AuthHandle::Lockout))
        .map_err(|e| format!("TPM2_Clear: {e}"))?;
    Ok("cleared".into())
}

fn legacy_seal(t: &Tpm, rk: &str, prop: &str, guid: &str) -> Result<String, String> {
    let rk = std::fs::read_to_string(rk).map_err(|e| format!("{rk}: {e}"))?;
    let rk = storage::vault::RecoveryKey::parse(rk.trim()).map_err(|e| platform::chain(&e))?;
    let blob = std::fs::read_to_string(prop).map_err(|e| format!("{prop}: {e}"))?;
    let key = storage::vault::unwrap(blob.trim(), &rk).map_err(|e| platform::chain(&e))?;
    let g: u64 = guid.parse().map_err(|_| format!("guid `{guid}`"))?;
    let data = storage::vault::payload(g, &key);
    tpm::seal_measured(t, &data, &[7], Some(platform::rollback::CHECKED))
        .map_err(|e| platform::chain(&e))
}

fn undefine(indexes: &[u32]) -> Result<String, String> {
    use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
    use tss_esapi::interface_types::resource_handles::Provision;
    let dev: tss_esapi::tcti_ldr::DeviceConfig =
        "/dev/tpmrm0".parse().map_err(|e| format!("{e}"))?;
    let mut ctx = tss_esapi::Context::new(tss_esapi::tcti_ldr::TctiNameConf::Device(dev))
        .map_err(|e| format!("open the TPM: {e}"))?;
    let mut done = Vec::new();
    for &index in indexes {
        let h = NvIndexTpmHandle::new(index).map_err(|e| format!("{e}"))?;
        let obj = ctx
            .tr_from_tpm_public(TpmHandle::NvIndex(h))
            .map_err(|e| format!("{index:#010x}: {e}"))?;
        ctx.execute_with_nullauth_session(|c| {
            c.nv_undefine_space(Provision::Owner, NvIndexHandle::from(obj))
        })
        .map_err(|e| format!("undefine {index:#010x}: {e}"))?;
        done.push(format!("{index:#010x}"));
    }
    Ok(format!("undefined {}", done.join(" ")))
}
