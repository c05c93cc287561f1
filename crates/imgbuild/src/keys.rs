//! The builder's update-signing keys: the key named by `SIGNING_KEY=` (a PKCS#8 PEM file, as
//! `openssl genpkey -algorithm ed25519` writes it), or a development key the builder makes once in
//! its cache; the key list the image trusts; and rotations (a new list signed by a trusted key).

use crate::context::Profile;
use crate::error::{Error, IoContext, Result};
use abupdate::trust::{self, KeyList, SignedKeyList, Signer25519};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How an image and its artifact were signed.
#[derive(Debug)]
pub struct Signing {
    pub key: Signer25519,
    /// `release` or `dev`.
    pub kind: &'static str,
    pub key_file: PathBuf,
}

fn key_err(path: &Path, e: trust::TrustError) -> Error {
    Error::Parse {
        path: path.into(),
        msg: e.to_string(),
    }
}

pub fn load(path: &Path) -> Result<Signer25519> {
    let pem = std::fs::read_to_string(path).at("read the signing key", path)?;
    Signer25519::from_pem(&pem).map_err(|e| key_err(path, e))
}

/// A new random key, written 0600 to `out` (never over an existing file).
pub fn generate(out: &Path) -> Result<Signer25519> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(|e| Error::Parse {
        path: out.into(),
        msg: format!("no randomness for a key: {e}"),
    })?;
    let k = Signer25519::from_seed(&seed);
    let pem = zeroize::Zeroizing::new(k.to_pem().map_err(|e| key_err(out, e))?);
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d).at("create", d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .at("create the signing key", out)?;
    f.write_all(pem.as_bytes()).at("write", out)?;
    f.sync_all().at("fsync", out)?;
    Ok(k)
}

/// Refuses the vendor's keys and `--release` for a development build: its keys are its own, never
/// enrolled in or trusted by a production image, so a development build can never run on one.
pub fn check_dev(
    profile: Profile,
    explicit: Option<&Path>,
    what: &str,
    release: bool,
) -> Result<()> {
    if profile != Profile::Dev {
        return Ok(());
    }
    if release {
        return Err(Error::Parse {
            path: "--release".into(),
            msg: "a release is a production build; the dev profile (console shell, test agent) is never released".into(),
        });
    }
    if let Some(p) = explicit {
        return Err(Error::Parse {
            path: what.into(),
            msg: format!(
                "{}: a development build is never signed with the vendor's keys; it gets its own (made in the cache), which no production image trusts",
                p.display()
            ),
        });
    }
    Ok(())
}

/// Where a profile's development keys live in the cache: the dev profile's are apart from the
/// ones a development-signed production image uses.
pub fn dev_dir(cache: &Path, profile: Profile) -> PathBuf {
    match profile {
        Profile::Prod => cache.join("keys"),
        Profile::Dev => cache.join("keys/dev-profile"),
    }
}

/// The signing key for a build: `explicit` if given; otherwise (not for a release build) the
/// cache's development key for `profile`, made on first use.
pub fn for_build(
    explicit: Option<&Path>,
    release: bool,
    cache: &Path,
    profile: Profile,
) -> Result<Signing> {
    check_dev(profile, explicit, "SIGNING_KEY", release)?;
    match explicit {
        Some(p) => Ok(Signing {
            key: load(p)?,
            kind: "release",
            key_file: p.into(),
        }),
        None if release => Err(Error::Parse {
            path: "SIGNING_KEY".into(),
            msg: "a release build needs the vendor's signing key (SIGNING_KEY=path/to/key.pem); \
                  it never signs with a development key"
                .into(),
        }),
        None => {
            let p = dev_dir(cache, profile).join("dev-update-key.pem");
            let key = if p.exists() {
                load(&p)?
            } else {
                match generate(&p) {
                    Ok(k) => {
                        eprintln!(
                            "      no SIGNING_KEY: made a development key {} (images and updates are marked dev-signed)",
                            p.display()
                        );
                        k
                    }
                    // Another build (make -j) made it first.
                    Err(_) if p.exists() => load(&p)?,
                    Err(e) => return Err(e),
                }
            };
            Ok(Signing {
                key,
                kind: "dev",
                key_file: p,
            })
        }
    }
}

/// Public keys from files (PEM or one base64 line each).
pub fn publics(files: &[PathBuf]) -> Result<Vec<ed25519_dalek::VerifyingKey>> {
    files
        .iter()
        .map(|p| {
            let t = std::fs::read_to_string(p).at("read the public key", p)?;
            trust::public_from_text(&t).map_err(|e| key_err(p, e))
        })
        .collect()
}

/// The list an image trusts: its signing key first, then any extra keys (for a later rotation).
pub fn trusted(signing: &Signing, extra: &[PathBuf], serial: u32) -> Result<KeyList> {
    let mut keys = vec![signing.key.public()];
    for k in publics(extra)? {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    Ok(KeyList::new(serial, &keys))
}

/// A rotation to `keys` at `serial`, signed by `by`.
pub fn rotation(by: &Path, keys: &[PathBuf], serial: u32) -> Result<SignedKeyList> {
    let k = load(by)?;
    let list = KeyList::new(serial, &publics(keys)?);
    if list.keys.is_empty() {
        return Err(Error::Parse {
            path: by.into(),
            msg: "a rotation needs at least one new key".into(),
        });
    }
    k.sign_list(&list).map_err(|e| key_err(by, e))
}

pub fn read_rotation(p: &Path) -> Result<SignedKeyList> {
    let b = std::fs::read(p).at("read the key rotation", p)?;
    serde_json::from_slice(&b).map_err(|e| Error::Parse {
        path: p.into(),
        msg: e.to_string(),
    })
}

/// The vendor's chain of rotations, oldest first: a JSON array of rotations, as a box stores it
/// (`EFI/eve/keys.json`). An update carrying it (`pack-update --key-chain`) repairs a box whose
/// stored copy was lost.
pub fn read_chain(p: &Path) -> Result<Vec<SignedKeyList>> {
    let b = std::fs::read(p).at("read the key chain", p)?;
    let chain: Vec<SignedKeyList> = serde_json::from_slice(&b).map_err(|e| Error::Parse {
        path: p.into(),
        msg: format!("not a JSON array of key rotations: {e}"),
    })?;
    for (i, r) in chain.iter().enumerate() {
        abupdate::trust::KeyList::parse(r.list.as_bytes()).map_err(|e| Error::Parse {
            path: p.into(),
            msg: format!("rotation {i}: {e}"),
        })?;
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_key_is_made_once_and_release_builds_refuse_it() {
        let t = tempfile::tempdir().unwrap();
        let a = for_build(None, false, t.path(), Profile::Prod).unwrap();
        assert_eq!(a.kind, "dev");
        let b = for_build(None, false, t.path(), Profile::Prod).unwrap();
        assert_eq!(a.key.id(), b.key.id(), "the cached key is reused");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = for_build(None, true, t.path(), Profile::Prod)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SIGNING_KEY"), "{e}");
        let r = for_build(Some(&a.key_file), true, t.path(), Profile::Prod).unwrap();
        assert_eq!((r.kind, r.key.id()), ("release", a.key.id()));
        let bad = t.path().join("bad.pem");
        std::fs::write(&bad, "nope").unwrap();
        let e = for_build(Some(&bad), true, t.path(), Profile::Prod)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.pem"), "{e}");
    }

    #[test]
    fn a_development_build_has_keys_of_its_own_and_is_never_released() {
        let t = tempfile::tempdir().unwrap();
        let prod = for_build(None, false, t.path(), Profile::Prod).unwrap();
        let dev = for_build(None, false, t.path(), Profile::Dev).unwrap();
        assert_ne!(prod.key.id(), dev.key.id());
        assert_ne!(prod.key_file, dev.key_file);
        let e = for_build(None, true, t.path(), Profile::Dev)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--release") && e.contains("never released"),
            "{e}"
        );
        let e = for_build(Some(&prod.key_file), false, t.path(), Profile::Dev)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SIGNING_KEY") && e.contains("never signed"),
            "{e}"
        );
    }

    #[test]
    fn a_rotation_made_here_is_accepted_by_the_box_rules() {
        let t = tempfile::tempdir().unwrap();
        let old = t.path().join("old.pem");
        let new = t.path().join("new.pem");
        let (o, n) = (generate(&old).unwrap(), generate(&new).unwrap());
        let pubf = t.path().join("new.pub");
        std::fs::write(
            &pubf,
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                n.public().as_bytes(),
            ),
        )
        .unwrap();
        let rot = rotation(&old, &[pubf], 2).unwrap();
        let box_trust = trust::Trust::from_list(&KeyList::new(1, &[o.public()])).unwrap();
        assert_eq!(box_trust.rotate(&rot).unwrap().ids(), vec![n.id()]);
        assert!(generate(&old).is_err(), "never overwrites a key");
    }
}
