//! `[mfa]` and `[[resource]] mfa`: the second factor's keys, validated like the other sections.

use super::*;

impl Ctx<'_, '_> {
    /// `[mfa]`: the key file defaults to the service's state folder, like the audit key.
    pub(super) fn mfa(&self, m: RawMfa, gateway: &GatewayConfig) -> Result<MfaConfig, ConfigError> {
        let provider = match m.provider.as_str() {
            "totp" => MfaProvider::Totp,
            "radius" => MfaProvider::Radius,
            other => {
                return Err(self.loc.error(
                    &[key("mfa"), key("provider")],
                    format!("unknown second-factor provider {other:?}: use \"totp\" or \"radius\""),
                ))
            }
        };
        let session = self.duration(&[key("mfa"), key("session")], &m.session)?;
        if session < Duration::from_secs(60) || session > Duration::from_secs(7 * 86_400) {
            return Err(self.loc.error(
                &[key("mfa"), key("session")],
                "must be between 1m and 7d (default 10h)",
            ));
        }
        let idle = self.duration(&[key("mfa"), key("idle")], &m.idle)?;
        if idle < Duration::from_secs(60) || idle > session {
            return Err(self.loc.error(
                &[key("mfa"), key("idle")],
                "must be at least 1m and at most [mfa] session (default 30m)",
            ));
        }
        for (i, role) in m.web_roles.iter().enumerate() {
            if !MFA_WEB_ROLES.contains(&role.as_str()) {
                return Err(self.loc.error(
                    &[key("mfa"), key("web_roles"), idx(i)],
                    format!(
                        "unknown role {role:?}: use {} (the [roles] names)",
                        MFA_WEB_ROLES.join(", ")
                    ),
                ));
            }
        }
        let radius = self.radius(provider, m.radius)?;
        let state_dir = gateway
            .private_key_file
            .parent()
            .map_or_else(|| self.base.to_path_buf(), Path::to_path_buf);
        Ok(MfaConfig {
            provider,
            session,
            idle,
            web_roles: m.web_roles,
            secret_key_file: m
                .secret_key_file
                .map_or_else(|| state_dir.join("mfa.key"), |p| resolve(self.base, p)),
            radius,
        })
    }

    /// `[mfa.radius]`: required by `provider = "radius"`, refused with any other provider.
    fn radius(
        &self,
        provider: MfaProvider,
        raw: Option<RawRadius>,
    ) -> Result<Option<RadiusConfig>, ConfigError> {
        let at = |k: &'static str| [key("mfa"), key("radius"), key(k)];
        let r = match (provider, raw) {
            (MfaProvider::Totp, None) => return Ok(None),
            (MfaProvider::Totp, Some(_)) => {
                return Err(self.loc.error(
                    &[key("mfa"), key("radius")],
                    "[mfa.radius] is read only with provider = \"radius\"",
                ))
            }
            (MfaProvider::Radius, None) => {
                return Err(self.loc.error(
                    &[key("mfa"), key("provider")],
                    "provider = \"radius\" needs an [mfa.radius] section: servers = [\"198.18.40.10:1812\"] and secret_file",
                ))
            }
            (MfaProvider::Radius, Some(r)) => r,
        };
        if r.servers.is_empty() {
            return Err(self
                .loc
                .error(&at("servers"), "name at least one RADIUS server"));
        }
        let mut servers = Vec::with_capacity(r.servers.len());
        for (i, s) in r.servers.iter().enumerate() {
            // A bare address means the RADIUS authentication port.
            let with_port = if s.parse::<std::net::IpAddr>().is_ok() {
                format!("{s}:1812")
            } else {
                s.clone()
            };
            let addr = with_port.parse::<SocketAddr>().map_err(|_| {
                self.loc.error(
                    &[key("mfa"), key("radius"), key("servers"), idx(i)],
                    format!("invalid server {s:?}: write an IP address and port, e.g. \"198.18.40.10:1812\""),
                )
            })?;
            servers.push(addr);
        }
        let timeout = self.duration(&at("timeout"), &r.timeout)?;
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(30) {
            return Err(self
                .loc
                .error(&at("timeout"), "must be between 100ms and 30s (default 3s)"));
        }
        Ok(Some(RadiusConfig {
            servers,
            secret_file: resolve(self.base, r.secret_file),
            timeout,
        }))
    }

    /// The names of the `mfa = true` resources; refused without an `[mfa]` section (nothing
    /// would ever open their window).
    pub(super) fn protected_resources(
        &self,
        raw: &[RawResource],
        mfa_on: bool,
    ) -> Result<Vec<String>, ConfigError> {
        let mut names = Vec::new();
        for (i, r) in raw.iter().enumerate().filter(|(_, r)| r.mfa) {
            if !mfa_on {
                return Err(self.loc.error(
                    &[key("resource"), idx(i), key("mfa")],
                    "a resource with mfa = true needs an [mfa] section (the second factor that opens it)",
                ));
            }
            names.push(r.name.clone());
        }
        Ok(names)
    }
}
