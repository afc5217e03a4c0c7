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

use crate::ip_proto;

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
    fn matches(self, proto: u8) -> bool {
        match self {
            Proto::Any => true,
            Proto::Tcp => proto == ip_proto::TCP,
            Proto::Udp => proto == ip_proto::UDP,
            Proto::Icmp => proto == ip_proto::ICMP || proto == ip_proto::ICMPV6,
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
    /// Resources with `mfa = true`: reached only inside the device's access window.
    mfa: BTreeSet<String>,
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
            mfa: BTreeSet::new(),
        }
    }

    /// Marks `name` as needing the second factor (`[[resource]] mfa = true`).
    pub fn require_mfa(&mut self, name: &str) -> Result<(), UnknownResource> {
        if !self.resources.contains_key(name) {
            return Err(UnknownResource(name.to_string()));
        }
        self.mfa.insert(name.to_string());
        Ok(())
    }

    /// Whether `name` needs the second factor (an open access window).
    pub fn needs_mfa(&self, name: &str) -> bool {
        self.mfa.contains(name)
    }

    /// Whether any resource needs the second factor.
    pub fn has_mfa_resources(&self) -> bool {
        !self.mfa.is_empty()
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

    /// The compiled rules for a set of resource names, split in two: the ordinary ones, and
    /// those of `mfa = true` resources (reachable only inside an access window).
    pub fn split_rules_for_resources<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> (RuleSet, RuleSet) {
        let (protected, ordinary): (Vec<&str>, Vec<&str>) =
            names.into_iter().partition(|n| self.needs_mfa(n));
        (
            self.rules_for_resources(ordinary),
            self.rules_for_resources(protected),
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
#[path = "policy_tests.rs"]
mod tests;
