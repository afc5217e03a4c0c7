//! What each `sesame` subcommand does, as library functions the thin `main.rs` calls.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Config;

pub mod audit_cli;
pub mod store_admin;

/// `sesame check-config`: validates, then prints each group → resources → rules.
pub fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "configuration {} is valid", path.display())?;
    writeln!(out, "\nresources:")?;
    for r in config.policy.resources() {
        writeln!(out, "  {} (site {:?}) {}", r.name, r.site, r.description)?;
        for rule in &r.rules {
            writeln!(out, "    allow {rule}")?;
        }
    }
    writeln!(out, "\ngrants (group -> resources -> rules):")?;
    for (group, names) in config.policy.grants() {
        writeln!(out, "  {group}")?;
        for name in names {
            writeln!(out, "    {name}")?;
            if let Some(r) = config.policy.resource(name) {
                for rule in &r.rules {
                    writeln!(out, "      allow {rule}")?;
                }
            }
        }
    }
    if !config.peers.is_empty() {
        writeln!(out, "\nstatic peers:")?;
        for p in &config.peers {
            let rules = config
                .policy
                .rules_for_resources(p.resources.iter().map(String::as_str));
            writeln!(
                out,
                "  {} {} -> {}",
                p.name,
                p.address,
                p.resources.join(", ")
            )?;
            for rule in rules.rules() {
                writeln!(out, "      allow {rule}")?;
            }
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `sesame keygen`: see [`crate::gateway::keys`].
pub fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("keygen to {} is not implemented yet", out.display())
}

/// `sesame gateway`: the data plane alone with static peers.
pub fn gateway(path: &Path) -> anyhow::Result<ExitCode> {
    let _config = Config::load(path)?;
    anyhow::bail!("the gateway is not implemented yet")
}

/// `sesame serve`: every role in one process.
pub fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let _config = Config::load(path)?;
    anyhow::bail!("serve is not implemented yet")
}
