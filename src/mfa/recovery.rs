//! Recovery codes: ten single-use codes shown once when a factor is confirmed, stored hashed.

use rand::Rng as _;

use crate::store::{hash_secret, CODE_ALPHABET};

/// How many codes a confirmation hands out.
pub const COUNT: usize = 10;
/// Characters per code, dashes excluded (two groups of 5).
const LEN: usize = 10;

/// `COUNT` new codes, as shown (`ABCDE-FGHJK`).
pub fn generate() -> Vec<String> {
    let mut rng = rand::rngs::OsRng;
    (0..COUNT)
        .map(|_| {
            let mut code = String::with_capacity(LEN + 1);
            for i in 0..LEN {
                if i == LEN / 2 {
                    code.push('-');
                }
                code.push(char::from(
                    CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())],
                ));
            }
            code
        })
        .collect()
}

/// The hash a typed recovery code is stored under, or `None` when it cannot be one (case,
/// spaces and dashes do not matter).
pub fn hash(typed: &str) -> Option<String> {
    let s: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (s.len() == LEN && s.bytes().all(|b| CODE_ALPHABET.contains(&b))).then(|| hash_secret(&s))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ten_distinct_codes_that_hash_however_they_are_typed() {
        let codes = generate();
        assert_eq!(codes.len(), 10);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        let c = &codes[0];
        assert_eq!(c.len(), 11);
        let h = hash(c).unwrap();
        assert_eq!(hash(&c.to_lowercase().replace('-', " ")), Some(h));
        assert_eq!(hash("123456"), None, "a TOTP code is not a recovery code");
    }
}
