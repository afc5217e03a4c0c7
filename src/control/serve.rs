//! `sesame serve`: store, directory, gateway, control plane and portal in one process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use crate::audit::checkpoint::{self, AuditKey, CheckpointReason, Sealer};
use crate::audit::retention::{Retention, PURGE_PERIOD};
use crate::config::Config;
use crate::directory::Directory;
use crate::directory::LdapDirectory;
use crate::gateway::flowlog::DEFAULT_QUEUE;
use crate::gateway::uapi::UapiServer;
use crate::gateway::{keys, FlowLog, Gateway};
use crate::metrics::gateway::GatewayCollector;
use crate::metrics::Metrics;
use crate::portal::listen::{self, TlsFiles};
use crate::portal::{router, AppState};
use crate::store::Store;

use super::flow_audit::{Destination, FlowAudit};
use super::reload::{ServeReloader, SwappableDirectory};
use super::{ControlPlane, PeerSink};

/// How often expired web sessions are purged.
const SESSION_PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Runs every role until `shutdown` completes, then stops them in order (portal, loops,
/// gateway).
/// Each message on `reloads` (SIGHUP) re-reads the configuration (see [`super::reload`]).
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloads: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let dir_cfg = config.directory.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: the [directory] section is missing: `sesame serve` authenticates users against LDAP; add [directory] (see config/sesame.toml), or run `sesame gateway` for the data plane alone",
            config.path.display()
        )
    })?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The audit key first: a key others can read stops start-up before anything runs.
    let sealer = Arc::new(audit_sealer(&config)?);

    // Bind first: a busy port stops start-up before the gateway touches the network.
    let listener = listen::bind(config.portal.listen)?;
    let metrics_listener = crate::metrics::bind(config.metrics.listen).await?;
    let metrics = Arc::new(Metrics::new());
    let store = Store::connect(&config.database.url)
        .await
        .with_context(|| {
            format!(
                "opening the database (database.url in {})",
                config.path.display()
            )
        })?;
    let directory = Arc::new(SwappableDirectory::new(
        Arc::new(LdapDirectory::new(&dir_cfg).context("preparing the directory ([directory])")?),
        Arc::clone(&metrics),
    ));
    let key = keys::load_private_key(&config.gateway.private_key_file)?;

    // The peer set comes from the store before the gateway handles its first packet.
    let initial = super::plane::compute_desired(&store, &config)
        .await
        .context("reading the enrolled devices before starting the gateway")?;
    let (flow_log, flow_rx) = FlowLog::new(config.audit.flow_window, DEFAULT_QUEUE);
    let gateway = Gateway::start_audited(&config.gateway, key, Some(Arc::clone(&flow_log)))
        .context("starting the gateway")?;
    let handle = gateway.handle();
    PeerSink::set_peers(&handle, initial);
    let uapi = UapiServer::start(
        handle.clone(),
        &config.gateway.interface,
        config.gateway.listen.port(),
    );
    metrics.register_collector(Box::new(GatewayCollector {
        gateway: handle.clone(),
    }));
    let control = ControlPlane::new(store.clone(), Arc::clone(&config), Arc::new(handle));
    control.observe_with(Arc::clone(&metrics));
    // The flow audit writer outlives the other loops: it writes the gateway's last records.
    let (finish_tx, finish_rx) = watch::channel(false);
    let flow_audit = tokio::spawn(
        FlowAudit::new(flow_log, flow_rx, {
            let control = Arc::clone(&control);
            Box::new(move || Arc::new(control.config().policy.clone()))
        })
        .run(Destination::Store(store.clone()), finish_rx),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(Arc::clone(&control).run(stop_rx.clone()));
    // The reloader owns the directory sync loop (restarted when a reload changes its settings).
    let reloader = ServeReloader {
        control: Arc::clone(&control),
        directory: Arc::clone(&directory),
        store: store.clone(),
        metrics: Arc::clone(&metrics),
    };
    tasks.spawn(reloader.run(reloads, stop_rx.clone()));
    tasks.spawn(purge_sessions(store.clone(), stop_rx.clone()));
    tasks.spawn(checkpoint::run_periodic(
        store.clone(),
        Arc::clone(&sealer),
        config.audit.checkpoint_interval,
        stop_rx.clone(),
    ));
    let retention = Retention {
        store: store.clone(),
        sealer: Arc::clone(&sealer),
        keep: config.audit.retention,
    };
    tasks.spawn(retention.run(PURGE_PERIOD, stop_rx.clone()));
    let mut metrics_stop = stop_rx.clone();
    let metrics_server = tokio::spawn(crate::metrics::serve(
        metrics_listener,
        Arc::clone(&metrics),
        async move {
            let _ = metrics_stop.changed().await;
        },
    ));

    let state = AppState::new(
        Arc::clone(&config),
        store.clone(),
        directory as Arc<dyn Directory>,
        Arc::clone(&control),
        metrics,
    );
    let tls = match (&config.portal.tls_cert_file, &config.portal.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let portal_result = listen::serve(listener, tls, router(state), shutdown).await;

    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // The gateway stops first (open sessions end, windows flush), then the writer drains the
    // queue into the store, then the head is signed, then the store closes.
    tokio::task::spawn_blocking(move || gateway.shutdown())
        .await
        .context("stopping the gateway")?;
    let _ = finish_tx.send(true);
    let _ = flow_audit.await;
    // The last word of this run: the head as it is now, signed.
    if let Err(e) = store
        .checkpoint_audit(&sealer, CheckpointReason::Shutdown)
        .await
    {
        tracing::error!(error = %e, "cannot write the shutdown audit checkpoint");
    }
    let _ = metrics_server.await;
    if let Some(uapi) = uapi {
        uapi.stop();
    }
    store.close().await;
    portal_result
}

/// The audit signing key (created 0600 on first start) and the checkpoint file.
fn audit_sealer(config: &Config) -> anyhow::Result<Sealer> {
    let path = &config.audit.signing_key_file;
    let (key, created) = AuditKey::load_or_create(path)
        .with_context(|| format!("[audit] signing_key_file in {}", config.path.display()))?;
    if created {
        tracing::warn!(
            path = %path.display(),
            public_key = %key.public_base64(),
            "new audit signing key created: keep a copy of its public key with the auditors"
        );
    }
    Ok(Sealer {
        key,
        file: config.audit.checkpoint_file.clone(),
    })
}

async fn purge_sessions(store: Store, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SESSION_PURGE_INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = store.purge_expired_sessions().await {
            tracing::warn!(error = %e, "cannot purge expired sessions");
        }
    }
}
