//! The device configuration with sites: one peer per site with granted resources, the local
//! gateway first, `gateway` the first peer, `allowed_ips` the union, each resource's site.

use std::path::Path;

use super::*;
use crate::store::DeviceStatus;

const PAIE: &str = "cn=paie,ou=groups,dc=ac,dc=fr";
const APP56: &str = "cn=dsden56,ou=groups,dc=ac,dc=fr";
const LOCAL: &str = "cn=local,ou=groups,dc=ac,dc=fr";
const GW: [u8; 32] = [7; 32];

fn config() -> Config {
    let k = |n: u8| PublicKey::from_bytes([n; 32]).expect("key").to_base64();
    Config::parse(
        Path::new("/etc/sesame/sesame.toml"),
        &format!(
            r#"[gateway]
endpoint = "vpn.example.org:51820"

[[site]]
name = "rectorat"
endpoint = "vpn-rectorat.example.org:51820"
public_key = "{}"

[[site]]
name = "dsden56"
endpoint = "vpn-dsden56.example.org:51820"
public_key = "{}"

[[resource]]
name = "paie"
site = "rectorat"
allow = ["198.18.10.10/32 tcp:443"]

[[resource]]
name = "app56"
site = "dsden56"
allow = ["198.18.56.0/24 tcp:443"]

[[resource]]
name = "intranet"
allow = ["198.18.30.10/32 tcp:80"]

[[grant]]
group = "{PAIE}"
resources = ["paie"]

[[grant]]
group = "{APP56}"
resources = ["app56"]

[[grant]]
group = "{LOCAL}"
resources = ["intranet"]
"#,
            k(1),
            k(2)
        ),
    )
    .expect("config")
}

fn device() -> Device {
    Device {
        id: 5,
        username: "alice".into(),
        name: "PC-PAIE-01".into(),
        hostname: "pc".into(),
        public_key: PublicKey::from_bytes([9; 32]).expect("key"),
        tunnel_address: "100.64.0.5".parse().expect("ip"),
        status: DeviceStatus::Active,
        created_at: 0,
        rotated_at: None,
        revoked_at: None,
        revoke_reason: None,
        expires_at: None,
        suspended_at: None,
        suspend_reason: None,
    }
}

fn groups(g: &[&str]) -> Vec<String> {
    g.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_device_with_resources_on_two_sites_gets_one_peer_per_site() {
    let c = config();
    let gw = PublicKey::from_bytes(GW).expect("key");
    let d = device_config(&c, &gw, &device(), &groups(&[PAIE, APP56]));
    let sites: Vec<&str> = d.peers.iter().map(|p| p.site.as_str()).collect();
    assert_eq!(sites, ["rectorat", "dsden56"]);
    assert_eq!(d.peers[0].public_key, c.sites[0].public_key.to_base64());
    assert_eq!(d.peers[0].endpoint, "vpn-rectorat.example.org:51820");
    assert_eq!(d.peers[0].allowed_ips, ["198.18.10.10/32"]);
    assert_eq!(d.peers[1].allowed_ips, ["198.18.56.0/24"]);
    assert_eq!(
        d.gateway.public_key, d.peers[0].public_key,
        "older agents: the first"
    );
    assert_eq!(d.gateway.endpoint, d.peers[0].endpoint);
    let mut all = d.allowed_ips.clone();
    all.sort();
    assert_eq!(all, ["198.18.10.10/32", "198.18.56.0/24"]);
    let paie = d.resources.iter().find(|r| r.name == "paie").expect("paie");
    assert_eq!(paie.site.as_deref(), Some("rectorat"));
}

#[test]
fn the_local_gateway_is_a_peer_first_and_a_one_site_install_is_unchanged() {
    let c = config();
    let gw = PublicKey::from_bytes(GW).expect("key");
    let d = device_config(&c, &gw, &device(), &groups(&[LOCAL, APP56]));
    assert_eq!(d.peers.len(), 2);
    assert_eq!(d.peers[0].site, LOCAL_SITE);
    assert_eq!(d.peers[0].public_key, gw.to_base64());
    assert_eq!(d.peers[0].endpoint, "vpn.example.org:51820");
    assert_eq!(d.gateway.public_key, gw.to_base64());
    let intranet = d
        .resources
        .iter()
        .find(|r| r.name == "intranet")
        .expect("r");
    assert_eq!(intranet.site, None);
    // Nothing granted: no peer, the local gateway as before.
    let none = device_config(&c, &gw, &device(), &[]);
    assert!(none.peers.is_empty());
    assert_eq!(none.gateway.public_key, gw.to_base64());
}
