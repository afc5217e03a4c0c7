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
    let public = crate::gateway::keys::write_new_key(out)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", crate::gateway::keys::encode(&public))?;
    stdout.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `sesame gateway`: the data plane alone with static peers, until SIGINT/SIGTERM.
/// SIGUSR1 logs the counters.
pub fn gateway(path: &Path) -> anyhow::Result<ExitCode> {
    use crate::control::flow_audit::{Destination, FlowAudit};
    use crate::gateway::flowlog::DEFAULT_QUEUE;
    use crate::gateway::{format_drops, keys, static_peers, FlowLog, Gateway};
    use std::sync::Arc;
    use tokio::signal::unix::{signal, SignalKind};

    let config = Config::load(path)?;
    let key = keys::load_private_key(&config.gateway.private_key_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler runtime")?;
    let (flow_log, flow_rx) = FlowLog::new(config.audit.flow_window, DEFAULT_QUEUE);
    let gateway = Gateway::start_audited(&config.gateway, key, Some(Arc::clone(&flow_log)))?;
    let handle = gateway.handle();
    // No database here: flow and session records become structured log lines.
    let (finish_tx, finish_rx) = tokio::sync::watch::channel(false);
    let flow_audit = runtime.spawn(
        FlowAudit::new(flow_log, flow_rx, config.policy.clone()).run(Destination::Log, finish_rx),
    );
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
    let _ = finish_tx.send(true);
    let _ = runtime.block_on(flow_audit);
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
