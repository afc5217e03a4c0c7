//! The data plane roles of `sesame serve`: the local gateway (TUN), its UAPI socket, the admin
//! socket (emergency revocation), and the peer cache it restarts from.

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;
use crate::control::emergency::{self, Emergency};
use crate::control::failstatic;
use crate::control::peer_cache::PeerCache;
use crate::gateway::flowlog::{FlowReceiver, DEFAULT_QUEUE};
use crate::gateway::uapi::UapiServer;
use crate::gateway::{keys, FlowLog, Gateway, GatewayHandle};

use super::{Roles, Stage};

/// The running local gateway: its handle, and the flow records its workers queue.
pub struct LocalGateway {
    pub handle: GatewayHandle,
    pub flow_log: Arc<FlowLog>,
    pub records: FlowReceiver,
}

/// Starts the gateway of `[gateway]` (TUN, UDP socket, workers) with its key; it stops at
/// [`Stage::DataPlane`] (open sessions end, flow windows flush).
pub fn local_gateway(roles: &mut Roles, config: &Config) -> anyhow::Result<LocalGateway> {
    let key = keys::load_private_key(&config.gateway.private_key_file)?;
    let (flow_log, records) = FlowLog::new(config.audit.flow_window, DEFAULT_QUEUE);
    let gateway = Gateway::start_audited(&config.gateway, key, Some(Arc::clone(&flow_log)))
        .context("starting the gateway")?;
    let handle = gateway.handle();
    // `[mfa] idle` (read at start, like the rest of [mfa]).
    if let Some(mfa) = &config.mfa {
        handle.set_mfa_idle(mfa.idle);
    }
    roles.at_stop("gateway", Stage::DataPlane, move || async move {
        tokio::task::spawn_blocking(move || gateway.shutdown())
            .await
            .context("stopping the gateway")
    });
    Ok(LocalGateway {
        handle,
        flow_log,
        records,
    })
}

/// The gateway's UAPI socket (`wg show`), closed last.
pub fn uapi(roles: &mut Roles, handle: &GatewayHandle, config: &Config) {
    let uapi = UapiServer::start(
        handle.clone(),
        &config.gateway.interface,
        config.gateway.listen.port(),
    );
    roles.at_stop("uapi", Stage::Last, move || async move {
        if let Some(uapi) = uapi {
            uapi.stop();
        }
        Ok(())
    });
}

/// The admin socket (emergency revocation, database or not) beside the gateway's key, and the
/// revocations it holds for the store. It serves until the last stage.
pub async fn admin_socket(
    roles: &mut Roles,
    config: &Config,
    handle: &GatewayHandle,
) -> anyhow::Result<Arc<Emergency>> {
    let state_dir = config
        .gateway
        .private_key_file
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let emergency = Arc::new(Emergency::open(&state_dir).context("reading pending revocations")?);
    let (e, h) = (Arc::clone(&emergency), Arc::new(handle.clone()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    roles.spawn("admin socket", Stage::Last, move |stop| async move {
        let task = tokio::spawn(emergency::serve_socket(e, h, stop));
        tokio::task::yield_now().await;
        let _ = ready_tx.send(task.is_finished());
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "admin socket");
        }
        Ok(())
    });
    if ready_rx.await.unwrap_or(true) {
        tracing::warn!("the admin socket could not start: emergency revocation unavailable");
    }
    Ok(emergency)
}

/// The local copy of the peer set the last run published (fail-static), and what it holds
/// (nothing when it is older than `[gateway] max_cache_age`).
pub fn cached_peers(
    config: &Config,
    handle: &GatewayHandle,
) -> (Option<PeerCache>, failstatic::Cached) {
    let cache = failstatic::open_cache(&config.gateway.private_key_file);
    let cached = cache
        .as_ref()
        .map(|c| {
            failstatic::load_cached(
                c,
                &handle.public_key(),
                crate::time::now_ms(),
                config.gateway.max_cache_age,
            )
        })
        .unwrap_or_default();
    (cache, cached)
}
