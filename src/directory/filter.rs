//! LDAP search filters built from untrusted input: RFC 4515 escaping and the filters Sesame sends.
//!
//! Pure functions, so the injection-relevant part is unit-tested without a server.

use super::DirectoryError;

/// Longest login accepted; longer input is refused before it reaches the directory.
pub const MAX_USERNAME_LEN: usize = 256;

/// AD's LDAP_MATCHING_RULE_IN_CHAIN: `member:<this>:=DN` matches groups containing DN at any depth.
pub const AD_IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// Escapes a value for use inside an LDAP filter (RFC 4515 §3): `*`, `(`, `)`, `\` and NUL
/// become `\2a`, `\28`, `\29`, `\5c`, `\00`. Other characters, non-ASCII included, are sent as
/// UTF-8, which RFC 4515 allows unescaped.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Checks a login typed by a person: not empty, not too long, no control characters
/// (NUL, newline, tab…), which no directory login contains and which only serve tricks.
/// The caller maps the refusal to "invalid credentials", like an unknown user.
pub fn validate_username(username: &str) -> Result<(), DirectoryError> {
    if username.trim().is_empty()
        || username.len() > MAX_USERNAME_LEN
        || username.chars().any(char::is_control)
    {
        return Err(DirectoryError::InvalidCredentials);
    }
    Ok(())
}

/// The configured user filter with every `{username}` replaced by the escaped login.
/// A template without parentheses (`uid={username}`) is wrapped in them.
pub fn user_filter(template: &str, username: &str) -> String {
    let f = template.replace("{username}", &escape_filter_value(username));
    if f.starts_with('(') {
        f
    } else {
        format!("({f})")
    }
}

/// Whether the logins of a sync pass may be looked up many to a search with `template`
/// (`(|F(a)F(b)…)`, each entry matched back to a login by its `login_attr`): only when every
/// entry `F(x)` matches carries `x` in `login_attr`. So `{username}` appears once, in
/// `(login_attr={username})`, which is the whole filter or a direct part of a top-level AND.
/// Anything else (`(|(uid={username})(mail={username}))`, a negation…) is looked up one login
/// per search.
pub fn batchable(template: &str, login_attr: &str) -> bool {
    let lower = template.trim().to_ascii_lowercase();
    if lower.matches("{username}").count() != 1 {
        return false;
    }
    let wrapped = if lower.starts_with('(') {
        lower
    } else {
        format!("({lower})")
    };
    let clause = format!("({}={{username}})", login_attr.to_ascii_lowercase());
    let Some(at) = wrapped.find(&clause) else {
        return false;
    };
    if wrapped == clause {
        return true;
    }
    if !wrapped.starts_with("(&") {
        return false;
    }
    // Raw parentheses are structure (RFC 4515 escapes them in values): the clause must open at
    // depth 1, inside the top-level AND (never closed before it) and no deeper.
    let mut depth = 0i32;
    for c in wrapped[..at].chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => continue,
        }
        if depth == 0 {
            return false;
        }
    }
    depth == 1
}

/// OpenLDAP: groups that list any of `dns` as `member` or `uniqueMember` (one nesting level).
pub fn member_filter<S: AsRef<str>>(dns: &[S]) -> String {
    let mut f = String::from("(|");
    for dn in dns {
        let v = escape_filter_value(dn.as_ref());
        f.push_str(&format!("(member={v})(uniqueMember={v})"));
    }
    f.push(')');
    f
}

/// Active Directory: every group `dn` belongs to, nested membership resolved by the server.
pub fn ad_nested_groups_filter(dn: &str) -> String {
    format!(
        "(&(objectClass=group)(member:{AD_IN_CHAIN}:={}))",
        escape_filter_value(dn)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five_special_characters() {
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(escape_filter_value("("), "\\28");
        assert_eq!(escape_filter_value(")"), "\\29");
        assert_eq!(escape_filter_value("\\"), "\\5c");
        assert_eq!(escape_filter_value("\0"), "\\00");
        assert_eq!(
            escape_filter_value("*)(uid=*"),
            "\\2a\\29\\28uid=\\2a",
            "the classic injection becomes a literal"
        );
        assert_eq!(
            escape_filter_value("admin)(|(uid=*"),
            "admin\\29\\28|\\28uid=\\2a"
        );
    }

    #[test]
    fn leaves_plain_and_non_ascii_text_alone() {
        assert_eq!(escape_filter_value("mdupont"), "mdupont");
        assert_eq!(escape_filter_value("Hélène Lefèvre"), "Hélène Lefèvre");
        assert_eq!(escape_filter_value("Nœl-Dubœuf"), "Nœl-Dubœuf");
        assert_eq!(escape_filter_value(""), "");
        // Escaping is not double-applied to already escaped text: the backslash is literal.
        assert_eq!(escape_filter_value("\\2a"), "\\5c2a");
    }

    #[test]
    fn escaped_dn_with_comma_and_accents() {
        assert_eq!(
            escape_filter_value("cn=Lefèvre\\, Hélène,ou=people,dc=academie,dc=test"),
            "cn=Lefèvre\\5c, Hélène,ou=people,dc=academie,dc=test"
        );
    }

    #[test]
    fn escaped_values_parse_as_one_equality_item() {
        // ldap3's own parser must read the result as a single, literal value.
        for hostile in [
            "*",
            "*)(uid=*",
            "\\",
            "\0",
            "admin)(|(uid=*",
            "é*)",
            "a\\2a",
        ] {
            let f = user_filter("(uid={username})", hostile);
            assert!(
                ldap3::parse_filter(&f).is_ok(),
                "filter {f:?} for {hostile:?} must parse"
            );
            assert_eq!(f.matches('(').count(), 1, "{f}");
            assert_eq!(f.matches(')').count(), 1, "{f}");
            assert!(!f.contains('*'), "{f}");
        }
    }

    #[test]
    fn user_filter_substitutes_every_placeholder() {
        assert_eq!(user_filter("(uid={username})", "mdupont"), "(uid=mdupont)");
        assert_eq!(user_filter("uid={username}", "mdupont"), "(uid=mdupont)");
        assert_eq!(
            user_filter("(|(uid={username})(mail={username}))", "a*"),
            "(|(uid=a\\2a)(mail=a\\2a))"
        );
        assert_eq!(
            user_filter(
                "(&(objectClass=user)(sAMAccountName={username}))",
                "x)(cn=*"
            ),
            "(&(objectClass=user)(sAMAccountName=x\\29\\28cn=\\2a))"
        );
    }

    #[test]
    fn ad_filter_uses_the_in_chain_rule_on_the_escaped_dn() {
        let f = ad_nested_groups_filter("CN=Dupont\\, Marie,OU=Paie,DC=ac,DC=fr");
        assert_eq!(
            f,
            "(&(objectClass=group)(member:1.2.840.113556.1.4.1941:=CN=Dupont\\5c, Marie,OU=Paie,DC=ac,DC=fr))"
        );
        assert!(ldap3::parse_filter(&f).is_ok());
    }

    #[test]
    fn batchable_only_when_every_match_carries_the_login() {
        for ok in [
            "(uid={username})",
            "uid={username}",
            " (UID={username}) ",
            "(&(objectClass=inetOrgPerson)(uid={username}))",
            "(&(objectClass=user)(sAMAccountName={username})(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
        ] {
            let attr = if ok.contains("sAMAccountName") { "sAMAccountName" } else { "uid" };
            assert!(batchable(ok, attr), "{ok}");
        }
        for no in [
            "(|(uid={username})(mail={username}))",
            "(|(uid={username})(objectClass=admin))",
            "(!(uid={username}))",
            "(&(objectClass=person)(|(uid={username})(cn=x)))",
            "(&(objectClass=person)(!(uid={username})))",
            "(mail={username})",
            "(uid={username}@x)",
            "(&(a=b))(uid={username})",
        ] {
            assert!(!batchable(no, "uid"), "{no}");
        }
    }

    #[test]
    fn member_filter_covers_member_and_unique_member() {
        let f = member_filter(&["uid=a,dc=t", "cn=g(1),dc=t"]);
        assert_eq!(
            f,
            "(|(member=uid=a,dc=t)(uniqueMember=uid=a,dc=t)(member=cn=g\\281\\29,dc=t)(uniqueMember=cn=g\\281\\29,dc=t))"
        );
        assert!(ldap3::parse_filter(&f).is_ok());
    }

    /// The (attribute, value) of a filter that parses as one equality match, else `None`.
    fn equality_item(filter: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        use ldap3::asn1::{ASNTag, PL};
        let tag = ldap3::parse_filter(filter).ok()?.into_structure();
        if tag.id != 3 {
            return None; // [3] equalityMatch
        }
        match tag.payload {
            PL::C(parts) => match &parts[..] {
                [a, v] => match (&a.payload, &v.payload) {
                    (PL::P(a), PL::P(v)) => Some((a.clone(), v.clone())),
                    _ => None,
                },
                _ => None,
            },
            PL::P(_) => None,
        }
    }

    proptest::proptest! {
        /// Whatever the login, the filter sent is one equality match on uid whose value is
        /// exactly the login's bytes: no wildcard, no extra clause.
        #[test]
        fn any_login_becomes_one_literal_equality(login in "\\PC*|[*()\\\\\\x00a-z]{0,12}") {
            let f = user_filter("(uid={username})", &login);
            let parsed = equality_item(&f);
            proptest::prop_assert_eq!(parsed, Some((b"uid".to_vec(), login.as_bytes().to_vec())), "{}", f);
        }
    }

    #[test]
    fn usernames_with_control_characters_are_refused() {
        for bad in [
            "",
            "   ",
            "md\0upont",
            "md\nupont",
            "md\tupont",
            "\u{7f}x",
            "\u{85}x",
        ] {
            assert!(
                matches!(
                    validate_username(bad),
                    Err(DirectoryError::InvalidCredentials)
                ),
                "{bad:?}"
            );
        }
        assert!(validate_username(&"a".repeat(MAX_USERNAME_LEN + 1)).is_err());
        for good in ["mdupont", "hélène", "a*b", "x)(y", "MDupont"] {
            assert!(validate_username(good).is_ok(), "{good:?}");
        }
    }
}
