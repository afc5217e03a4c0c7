//! A laptop's host name as its agent reports it: the one rule (1 to 253 printable characters, trimmed).

use std::fmt;

/// Longest host name accepted from an agent (the DNS limit).
pub const MAX_LEN: usize = 253;

/// A host name that passed [`Hostname::parse`]: trimmed, 1 to [`MAX_LEN`] bytes, no control
/// character. Not a DNS name check: laptops report what `gethostname` says, accents included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);

/// A host name that is empty, too long, or holds a control character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("hostname: 1 à 253 caractères imprimables / 1 to 253 printable characters")]
pub struct HostnameError;

impl Hostname {
    /// Trims `text` and checks the rule.
    pub fn parse(text: &str) -> Result<Hostname, HostnameError> {
        let h = text.trim();
        if h.is_empty() || h.len() > MAX_LEN || h.chars().any(char::is_control) {
            return Err(HostnameError);
        }
        Ok(Hostname(h.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Hostname {
    type Err = HostnameError;
    fn from_str(s: &str) -> Result<Hostname, HostnameError> {
        Hostname::parse(s)
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Hostname> for String {
    fn from(h: Hostname) -> String {
        h.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_trims_and_refuses_empty_long_and_control_characters() {
        assert_eq!(
            Hostname::parse("  pc-marie \n").map(String::from),
            Ok("pc-marie".to_string())
        );
        assert_eq!(
            Hostname::parse("PC-Élodie").map(String::from),
            Ok("PC-Élodie".to_string())
        );
        assert!(Hostname::parse(&"a".repeat(MAX_LEN)).is_ok());
        for bad in ["", "   ", "a\0b", "a\tb", &"a".repeat(MAX_LEN + 1)] {
            assert_eq!(Hostname::parse(bad), Err(HostnameError), "{bad:?}");
        }
        // 253 bytes, not characters: 127 two-byte letters are too long.
        assert!(Hostname::parse(&"é".repeat(127)).is_err());
    }
}
