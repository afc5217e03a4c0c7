//! The site gateway's roles, registered in the composition root ([`Roles`]): the gateway, its
//! UAPI and admin sockets (`commands::roles::dataplane`, as `sesame serve` runs them), and its
//! own: the feed (loops), the endpoint memory (loops), the flow audit writer to the spool
//! (audit writer) and the event shipper (last: it delivers the final records).

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::commands::roles::{dataplane, Roles, Stage};
use crate::config::{Config, SiteGatewayConfig};
use crate::control::flow_audit::{Destination, FlowAudit};
use crate::control::peer_cache::PeerCache;
use crate::key::PublicKey;
use crate::policy::Policy;
use crate::time;

use crate::control::site_gateway::cache::{self, SiteState, SITE_CACHE_FILE};
use crate::control::site_gateway::client::PortalClient;
use crate::control::site_gateway::endpoints;
use crate::control::site_gateway::feed::{FeedLoop, FeedStatus};
use crate::control::site_gateway::ship;
use crate::control::site_gateway::spool::{Spool, MAX_RECORDS};

/// What the metrics of a site gateway read.
pub struct SiteGateway {
    pub handle: crate::gateway::GatewayHandle,
    pub status: Arc<FeedStatus>,
    pub spool: Arc<Spool>,
}

/// Starts the site's data plane from its cache (no portal needed), then its feed, its event
/// shipper and the break-glass admin socket.
pub async fn start(
    roles: &mut Roles,
    config: &Config,
    site: &SiteGatewayConfig,
) -> anyhow::Result<SiteGateway> {
    if let Err(e) = crate::secret_file::check(&site.token_file, "gateway.portal_token_file") {
        if !e.is_missing() {
            return Err(e.into());
        }
    }
    let client = PortalClient::new(site).context("preparing the feed client ([gateway])")?;
    let key_dir = config
        .gateway
        .private_key_file
        .parent()
        .unwrap_or(std::path::Path::new("."));
    let spool = Arc::new(
        Spool::open(key_dir, MAX_RECORDS)
            .context("opening the event spool beside the gateway key")?,
    );
    let gw = dataplane::local_gateway(roles, config)?;
    let handle = gw.handle.clone();
    let public = handle.public_key();
    let peer_cache = crate::control::failstatic::open_cache(&config.gateway.private_key_file);
    let site_cache = peer_cache.as_ref().map(|c| c.sibling(SITE_CACHE_FILE));
    // The break-glass path works with every portal down: `sesame devices revoke ID --emergency`.
    let emergency = dataplane::admin_socket(roles, config, &handle).await?;
    let status = Arc::new(FeedStatus::default());
    let policy = Arc::new(ArcSwap::from_pointee(Policy::default()));
    let mut feed = FeedLoop {
        client: client.clone(),
        state: cached_state(
            site_cache.as_ref(),
            &public,
            &site.site,
            config.gateway.max_cache_age,
        ),
        gateway: handle.clone(),
        cache: site_cache,
        policy: Arc::clone(&policy),
        status: Arc::clone(&status),
        emergency: Some(emergency),
    };
    feed.serve_cached();
    if let Some(c) = peer_cache {
        let file = endpoints::file(&c);
        let known = endpoints::call_back(&handle, &file);
        let h = handle.clone();
        roles.spawn("endpoint memory", Stage::Loops, move |stop| async move {
            endpoints::remember(h, file, known, stop).await;
            Ok(())
        });
    }
    roles.spawn("feed", Stage::Loops, move |stop| async move {
        feed.run(stop).await;
        Ok(())
    });
    dataplane::uapi(roles, &handle, config);
    let audit = FlowAudit::new(
        gw.flow_log,
        gw.records,
        Box::new(move || policy.load_full()),
    );
    let dest = Destination::Portal(Arc::clone(&spool));
    roles.spawn("flow audit", Stage::AuditWriter, move |finish| async move {
        audit.run(dest, finish).await;
        Ok(())
    });
    let s = Arc::clone(&spool);
    roles.spawn("event shipper", Stage::Last, move |stop| async move {
        ship::run(client, s, stop).await;
        Ok(())
    });
    tracing::info!(site = %site.site, portals = ?site.portals, "site gateway started");
    Ok(SiteGateway {
        handle,
        status,
        spool,
    })
}

/// The feed state of the last run, if it is this site's and not older than `max_age`.
fn cached_state(
    cache: Option<&PeerCache>,
    public: &PublicKey,
    site: &str,
    max_age: std::time::Duration,
) -> SiteState {
    match cache.and_then(|c| cache::load_fresh(c, public, time::now_ms(), max_age)) {
        Some((written, state)) if state.site == site => {
            tracing::info!(
                peers = state.peers.len(),
                age_s = (time::now_ms() - written) / 1000,
                "serving the cached peer set until a portal answers (fail-static)"
            );
            state
        }
        Some((_, other)) => {
            tracing::warn!(cached_site = %other.site, "the cache belongs to another site: not used");
            SiteState::new(site)
        }
        None => SiteState::new(site),
    }
}
