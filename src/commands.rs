//! What each `sesame` subcommand does, as library functions the thin `main.rs` calls.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Config;

pub mod audit_cli;
pub mod audit_review_cli;
pub mod directory_cli;
pub mod serve;
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

/// `sesame keygen`: see [`crate::gateway::keys`]. With `if_missing`, an existing key is left
/// alone (and still checked: mode and format) and its public key printed.
pub fn keygen(out: &Path, if_missing: bool) -> anyhow::Result<ExitCode> {
    use crate::gateway::keys;
    let public = match keys::write_new_key(out) {
        Err(keys::KeyError::Exists { .. }) if if_missing => {
            boringtun::x25519::PublicKey::from(&keys::load_private_key(out)?).to_bytes()
        }
        r => r?,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", crate::gateway::keys::encode(&public))?;
    stdout.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the configuration of a long-running server, installs its logging and checks its
/// secret files before anything starts.
fn load_server_config(path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    crate::telemetry::init_with(&config.log);
    config.check_secret_files()?;
    Ok(config)
}

/// `sesame gateway`: the data plane alone with static peers, until SIGINT/SIGTERM.
/// SIGUSR1 logs the counters; SIGHUP re-reads the static peers, resources and log level.
pub fn gateway(path: &Path) -> anyhow::Result<ExitCode> {
    use crate::control::flow_audit::{Destination, FlowAudit};
    use crate::gateway::flowlog::DEFAULT_QUEUE;
    use crate::gateway::uapi::UapiServer;
    use crate::gateway::{format_drops, keys, static_peers, FlowLog, Gateway};
    use std::sync::Arc;
    use tokio::signal::unix::{signal, SignalKind};

    let mut config = load_server_config(path)?;
    let key = keys::load_private_key(&config.gateway.private_key_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler runtime")?;
    let metrics_listener = runtime.block_on(crate::metrics::bind(config.metrics.listen))?;
    let (flow_log, flow_rx) = FlowLog::new(config.audit.flow_window, DEFAULT_QUEUE);
    let gateway = Gateway::start_audited(&config.gateway, key, Some(Arc::clone(&flow_log)))?;
    let handle = gateway.handle();
    // No database here: flow and session records become structured log lines.
    let (finish_tx, finish_rx) = tokio::sync::watch::channel(false);
    // The policy as of the last reload: the resource names of the rules flows matched.
    let live_policy = Arc::new(arc_swap::ArcSwap::from_pointee(config.policy.clone()));
    let flow_audit = runtime.spawn(
        FlowAudit::new(flow_log, flow_rx, {
            let live_policy = Arc::clone(&live_policy);
            Box::new(move || live_policy.load_full())
        })
        .run(Destination::Log, finish_rx),
    );
    handle.set_peers(static_peers(&config));
    let uapi = UapiServer::start(
        handle.clone(),
        &config.gateway.interface,
        config.gateway.listen.port(),
    );
    let metrics = Arc::new(crate::metrics::Metrics::new());
    metrics.register_collector(Box::new(crate::metrics::gateway::GatewayCollector {
        gateway: handle.clone(),
    }));
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
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let metrics_server = tokio::spawn(crate::metrics::serve(
            metrics_listener,
            Arc::clone(&metrics),
            async move {
                let _ = stop_rx.changed().await;
            },
        ));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = usr1.recv() => log_stats(),
                _ = hup.recv() => match crate::control::reload::reread(&config) {
                    Ok((live, changes)) => {
                        live_policy.store(Arc::new(live.policy.clone()));
                        handle.set_peers(static_peers(&live));
                        crate::telemetry::set_level(live.log.level);
                        crate::control::reload::log_changes(&changes);
                        metrics.reload(true);
                        config = live;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "configuration reload refused: the running configuration stays; fix the file and reload again");
                        metrics.reload(false);
                    }
                },
            }
        }
        let _ = stop_tx.send(true);
        let _ = metrics_server.await;
        anyhow::Ok(())
    })?;
    log_stats();
    if let Some(uapi) = uapi {
        uapi.stop();
    }
    gateway.shutdown();
    let _ = finish_tx.send(true);
    let _ = runtime.block_on(flow_audit);
    Ok(ExitCode::SUCCESS)
}

/// `sesame serve`: every role in one process, until SIGINT/SIGTERM; SIGHUP reloads.
pub fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};

    let config = load_server_config(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        let shutdown = async move {
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = int.recv() => return,
                    _ = hup.recv() => {
                        // A reload already queued covers this one too.
                        let _ = reload_tx.try_send(());
                    }
                }
            }
        };
        serve::serve(config, shutdown, reload_rx).await
    })?;
    Ok(ExitCode::SUCCESS)
}
