//! `[[site]]`: the site gateways a portal feeds, and the rule that each `[[resource]] site`
//! names one of them (or none: the local gateway of `sesame serve`).

use super::locate::{idx, key, Locator};
use super::raw::{RawResource, RawSite};
use super::{ConfigError, Site};

/// Each `[[site]]`: a unique non-empty name, an endpoint `host:port`, a WireGuard key.
pub(super) fn validate(loc: &Locator<'_>, raw: Vec<RawSite>) -> Result<Vec<Site>, ConfigError> {
    let mut sites: Vec<Site> = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let at = |name: &'static str| [key("site"), idx(i), key(name)];
        let name = s.name.trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(loc.error(
                &at("name"),
                format!("invalid site name {:?}: letters, digits, '-', '_' or '.' (such as \"dsden56\")", s.name),
            ));
        }
        // `local` names `sesame serve`'s own gateway (peers, audit filters): no site may take it.
        if name.eq_ignore_ascii_case(super::LOCAL_SITE) {
            return Err(loc.error(
                &at("name"),
                format!(
                    "site name {name:?} is reserved for the local gateway of `sesame serve`: choose another (such as \"rectorat\")"
                ),
            ));
        }
        if sites.iter().any(|o| o.name == name) {
            return Err(loc.error(&at("name"), format!("duplicate site name {name:?}")));
        }
        let endpoint = s.endpoint.trim().to_string();
        let port_ok = endpoint.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(loc.error(
                &at("endpoint"),
                format!("invalid endpoint {:?}: expected HOST:PORT such as \"vpn-dsden56.example.org:51820\"", s.endpoint),
            ));
        }
        let public_key = crate::key::PublicKey::parse(&s.public_key).map_err(|e| {
            loc.error(
                &at("public_key"),
                format!("invalid WireGuard key ({e}): the 44 base64 characters `sesame keygen` printed on that site's gateway host"),
            )
        })?;
        if let Some(other) = sites.iter().find(|o| o.public_key == public_key) {
            return Err(loc.error(
                &at("public_key"),
                format!(
                    "duplicate public key: already the key of site {:?}",
                    other.name
                ),
            ));
        }
        sites.push(Site {
            name,
            endpoint,
            public_key,
        });
    }
    Ok(sites)
}

/// Each `[[resource]] site`, when set, names a `[[site]]`.
pub(super) fn check_resources(
    loc: &Locator<'_>,
    sites: &[Site],
    resources: &[RawResource],
) -> Result<(), ConfigError> {
    for (i, r) in resources.iter().enumerate() {
        if r.site.is_empty() || sites.iter().any(|s| s.name == r.site) {
            continue;
        }
        return Err(loc.error(
            &[key("resource"), idx(i), key("site")],
            format!(
                "unknown site {:?}: define it in a [[site]] section (name, endpoint, public_key), or leave `site` out for the local gateway of `sesame serve`",
                r.site
            ),
        ));
    }
    Ok(())
}
