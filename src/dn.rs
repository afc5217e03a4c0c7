//! Distinguished names per RFC 4514: parsed (escapes, multi-valued RDNs, spaces) into one
//! canonical form, so group and role DNs compare as the directory compares them.
//!
//! Hand-written: the LDAP crates in use (ldap3) build DNs but do not parse them. Attribute
//! types compare case-insensitively; values with caseIgnoreMatch semantics (cn, ou, dc, uid...:
//! every naming attribute Sesame sees), so case and insignificant spaces are folded.

use std::fmt;

/// A parsed DN: RDNs from the leaf up, each a sorted list of (type, value) pairs, folded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dn {
    rdns: Vec<Vec<(String, String)>>,
}

/// Why a string is not a DN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    #[error("unterminated escape at the end of the DN")]
    DanglingEscape,
    #[error("invalid hex escape \\{0}")]
    BadHex(String),
    #[error("an RDN without '=': {0:?}")]
    MissingEquals(String),
    #[error("an empty attribute type in {0:?}")]
    EmptyType(String),
    #[error("escaped bytes are not UTF-8")]
    NotUtf8,
}

/// Splits `s` at unescaped `sep`s (a backslash escapes the next character); the parts keep
/// their escapes. Borrowed slices: a login parses a few DNs, without a string per part.
fn split_unescaped<'a>(s: &'a str, seps: &[char]) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if seps.contains(&c) {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Decodes escapes (unescaped edge spaces are not part of the value).
fn unescape(raw: &str) -> Result<String, DnError> {
    let mut raw = raw.trim_start_matches(' ');
    while raw.ends_with(' ') && !raw[..raw.len() - 1].ends_with('\\') {
        raw = &raw[..raw.len() - 1];
    }
    let mut bytes: Vec<u8> = Vec::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(next) = chars.next() else {
            return Err(DnError::DanglingEscape);
        };
        if next.is_ascii_hexdigit() {
            let Some(low) = chars.next() else {
                return Err(DnError::BadHex(next.to_string()));
            };
            let pair = format!("{next}{low}");
            let b = u8::from_str_radix(&pair, 16).map_err(|_| DnError::BadHex(pair))?;
            bytes.push(b);
        } else {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
        }
    }
    String::from_utf8(bytes).map_err(|_| DnError::NotUtf8)
}

/// caseIgnoreMatch folding: lower case, runs of spaces as one, no edge spaces.
fn fold(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.is_ascii() {
        out.make_ascii_lowercase();
        out
    } else {
        out.to_lowercase()
    }
}

/// Escapes a value for the canonical string form (RFC 4514 §2.4).
fn escape(value: &str, out: &mut String) {
    for (i, c) in value.char_indices() {
        let edge =
            (i == 0 && (c == '#' || c == ' ')) || (i + c.len_utf8() == value.len() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
}

impl Dn {
    /// Parses a DN string. `,` and (legacy) `;` separate RDNs, `+` the values of one RDN.
    pub fn parse(s: &str) -> Result<Dn, DnError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Dn { rdns: Vec::new() });
        }
        let mut rdns = Vec::new();
        for rdn in split_unescaped(s, &[',', ';']) {
            let mut avas = Vec::new();
            for ava in split_unescaped(rdn, &['+']) {
                let (ty, value) = ava
                    .split_once('=')
                    .ok_or_else(|| DnError::MissingEquals(ava.to_string()))?;
                let ty = ty.trim().to_ascii_lowercase();
                if ty.is_empty() {
                    return Err(DnError::EmptyType(ava.to_string()));
                }
                avas.push((ty, fold(&unescape(value)?)));
            }
            avas.sort();
            rdns.push(avas);
        }
        Ok(Dn { rdns })
    }

    /// The canonical string: equal for every spelling of one DN.
    pub fn canonical(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            for (j, (ty, value)) in rdn.iter().enumerate() {
                if j > 0 {
                    out.push('+');
                }
                out.push_str(ty);
                out.push('=');
                escape(value, &mut out);
            }
        }
        f.write_str(&out)
    }
}

/// The canonical form of `dn` for comparisons; a string that does not parse as a DN is only
/// trimmed and lower-cased (it then equals nothing but itself).
pub fn normalize_dn(dn: &str) -> String {
    match Dn::parse(dn) {
        Ok(d) => d.canonical(),
        Err(_) => dn.trim().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) {
        assert_eq!(normalize_dn(a), normalize_dn(b), "{a:?} vs {b:?}");
    }

    fn differ(a: &str, b: &str) {
        assert_ne!(normalize_dn(a), normalize_dn(b), "{a:?} vs {b:?}");
    }

    #[test]
    fn spellings_of_one_dn_are_equal() {
        same(
            "cn=personnels-administratifs,ou=groups,dc=academie,dc=test",
            "CN=Personnels-Administratifs, OU=Groups ,DC=academie,dc=TEST",
        );
        // Escaped comma, written as \, or \2C, with an accent.
        same(
            "cn=Lefèvre\\, Hélène,ou=people,dc=academie,dc=test",
            "CN=lefèvre\\2c  hélène,ou=people,dc=academie,dc=test",
        );
        // A hex-escaped UTF-8 character.
        same("cn=H\\C3\\A9l\\C3\\A8ne,dc=t", "cn=Hélène,dc=t");
        // Multi-valued RDNs in any order; legacy ';' separator.
        same("cn=A+sn=B,dc=t", "SN=b + CN=a;dc=t");
        // Escaped specials.
        same("cn=a\\+b,dc=t", "cn=A\\2Bb,dc=t");
    }

    #[test]
    fn escapes_are_not_separators() {
        // The naive split saw these as equal (or as extra RDNs).
        differ("cn=x\\,ou=evil,dc=t", "cn=x,ou=evil,dc=t");
        differ("cn=a\\+sn=b,dc=t", "cn=a+sn=b,dc=t");
        differ("cn=dsi,ou=groups,dc=t", "cn=dsi,ou=groups,dc=u");
        let d = Dn::parse("cn=x\\,ou=evil,dc=t").expect("valid");
        assert_eq!(d.rdns.len(), 2);
        assert_eq!(d.rdns[0], vec![("cn".into(), "x,ou=evil".into())]);
        // Canonical output parses back to itself.
        let c = d.canonical();
        assert_eq!(Dn::parse(&c).expect("canonical parses"), d);
    }

    #[test]
    fn canonical_form_escapes_edges_and_specials_in_non_ascii_values() {
        let d = Dn::parse("CN=\\#Élodie  Brûlé\\+1 ,OU=Équipe\\,Paie,DC=t").expect("valid");
        let c = d.canonical();
        assert_eq!(c, "cn=\\#élodie brûlé\\+1,ou=équipe\\,paie,dc=t");
        assert_eq!(Dn::parse(&c).expect("canonical parses"), d);
    }

    #[test]
    fn malformed_dns_are_errors_and_match_nothing_else() {
        assert_eq!(Dn::parse("cn=a\\"), Err(DnError::DanglingEscape));
        assert!(matches!(Dn::parse("cn=a\\4"), Err(DnError::BadHex(_))));
        assert!(matches!(
            Dn::parse("cn=a,groups"),
            Err(DnError::MissingEquals(_))
        ));
        assert!(matches!(Dn::parse("=a"), Err(DnError::EmptyType(_))));
        assert_eq!(Dn::parse("cn=\\ff\\fe"), Err(DnError::NotUtf8));
        differ("cn=a,groups", "cn=a");
    }
}
