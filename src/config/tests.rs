//! Tests of configuration loading: defaults, errors naming file, line and key.

use super::*;

const KEY_A: &str = "mB1Xmcm9Bqi8Dxy9Yz6rIHzC9jJbYp7vDXXHa+VfRVI=";
const KEY_B: &str = "Ly6ppXE4y6xWZMHAAP9t2QgYV9jB8Ew3IU6m2lFnrGo=";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/sesame/sesame.toml"), text)
}

fn err(text: &str) -> ConfigError {
    parse(text).expect_err("config should be refused")
}

#[test]
fn defaults_apply_to_an_empty_file() {
    let c = parse("").expect("empty config is valid");
    assert_eq!(c.gateway.listen, "0.0.0.0:51820".parse().expect("addr"));
    assert_eq!(c.gateway.tunnel_network.to_string(), "100.64.0.0/16");
    assert_eq!(c.gateway.address, Ipv4Addr::new(100, 64, 0, 1));
    assert_eq!(c.gateway.mtu, 1420);
    assert_eq!(c.audit.retention, Duration::from_secs(400 * 86_400));
    assert_eq!(c.audit.flow_window, Duration::from_secs(60));
    assert!(c.directory.is_none());
}

#[test]
fn full_example_parses() {
    let c = parse(&format!(
        r#"
[gateway]
listen = "198.18.0.1:51820"
tunnel_network = "100.64.0.0/24"
private_key_file = "gw.key"

[[resource]]
name = "paie"
allow = ["198.18.10.10/32 tcp:443,8443", "198.18.10.0/28 icmp"]

[[grant]]
group = "cn=paie,ou=groups,dc=example,dc=org"
resources = ["paie"]

[[peer]]
name = "supervision"
public_key = "{KEY_A}"
address = "100.64.0.10"
resources = ["paie"]
"#
    ))
    .expect("valid");
    assert_eq!(c.peers.len(), 1);
    assert_eq!(
        c.gateway.private_key_file,
        PathBuf::from("/etc/sesame/gw.key")
    );
    let rules = c
        .policy
        .rules_for_resources(c.peers[0].resources.iter().map(String::as_str));
    assert_eq!(rules.rules().len(), 2);
}

#[test]
fn flow_window_is_read_and_bounded() {
    let c = parse("[audit]\nflow_window = \"1s\"\n").expect("valid");
    assert_eq!(c.audit.flow_window, Duration::from_secs(1));
    for bad in ["\"0s\"", "\"2h\"", "\"soon\""] {
        let e = err(&format!(
            "[audit]\nretention = \"1d\"\nflow_window = {bad}\n"
        ));
        assert_eq!(e.key, "audit.flow_window", "{e}");
        assert_eq!(e.line, Some(3), "{e}");
    }
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = err("[gateway]\nlisten = \"0.0.0.0:1\"\nlisen = \"x\"\n");
    assert_eq!(e.file, PathBuf::from("/etc/sesame/sesame.toml"));
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("lisen"), "{e}");
    assert!(
        e.to_string().starts_with("/etc/sesame/sesame.toml:3"),
        "{e}"
    );
}

#[test]
fn invalid_cidr_in_resource_names_the_rule() {
    let e = err("[[resource]]\nname = \"paie\"\nallow = [\n  \"198.18.10.10/32 tcp:443\",\n  \"198.18.10.300/32\",\n]\n");
    assert_eq!(e.key, "resource[0].allow[1]");
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("invalid network"), "{e}");
}

#[test]
fn invalid_port_is_refused() {
    let e = err("[[resource]]\nname = \"paie\"\nallow = [\"198.18.10.10/32 tcp:99999\"]\n");
    assert_eq!(e.key, "resource[0].allow[0]");
    assert_eq!(e.line, Some(3));
}

#[test]
fn duplicate_tunnel_address_is_refused() {
    let e = err(&format!(
        "[[peer]]\nname = \"a\"\npublic_key = \"{KEY_A}\"\naddress = \"100.64.0.10\"\n\n[[peer]]\nname = \"b\"\npublic_key = \"{KEY_B}\"\naddress = \"100.64.0.10\"\n"
    ));
    assert_eq!(e.key, "peer[1].address");
    assert_eq!(e.line, Some(9));
    assert!(e.message.contains("duplicate tunnel address"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let e = err("[gateway]\nlisten = \"nowhere\"\n");
    assert_eq!((e.key.as_str(), e.line), ("gateway.listen", Some(2)));
    let e = err("[gateway]\ntunnel_network = \"100.64.0.0/40\"\n");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("gateway.tunnel_network", Some(2))
    );
    let e = err("[gateway]\nmtu = \"big\"\n");
    assert_eq!((e.key.as_str(), e.line), ("gateway.mtu", Some(2)));
    let e = err(&format!(
        "[[peer]]\nname = \"a\"\npublic_key = \"{KEY_A}\"\naddress = \"10.0.0.1\"\n"
    ));
    assert_eq!((e.key.as_str(), e.line), ("peer[0].address", Some(4)));
    let e = err("[[peer]]\nname = \"a\"\npublic_key = \"short\"\naddress = \"100.64.0.9\"\n");
    assert_eq!((e.key.as_str(), e.line), ("peer[0].public_key", Some(3)));
    let e = err("[[grant]]\ngroup = \"cn=x\"\nresources = [\"nope\"]\n");
    assert_eq!((e.key.as_str(), e.line), ("grant[0].resources[0]", Some(3)));
}

#[test]
fn syntax_error_has_a_line() {
    let e = err("[gateway]\nlisten = \n");
    assert_eq!(e.line, Some(2));
}

#[test]
fn plaintext_ldap_over_network_needs_explicit_consent() {
    let dir = |url: &str, extra: &str| -> String {
        format!("[directory]\nurl = \"{url}\"\nbind_dn = \"cn=s\"\nbind_password_file = \"p\"\nuser_base = \"ou=p\"\ngroup_base = \"ou=g\"\n{extra}")
    };
    let e = err(&dir("ldap://ldap.example.org", ""));
    assert_eq!(e.key, "directory.url");
    assert!(parse(&dir("ldap://127.0.0.1:3890", "")).is_ok());
    assert!(parse(&dir("ldap://ldap.example.org", "starttls = true")).is_ok());
    assert!(parse(&dir("ldap://ldap.example.org", "insecure_plaintext = true")).is_ok());
    assert!(parse(&dir("ldaps://ldap.example.org", "")).is_ok());
}

#[test]
fn durations_are_read_by_the_one_parser_and_errors_name_the_key() {
    let c = parse("[audit]\nretention = \"0\"\ncheckpoint_interval = \"1h 30m\"\n").expect("valid");
    assert_eq!(c.audit.retention, Duration::ZERO, "0 keeps everything");
    assert_eq!(c.audit.checkpoint_interval, Duration::from_secs(5400));
    let c = parse("[audit]\nretention = \"30d\"\n").expect("valid");
    assert_eq!(c.audit.retention, Duration::from_secs(30 * 86_400));
    let e = err("[audit]\n\nretention = \"5%\"\n");
    assert_eq!(e.key, "audit.retention");
    assert_eq!(e.line, Some(3));
    assert_eq!(
        e.message,
        "invalid duration \"5%\": write a number and a unit, e.g. 60s, 30m, 72h, 7d"
    );
}

#[test]
fn plain_http_public_url_outside_loopback_needs_the_lab_flag() {
    let e = err("[portal]\npublic_url = \"http://198.18.0.1:8080\"\n");
    assert_eq!(e.key, "portal.public_url");
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("insecure_plaintext"), "{}", e.message);
    let c = parse("[portal]\npublic_url = \"http://198.18.0.1:8080\"\ninsecure_plaintext = true\n")
        .expect("lab flag");
    assert!(c.portal.insecure_plaintext);
    assert!(parse("[portal]\npublic_url = \"http://localhost:8080\"\n").is_ok());
    assert!(parse("[portal]\npublic_url = \"https://vpn.example.org\"\n").is_ok());
}

#[test]
fn delegated_roles_parse_and_name_their_key() {
    let c = parse(
        "[roles]\nit_staff = [\"cn=dsi,dc=x\"]\n[[roles.delegated]]\nit_staff = \"cn=dsi-56,dc=x\"\nscope = \"cn=personnels-dsden56,dc=x\"\n",
    )
    .expect("delegated");
    assert_eq!(
        c.roles.delegated,
        vec![DelegatedRole {
            it_staff: "cn=dsi-56,dc=x".into(),
            scope: "cn=personnels-dsden56,dc=x".into(),
        }]
    );
    let e = err("[[roles.delegated]]\nit_staff = \"cn=dsi-56,dc=x\"\nscope = \"dsden56\"\n");
    assert_eq!(e.key, "roles.delegated[0].scope");
    assert_eq!(e.line, Some(3));
    let e = err("[[roles.delegated]]\nit_staff = \"cn=dsi-56,dc=x\"\n");
    assert!(e.message.contains("scope"), "{}", e.message);
}

#[test]
fn directory_safety_keys_default_and_validate() {
    let dir = |extra: &str| {
        format!("[directory]\nurl = \"ldap://127.0.0.1:389\"\nbind_dn = \"cn=s\"\nbind_password_file = \"p\"\nuser_base = \"ou=p\"\ngroup_base = \"ou=g\"\n{extra}")
    };
    let c = parse(&dir("")).expect("defaults");
    let d = c.directory.expect("directory");
    assert_eq!(d.max_changes_per_sync, MaxChanges::Percent(5));
    assert_eq!(d.suspend_grace, Duration::from_secs(30 * 86_400));
    let c = parse(&dir(
        "max_changes_per_sync = \"25\"\nsuspend_grace = \"7d\"",
    ))
    .expect("set");
    let d = c.directory.expect("directory");
    assert_eq!(d.max_changes_per_sync, MaxChanges::Count(25));
    assert_eq!(d.suspend_grace, Duration::from_secs(7 * 86_400));
    let e = err(&dir("max_changes_per_sync = \"lots\""));
    assert_eq!(e.key, "directory.max_changes_per_sync");
    assert_eq!(e.line, Some(7));
    let e = err(&dir("max_changes_per_sync = \"150%\""));
    assert_eq!(e.key, "directory.max_changes_per_sync");
    let e = err(&dir("suspend_grace = \"a month\""));
    assert_eq!(e.key, "directory.suspend_grace");
}

#[test]
fn max_changes_limit_is_a_share_with_a_floor() {
    let five = MaxChanges::Percent(5);
    assert_eq!(five.limit(0), 10);
    assert_eq!(five.limit(13), 10);
    assert_eq!(five.limit(200), 10);
    assert_eq!(five.limit(201), 11);
    assert_eq!(five.limit(10_000), 500);
    assert_eq!(MaxChanges::Count(3).limit(10_000), 3);
    assert_eq!(MaxChanges::Count(0).limit(10), 0);
}

#[test]
fn trusted_proxies_are_addresses_or_networks() {
    let c = parse("[portal]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/24\", \"::1\"]\n")
        .expect("valid");
    assert_eq!(c.portal.trusted_proxies.len(), 3);
    assert!(
        c.portal.trusted_proxies[1].contains(&"10.0.0.7".parse::<std::net::IpAddr>().expect("ip"))
    );
    assert!(parse("")
        .expect("default")
        .portal
        .trusted_proxies
        .is_empty());
    let e = err("[portal]\ntrusted_proxies = [\"127.0.0.1\", \"proxy.local\"]\n");
    assert_eq!(e.key, "portal.trusted_proxies[1]");
    assert_eq!(e.line, Some(2));
}

#[test]
fn device_lifetimes_default_and_validate() {
    let c = parse("").expect("defaults");
    assert_eq!(c.devices.key_lifetime, Duration::from_secs(180 * 86_400));
    assert_eq!(c.devices.max_lifetime, Duration::from_secs(730 * 86_400));
    let e = err("[devices]\nkey_lifetime = \"90d\"\nmax_lifetime = \"30d\"\n");
    assert_eq!(e.key, "devices.max_lifetime");
    assert_eq!(e.line, Some(3));
    let e = err("[devices]\nkey_lifetime = \"soon\"\n");
    assert_eq!(e.key, "devices.key_lifetime");
}

#[test]
fn audit_files_default_beside_the_gateway_key_and_interval_is_checked() {
    let c = parse("").expect("valid");
    assert_eq!(
        c.audit.signing_key_file,
        PathBuf::from("/var/lib/sesame/audit.key")
    );
    assert_eq!(
        c.audit.checkpoint_file,
        PathBuf::from("/var/lib/sesame/audit-checkpoints.jsonl")
    );
    assert_eq!(c.audit.checkpoint_interval, Duration::from_secs(3600));
    let c = parse(
        "[gateway]\nprivate_key_file = \"/srv/s/gw.key\"\n[audit]\nsigning_key_file = \"a.key\"\ncheckpoint_interval = \"10m\"\n",
    )
    .expect("valid");
    assert_eq!(c.audit.signing_key_file, PathBuf::from("/etc/sesame/a.key"));
    assert_eq!(
        c.audit.checkpoint_file,
        PathBuf::from("/srv/s/audit-checkpoints.jsonl")
    );
    assert_eq!(c.audit.checkpoint_interval, Duration::from_secs(600));
    let e = err("[audit]\n\ncheckpoint_interval = \"0s\"\n");
    assert_eq!(e.key, "audit.checkpoint_interval");
    assert_eq!(e.line, Some(3));
    let e = err("[audit]\ncheckpoint_interval = \"soon\"\n");
    assert_eq!(e.key, "audit.checkpoint_interval");
}

#[test]
fn portal_key_defaults_beside_the_gateway_key_and_the_per_source_cap_is_checked() {
    let c = parse("").expect("valid");
    assert_eq!(
        c.portal.secret_key_file,
        PathBuf::from("/var/lib/sesame/portal-secret.key")
    );
    assert_eq!(c.portal.max_connections_per_source, 64);
    let c = parse(
        "[portal]\nsecret_key_file = \"p.key\"\nmax_connections_per_source = 8\n[gateway]\nprivate_key_file = \"/srv/s/gw.key\"\n",
    )
    .expect("valid");
    assert_eq!(c.portal.secret_key_file, PathBuf::from("/etc/sesame/p.key"));
    assert_eq!(c.portal.max_connections_per_source, 8);
    let c = parse("[gateway]\nprivate_key_file = \"/srv/s/gw.key\"\n").expect("valid");
    assert_eq!(
        c.portal.secret_key_file,
        PathBuf::from("/srv/s/portal-secret.key")
    );
    assert!(c.secret_files().iter().any(
        |(k, p)| *k == "portal.secret_key_file" && *p == Path::new("/srv/s/portal-secret.key")
    ));
    let e = err("[portal]\nmax_connections_per_source = 0\n");
    assert_eq!(e.key, "portal.max_connections_per_source");
}

#[test]
fn log_and_metrics_defaults_and_errors() {
    let c = parse("").expect("empty config is valid");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.metrics.listen, "127.0.0.1:9108".parse().expect("addr"));
    let c = parse("[log]\nformat = \"json\"\nlevel = \"debug\"\n").expect("json log");
    assert_eq!(
        (c.log.format, c.log.level),
        (LogFormat::Json, LogLevel::Debug)
    );

    let e = err("[log]\nformat = \"xml\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "log.format"));
    let e = err("[log]\n\nlevel = \"loud\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(3), "log.level"));
    let e = err("[metrics]\nlisten = \"nowhere\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(2), "metrics.listen"));
    let e = err("[portal]\nlisten = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.1:9000\"\n");
    assert_eq!((e.line, e.key.as_str()), (Some(4), "metrics.listen"));
}

#[test]
fn max_cache_age_defaults_to_7_days_and_is_bounded() {
    let c = parse("").expect("valid");
    assert_eq!(c.gateway.max_cache_age, Duration::from_secs(7 * 86_400));
    let c = parse("[gateway]\nmax_cache_age = \"36h\"\n").expect("valid");
    assert_eq!(c.gateway.max_cache_age, Duration::from_secs(36 * 3600));
    for bad in ["\"10m\"", "\"0\"", "\"soon\""] {
        let e = err(&format!("[gateway]\nmtu = 1420\nmax_cache_age = {bad}\n"));
        assert_eq!(e.key, "gateway.max_cache_age", "{e}");
        assert_eq!(e.line, Some(3), "{e}");
    }
}
