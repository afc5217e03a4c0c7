use super::*;
use sesame::api::{DeviceConfig, GatewayInfo};
use sesame::key::PrivateKey;

const RECTORAT: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

fn key(n: u8) -> String {
    PrivateKey::from_bytes([n; 32]).public_key().to_base64()
}

fn two_sites() -> DeviceConfig {
    DeviceConfig {
        device_id: 7,
        tunnel_address: "100.64.0.2".into(),
        gateway: GatewayInfo {
            public_key: RECTORAT.into(),
            endpoint: "198.18.1.1:51820".into(),
        },
        allowed_ips: vec!["198.18.10.10/32".into(), "198.18.30.10/32".into()],
        dns: vec![],
        device_token: None,
        expires_at: "2027-01-01T00:00:00Z".into(),
        resources: vec![],
        peers: vec![
            SitePeer {
                site: "rectorat".into(),
                public_key: RECTORAT.into(),
                endpoint: "198.18.1.1:51820".into(),
                allowed_ips: vec!["198.18.10.10/32".into()],
            },
            SitePeer {
                site: "dsden56".into(),
                public_key: key(5),
                endpoint: "198.18.5.1:51820".into(),
                allowed_ips: vec!["198.18.30.10/32".into()],
            },
        ],
        mfa_until: None,
        mfa_registration: None,
    }
}

#[test]
fn one_peer_per_site_each_with_its_own_networks_and_the_file_parses_back() {
    let conf = WgConf::from_device(PrivateKey::from_bytes([9; 32]), &two_sites()).unwrap();
    let text = conf.render();
    assert_eq!(text.matches("[Peer]").count(), 2, "{text}");
    assert!(text.contains("# site dsden56\n[Peer]\n"), "{text}");
    let first = text.split("# site").next().unwrap();
    assert!(first.contains("AllowedIPs = 198.18.10.10/32\n"), "{text}");
    assert!(
        !first.contains("198.18.30.10"),
        "the rectorat's peer carries only its networks"
    );
    assert!(text.contains(&format!(
        "PublicKey = {}\nEndpoint = 198.18.5.1:51820\nAllowedIPs = 198.18.30.10/32\n",
        key(5)
    )));
    let back = WgConf::parse(&text).unwrap();
    assert_eq!(back.sites, conf.sites);
    assert_eq!(back.sites[0].site, "dsden56");
    assert_eq!(back.allowed_ips, conf.allowed_ips);
    assert_eq!(back.render(), text);
}

#[test]
fn a_site_name_or_endpoint_that_could_inject_lines_is_refused() {
    let mut d = two_sites();
    d.peers[1].site = "x\nPostUp = id".into();
    assert!(WgConf::from_device(PrivateKey::from_bytes([9; 32]), &d).is_err());
    let mut d = two_sites();
    d.peers[1].endpoint = "198.18.5.1:51820\nPostUp = id".into();
    assert!(WgConf::from_device(PrivateKey::from_bytes([9; 32]), &d).is_err());
}

#[test]
fn one_site_writes_one_peer_as_before() {
    let mut d = two_sites();
    d.peers.truncate(1);
    d.allowed_ips = vec!["198.18.10.10/32".into()];
    let text = WgConf::from_device(PrivateKey::from_bytes([9; 32]), &d)
        .unwrap()
        .render();
    assert_eq!(text.matches("[Peer]").count(), 1);
    assert!(!text.contains("# site"));
}
