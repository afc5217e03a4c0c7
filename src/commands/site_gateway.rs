//! `sesame gateway --site NAME`: runs the site gateway role until SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::commands::roles::{front, Roles};
use crate::config::Config;
use crate::metrics::Metrics;

/// Whether `sesame gateway` runs as a site gateway: `--site` given, or `[gateway] site` or
/// `portals` set.
pub fn is_site_mode(path: &Path, site: Option<&str>) -> bool {
    site.is_some()
        || Config::load(path)
            .is_ok_and(|c| c.gateway.site.is_some() || !c.gateway.portals.is_empty())
}

/// `sesame gateway`: a site gateway ([`is_site_mode`]) or the static `[[peer]]`s' gateway.
pub fn gateway(path: &Path, site: Option<&str>) -> anyhow::Result<ExitCode> {
    if is_site_mode(path, site) {
        run(path, site)
    } else {
        super::gateway(path)
    }
}

/// Loads the site gateway's configuration (refusing the portal's sections), then runs it.
pub fn run(path: &Path, site: Option<&str>) -> anyhow::Result<ExitCode> {
    let (config, site) = Config::load_site_gateway(path, site)?;
    crate::telemetry::init_with(&config.log);
    config.check_secret_files()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        let mut roles = Roles::new();
        roles.shutdown_on(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = int.recv() => return,
                    _ = hup.recv() => tracing::info!("SIGHUP: nothing to reload on a site gateway (its peers and rules come from the portal; restart it to change [gateway])"),
                }
            }
        });
        let metrics = Arc::new(Metrics::new());
        let metrics_listener = crate::metrics::bind(config.metrics.listen)?;
        front::metrics(&mut roles, metrics_listener, &metrics);
        let started = crate::commands::roles::site::start(&mut roles, &config, &site).await;
        let gw = match started {
            Ok(gw) => gw,
            Err(e) => {
                let _ = roles.stop().await;
                return Err(e);
            }
        };
        metrics.register_collector(Box::new(crate::metrics::gateway::GatewayCollector {
            gateway: gw.handle,
        }));
        crate::control::site_gateway::metrics::register(&metrics, &site.site, gw.status, gw.spool);
        tracing::debug!(roles = ?roles.names(), "site gateway roles");
        roles.run().await
    })?;
    Ok(ExitCode::SUCCESS)
}
