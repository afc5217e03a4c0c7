//! `[[site]]` validation: unique names, endpoints, keys, and resources naming a known site.

use super::*;

const KEY_A: &str = "mB1Xmcm9Bqi8Dxy9Yz6rIHzC9jJbYp7vDXXHa+VfRVI=";
const KEY_B: &str = "Ly6ppXE4y6xWZMHAAP9t2QgYV9jB8Ew3IU6m2lFnrGo=";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/sesame/sesame.toml"), text)
}

fn site(name: &str, key: &str) -> String {
    format!("[[site]]\nname = \"{name}\"\nendpoint = \"vpn-{name}.example.org:51820\"\npublic_key = \"{key}\"\n")
}

#[test]
fn sites_and_resources_on_them_load() {
    let c = parse(&format!(
        "{}{}[[resource]]\nname = \"paie\"\nsite = \"rectorat\"\nallow = [\"198.18.10.10/32 tcp:443\"]\n\
         [[resource]]\nname = \"local\"\nallow = [\"198.18.30.0/24\"]\n",
        site("rectorat", KEY_A),
        site("dsden56", KEY_B)
    ))
    .expect("valid");
    assert_eq!(c.sites.len(), 2);
    let r = c.site("rectorat").expect("site");
    assert_eq!(r.endpoint, "vpn-rectorat.example.org:51820");
    assert_eq!(r.public_key.to_string(), KEY_A);
    assert_eq!(c.policy.resource("paie").expect("paie").site, "rectorat");
    assert_eq!(c.policy.resource("local").expect("local").site, "");
}

#[test]
fn a_duplicate_site_name_is_refused_with_its_line() {
    let e = parse(&format!(
        "{}{}",
        site("rectorat", KEY_A),
        site("rectorat", KEY_B)
    ))
    .expect_err("duplicate");
    assert_eq!(e.key, "site[1].name");
    assert_eq!(e.line, Some(6));
    assert!(e.message.contains("duplicate site name"), "{e}");
}

#[test]
fn a_bad_key_or_endpoint_or_name_is_refused() {
    let e = parse(&site("rectorat", "not-a-key")).expect_err("key");
    assert_eq!(e.key, "site[0].public_key");
    assert_eq!(e.line, Some(4));
    let e = parse("[[site]]\nname = \"a\"\nendpoint = \"nohost\"\npublic_key = \"x\"\n")
        .expect_err("endpoint");
    assert_eq!(e.key, "site[0].endpoint");
    let e = parse(&site("bad name", KEY_A)).expect_err("name");
    assert_eq!(e.key, "site[0].name");
    let e = parse(&site("Local", KEY_A)).expect_err("reserved");
    assert_eq!(e.key, "site[0].name");
    assert!(e.message.contains("reserved"), "{e}");
    let e = parse(&format!("{}{}", site("a", KEY_A), site("b", KEY_A))).expect_err("same key");
    assert_eq!(e.key, "site[1].public_key");
    assert!(e.to_string().starts_with("/etc/sesame/sesame.toml:"), "{e}");
}

#[test]
fn a_resource_on_an_unknown_site_is_refused() {
    let e = parse(&format!(
        "{}[[resource]]\nname = \"rh\"\nallow = [\"198.18.20.0/24\"]\n\
         [[resource]]\nname = \"paie\"\nsite = \"dsden29\"\nallow = [\"198.18.10.10/32\"]\n",
        site("rectorat", KEY_A)
    ))
    .expect_err("unknown site");
    assert_eq!(e.key, "resource[1].site");
    assert_eq!(e.line, Some(10));
    assert!(e.message.contains("unknown site \"dsden29\""), "{e}");
}
