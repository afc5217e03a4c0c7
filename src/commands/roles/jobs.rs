//! The loop roles (publisher, directory sync and reloads, session purge, audit jobs), the flow
//! audit writer, the last checkpoint and the store's close.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use crate::audit::checkpoint::{AuditKey, CheckpointReason, Sealer};
use crate::config::{Config, LiveConfig};
use crate::control::audit_jobs::{run_checkpoints, Retention, PURGE_PERIOD};
use crate::control::flow_audit::{Destination, FlowAudit};
use crate::control::leader::{renew_interval, Leadership};
use crate::control::reload::ServeReloader;
use crate::control::ControlPlane;
use crate::gateway::flowlog::{FlowLog, FlowReceiver};
use crate::store::Store;

use super::{Roles, Stage};

/// How often expired web sessions are purged.
const SESSION_PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// The publisher: the desired peer set to the gateway (or the feeds), on demand and polled.
pub fn publisher(roles: &mut Roles, control: &Arc<ControlPlane>) {
    let control = Arc::clone(control);
    roles.spawn("publisher", Stage::Loops, move |stop| async move {
        control.run(stop).await;
        Ok(())
    });
}

/// Reloads on each message of `reloads` (SIGHUP); the reloader owns the directory sync loop
/// (restarted when a reload changes its settings).
pub fn directory_sync(roles: &mut Roles, reloader: ServeReloader, reloads: mpsc::Receiver<()>) {
    roles.spawn("directory sync", Stage::Loops, move |stop| async move {
        reloader.run(reloads, stop).await;
        Ok(())
    });
}

/// Purges expired web sessions every [`SESSION_PURGE_INTERVAL`].
pub fn session_purge(roles: &mut Roles, store: &Store) {
    let store = store.clone();
    roles.spawn("session purge", Stage::Loops, move |stop| async move {
        purge_sessions(store, stop).await;
        Ok(())
    });
}

/// The audit jobs: periodic signed checkpoints, retention, and the last checkpoint of the run
/// (after the flow audit writer drained its queue).
pub fn audit_jobs(
    roles: &mut Roles,
    store: &Store,
    sealer: &Arc<Sealer>,
    config: &Config,
    leader: &Arc<Leadership>,
) {
    let (s, k, interval, l) = (
        store.clone(),
        Arc::clone(sealer),
        config.audit.checkpoint_interval,
        Arc::clone(leader),
    );
    roles.spawn("audit checkpoints", Stage::Loops, move |stop| async move {
        run_checkpoints(s, k, interval, l, stop).await;
        Ok(())
    });
    let retention = Retention {
        store: store.clone(),
        sealer: Arc::clone(sealer),
        keep: config.audit.retention,
        leader: Arc::clone(leader),
    };
    roles.spawn("audit retention", Stage::Loops, move |stop| async move {
        retention.run(PURGE_PERIOD, stop).await;
        Ok(())
    });
    let (store, sealer, leader) = (store.clone(), Arc::clone(sealer), Arc::clone(leader));
    roles.at_stop("audit seal", Stage::Seal, move || async move {
        // The last word of this run: the head as it is now, signed (by the leader only, like
        // every checkpoint).
        if !leader.is_leader() {
            return Ok(());
        }
        if let Err(e) = store
            .checkpoint_audit(&sealer, CheckpointReason::Shutdown)
            .await
        {
            tracing::error!(error = %e, "cannot write the shutdown audit checkpoint");
        }
        Ok(())
    });
}

/// The jobs lease (`control::leader`): taken and renewed while the loops run, released once
/// the last checkpoint is signed (register it after [`audit_jobs`]).
pub fn jobs_lease(
    roles: &mut Roles,
    store: &Store,
    leader: &Arc<Leadership>,
    config: &Config,
    metrics: &Arc<crate::metrics::Metrics>,
) {
    let renew = renew_interval(config.directory.as_ref().map(|d| d.sync_interval));
    let (l, s, m) = (Arc::clone(leader), store.clone(), Arc::clone(metrics));
    roles.spawn("jobs lease", Stage::Loops, move |stop| async move {
        l.run(s, renew, Some(m), stop).await;
        Ok(())
    });
    let (leader, store) = (Arc::clone(leader), store.clone());
    roles.at_stop("jobs lease release", Stage::Seal, move || async move {
        leader.release(&store).await;
        Ok(())
    });
}

/// The flow audit writer: the gateway's session and flow records into `destination`; it drains
/// its queue after the data plane stopped (it writes the gateway's last records).
pub fn flow_audit(
    roles: &mut Roles,
    live: &LiveConfig,
    log: Arc<FlowLog>,
    records: FlowReceiver,
    destination: Destination,
) {
    let policy = live.clone();
    let writer = FlowAudit::new(
        log,
        records,
        Box::new(move || Arc::new(policy.get().policy.clone())),
    );
    roles.spawn("flow audit", Stage::AuditWriter, move |stop| async move {
        writer.run(destination, stop).await;
        Ok(())
    });
}

/// The store's pool closes last.
pub fn store(roles: &mut Roles, store: &Store) {
    let store = store.clone();
    roles.at_stop("store", Stage::Last, move || async move {
        store.close().await;
        Ok(())
    });
}

/// The audit signing key (created 0600 on first start) and the checkpoint file.
pub fn audit_sealer(config: &Config) -> anyhow::Result<Sealer> {
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
