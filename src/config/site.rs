//! The site gateway's configuration (`sesame gateway --site`): the ordinary file, minus what a
//! gateway host must never hold (database, directory, audit key), plus what feeds it.

use std::path::{Path, PathBuf};

use super::locate::{key, Locator, Seg};
use super::{Config, ConfigError};

/// Sections and keys a site gateway's configuration may not carry: the secrets of the portal.
const FORBIDDEN: [(&[&str], &str); 4] = [
    (
        &["database"],
        "a site gateway never opens the database: remove [database] (it lives on the portal host)",
    ),
    (
        &["directory"],
        "a site gateway never reads the directory: remove [directory] (it lives on the portal host)",
    ),
    (
        &["audit", "signing_key_file"],
        "a site gateway holds no audit key: remove [audit] signing_key_file (its records go to the portal)",
    ),
    (
        &["audit", "checkpoint_file"],
        "a site gateway keeps no checkpoints: remove [audit] checkpoint_file (the portal signs the log)",
    ),
];

/// What a site gateway needs beyond the data plane: its site, its portals and their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteGatewayConfig {
    pub site: String,
    pub portals: Vec<String>,
    pub token_file: PathBuf,
    pub ca_file: Option<PathBuf>,
}

impl Config {
    /// Reads the configuration of `sesame gateway --site`: refuses the portal's sections (file,
    /// line and key), then requires `[gateway] portals` and `portal_token_file`. `site`
    /// overrides `[gateway] site`.
    pub fn load_site_gateway(
        path: &Path,
        site: Option<&str>,
    ) -> Result<(Config, SiteGatewayConfig), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let mut config = Config::parse(path, &text)?;
        let doc = toml_edit::ImDocument::parse(text.as_str()).ok();
        let loc = Locator {
            file: path,
            text: &text,
            doc: doc.clone(),
        };
        if let Some(doc) = &doc {
            for (keys, message) in FORBIDDEN {
                let mut item = Some(doc.as_item());
                for k in keys {
                    item = item.and_then(|i| i.get(k));
                }
                if item.is_some() {
                    let at: Vec<Seg> = keys.iter().map(|k| key(k)).collect();
                    return Err(loc.error(&at, message));
                }
            }
        }
        let site_cfg = site_section(&config, site, &loc)?;
        config.gateway.site = Some(site_cfg.site.clone());
        Ok((config, site_cfg))
    }
}

fn site_section(
    config: &Config,
    site: Option<&str>,
    loc: &Locator<'_>,
) -> Result<SiteGatewayConfig, ConfigError> {
    let g = &config.gateway;
    let site = match site {
        Some(s) if !super::validate::valid_site_name(s) => {
            return Err(ConfigError {
                file: loc.file.to_path_buf(),
                line: None,
                key: "--site".into(),
                message: format!(
                    "invalid site name {s:?}: 1 to 63 letters, digits, '-', '_' or '.'"
                ),
            })
        }
        Some(s) => s.to_string(),
        None => g.site.clone().ok_or_else(|| {
            loc.error(
                &[key("gateway"), key("site")],
                "a site gateway needs its site: set [gateway] site = \"NAME\" or pass --site NAME",
            )
        })?,
    };
    if g.portals.is_empty() {
        return Err(loc.error(
            &[key("gateway"), key("portals")],
            "a site gateway needs at least one portal: set [gateway] portals = [\"https://portal.example.org\"]",
        ));
    }
    let token_file = g.portal_token_file.clone().ok_or_else(|| {
        loc.error(
            &[key("gateway"), key("portal_token_file")],
            "a site gateway needs its token: run `sesame site token --site NAME` on the portal host, write it to a file (mode 0600) and set [gateway] portal_token_file",
        )
    })?;
    Ok(SiteGatewayConfig {
        site,
        portals: g.portals.clone(),
        token_file,
        ca_file: g.portal_ca_file.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "site_tests.rs"]
mod tests;
