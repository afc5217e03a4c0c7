use super::*;
use sesame::api::{GatewayInfo, SitePeer};

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn key(n: u8) -> String {
    PrivateKey::from_bytes([n; 32]).public_key().to_base64()
}

fn site(name: &str, n: u8, nets: &[&str]) -> SitePeer {
    SitePeer {
        site: name.into(),
        public_key: key(n),
        endpoint: format!("198.18.{n}.1:51820"),
        allowed_ips: nets.iter().map(|s| s.to_string()).collect(),
    }
}

fn device(peers: Vec<SitePeer>) -> DeviceConfig {
    let first = peers.first().cloned().unwrap_or_else(|| site("", 1, &[]));
    DeviceConfig {
        device_id: 7,
        tunnel_address: "100.64.0.2".into(),
        gateway: GatewayInfo {
            public_key: first.public_key.clone(),
            endpoint: first.endpoint.clone(),
        },
        allowed_ips: peers.iter().flat_map(|p| p.allowed_ips.clone()).collect(),
        dns: vec![],
        device_token: None,
        expires_at: "2027-01-01T00:00:00Z".into(),
        resources: vec![],
        peers,
        mfa_until: None,
        mfa_registration: None,
    }
}

#[test]
fn the_longest_prefix_chooses_the_peer() {
    let rectorat = nets(&["198.18.0.0/16", "198.18.10.10/32"]);
    let dsden56 = nets(&["198.18.56.0/24"]);
    let dsden29 = nets(&["198.18.56.128/25", "198.18.29.0/24"]);
    let table = [&rectorat[..], &dsden56[..], &dsden29[..]];
    let to = |ip: &str| choose(table, ip.parse().unwrap());
    assert_eq!(to("198.18.10.10"), 0, "exact host");
    assert_eq!(to("198.18.56.10"), 1, "/24 beats /16");
    assert_eq!(to("198.18.56.200"), 2, "/25 beats /24 and /16");
    assert_eq!(to("198.18.29.7"), 2, "second network of a peer");
    assert_eq!(to("198.18.99.1"), 0, "only the /16 holds it");
    assert_eq!(to("192.0.2.1"), 0, "nothing holds it: the main gateway");
    // The order of the peers does not matter, the prefix does.
    let reversed = [&dsden29[..], &dsden56[..], &rectorat[..]];
    assert_eq!(choose(reversed, "198.18.56.10".parse().unwrap()), 1);
    assert_eq!(choose(reversed, "198.18.56.200".parse().unwrap()), 0);
    assert_eq!(choose(reversed, "198.18.10.10".parse().unwrap()), 2);
}

#[test]
fn destination_is_read_from_the_ip_header() {
    let mut v4 = vec![0u8; 20];
    v4[0] = 0x45;
    v4[16..20].copy_from_slice(&[198, 18, 56, 10]);
    assert_eq!(destination(&v4), Some("198.18.56.10".parse().unwrap()));
    let mut v6 = vec![0u8; 40];
    v6[0] = 0x60;
    v6[39] = 1;
    assert_eq!(destination(&v6), Some("::1".parse().unwrap()));
    assert_eq!(destination(&v4[..10]), None, "truncated");
    assert_eq!(destination(&[]), None);
    assert_eq!(destination(&[0x10; 40]), None, "not IP");
}

#[test]
fn two_sites_give_two_named_peers_and_their_union() {
    let d = device(vec![
        site("rectorat", 1, &["198.18.10.10/32"]),
        site("dsden56", 56, &["198.18.56.10/32", "198.18.57.0/24"]),
    ]);
    let (specs, unresolved) = from_device(&d, &[]).unwrap();
    assert!(unresolved.is_empty());
    let names: Vec<&str> = specs.iter().map(|s| s.site.as_str()).collect();
    assert_eq!(names, ["rectorat", "dsden56"]);
    assert_eq!(specs[1].addr, "198.18.56.1:51820".parse().unwrap());
    assert_eq!(
        specs[1].allowed_ips,
        nets(&["198.18.56.10/32", "198.18.57.0/24"])
    );
    assert_eq!(
        union(&specs),
        nets(&["198.18.10.10/32", "198.18.56.10/32", "198.18.57.0/24"])
    );
    // One site: the gateway alone, with every grant.
    let one = device(vec![site("rectorat", 1, &["198.18.10.10/32"])]);
    let (specs, _) = from_device(&one, &[]).unwrap();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].site, "rectorat");
    assert_eq!(specs[0].allowed_ips, nets(&["198.18.10.10/32"]));
}

#[test]
fn a_refresh_adds_and_removes_site_peers_and_keeps_the_others() {
    let two = device(vec![
        site("rectorat", 1, &["198.18.10.10/32"]),
        site("dsden56", 56, &["198.18.56.10/32"]),
    ]);
    let (current, _) = from_device(&two, &[]).unwrap();

    // A grant on a third site: one peer added, the two sessions kept.
    let three = device(vec![
        site("rectorat", 1, &["198.18.10.10/32"]),
        site("dsden56", 56, &["198.18.56.10/32", "198.18.56.11/32"]),
        site("dsden29", 29, &["198.18.29.10/32"]),
    ]);
    let (wanted, _) = from_device(&three, &current).unwrap();
    let plan = PeerPlan::between(&current, &wanted);
    assert_eq!(
        plan.keep.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(
        plan.keep[1].1.allowed_ips,
        nets(&["198.18.56.10/32", "198.18.56.11/32"]),
        "a kept peer takes its new networks"
    );
    assert_eq!(plan.add.len(), 1);
    assert_eq!(plan.add[0].site, "dsden29");
    assert!(plan.remove.is_empty());

    // dsden56's grants gone: its peer alone goes.
    let (after, _) = from_device(
        &device(vec![
            site("rectorat", 1, &["198.18.10.10/32"]),
            site("dsden29", 29, &["198.18.29.10/32"]),
        ]),
        &wanted,
    )
    .unwrap();
    let plan = PeerPlan::between(&wanted, &after);
    assert_eq!(
        plan.keep.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 2]
    );
    assert!(plan.add.is_empty());
    assert_eq!(plan.remove, [1]);

    // A gateway that moved (new endpoint) is a new session; the same one is not.
    let mut moved = after.clone();
    moved[1].endpoint = "198.18.30.1:51820".into();
    let plan = PeerPlan::between(&after, &moved);
    assert_eq!(plan.remove, [1]);
    assert_eq!(plan.add.len(), 1);
    assert_eq!(
        PeerPlan::between(&after, &after).remove,
        Vec::<usize>::new()
    );
}

#[test]
fn a_known_peer_keeps_its_resolved_address() {
    let d = device(vec![
        site("rectorat", 1, &["198.18.10.10/32"]),
        site("dsden56", 56, &["198.18.56.10/32"]),
    ]);
    let (mut known, _) = from_device(&d, &[]).unwrap();
    known[1].addr = "198.18.99.99:51820".parse().unwrap();
    let (again, _) = from_device(&d, &known).unwrap();
    assert_eq!(again[1].addr, known[1].addr, "not resolved again");
}

#[test]
fn a_refresh_goes_from_one_site_to_two_and_back() {
    let one = device(vec![site("rectorat", 1, &["198.18.10.10/32"])]);
    let (running, _) = from_device(&one, &[]).unwrap();
    // Grants changed on the same site: the same gateway, new networks.
    let grants = nets(&["198.18.10.10/32", "198.18.11.0/24"]);
    let (same, _) = after_refresh(&one, &running, &grants).unwrap();
    assert_eq!(same.len(), 1);
    assert!(same[0].same_gateway(&running[0]));
    assert_eq!(same[0].allowed_ips, grants);
    // A grant on a second site: its peer is added, the first one's session is kept.
    let two = device(vec![
        site("rectorat", 1, &["198.18.10.10/32"]),
        site("dsden56", 56, &["198.18.56.10/32"]),
    ]);
    let (both, _) = after_refresh(&two, &same, &union(&same)).unwrap();
    let plan = PeerPlan::between(&same, &both);
    assert_eq!(plan.keep.len(), 1);
    assert_eq!(plan.add.len(), 1);
    assert_eq!(plan.add[0].site, "dsden56");
    // Back to the second site only: the first goes, the second stays.
    let back = device(vec![site("dsden56", 56, &["198.18.56.10/32"])]);
    let (left, _) = after_refresh(&back, &both, &nets(&["198.18.56.10/32"])).unwrap();
    let plan = PeerPlan::between(&both, &left);
    assert_eq!(plan.remove, [0]);
    assert_eq!(plan.keep.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
    assert!(plan.add.is_empty());
}
