//! GRUB's environment block: a 1 KiB file of `name=value` lines after a fixed header, padded
//! with `#`. Stock GRUB reads it with `load_env` and rewrites it in place with `save_env`.
//! No crate implements it, so this is the whole format, parsed and written in pure functions.

use std::collections::BTreeMap;

pub const BLOCK_SIZE: usize = 1024;
pub const HEADER: &str = "# GRUB Environment Block\n";
/// Everything we write must fit in the first sector so a write changes one sector only; see
/// `state::store`'s argument for power-loss safety.
pub const PAYLOAD_LIMIT: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("not a GRUB environment block ({0})")]
    Format(String),
    #[error("variable `{0}`: {1}")]
    Variable(String, String),
    #[error("the block's variables take {0} bytes; at most {PAYLOAD_LIMIT} fit in one sector")]
    TooLarge(usize),
}

/// Parses a block. GRUB escapes `\` and newlines with a backslash; we accept those escapes.
pub fn parse(block: &[u8]) -> Result<BTreeMap<String, String>, EnvError> {
    if block.len() != BLOCK_SIZE {
        return Err(EnvError::Format(format!(
            "{} bytes, expected {BLOCK_SIZE}",
            block.len()
        )));
    }
    let text = std::str::from_utf8(block).map_err(|e| EnvError::Format(e.to_string()))?;
    let Some(body) = text.strip_prefix(HEADER) else {
        return Err(EnvError::Format("header missing".into()));
    };
    let mut vars = BTreeMap::new();
    let mut line = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => line.push(n),
                None => return Err(EnvError::Format("dangling escape".into())),
            },
            '\n' => {
                take_line(&mut vars, &line);
                line.clear();
            }
            c => line.push(c),
        }
    }
    // The unterminated tail is the `#` padding.
    if !line.trim_start_matches('#').is_empty() {
        return Err(EnvError::Format("unterminated last line".into()));
    }
    Ok(vars)
}

fn take_line(vars: &mut BTreeMap<String, String>, line: &str) {
    if line.starts_with('#') || line.is_empty() {
        return;
    }
    if let Some((k, v)) = line.split_once('=') {
        vars.insert(k.to_string(), v.to_string());
    }
}

/// Names GRUB's script can use: letters, digits and `_`, not starting with a digit.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Writes a block. Values are restricted to printable ASCII without `\`, so nothing needs escaping
/// and `grub-editenv list` shows exactly what GRUB sees.
pub fn serialize(vars: &BTreeMap<String, String>) -> Result<Vec<u8>, EnvError> {
    let mut out = String::from(HEADER);
    for (k, v) in vars {
        if !valid_name(k) {
            return Err(EnvError::Variable(k.clone(), "invalid name".into()));
        }
        if let Some(c) = v.chars().find(|c| !(' '..='~').contains(c) || *c == '\\') {
            return Err(EnvError::Variable(
                k.clone(),
                format!("character {c:?} is not allowed"),
            ));
        }
        out.push_str(&format!("{k}={v}\n"));
    }
    if out.len() > PAYLOAD_LIMIT {
        return Err(EnvError::TooLarge(out.len()));
    }
    let mut b = out.into_bytes();
    b.resize(BLOCK_SIZE, b'#');
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn round_trips_and_pads_to_one_kib() {
        let v = vars(&[("EVE_ORDER", "B A"), ("A_STATE", "good"), ("B_TRIES", "")]);
        let b = serialize(&v).unwrap();
        assert_eq!(b.len(), BLOCK_SIZE);
        assert!(b.starts_with(HEADER.as_bytes()));
        assert_eq!(*b.last().unwrap(), b'#');
        assert_eq!(parse(&b).unwrap(), v);
    }

    #[test]
    fn reads_what_grub_editenv_writes() {
        // `grub-editenv f create; grub-editenv f set a=1 'b=x\y'` (GRUB escapes the backslash).
        let mut b = format!("{HEADER}a=1\nb=x\\\\y\n").into_bytes();
        b.resize(BLOCK_SIZE, b'#');
        assert_eq!(parse(&b).unwrap(), vars(&[("a", "1"), ("b", "x\\y")]));
    }

    #[test]
    fn rejects_bad_blocks() {
        assert!(matches!(parse(&[b'#'; 1024]), Err(EnvError::Format(_))));
        assert!(matches!(parse(&[0; 1024]), Err(EnvError::Format(_))));
        let mut short = HEADER.as_bytes().to_vec();
        short.resize(512, b'#');
        assert!(parse(&short).unwrap_err().to_string().contains("512 bytes"));
        let mut torn = format!("{HEADER}a=1\nb=").into_bytes();
        torn.resize(BLOCK_SIZE, 0);
        assert!(parse(&torn).is_err());
    }

    #[test]
    fn refuses_what_grub_could_misread_or_what_spans_two_sectors() {
        assert!(serialize(&vars(&[("A-B", "1")])).is_err());
        assert!(serialize(&vars(&[("1A", "1")])).is_err());
        assert!(serialize(&vars(&[("A", "x\ny")])).is_err());
        assert!(serialize(&vars(&[("A", "x\\y")])).is_err());
        let big = "v".repeat(600);
        assert!(matches!(
            serialize(&vars(&[("A", &big)])),
            Err(EnvError::TooLarge(_))
        ));
    }
}
