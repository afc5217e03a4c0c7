//! Several sites in `sesame.conf`: the gateway of each site beyond the first as its own
//! `[Peer]` (preceded by a `# site NAME` line), from `DeviceConfig.peers`.

use sesame::api::SitePeer;

use super::{invalid, is_endpoint, parse_networks, split_list, ConfError, WgConf};
use ipnet::IpNet;
use sesame::key::PublicKey;

/// One more site's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePeerConf {
    pub site: String,
    pub public_key: PublicKey,
    pub endpoint: String,
    pub allowed_ips: Vec<IpNet>,
}

/// A site `[Peer]` being parsed.
pub struct PartialSite {
    line: usize,
    site: String,
    public_key: Option<PublicKey>,
    endpoint: Option<String>,
    allowed_ips: Vec<IpNet>,
}

/// A site name goes into a comment line: letters, digits, '-', '_' or '.' only.
fn is_site_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl SitePeerConf {
    /// A `[Peer]` after the first, at `line`; its site is named by the `# site NAME` line just
    /// above, if any.
    pub(super) fn begin(line: usize, text: &str) -> PartialSite {
        let site = line
            .checked_sub(2)
            .and_then(|i| text.lines().nth(i))
            .and_then(|l| l.trim().strip_prefix("# site "))
            .map(str::trim)
            .filter(|s| is_site_name(s))
            .unwrap_or("")
            .to_string();
        PartialSite {
            line,
            site,
            public_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
        }
    }

    pub(super) fn render(&self, out: &mut String, keepalive: Option<u16>) {
        out.push_str(&format!("\n# site {}\n[Peer]\n", self.site));
        out.push_str(&format!("PublicKey = {}\n", self.public_key));
        out.push_str(&format!("Endpoint = {}\n", self.endpoint));
        if !self.allowed_ips.is_empty() {
            let nets: Vec<String> = self.allowed_ips.iter().map(|n| n.to_string()).collect();
            out.push_str(&format!("AllowedIPs = {}\n", nets.join(", ")));
        }
        if let Some(k) = keepalive {
            out.push_str(&format!("PersistentKeepalive = {k}\n"));
        }
    }
}

/// A key of the current site `[Peer]`.
pub(super) fn set_key(
    sites: &mut [PartialSite],
    line: usize,
    key: &str,
    value: &str,
) -> Result<(), ConfError> {
    let Some(site) = sites.last_mut() else {
        return Err(invalid(line, format!("{key} outside of a section")));
    };
    match key {
        "PublicKey" => {
            site.public_key = Some(
                PublicKey::parse(value).map_err(|e| invalid(line, format!("PublicKey: {e}")))?,
            )
        }
        "Endpoint" => site.endpoint = Some(value.to_string()),
        "AllowedIPs" => {
            site.allowed_ips = parse_networks(&split_list(value))
                .map_err(|bad| invalid(line, format!("AllowedIPs: {bad:?} is not a network")))?
        }
        // The interface-wide keepalive applies to every peer.
        "PersistentKeepalive" => {}
        other => return Err(invalid(line, format!("unknown key {other}"))),
    }
    Ok(())
}

pub(super) fn finish(sites: Vec<PartialSite>) -> Result<Vec<SitePeerConf>, ConfError> {
    sites
        .into_iter()
        .map(|s| {
            Ok(SitePeerConf {
                site: s.site,
                public_key: s
                    .public_key
                    .ok_or_else(|| invalid(s.line, "[Peer] PublicKey is missing"))?,
                endpoint: s
                    .endpoint
                    .ok_or_else(|| invalid(s.line, "[Peer] Endpoint is missing"))?,
                allowed_ips: s.allowed_ips,
            })
        })
        .collect()
}

/// With two sites or more, the first site's gateway is the main peer (its own networks only)
/// and each other site gets its own `[Peer]`. One site or none: `conf` as it is.
pub(super) fn with_site_peers(mut conf: WgConf, peers: &[SitePeer]) -> Result<WgConf, ConfError> {
    if peers.len() < 2 {
        return Ok(conf);
    }
    let mut all = Vec::new();
    for p in peers {
        if !is_site_name(&p.site) {
            return Err(ConfError::BadAnswer(format!("peers: site {:?}", p.site)));
        }
        let public_key = PublicKey::parse(&p.public_key)
            .map_err(|e| ConfError::BadAnswer(format!("peers[{}].public_key: {e}", p.site)))?;
        if !is_endpoint(p.endpoint.trim()) {
            return Err(ConfError::BadAnswer(format!(
                "peers[{}].endpoint {:?} is not HOST:PORT",
                p.site, p.endpoint
            )));
        }
        let allowed_ips = parse_networks(&p.allowed_ips).map_err(|bad| {
            ConfError::BadAnswer(format!("peers[{}].allowed_ips {bad:?}", p.site))
        })?;
        all.push(SitePeerConf {
            site: p.site.clone(),
            public_key,
            endpoint: p.endpoint.trim().to_string(),
            allowed_ips,
        });
    }
    let first = all.remove(0);
    conf.peer_public_key = first.public_key;
    conf.endpoint = first.endpoint;
    conf.allowed_ips = first.allowed_ips;
    conf.sites = all;
    Ok(conf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "wgconf_sites_tests.rs"]
mod tests;
