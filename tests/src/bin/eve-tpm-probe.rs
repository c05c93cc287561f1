//! An attacker's process for the VM tests, copied into the guest: it talks to the box's TPM with
//! the product's own sealing code, to show what a process that is not storage-init (later in the
//! same boot, or on a live USB) can and cannot do. Never part of an image.
//!
//! `eve-tpm-probe unseal BLOB_FILE`: unseal a stored seal (exit 0 and the byte count when it opens).
//! `eve-tpm-probe seal-ungated KEY_FILE GUID`: seal a vault key of the caller's choosing for the
//! vault GUID under the TPM's ungated parent (what anyone holding the TPM can do), print the blob.

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
        _ => Err("usage: eve-tpm-probe unseal BLOB_FILE | seal-ungated KEY_FILE GUID".into()),
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
