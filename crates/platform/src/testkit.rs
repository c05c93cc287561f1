//! The property tests' inputs: a valid text or binary made slightly wrong (bytes replaced,
//! inserted or removed, or the end cut off), so a parser's tests reach past its first check.
//! Only for tests (the `testkit` feature).

use proptest::prelude::*;

/// `seed` with one to five bytes replaced, inserted or removed, then perhaps cut short.
pub fn mutated_bytes(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    (
        proptest::collection::vec((0..3u8, 0..=len, any::<u8>()), 1..6),
        proptest::option::of(0..=len),
    )
        .prop_map(move |(edits, cut)| {
            let mut b = seed.clone();
            for (op, at, byte) in edits {
                let at = at.min(b.len());
                match op {
                    0 if at < b.len() => b[at] = byte,
                    1 => b.insert(at, byte),
                    _ if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            b
        })
}

/// [`mutated_bytes`] of a text, read back as text (invalid UTF-8 replaced).
pub fn mutated(seed: &str) -> impl Strategy<Value = String> {
    mutated_bytes(seed.as_bytes().to_vec()).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `seed` with one to seven bytes among its first `within` replaced in place: a format of fixed
/// size keeps its size.
pub fn replaced(seed: Vec<u8>, within: usize) -> impl Strategy<Value = Vec<u8>> {
    let within = within.min(seed.len()).max(1);
    proptest::collection::vec((0..within, any::<u8>()), 1..8).prop_map(move |edits| {
        let mut b = seed.clone();
        for (at, byte) in edits {
            if at < b.len() {
                b[at] = byte;
            }
        }
        b
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn mutations_stay_near_their_seed_and_replacements_keep_the_size() {
        let mut r = TestRunner::deterministic();
        let seed = b"name = \"persist\"\n".to_vec();
        let mut changed = 0;
        for _ in 0..200 {
            let m = mutated_bytes(seed.clone())
                .new_tree(&mut r)
                .unwrap()
                .current();
            assert!(m.len() <= seed.len() + 5);
            changed += usize::from(m != seed);
            let f = replaced(seed.clone(), 4)
                .new_tree(&mut r)
                .unwrap()
                .current();
            assert_eq!(f.len(), seed.len());
            assert_eq!(f[4..], seed[4..]);
        }
        assert!(changed > 150, "{changed} of 200 changed");
    }
}
