//! Text helpers shared across modules: byte budgets on character boundaries, search folding.

/// The largest index `≤ max` that is a character boundary of `s` (`s.len()` if shorter).
///
/// Written by hand because std's `str::floor_char_boundary` needs Rust 1.91 and the workspace
/// declares `rust-version = 1.85`; replace it with the std method when that moves.
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    // A UTF-8 character is at most 4 bytes, so a boundary lies within the last 4 indices.
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_to(s: &mut String, max: usize) {
    let end = floor_char_boundary(s, max);
    s.truncate(end);
}

/// RFC 3986's unreserved characters, and `/`: what [`percent_encode`] leaves as is.
#[cfg(feature = "server")]
const URL_KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `s` percent-encoded for a URL's path or query value: every byte but RFC 3986's unreserved
/// characters and `/` becomes `%XX` (so `?`, `&`, `=`, `#`, `%` and spaces never split it).
#[cfg(feature = "server")]
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, URL_KEPT).to_string()
}

/// `s` for case- and accent-insensitive search: decomposed (NFD), combining marks dropped,
/// lower-cased, so `"Élodie"`, `"ÉLODIE"` and `"elodie"` fold alike. Done in Rust because
/// SQLite's `lower()` and `LIKE` fold ASCII only (and PostgreSQL's depend on the collation).
#[cfg(feature = "server")]
pub fn fold(s: &str) -> String {
    use unicode_normalization::{char::is_combining_mark, UnicodeNormalization as _};
    s.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "server")]
    #[test]
    fn percent_encoding_keeps_unreserved_characters_and_slashes() {
        assert_eq!(
            percent_encode("/it/devices?q=a b&x"),
            "/it/devices%3Fq%3Da%20b%26x",
            "a `next` link stays one value"
        );
        assert_eq!(percent_encode("Az09-._~/"), "Az09-._~/");
        assert_eq!(percent_encode("é%#+="), "%C3%A9%25%23%2B%3D");
    }

    #[test]
    fn cuts_on_character_boundaries() {
        let s = "aé€😀";
        // Byte offsets: a=0, é=1..3, €=3..6, 😀=6..10.
        let boundaries: Vec<usize> = (0..=12).map(|m| floor_char_boundary(s, m)).collect();
        assert_eq!(boundaries, [0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10, 10, 10]);
    }

    #[test]
    fn truncates_without_splitting_a_character() {
        let mut s = String::from("élève");
        truncate_to(&mut s, 4);
        assert_eq!(s, "él");
        let mut short = String::from("abc");
        truncate_to(&mut short, 10);
        assert_eq!(short, "abc");
        let mut empty = String::from("😀");
        truncate_to(&mut empty, 3);
        assert_eq!(empty, "");
    }

    #[cfg(feature = "server")]
    #[test]
    fn fold_ignores_case_and_accents() {
        assert_eq!(fold("PC-Élodie"), "pc-elodie");
        assert_eq!(fold("ÉLÈVE Çà"), "eleve ca");
        assert_eq!(fold("poste_compta"), "poste_compta");
        // Already decomposed input folds the same.
        assert_eq!(fold("E\u{301}lodie"), "elodie");
    }
}
