//! What each `sesame` subcommand does, as library functions the thin `main.rs` calls.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{Config, LiveConfig};
use crate::service::{Actor, Services};

pub mod audit_cli;
pub mod audit_review_cli;
pub mod directory_cli;
pub mod mfa_cli;
pub mod roles;
pub mod serve;
pub mod site_cli;
pub mod site_gateway;
pub mod store_admin;

/// A current-thread runtime for a one-shot command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The services of a one-shot command: the configuration and its database (no directory, no
/// gateway: the running server's control plane sees device changes within its poll).
pub(crate) async fn open_services(path: &Path) -> anyhow::Result<Services> {
    let config = Config::load(path)?;
    let store = crate::store::Store::connect(&config.database.url).await.context(
        "impossible d'ouvrir la base de données : vérifiez [database] url / cannot open the database: check [database] url",
    )?;
    let mfa = config.mfa.clone();
    let services = Services::new(LiveConfig::new(config), store.clone());
    with_mfa(services, mfa.as_ref(), &store)
}

/// The services of a one-shot command that issues codes (`sesame codes create`, `sesame mfa
/// code|reset`): [`open_services`] with the portal key, created 0600 if it does not exist yet
/// (as `sesame serve` does on its first start).
pub(crate) async fn open_services_issuing(path: &Path) -> anyhow::Result<Services> {
    let config = Config::load(path)?;
    let store = crate::store::Store::connect(&config.database.url).await.context(
        "impossible d'ouvrir la base de données : vérifiez [database] url / cannot open the database: check [database] url",
    )?;
    let store = with_code_key(store, &config)?;
    let mfa = config.mfa.clone();
    let services = Services::new(LiveConfig::new(config), store.clone());
    with_mfa(services, mfa.as_ref(), &store)
}

/// `store` hashing codes with the portal key (`[portal] secret_key_file`), created 0600 on the
/// first start like the audit and second-factor keys.
pub(crate) fn with_code_key(
    store: crate::store::Store,
    config: &Config,
) -> anyhow::Result<crate::store::Store> {
    let path = &config.portal.secret_key_file;
    let (key, created) = crate::store::CodeKey::load_or_create(path)
        .with_context(|| format!("[portal] secret_key_file in {}", config.path.display()))?;
    if created {
        tracing::info!(
            path = %path.display(),
            "created the portal key ([portal] secret_key_file): back it up with the database"
        );
    }
    Ok(store.with_code_key(std::sync::Arc::new(key)))
}

/// `services` with the second factor when `[mfa]` turns it on: its key (created 0600 on first
/// start, like the audit key) and provider.
pub(crate) fn with_mfa(
    services: Services,
    config: Option<&crate::config::MfaConfig>,
    store: &crate::store::Store,
) -> anyhow::Result<Services> {
    let Some(config) = config else {
        return Ok(services);
    };
    let (kit, created) = crate::mfa::Kit::from_config(config, store)?;
    if created {
        tracing::info!(
            path = %config.secret_key_file.display(),
            "created the second-factor key ([mfa] secret_key_file): back it up with the database"
        );
    }
    Ok(services.with_mfa(kit))
}

/// Who runs the command, for the audit log: `cli:<login>` (the sudo caller when under sudo).
pub(crate) fn cli_login() -> String {
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        // SAFETY: getuid(2) cannot fail and touches no memory.
        .unwrap_or_else(|_| format!("uid={}", unsafe { libc::getuid() }));
    format!("cli:{who}")
}

/// The administrator at the command line, for the services: every role, every user.
pub(crate) fn cli_admin() -> Actor {
    Actor::cli(cli_login())
}

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
            keys::load_private_key(out)?.public_key()
        }
        r => r?,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{public}")?;
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

/// SIGUSR1 of `sesame gateway`: each peer's counters and the drops, as log lines.
fn log_gateway_stats(handle: &crate::gateway::GatewayHandle) {
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
    tracing::info!(
        "drops: {}",
        crate::gateway::format_drops(&handle.drop_counters())
    );
}

/// `sesame gateway`: the data plane alone with static peers, until SIGINT/SIGTERM.
/// SIGUSR1 logs the counters; SIGHUP re-reads the static peers, resources and log level.
pub fn gateway(path: &Path) -> anyhow::Result<ExitCode> {
    use crate::control::flow_audit::{Destination, FlowAudit};
    use crate::gateway::flowlog::DEFAULT_QUEUE;
    use crate::gateway::uapi::UapiServer;
    use crate::gateway::{keys, static_peers, FlowLog, Gateway};
    use std::sync::Arc;
    use tokio::signal::unix::{signal, SignalKind};

    let config = load_server_config(path)?;
    let key = keys::load_private_key(&config.gateway.private_key_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler runtime")?;
    let metrics_listener = crate::metrics::bind(config.metrics.listen)?;
    let (flow_log, flow_rx) = FlowLog::new(config.audit.flow_window, DEFAULT_QUEUE);
    let gateway = Gateway::start_audited(&config.gateway, key, Some(Arc::clone(&flow_log)))?;
    let handle = gateway.handle();
    if let Some(mfa) = &config.mfa {
        handle.set_mfa_idle(mfa.idle);
    }
    // No database here: flow and session records become structured log lines.
    let (finish_tx, finish_rx) = tokio::sync::watch::channel(false);
    // The configuration as of the last reload: the resource names of the rules flows matched.
    let live = LiveConfig::new(config);
    let config = live.get();
    let flow_audit = runtime.spawn(
        FlowAudit::new(flow_log, flow_rx, {
            let live = live.clone();
            Box::new(move || Arc::new(live.get().policy.clone()))
        })
        .run(Destination::Log, finish_rx),
    );
    handle.set_peers(static_peers(&config.policy, &config.peers));
    // Endpoint memory: call the peers back where they last were, and keep writing it.
    let (memory_stop, memory_rx) = tokio::sync::watch::channel(false);
    let memory = crate::control::site_gateway::endpoints::start(
        &runtime,
        &handle,
        &config.gateway.private_key_file,
        memory_rx,
    );
    let uapi = UapiServer::start(
        handle.clone(),
        &config.gateway.interface,
        config.gateway.listen.port(),
    );
    let metrics = Arc::new(crate::metrics::Metrics::new());
    metrics.register_collector(Box::new(crate::metrics::gateway::GatewayCollector {
        gateway: handle.clone(),
    }));
    let log_stats = || log_gateway_stats(&handle);
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
                _ = hup.recv() => match crate::control::reload::reread(&live.get()) {
                    Ok((new, changes)) => {
                        handle.set_peers(static_peers(&new.policy, &new.peers));
                        crate::telemetry::set_level(new.log.level);
                        live.replace(Arc::new(new));
                        crate::control::reload::log_changes(&changes);
                        metrics.reload(true);
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
    let _ = memory_stop.send(true);
    if let Some(memory) = memory {
        let _ = runtime.block_on(memory);
    }
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
    run_server(path, |config, shutdown, reloads| {
        Box::pin(serve::serve(config, shutdown, reloads))
    })
}

/// `sesame portal`: the portal, directory sync, audit jobs and the site gateways' feeds, with
/// no gateway, until SIGINT/SIGTERM; SIGHUP reloads.
pub fn portal(path: &Path) -> anyhow::Result<ExitCode> {
    run_server(path, |config, shutdown, reloads| {
        Box::pin(serve::portal(config, shutdown, reloads))
    })
}

/// The shutdown request of a server: SIGTERM or SIGINT.
type Shutdown = crate::service::BoxFuture<'static, ()>;

/// Runs a server's roles on a two-thread runtime: SIGTERM/SIGINT request the shutdown, each
/// SIGHUP queues a reload.
fn run_server(
    path: &Path,
    start: impl FnOnce(
        Config,
        Shutdown,
        tokio::sync::mpsc::Receiver<()>,
    ) -> crate::service::BoxFuture<'static, anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
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
        start(config, Box::pin(shutdown), reload_rx).await
    })?;
    Ok(ExitCode::SUCCESS)
}
