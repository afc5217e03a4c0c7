//! Access policy: resources and grants compiled into per-device rule sets (default deny).
//!
//! A resource is a list of rules written `CIDR [PROTO[:PORTS]]`, for example
//! `198.18.10.10/32 tcp:443,8443`, `198.18.10.0/28 icmp`, `198.18.20.0/24 udp:1000-2000`
//! or `198.18.30.5/32` (any protocol, any port). A device may reach the union of the
//! resources granted to its user's groups; an empty rule set reaches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// IP protocol numbers the policy understands.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Transport protocol a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    /// ICMP for IPv4, ICMPv6 for IPv6.
    Icmp,
}

impl Proto {
    fn matches(self, ip_proto: u8) -> bool {
        match self {
            Proto::Any => true,
            Proto::Tcp => ip_proto == IPPROTO_TCP,
            Proto::Udp => ip_proto == IPPROTO_UDP,
            Proto::Icmp => ip_proto == IPPROTO_ICMP || ip_proto == IPPROTO_ICMPV6,
        }
    }
}

/// An inclusive port range; a single port is `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// One allow rule: destination network, protocol and (for tcp/udp) destination ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    /// Destination network, normalised (host bits cleared).
    pub net: IpNet,
    pub proto: Proto,
    /// Destination ports for tcp/udp; empty means every port.
    pub ports: Vec<PortRange>,
}

/// Why a rule string was refused; the message says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("empty rule: write it as \"CIDR [tcp|udp|icmp|any][:PORTS]\", e.g. \"198.18.10.10/32 tcp:443\"")]
    Empty,
    #[error("invalid network {0:?}: expected an address or CIDR such as 198.18.10.0/24")]
    Network(String),
    #[error("unknown protocol {0:?}: use tcp, udp, icmp or any")]
    Protocol(String),
    #[error("invalid port {0:?}: ports are 1-65535, lists are comma-separated, ranges are written 1000-2000")]
    Port(String),
    #[error("ports are only allowed with tcp or udp, not with {0}")]
    PortsWithoutTransport(String),
    #[error("unexpected text {0:?} after the protocol")]
    Trailing(String),
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split_whitespace();
        let net_str = words.next().ok_or(RuleError::Empty)?;
        let net = parse_net(net_str)?;
        let (proto, ports) = match words.next() {
            None => (Proto::Any, Vec::new()),
            Some(spec) => {
                let (name, ports) = match spec.split_once(':') {
                    Some((name, ports)) => (name, Some(ports)),
                    None => (spec, None),
                };
                let proto = match name.to_ascii_lowercase().as_str() {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    "icmp" | "icmpv6" => Proto::Icmp,
                    "any" | "all" => Proto::Any,
                    _ => return Err(RuleError::Protocol(name.to_owned())),
                };
                let ports = match ports {
                    None => Vec::new(),
                    Some(list) => {
                        if !matches!(proto, Proto::Tcp | Proto::Udp) {
                            return Err(RuleError::PortsWithoutTransport(name.to_owned()));
                        }
                        parse_ports(list)?
                    }
                };
                (proto, ports)
            }
        };
        if let Some(extra) = words.next() {
            return Err(RuleError::Trailing(extra.to_owned()));
        }
        Ok(Rule { net, proto, ports })
    }
}

fn parse_net(s: &str) -> Result<IpNet, RuleError> {
    let net = if s.contains('/') {
        IpNet::from_str(s).map_err(|_| RuleError::Network(s.to_owned()))?
    } else {
        IpAddr::from_str(s)
            .map(IpNet::from)
            .map_err(|_| RuleError::Network(s.to_owned()))?
    };
    Ok(net.trunc())
}

fn parse_ports(list: &str) -> Result<Vec<PortRange>, RuleError> {
    let port = |p: &str| -> Result<u16, RuleError> {
        match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(RuleError::Port(p.to_owned())),
        }
    };
    let mut out = Vec::new();
    for item in list.split(',') {
        let range = match item.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(RuleError::Port(item.to_owned()));
                }
                PortRange { lo, hi }
            }
            None => {
                let p = port(item)?;
                PortRange { lo: p, hi: p }
            }
        };
        out.push(range);
    }
    Ok(out)
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.net)?;
        let name = match self.proto {
            Proto::Any => return Ok(()),
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        };
        write!(f, " {name}")?;
        for (i, r) in self.ports.iter().enumerate() {
            let sep = if i == 0 { ':' } else { ',' };
            if r.lo == r.hi {
                write!(f, "{sep}{}", r.lo)?;
            } else {
                write!(f, "{sep}{}-{}", r.lo, r.hi)?;
            }
        }
        Ok(())
    }
}

impl Rule {
    /// Whether a packet to `dst` with transport `ip_proto` and destination port `dport`
    /// (0 when the protocol has no ports) is allowed by this rule.
    #[inline]
    pub fn allows(&self, dst: IpAddr, ip_proto: u8, dport: u16) -> bool {
        self.net.contains(&dst)
            && self.proto.matches(ip_proto)
            && (self.ports.is_empty() || self.ports.iter().any(|r| r.contains(dport)))
    }
}

/// Index of a resource in its [`Policy`] ([`Policy::resource_name`]); lets the data plane say
/// which resource a packet matched without strings on the hot path.
pub type ResourceId = u32;
/// The [`ResourceId`] of a rule that belongs to no named resource.
pub const NO_RESOURCE: ResourceId = ResourceId::MAX;

/// The compiled rules of one device: the union of its granted resources. Default deny.
/// Each rule remembers the resource it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Parallel to `rules`: the resource each rule came from.
    origins: Vec<ResourceId>,
}

impl RuleSet {
    /// A rule set that allows nothing.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Rules of no named resource (static tests, tools).
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> Self {
        Self::with_origins(rules.into_iter().map(|r| (r, NO_RESOURCE)))
    }

    /// Rules tagged with the resource each one came from (duplicates removed).
    pub fn with_origins(rules: impl IntoIterator<Item = (Rule, ResourceId)>) -> Self {
        let set: BTreeSet<(Rule, ResourceId)> = rules.into_iter().collect();
        let (rules, origins) = set.into_iter().unzip();
        RuleSet { rules, origins }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a new flow to `dst` (protocol `ip_proto`, destination port `dport`) is allowed.
    #[inline]
    pub fn allows(&self, dst: IpAddr, ip_proto: u8, dport: u16) -> bool {
        self.matching(dst, ip_proto, dport).is_some()
    }

    /// The resource of the first rule allowing this flow (`Some(NO_RESOURCE)` for an untagged
    /// rule), `None` when denied.
    #[inline]
    pub fn matching(&self, dst: IpAddr, ip_proto: u8, dport: u16) -> Option<ResourceId> {
        let i = self
            .rules
            .iter()
            .position(|r| r.allows(dst, ip_proto, dport))?;
        Some(self.origins.get(i).copied().unwrap_or(NO_RESOURCE))
    }

    /// The destination networks, deduplicated: what the device routes into the tunnel.
    pub fn networks(&self) -> Vec<IpNet> {
        let nets: BTreeSet<IpNet> = self.rules.iter().map(|r| r.net).collect();
        IpNet::aggregate(&nets.into_iter().collect::<Vec<_>>())
    }
}

/// A named set of rules at one site (payroll, HR…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub site: String,
    pub description: String,
    pub rules: Vec<Rule>,
}

/// Resources plus the directory groups that grant them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    resources: BTreeMap<String, Resource>,
    /// Group DN (lower-cased) → resource names.
    grants: BTreeMap<String, BTreeSet<String>>,
    /// The `[[grant]]` sections in file order (group DN lower-cased, resources): the access
    /// review says which section granted what.
    sections: Vec<(String, BTreeSet<String>)>,
}

/// A grant named a resource the policy does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource {0:?}: define it in a [[resource]] section")]
pub struct UnknownResource(pub String);

impl Policy {
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Self {
        Policy {
            resources: resources.into_iter().map(|r| (r.name.clone(), r)).collect(),
            grants: BTreeMap::new(),
            sections: Vec::new(),
        }
    }

    /// Adds a grant of `resources` to members of `group` (DN, compared case-insensitively).
    pub fn grant(&mut self, group: &str, resources: &[String]) -> Result<(), UnknownResource> {
        for name in resources {
            if !self.resources.contains_key(name) {
                return Err(UnknownResource(name.clone()));
            }
        }
        self.grants
            .entry(normalize_dn(group))
            .or_default()
            .extend(resources.iter().cloned());
        self.sections
            .push((normalize_dn(group), resources.iter().cloned().collect()));
        Ok(())
    }

    /// 1-based numbers of the `[[grant]]` sections (in file order) that give `resource` to
    /// members of `group`: empty when the group does not grant it.
    pub fn grant_sections(&self, group: &str, resource: &str) -> Vec<usize> {
        let group = normalize_dn(group);
        self.sections
            .iter()
            .enumerate()
            .filter(|(_, (g, r))| *g == group && r.contains(resource))
            .map(|(i, _)| i + 1)
            .collect()
    }

    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.get(name)
    }

    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    /// Group DN → granted resource names, for display (`check-config`).
    pub fn grants(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.grants.iter().map(|(g, r)| (g.as_str(), r))
    }

    /// Names of the resources granted to a member of `groups` (union; empty = nothing).
    pub fn resources_for_groups<'a>(
        &self,
        groups: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for g in groups {
            if let Some(names) = self.grants.get(&normalize_dn(g)) {
                out.extend(names.iter().cloned());
            }
        }
        out
    }

    /// The compiled rule set for a set of resource names (unknown names grant nothing).
    pub fn rules_for_resources<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> RuleSet {
        RuleSet::with_origins(
            names
                .into_iter()
                .filter_map(|n| Some((self.resource_id(n)?, self.resources.get(n)?)))
                .flat_map(|(id, r)| r.rules.iter().map(move |rule| (rule.clone(), id))),
        )
    }

    /// The index of resource `name` (its rank in name order), used by compiled rules.
    pub fn resource_id(&self, name: &str) -> Option<ResourceId> {
        let rank = self.resources.keys().position(|k| k == name)?;
        ResourceId::try_from(rank).ok()
    }

    /// The name of the resource with index `id` (see [`Policy::resource_id`]).
    pub fn resource_name(&self, id: ResourceId) -> Option<&str> {
        let i = usize::try_from(id).ok()?;
        self.resources.keys().nth(i).map(String::as_str)
    }
}

/// Canonical form of a DN for comparisons (RFC 4514, see `directory/dn.rs`).
pub use crate::dn::normalize_dn;

#[cfg(test)]
mod tests {
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
        assert!(!set.allows("198.18.10.10".parse().expect("ip"), IPPROTO_TCP, 443));
    }

    #[test]
    fn port_and_protocol_must_both_match() {
        let set = RuleSet::new([rule("198.18.10.10/32 tcp:443"), rule("198.18.10.0/28 icmp")]);
        let host: IpAddr = "198.18.10.10".parse().expect("ip");
        assert!(set.allows(host, IPPROTO_TCP, 443));
        assert!(!set.allows(host, IPPROTO_TCP, 22));
        assert!(!set.allows(host, IPPROTO_UDP, 443));
        assert!(set.allows("198.18.10.3".parse().expect("ip"), IPPROTO_ICMP, 0));
        assert!(!set.allows("198.18.10.20".parse().expect("ip"), IPPROTO_ICMP, 0));
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
        assert_eq!(set.matching(ip("198.18.10.3"), IPPROTO_ICMP, 0), Some(paie));
        assert_eq!(
            set.matching(ip("198.18.10.10"), IPPROTO_TCP, 443),
            Some(paie)
        );
        assert_eq!(set.matching(ip("198.18.20.10"), IPPROTO_TCP, 443), Some(rh));
        assert_eq!(set.matching(ip("198.18.20.10"), IPPROTO_TCP, 22), None);
        assert_eq!(
            RuleSet::new([rule("198.18.10.10/32")]).matching(ip("198.18.10.10"), IPPROTO_UDP, 53),
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
                1 => proto == IPPROTO_TCP,
                2 => proto == IPPROTO_UDP,
                _ => proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6,
            };
            let port_ok =
                ports.is_empty() || ports.iter().any(|(lo, hi)| lo <= &port && &port <= hi);
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
            proto in prop::sample::select(vec![IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, 47u8]),
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
}
