//! `[mfa]`, `[[resource]] mfa` and `[devices] reauth_interval`: defaults, and errors naming file, line and key.

#![allow(clippy::unwrap_used)]
use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/sesame/sesame.toml"), text)
}

const PAIE: &str =
    "[[resource]]\nname = \"paie\"\nallow = [\"198.18.10.10/32 tcp:443\"]\nmfa = true\n";

#[test]
fn mfa_is_off_without_its_section_and_defaults_apply_with_it() {
    let c = parse("").unwrap();
    assert!(c.mfa.is_none());
    assert_eq!(c.devices.reauth_interval, Duration::from_secs(90 * 86_400));
    let c = parse(&format!(
        "[gateway]\nprivate_key_file = \"/srv/s/gw.key\"\n[mfa]\n{PAIE}"
    ))
    .unwrap();
    let m = c.mfa.clone().unwrap();
    assert_eq!(m.provider, MfaProvider::Totp);
    assert_eq!(m.session, Duration::from_secs(10 * 3600));
    assert_eq!(m.idle, Duration::from_secs(30 * 60));
    assert_eq!(m.web_roles, vec!["it_staff", "auditors"]);
    assert_eq!(m.secret_key_file, PathBuf::from("/srv/s/mfa.key"));
    assert!(c.policy.needs_mfa("paie"));
    assert!(c.policy.has_mfa_resources());
    assert!(c
        .secret_files()
        .iter()
        .any(|(k, p)| *k == "mfa.secret_key_file" && *p == Path::new("/srv/s/mfa.key")));
}

#[test]
fn a_protected_resource_needs_the_mfa_section() {
    let e = parse(PAIE).unwrap_err();
    assert_eq!(e.key, "resource[0].mfa", "{e}");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("[mfa]"), "{e}");
}

#[test]
fn bad_mfa_values_name_their_key_and_line() {
    for (text, key, line, says) in [
        ("[mfa]\nprovider = \"sms\"\n", "mfa.provider", 2, "totp"),
        (
            "[mfa]\nprovider = \"radius\"\n",
            "mfa.provider",
            2,
            "needs an [mfa.radius] section",
        ),
        (
            "[mfa]\nsession = \"10s\"\n",
            "mfa.session",
            2,
            "between 1m and 7d",
        ),
        (
            "[mfa]\nsession = \"1h\"\nidle = \"2h\"\n",
            "mfa.idle",
            3,
            "at most [mfa] session",
        ),
        (
            "[mfa]\nweb_roles = [\"it_staff\", \"admins\"]\n",
            "mfa.web_roles[1]",
            2,
            "auditors",
        ),
        (
            "[mfa]\nsecrets = \"x\"\n",
            "mfa.secrets",
            2,
            "unknown field",
        ),
        (
            "[devices]\nreauth_interval = \"0s\"\n",
            "devices.reauth_interval",
            2,
            "more than zero",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
        assert_eq!(e.line, Some(line), "{text}: {e}");
        assert!(e.message.contains(says), "{text}: {e}");
    }
}
