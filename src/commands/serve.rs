//! `sesame serve` and `sesame portal`: which roles each runs, composed from
//! [`super::roles`] (the one place where the portal and the control plane meet).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;

use crate::config::{Config, LiveConfig};
use crate::control::emergency::Emergency;
use crate::control::flow_audit::Destination;
use crate::control::leader::Leadership;
use crate::control::peer_cache::PeerCache;
use crate::control::reload::{ServeReloader, SwappableDirectory};
use crate::control::sink::NoLocalGateway;
use crate::control::{failstatic, ControlPlane};
use crate::directory::{Directory, LdapDirectory};
use crate::listen;
use crate::metrics::gateway::GatewayCollector;
use crate::metrics::Metrics;
use crate::service::feed::FeedHub;
use crate::service::Services;
use crate::store::Store;

use super::roles::{dataplane, front, jobs, Roles};

/// Every role in one process (portal, directory sync, audit jobs, publisher, the local
/// gateway), until `shutdown` completes; then [`Roles::stop`] stops them in order.
/// Each message on `reloads` (SIGHUP) re-reads the configuration (see [`crate::control::reload`]).
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloads: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let mut roles = Roles::new();
    roles.shutdown_on(shutdown);
    let front = Front::prepare(config, "sesame serve")?;
    let config = Arc::clone(&front.config);
    // The peer set comes from the store before the gateway handles its first packet; if the
    // store cannot be read, from the local cache (fail-static) while the store is retried.
    let gateway = dataplane::local_gateway(&mut roles, &config)?;
    let handle = gateway.handle.clone();
    let (cache, cached) = dataplane::cached_peers(&config, &handle);
    // The admin socket works from now on, database or not.
    let emergency = dataplane::admin_socket(&mut roles, &config, &handle).await?;
    let mut shutdown_rx = roles.shutdown_requested();
    let Some(store) = failstatic::connect_or_serve_cached(
        &config,
        &handle,
        &cached.devices,
        &emergency.pending_ids(),
        &crate::time::SystemClock,
        &mut shutdown_rx,
    )
    .await
    else {
        tracing::info!("shutting down before the database was reachable");
        return roles.stop().await;
    };
    jobs::store(&mut roles, &store);
    dataplane::uapi(&mut roles, &handle, &config);
    front.metrics.register_collector(Box::new(GatewayCollector {
        gateway: handle.clone(),
    }));
    // The one live configuration: the control plane, the services and the portal read it per
    // request; a reload swaps it for all of them.
    let live = LiveConfig::from(Arc::clone(&config));
    let control = ControlPlane::new(store.clone(), live.clone(), Arc::new(handle));
    control.observe_with(Arc::clone(&front.metrics));
    control.set_feeds(Arc::clone(&front.feeds));
    take_over(&control, &store, cache.map(|c| (c, cached)), emergency).await;
    // The flow audit writer outlives the loops: it writes the gateway's last records.
    let destination = Destination::Store(store.clone());
    jobs::flow_audit(
        &mut roles,
        &live,
        gateway.flow_log,
        gateway.records,
        destination,
    );
    front.start(&mut roles, live, store, control, reloads)?;
    roles.run().await
}

/// The portal, directory sync, the audit jobs and the publisher of the site gateways' feeds:
/// no TUN, no gateway key, no capability. Until `shutdown` completes; SIGHUP reloads.
pub async fn portal(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloads: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    if config.sites.is_empty() {
        anyhow::bail!(
            "{}: no [[site]] section: `sesame portal` feeds site gateways and has none to feed; add a [[site]] per gateway (see config/sesame.toml), or run `sesame serve` for a one-site install",
            config.path.display()
        );
    }
    let mut roles = Roles::new();
    roles.shutdown_on(shutdown);
    let front = Front::prepare(config, "sesame portal")?;
    let config = Arc::clone(&front.config);
    let store = Store::connect(&config.database.url).await.context(
        "impossible d'ouvrir la base de données : vérifiez [database] url / cannot open the database: check [database] url",
    )?;
    jobs::store(&mut roles, &store);
    let live = LiveConfig::from(Arc::clone(&config));
    let control = ControlPlane::new(
        store.clone(),
        live.clone(),
        Arc::new(NoLocalGateway::new(live.clone())),
    );
    control.observe_with(Arc::clone(&front.metrics));
    control.set_feeds(Arc::clone(&front.feeds));
    let _ = control.reconcile().await;
    front.start(&mut roles, live, store, control, reloads)?;
    roles.run().await
}

/// What the portal side of both commands prepares before anything runs: the audit key, the
/// bound listeners (a busy port stops start-up before the gateway touches the network), the
/// metrics and the directory.
struct Front {
    config: Arc<Config>,
    sealer: Arc<crate::audit::checkpoint::Sealer>,
    listener: std::net::TcpListener,
    metrics_listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    directory: Arc<SwappableDirectory>,
    /// The site gateways' feeds, filled by each pass of the control plane.
    feeds: Arc<FeedHub>,
}

impl Front {
    fn prepare(config: Config, command: &str) -> anyhow::Result<Front> {
        let config = Arc::new(config);
        let dir_cfg = config.directory.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: the [directory] section is missing: `{command}` authenticates users against LDAP; add [directory] (see config/sesame.toml), or run `sesame gateway` for the data plane alone",
                config.path.display()
            )
        })?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The audit key first: a key others can read stops start-up before anything runs.
        let sealer = Arc::new(jobs::audit_sealer(&config)?);
        front::warn_if_plaintext(&config);
        let listener = listen::bind(config.portal.listen)?;
        let metrics_listener = crate::metrics::bind(config.metrics.listen)?;
        let metrics = Arc::new(Metrics::new());
        let directory = Arc::new(SwappableDirectory::new(
            Arc::new(
                LdapDirectory::new(&dir_cfg).context("preparing the directory ([directory])")?,
            ),
            Arc::clone(&metrics),
        ));
        Ok(Front {
            config,
            sealer,
            listener,
            metrics_listener,
            metrics,
            directory,
            feeds: Arc::new(FeedHub::new()),
        })
    }

    /// The roles both commands share, once the store answers: publisher, directory sync and
    /// reloads, session purge, audit jobs, metrics, portal.
    fn start(
        self,
        roles: &mut Roles,
        live: LiveConfig,
        store: Store,
        control: Arc<ControlPlane>,
        reloads: mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        jobs::publisher(roles, &control);
        let reloader = ServeReloader {
            control: Arc::clone(&control),
            directory: Arc::clone(&self.directory),
            store: store.clone(),
            metrics: Arc::clone(&self.metrics),
        };
        jobs::directory_sync(roles, reloader, reloads);
        jobs::session_purge(roles, &store);
        // The singleton jobs run on one portal at a time (control::leader).
        let leader = Leadership::new(&self.config.path.display().to_string());
        control.set_leadership(Arc::clone(&leader));
        jobs::audit_jobs(roles, &store, &self.sealer, &self.config, &leader);
        jobs::jobs_lease(roles, &store, &leader, &self.config, &self.metrics);
        front::metrics(roles, self.metrics_listener, &self.metrics);
        let store = super::with_code_key(store, &self.config)?;
        let services = Services::new(live, store.clone())
            .with_directory(self.directory as Arc<dyn Directory>)
            .with_publisher(control)
            .with_feeds(self.feeds)
            .with_metrics(self.metrics);
        let services = super::with_mfa(services, self.config.mfa.as_ref(), &store)?;
        front::portal(roles, self.listener, &self.config, services);
        Ok(())
    }
}

/// The control plane takes over from start-up: the peer cache (and what it held), the
/// revocations made at the gateway while the store was down; then it publishes once, which
/// writes the cache now (same set: the gateway keeps every session).
async fn take_over(
    control: &ControlPlane,
    store: &Store,
    cache: Option<(PeerCache, failstatic::Cached)>,
    emergency: Arc<Emergency>,
) {
    if let Some((cache, cached)) = cache {
        control.seed_cache(cached.written_at, cached.devices);
        control.set_peer_cache(cache);
    }
    control.set_emergency(Arc::clone(&emergency));
    if let Err(e) = emergency.flush(store).await {
        tracing::warn!(error = %e, "pending emergency revocations not written yet");
    }
    let _ = control.reconcile().await;
}
