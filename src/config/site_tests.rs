use super::*;

const BASE: &str = r#"
[gateway]
private_key_file = "gw.key"
site = "dsden56"
portals = ["https://portal.example.org"]
portal_token_file = "site.token"
"#;

fn load(text: &str, site: Option<&str>) -> Result<(Config, SiteGatewayConfig), ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, text).unwrap();
    Config::load_site_gateway(&path, site)
}

#[test]
fn a_site_gateway_config_loads_and_site_overrides() {
    let (c, s) = load(BASE, None).unwrap();
    assert_eq!(s.site, "dsden56");
    assert_eq!(s.portals, vec!["https://portal.example.org".to_string()]);
    assert!(s.token_file.ends_with("site.token"));
    assert_eq!(c.gateway.site.as_deref(), Some("dsden56"));
    let (c, s) = load(BASE, Some("rectorat")).unwrap();
    assert_eq!(
        (s.site.as_str(), c.gateway.site.as_deref()),
        ("rectorat", Some("rectorat"))
    );
}

#[test]
fn the_portals_sections_are_refused_with_file_line_and_key() {
    for (extra, key, line) in [
        ("[database]\nurl = \"sqlite:///x.db\"\n", "database", 8),
        (
            "[directory]\nurl = \"ldaps://l\"\nbind_dn = \"cn=a\"\nbind_password_file = \"p\"\nuser_base = \"o=u\"\ngroup_base = \"o=g\"\n",
            "directory",
            8,
        ),
        ("[audit]\nsigning_key_file = \"audit.key\"\n", "audit.signing_key_file", 9),
        ("[audit]\ncheckpoint_file = \"cp.jsonl\"\n", "audit.checkpoint_file", 9),
    ] {
        let e = load(&format!("{BASE}\n{extra}"), None).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.file.ends_with("gw.toml"), "{e}");
        assert!(e.to_string().contains("site gateway"), "{e}");
    }
}

#[test]
fn missing_site_portals_or_token_say_what_to_set() {
    let e = load(&BASE.replace("site = \"dsden56\"\n", ""), None).unwrap_err();
    assert_eq!(e.key, "gateway.site", "{e}");
    let e = load(
        &BASE.replace("portals = [\"https://portal.example.org\"]\n", ""),
        None,
    )
    .unwrap_err();
    assert_eq!(e.key, "gateway.portals", "{e}");
    let e = load(
        &BASE.replace("portal_token_file = \"site.token\"\n", ""),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("sesame site token"), "{e}");
    let e = load(BASE, Some("no site!")).unwrap_err();
    assert_eq!(e.key, "--site", "{e}");
}

#[test]
fn an_http_portal_outside_loopback_needs_insecure_plaintext() {
    let http = BASE.replace("https://portal.example.org", "http://198.18.0.1:8080");
    let e = load(&http, None).unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.line),
        ("gateway.portals[0]", Some(5)),
        "{e}"
    );
    assert!(e.to_string().contains("insecure_plaintext"), "{e}");
    let ok = http.replace("[gateway]\n", "[gateway]\ninsecure_plaintext = true\n");
    assert!(load(&ok, None).is_ok());
    let lo = BASE.replace("https://portal.example.org", "http://127.0.0.1:8080");
    assert!(load(&lo, None).is_ok());
}
