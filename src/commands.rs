//! What each `sesame` subcommand does, as library functions the thin `main.rs` calls.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Config;

pub mod audit_cli;
pub mod directory_cli;
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
    let public = crate::gateway::keys::write_new_key(out)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", crate::gateway::keys::encode(&public))?;
    stdout.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `sesame gateway`: the data plane alone with static peers, until SIGINT/SIGTERM.
/// SIGUSR1 logs the counters.
pub fn gateway(path: &Path) -> anyhow::Result<ExitCode> {
    use crate::gateway::{format_drops, keys, static_peers, Gateway};
    use tokio::signal::unix::{signal, SignalKind};

    let config = Config::load(path)?;
    let key = keys::load_private_key(&config.gateway.private_key_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler runtime")?;
    let gateway = Gateway::start(&config.gateway, key)?;
    let handle = gateway.handle();
    handle.set_peers(static_peers(&config));
    let log_stats = || {
        for p in handle.peer_stats() {
            tracing::info!(
                peer = %p.label,
                address = %p.address,
                rx_bytes = p.rx_bytes,
                tx_bytes = p.tx_bytes,
                session_active = p.session_active,
                "peer stats"
            );
        }
        tracing::info!("drops: {}", format_drops(&handle.drop_counters()));
    };
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut usr1 = signal(SignalKind::user_defined1()).context("installing SIGUSR1 handler")?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = usr1.recv() => log_stats(),
            }
        }
        anyhow::Ok(())
    })?;
    log_stats();
    gateway.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// `sesame serve`: every role in one process, until SIGINT/SIGTERM.
pub fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};

    let config = Config::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        crate::control::serve::serve(config, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
