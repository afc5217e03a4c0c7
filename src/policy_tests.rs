//! Rule parsing, grants, compiled rule sets, and matching against a naive reference (proptest).

use super::*;
use proptest::prelude::*;

fn rule(s: &str) -> Rule {
    s.parse().expect("valid rule")
}

#[test]
fn parses_documented_forms() {
    let r = rule("198.18.10.10/32 tcp:443,8443");
    assert_eq!(r.proto, Proto::Tcp);
    assert_eq!(
        r.ports,
        vec![
            PortRange { lo: 443, hi: 443 },
            PortRange { lo: 8443, hi: 8443 }
        ]
    );
    assert_eq!(rule("198.18.10.0/28 icmp").proto, Proto::Icmp);
    assert_eq!(rule("198.18.10.5").net.to_string(), "198.18.10.5/32");
    assert_eq!(rule("198.18.10.7/24").net.to_string(), "198.18.10.0/24");
    assert_eq!(
        rule("198.18.0.0/16 udp:1000-2000").ports,
        vec![PortRange { lo: 1000, hi: 2000 }]
    );
    assert_eq!(
        rule("198.18.10.10/32 tcp:443,8443").to_string(),
        "198.18.10.10/32 tcp:443,8443"
    );
}

#[test]
fn refuses_bad_rules() {
    assert_eq!("".parse::<Rule>(), Err(RuleError::Empty));
    assert!(matches!(
        "198.18.300.1/32".parse::<Rule>(),
        Err(RuleError::Network(_))
    ));
    assert!(matches!(
        "198.18.0.0/33".parse::<Rule>(),
        Err(RuleError::Network(_))
    ));
    assert!(matches!(
        "198.18.0.1 sctp".parse::<Rule>(),
        Err(RuleError::Protocol(_))
    ));
    assert!(matches!(
        "198.18.0.1 tcp:0".parse::<Rule>(),
        Err(RuleError::Port(_))
    ));
    assert!(matches!(
        "198.18.0.1 tcp:70000".parse::<Rule>(),
        Err(RuleError::Port(_))
    ));
    assert!(matches!(
        "198.18.0.1 tcp:9-3".parse::<Rule>(),
        Err(RuleError::Port(_))
    ));
    assert!(matches!(
        "198.18.0.1 tcp:".parse::<Rule>(),
        Err(RuleError::Port(_))
    ));
    assert!(matches!(
        "198.18.0.1 icmp:3".parse::<Rule>(),
        Err(RuleError::PortsWithoutTransport(_))
    ));
    assert!(matches!(
        "198.18.0.1 tcp:22 x".parse::<Rule>(),
        Err(RuleError::Trailing(_))
    ));
}

#[test]
fn empty_rule_set_denies_everything() {
    let set = RuleSet::deny_all();
    assert!(!set.allows("198.18.10.10".parse().expect("ip"), ip_proto::TCP, 443));
}

#[test]
fn port_and_protocol_must_both_match() {
    let set = RuleSet::new([rule("198.18.10.10/32 tcp:443"), rule("198.18.10.0/28 icmp")]);
    let host: IpAddr = "198.18.10.10".parse().expect("ip");
    assert!(set.allows(host, ip_proto::TCP, 443));
    assert!(!set.allows(host, ip_proto::TCP, 22));
    assert!(!set.allows(host, ip_proto::UDP, 443));
    assert!(set.allows("198.18.10.3".parse().expect("ip"), ip_proto::ICMP, 0));
    assert!(!set.allows("198.18.10.20".parse().expect("ip"), ip_proto::ICMP, 0));
}

#[test]
fn grants_are_unions_of_group_resources() {
    let res = |name: &str, r: &str| Resource {
        name: name.into(),
        site: "rectorat".into(),
        description: String::new(),
        rules: vec![rule(r)],
    };
    let mut p = Policy::new([
        res("paie", "198.18.10.10/32 tcp:443"),
        res("rh", "198.18.20.10/32 tcp:443"),
    ]);
    p.grant("cn=Paie, ou=groups,dc=example,dc=org", &["paie".into()])
        .expect("grant");
    p.grant("cn=rh,ou=groups,dc=example,dc=org", &["rh".into()])
        .expect("grant");
    assert_eq!(
        p.grant("cn=x", &["nope".into()]),
        Err(UnknownResource("nope".into()))
    );
    let names = p.resources_for_groups(["CN=paie,ou=groups,dc=example,dc=org"]);
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["paie".to_string()]
    );
    assert!(p.resources_for_groups(["cn=other"]).is_empty());
    let set = p.rules_for_resources(["paie", "rh"]);
    assert_eq!(set.rules().len(), 2);
}

#[test]
fn a_compiled_rule_says_which_resource_it_came_from() {
    let res = |name: &str, r: &[&str]| Resource {
        name: name.into(),
        site: "rectorat".into(),
        description: String::new(),
        rules: r.iter().map(|r| rule(r)).collect(),
    };
    let p = Policy::new([
        res("rh", &["198.18.20.10/32 tcp:443"]),
        res("paie", &["198.18.10.10/32 tcp:443", "198.18.10.0/28 icmp"]),
    ]);
    let (paie, rh) = (
        p.resource_id("paie").expect("id"),
        p.resource_id("rh").expect("id"),
    );
    assert_ne!(paie, rh);
    assert_eq!(p.resource_name(paie), Some("paie"));
    assert_eq!(p.resource_name(rh), Some("rh"));
    assert_eq!(p.resource_id("nope"), None);
    assert_eq!(p.resource_name(99), None);
    let set = p.rules_for_resources(["paie", "rh"]);
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(
        set.matching(ip("198.18.10.3"), ip_proto::ICMP, 0),
        Some(paie)
    );
    assert_eq!(
        set.matching(ip("198.18.10.10"), ip_proto::TCP, 443),
        Some(paie)
    );
    assert_eq!(
        set.matching(ip("198.18.20.10"), ip_proto::TCP, 443),
        Some(rh)
    );
    assert_eq!(set.matching(ip("198.18.20.10"), ip_proto::TCP, 22), None);
    assert_eq!(
        RuleSet::new([rule("198.18.10.10/32")]).matching(ip("198.18.10.10"), ip_proto::UDP, 53),
        Some(NO_RESOURCE)
    );
}

/// A generated rule: (network base, prefix length, protocol 0..=3, port ranges).
type RawRule = (u32, u8, u8, Vec<(u16, u16)>);

/// Naive reference: a packet is allowed iff some rule's network, protocol and ports match,
/// each checked in the most literal way.
fn reference_allows(rules: &[RawRule], dst: u32, proto: u8, port: u16) -> bool {
    rules.iter().any(|(base, len, p, ports)| {
        let mask = if *len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(*len))
        };
        let in_net = (dst & mask) == (base & mask);
        let proto_ok = match p {
            0 => true,
            1 => proto == ip_proto::TCP,
            2 => proto == ip_proto::UDP,
            _ => proto == ip_proto::ICMP || proto == ip_proto::ICMPV6,
        };
        let port_ok = ports.is_empty() || ports.iter().any(|(lo, hi)| lo <= &port && &port <= hi);
        in_net && proto_ok && port_ok
    })
}

fn to_rule((base, len, p, ports): &RawRule) -> Rule {
    let net = ipnet::Ipv4Net::new((*base).into(), *len)
        .expect("prefix")
        .trunc();
    let proto = match p {
        0 => Proto::Any,
        1 => Proto::Tcp,
        2 => Proto::Udp,
        _ => Proto::Icmp,
    };
    let ports = if matches!(proto, Proto::Tcp | Proto::Udp) {
        ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect()
    } else {
        Vec::new()
    };
    Rule {
        net: net.into(),
        proto,
        ports,
    }
}

fn rule_strategy() -> impl Strategy<Value = RawRule> {
    // Addresses drawn from a small space so matches are frequent.
    (
        (0u32..64).prop_map(|x| 0xC612_0A00 | x),
        24u8..=32,
        0u8..4,
        prop::collection::vec((1u16..40, 0u16..10).prop_map(|(lo, w)| (lo, lo + w)), 0..3),
    )
}

proptest! {
    #[test]
    fn matches_reference(
        rules in prop::collection::vec(rule_strategy(), 0..6),
        dst in (0u32..64).prop_map(|x| 0xC612_0A00 | x),
        proto in prop::sample::select(vec![ip_proto::TCP, ip_proto::UDP, ip_proto::ICMP, 47u8]),
        port in 0u16..60,
    ) {
        // The reference sees exactly what the compiled rules see (ports only on tcp/udp).
        let normalised: Vec<_> = rules.iter().map(|r| {
            let mut r = r.clone();
            if !(r.2 == 1 || r.2 == 2) { r.3.clear(); }
            r
        }).collect();
        let set = RuleSet::new(normalised.iter().map(to_rule));
        let ip = IpAddr::V4(dst.into());
        prop_assert_eq!(set.allows(ip, proto, port), reference_allows(&normalised, dst, proto, port));
    }

    #[test]
    fn display_round_trips(r in rule_strategy()) {
        let rule = to_rule(&r);
        let again: Rule = rule.to_string().parse().expect("round trip");
        prop_assert_eq!(again, rule);
    }
}
