//! An in-process portal for the portal-side benchmarks (`feed_fanout`, `site_coldstart`): the
//! control plane over a store with the site feeds, its first pass done, and the portal's routes
//! on a loopback port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sesame::config::LiveConfig;
use sesame::control::sink::NoLocalGateway;
use sesame::control::ControlPlane;
use sesame::service::feed::FeedHub;
use sesame::service::Services;
use sesame::store::Store;

/// The running portal.
pub struct Portal {
    pub control: Arc<ControlPlane>,
    pub services: Arc<Services>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// How long the control plane's first pass (every site's set) took.
    pub first_pass: Duration,
}

/// Starts the portal (no local gateway) on `store` with `live`, after its first pass.
pub async fn start(store: &Store, live: &LiveConfig) -> anyhow::Result<Portal> {
    let control = ControlPlane::new(
        store.clone(),
        live.clone(),
        Arc::new(NoLocalGateway::new(live.clone())),
    );
    let hub = Arc::new(FeedHub::new());
    control.set_feeds(Arc::clone(&hub));
    let t = Instant::now();
    control.reconcile().await?;
    let first_pass = t.elapsed();
    let services = Arc::new(
        Services::new(live.clone(), store.clone())
            .with_publisher(control.clone())
            .with_feeds(hub),
    );
    let listener = sesame::listen::bind("127.0.0.1:0".parse()?)?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = sesame::portal::router(sesame::portal::AppState::new(Arc::clone(&services)));
    tokio::spawn(async move {
        let _ = sesame::listen::serve(listener, None, app, std::future::pending()).await;
    });
    Ok(Portal {
        control,
        services,
        base,
        first_pass,
    })
}
