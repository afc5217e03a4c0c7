//! The site gateways the tunnel talks to: one WireGuard peer per site (one for a one-site
//! install), each with the networks it routes; which peer an outgoing packet goes to.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use ipnet::IpNet;
use sesame::api::DeviceConfig;
use sesame::key::{PrivateKey, PublicKey};

use crate::wgconf::WgConf;

/// One site's gateway as the tunnel uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The site's name (empty when the portal named none: a one-site install).
    pub site: String,
    pub public_key: PublicKey,
    /// `host:port` as written in `sesame.conf`.
    pub endpoint: String,
    /// `endpoint` resolved (once: a peer keeps its address while its `endpoint` is unchanged).
    pub addr: SocketAddr,
    /// The networks routed to this gateway, and the only sources accepted from it.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerSpec {
    /// The same gateway (same key, same `endpoint` text): its session is kept across a refresh.
    pub fn same_gateway(&self, other: &PeerSpec) -> bool {
        self.public_key == other.public_key && self.endpoint == other.endpoint
    }
}

/// `sesame.conf`'s peers in order (the main `[Peer]` first), with the endpoints resolved;
/// sites are named from `device` (the portal's last answer) when it has them. A peer already
/// in `known` (same key and endpoint) keeps its resolved address. A site endpoint that does
/// not resolve is left out (logged by the caller); the main one is an error.
pub fn from_conf(
    conf: &WgConf,
    device: Option<&DeviceConfig>,
    known: &[PeerSpec],
) -> Result<(Vec<PeerSpec>, Vec<String>), String> {
    let name = |key: &PublicKey| {
        device
            .and_then(|d| {
                d.peers
                    .iter()
                    .find(|p| PublicKey::parse(&p.public_key).is_ok_and(|k| k == *key))
            })
            .map(|p| p.site.clone())
            .unwrap_or_default()
    };
    let main = (
        name(&conf.peer_public_key),
        conf.peer_public_key,
        conf.endpoint.clone(),
        conf.allowed_ips.clone(),
    );
    let others = conf.sites.iter().map(|s| {
        (
            s.site.clone(),
            s.public_key,
            s.endpoint.clone(),
            s.allowed_ips.clone(),
        )
    });
    let mut specs = Vec::new();
    let mut unresolved = Vec::new();
    for (i, (site, public_key, endpoint, allowed_ips)) in
        std::iter::once(main).chain(others).enumerate()
    {
        let addr = known
            .iter()
            .find(|k| k.public_key == public_key && k.endpoint == endpoint)
            .map(|k| k.addr)
            .or_else(|| resolve(&endpoint));
        match addr {
            Some(addr) => specs.push(PeerSpec {
                site,
                public_key,
                endpoint,
                addr,
                allowed_ips,
            }),
            None if i == 0 => return Err(format!("cannot resolve the gateway {endpoint}")),
            None => unresolved.push(endpoint),
        }
    }
    Ok((specs, unresolved))
}

/// The peers the portal's answer asks for (`peers` with two sites or more, else `gateway`),
/// validated as `sesame.conf` is.
pub fn from_device(
    device: &DeviceConfig,
    known: &[PeerSpec],
) -> Result<(Vec<PeerSpec>, Vec<String>), String> {
    // Only the peers are used: the key is a placeholder, never written anywhere.
    let conf =
        WgConf::from_device(PrivateKey::from_bytes([1; 32]), device).map_err(|e| e.to_string())?;
    from_conf(&conf, Some(device), known)
}

/// The peers after a refresh answered `device` (granting `grants`), the tunnel running `known`.
/// Still one site: the gateway as the tunnel runs it, with the new grants (as before sites
/// existed); otherwise the portal's peers, a gateway already known keeping its session.
pub fn after_refresh(
    device: &DeviceConfig,
    known: &[PeerSpec],
    grants: &[IpNet],
) -> Result<(Vec<PeerSpec>, Vec<String>), String> {
    match known {
        [main] if device.peers.len() < 2 => {
            let mut main = main.clone();
            main.allowed_ips = grants.to_vec();
            if let Some(first) = device.peers.first() {
                main.site = first.site.clone();
            }
            Ok((vec![main], Vec::new()))
        }
        _ => from_device(device, known),
    }
}

fn resolve(endpoint: &str) -> Option<SocketAddr> {
    endpoint.to_socket_addrs().ok()?.next()
}

/// Every network routed into the tunnel (the union of the peers' networks, in order, once).
pub fn union(peers: &[PeerSpec]) -> Vec<IpNet> {
    let mut all: Vec<IpNet> = Vec::new();
    for net in peers.iter().flat_map(|p| &p.allowed_ips) {
        if !all.contains(net) {
            all.push(*net);
        }
    }
    all
}

/// The peer an outgoing packet to `dst` goes to: the one whose networks hold `dst` with the
/// longest prefix (as WireGuard's cryptokey routing); none holding it: the first (the main
/// gateway, where a one-site agent always sent everything).
pub fn choose<'a>(peers: impl IntoIterator<Item = &'a [IpNet]>, dst: IpAddr) -> usize {
    let mut best: Option<(usize, u8)> = None;
    for (i, nets) in peers.into_iter().enumerate() {
        for net in nets.iter().filter(|n| n.contains(&dst)) {
            if best.is_none_or(|(_, len)| net.prefix_len() > len) {
                best = Some((i, net.prefix_len()));
            }
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// The destination address of an IP packet, if it is one.
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// What a refresh changes: which current peers stay (by index into the current list, with
/// their new spec), which specs start a new session, which current peers go.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerPlan {
    pub keep: Vec<(usize, PeerSpec)>,
    pub add: Vec<PeerSpec>,
    pub remove: Vec<usize>,
}

impl PeerPlan {
    pub fn between(current: &[PeerSpec], wanted: &[PeerSpec]) -> PeerPlan {
        let mut keep = Vec::new();
        let mut add = Vec::new();
        for spec in wanted {
            match current.iter().position(|c| c.same_gateway(spec)) {
                Some(i) if !keep.iter().any(|(k, _)| *k == i) => keep.push((i, spec.clone())),
                _ => add.push(spec.clone()),
            }
        }
        let remove = (0..current.len())
            .filter(|i| !keep.iter().any(|(k, _)| k == i))
            .collect();
        PeerPlan { keep, add, remove }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "peers_tests.rs"]
mod tests;
