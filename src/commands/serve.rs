//! `sesame serve`: store, directory, gateway, control plane and portal in one process (the one
//! place where the portal and the control plane meet).

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

use crate::control::emergency::{self, Emergency};
use crate::control::flow_audit::{Destination, FlowAudit};
use crate::control::reload::{ServeReloader, SwappableDirectory};
use crate::control::{failstatic, ControlPlane};

/// How often expired web sessions are purged.
const SESSION_PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Runs every role until `shutdown` completes, then stops them in order (portal, loops,
/// gateway).
/// Each message on `reloads` (SIGHUP) re-reads the configuration (see [`crate::control::reload`]).
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
    if config.portal.insecure_plaintext && config.portal.public_url.starts_with("http://") {
        tracing::warn!(
            public_url = %config.portal.public_url,
            "[portal] insecure_plaintext = true: passwords and session cookies cross the network in clear (labs only)"
        );
    }
    let listener = listen::bind(config.portal.listen)?;
    let metrics_listener = crate::metrics::bind(config.metrics.listen).await?;
    let metrics = Arc::new(Metrics::new());
    let directory = Arc::new(SwappableDirectory::new(
        Arc::new(LdapDirectory::new(&dir_cfg).context("preparing the directory ([directory])")?),
        Arc::clone(&metrics),
    ));
    let key = keys::load_private_key(&config.gateway.private_key_file)?;

    // The shutdown request as a watch: start-up may wait for the database.
    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(true);
    });

    // The peer set comes from the store before the gateway handles its first packet; if the
    // store cannot be read, from the local cache (fail-static) while the store is retried.
    let (flow_log, flow_rx) = FlowLog::new(config.audit.flow_window, DEFAULT_QUEUE);
    let gateway = Gateway::start_audited(&config.gateway, key, Some(Arc::clone(&flow_log)))
        .context("starting the gateway")?;
    let handle = gateway.handle();
    let cache = failstatic::open_cache(&config.gateway.private_key_file);
    let cached = cache
        .as_ref()
        .map(|c| failstatic::load_cached(c, &handle.public_key()))
        .unwrap_or_default();
    // The admin socket works from now on, database or not.
    let state_dir = config
        .gateway
        .private_key_file
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let emergency = Arc::new(Emergency::open(&state_dir).context("reading pending revocations")?);
    let admin = tokio::spawn(emergency::serve_socket(
        Arc::clone(&emergency),
        Arc::new(handle.clone()),
        shutdown_rx.clone(),
    ));
    tokio::task::yield_now().await;
    if admin.is_finished() {
        tracing::warn!("the admin socket could not start: emergency revocation unavailable");
    }
    let Some(store) = failstatic::connect_or_serve_cached(
        &config,
        &handle,
        &cached,
        &emergency.pending_ids(),
        &mut shutdown_rx,
    )
    .await
    else {
        tracing::info!("shutting down before the database was reachable");
        tokio::task::spawn_blocking(move || gateway.shutdown())
            .await
            .context("stopping the gateway")?;
        return Ok(());
    };
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
    if let Some(cache) = cache {
        control.seed_cache(cached);
        control.set_peer_cache(cache);
    }
    control.set_emergency(Arc::clone(&emergency));
    if let Err(e) = emergency.flush(&store).await {
        tracing::warn!(error = %e, "pending emergency revocations not written yet");
    }
    // Writes the cache now (same set: the gateway keeps every session).
    let _ = control.reconcile().await;
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
        control.clone(),
        metrics,
    );
    let tls = match (&config.portal.tls_cert_file, &config.portal.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let portal_result = listen::serve(listener, tls, router(state), async move {
        let _ = shutdown_rx.wait_for(|stop| *stop).await;
    })
    .await;

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
    if let Ok(Err(e)) = admin.await {
        tracing::warn!(error = %e, "admin socket");
    }
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
