//! The event shipper: delivers the spool to the portals (`POST /api/v1/gateway/events`),
//! oldest first, in batches, the portals tried in turn with a backoff while none answers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::feed::GatewayEvents;

use super::client::{ClientError, PortalClient};
use super::spool::Spool;

/// Most records per request.
pub const BATCH: usize = 500;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between tries while no portal answers: after an outage, the spool leaves
/// within this of a portal's return.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Delivers until `stop` turns true, then tries once more to empty the spool (what is left
/// stays on disk for the next start).
pub async fn run(client: PortalClient, spool: Arc<Spool>, mut stop: watch::Receiver<bool>) {
    let mut portal = 0usize;
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        let stopping = *stop.borrow();
        match deliver(&client, portal, &spool).await {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("audit records delivered to the portal again");
                }
                backoff = FIRST_BACKOFF;
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = spool.arrived.notified() => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
            Err(e) => {
                if stopping {
                    tracing::warn!(
                        records = spool.len(),
                        "audit records left in the spool: delivered at the next start"
                    );
                    return;
                }
                if !std::mem::replace(&mut failing, true)
                    || matches!(e, ClientError::Unauthorized { .. })
                {
                    tracing::warn!(error = %e, records = spool.len(), "cannot deliver audit records: kept in the spool");
                }
                portal = (portal + 1) % client.portals().len().max(1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Sends batches until the spool is empty.
async fn deliver(client: &PortalClient, portal: usize, spool: &Spool) -> Result<(), ClientError> {
    loop {
        let records = spool.peek(BATCH);
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok(());
        };
        client.events(portal, &GatewayEvents { records }).await?;
        if let Err(e) = spool.delivered(last) {
            tracing::error!(error = %e, "cannot rewrite the event spool (delivered records may be sent again; the portal skips them)");
        }
    }
}
