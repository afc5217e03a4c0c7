//! `[gateway]`: the data plane's keys and, for a site gateway, its site and portals.

use super::*;

impl Ctx<'_, '_> {
    /// `[gateway]`
    pub(super) fn gateway(&self, g: RawGateway) -> Result<GatewayConfig, ConfigError> {
        let loc = self.loc;
        let tunnel_network: Ipv4Net = g.tunnel_network.parse().map_err(|_| {
            loc.error(
                &[key("gateway"), key("tunnel_network")],
                format!(
                    "invalid IPv4 network {:?}: expected a CIDR such as 100.64.0.0/16",
                    g.tunnel_network
                ),
            )
        })?;
        if tunnel_network.prefix_len() > 30 {
            return Err(loc.error(
                &[key("gateway"), key("tunnel_network")],
                "the tunnel network is too small: use a /30 or larger (e.g. /16)",
            ));
        }
        let tunnel_network = tunnel_network.trunc();
        let gateway_address = tunnel_network
            .hosts()
            .next()
            .unwrap_or(tunnel_network.network());
        if g.interface.is_empty()
            || g.interface.len() > 15
            || !g
                .interface
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(loc.error(
                &[key("gateway"), key("interface")],
                format!(
                    "invalid interface name {:?}: 1 to 15 letters, digits, '-', '_' or '.'",
                    g.interface
                ),
            ));
        }
        let mut dns = Vec::new();
        for (i, d) in g.dns.iter().enumerate() {
            dns.push(d.parse::<IpAddr>().map_err(|_| {
                loc.error(
                    &[key("gateway"), key("dns"), idx(i)],
                    format!("invalid IP address {d:?}"),
                )
            })?);
        }
        if !(1280..=9000).contains(&g.mtu) {
            return Err(loc.error(
                &[key("gateway"), key("mtu")],
                "mtu must be between 1280 and 9000",
            ));
        }
        if g.endpoint
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(loc.error(
                &[key("gateway"), key("endpoint")],
                format!(
                    "invalid endpoint {:?}: expected HOST:PORT such as vpn.example.org:51820",
                    g.endpoint
                ),
            ));
        }
        let portals = self.portals(&g)?;
        Ok(GatewayConfig {
            site: self.site_name(g.site)?,
            portals,
            portal_token_file: g.portal_token_file.map(|f| resolve(self.base, f)),
            portal_ca_file: g.portal_ca_file.map(|f| resolve(self.base, f)),
            insecure_plaintext: g.insecure_plaintext,
            listen: self.socket(&[key("gateway"), key("listen")], &g.listen)?,
            endpoint: g.endpoint,
            interface: g.interface,
            tunnel_network,
            address: gateway_address,
            private_key_file: resolve(self.base, g.private_key_file),
            dns,
            mtu: g.mtu,
            threads: g.threads,
            flow_idle_timeout: self.duration(
                &[key("gateway"), key("flow_idle_timeout")],
                &g.flow_idle_timeout,
            )?,
            max_cache_age: self.max_cache_age(&g.max_cache_age)?,
        })
    }

    /// `[gateway] max_cache_age`: at least an hour (the cache is refreshed every 10 minutes
    /// while the database or a portal answers).
    fn max_cache_age(&self, s: &str) -> Result<Duration, ConfigError> {
        let at = [key("gateway"), key("max_cache_age")];
        let d = self.duration(&at, s)?;
        if d < Duration::from_secs(3600) {
            return Err(self.loc.error(
                &at,
                format!("max_cache_age {s:?} is too short: at least 1h (the cache is refreshed every 10 minutes), e.g. \"7d\""),
            ));
        }
        Ok(d)
    }

    /// `[gateway] site`: a name as `[[site]] name` writes it.
    fn site_name(&self, site: Option<String>) -> Result<Option<String>, ConfigError> {
        match site {
            Some(s) if !valid_site_name(&s) => Err(self.loc.error(
                &[key("gateway"), key("site")],
                format!("invalid site name {s:?}: 1 to 63 letters, digits, '-', '_' or '.'"),
            )),
            other => Ok(other),
        }
    }

    /// `[gateway] portals`: https:// URLs (http:// on loopback, or with `insecure_plaintext`).
    fn portals(&self, g: &RawGateway) -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for (i, p) in g.portals.iter().enumerate() {
            let at = [key("gateway"), key("portals"), idx(i)];
            let u = p.trim_end_matches('/').to_string();
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() < 9 {
                return Err(self.loc.error(
                    &at,
                    format!("invalid portal URL {p:?}: expected https://HOST[:PORT]"),
                ));
            }
            if u.starts_with("http://") && !g.insecure_plaintext && !is_loopback_url(&u) {
                return Err(self.loc.error(
                    &at,
                    "http:// outside loopback would send the site token and the peer set in clear: use https:// (portal_ca_file for a private CA), or for a lab set [gateway] insecure_plaintext = true",
                ));
            }
            out.push(u);
        }
        Ok(out)
    }
}
