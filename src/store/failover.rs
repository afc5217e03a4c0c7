//! Which PostgreSQL host the store's pool connects to: the first of the URL's hosts that answers
//! (and accepts writes, with `target_session_attrs=read-write`), followed across a restart or a
//! failover to a promoted standby without restarting the process.
//!
//! sqlx opens every new connection of a pool with the pool's current connect options, so the
//! pool points at one host at a time. With several hosts, a watcher task checks that host every
//! second (one query on a connection of its own) and, when it stops answering or accepting
//! writes, tries the hosts again (the current one first, then the URL's order) and points the
//! pool at the first that fits. Connections opened before a switch are dropped when next
//! checked out (their age tells), and a new connection that reaches a server in recovery or
//! read-only is refused as it opens, as libpq does. While no host fits, a checkout fails after
//! [`ACQUIRE_TIMEOUT`]: [`StoreError::Unavailable`], which the portal answers 503
//! `database_unavailable`. The change listener ([`Failover::listener`]) follows the same host.

use std::str::FromStr as _;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use sqlx::{AnyPool, ConnectOptions as _, Connection as _};
use tokio::sync::watch;

use super::pg_hosts::{self, SessionAttrs};
use super::{redact_url, StoreError, ACQUIRE_TIMEOUT};

/// How often the watcher checks the host the pool uses.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long the watcher waits for one host to connect and answer its check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// True on a server that cannot take writes: a standby (in recovery), or one set read-only
/// (`default_transaction_read_only`, as libpq's `read-write` check reads it).
const READ_ONLY_SQL: &str =
    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'";

/// One host of the URL, as the pool and the watcher open it.
struct Host {
    label: String,
    any: AnyConnectOptions,
    pg: PgConnectOptions,
}

/// The host the pool uses now, and since when (connections older than that go).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Current {
    index: usize,
    since: Instant,
}

/// The hosts of a PostgreSQL URL and the one the store's pool uses.
pub(crate) struct Failover {
    hosts: Vec<Host>,
    attrs: SessionAttrs,
    current: watch::Sender<Current>,
}

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.hosts.iter().map(|h| h.label.as_str()).collect();
        f.debug_struct("Failover")
            .field("hosts", &labels)
            .field("attrs", &self.attrs)
            .finish_non_exhaustive()
    }
}

/// Opens the pool of a `postgres://` URL (one host or several) and, with several, starts its
/// watcher (it ends when the last [`Failover`] handle goes or the pool closes).
pub(crate) async fn connect(url: &str) -> Result<(AnyPool, Arc<Failover>), StoreError> {
    let targets = pg_hosts::parse(url).map_err(|source| StoreError::PgUrl {
        url: redact_url(url),
        source,
    })?;
    let hosts = targets
        .hosts
        .iter()
        .map(|h| {
            let invalid = || StoreError::InvalidUrl(redact_url(url));
            Ok(Host {
                label: h.label.clone(),
                any: AnyConnectOptions::from_str(&h.url).map_err(|_| invalid())?,
                pg: PgConnectOptions::from_str(&h.url)
                    .map_err(|_| invalid())?
                    .disable_statement_logging(),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let attrs = targets.attrs;
    // With several hosts, start on the first that fits (the first host otherwise: the pool then
    // reports it unavailable as with one host).
    let index = if hosts.len() > 1 {
        find(&hosts, attrs, 0).await.map_or(0, |(i, _)| i)
    } else {
        0
    };
    let (current, seen) = watch::channel(Current {
        index,
        since: Instant::now(),
    });
    let mut options = AnyPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .before_acquire(move |_conn, meta| {
            // Opened before the pool switched hosts: to the old one, which failed.
            let stale = meta.age > seen.borrow().since.elapsed();
            Box::pin(async move { Ok(!stale) })
        });
    if attrs == SessionAttrs::ReadWrite {
        options = options.after_connect(|conn, _meta| {
            Box::pin(async move {
                let read_only: bool = sqlx::query_scalar(READ_ONLY_SQL).fetch_one(conn).await?;
                if read_only {
                    return Err(sqlx::Error::Configuration(
                        "target_session_attrs=read-write: this server is read-only (a standby)"
                            .into(),
                    ));
                }
                Ok(())
            })
        });
    }
    let pool = options.connect_with(hosts[index].any.clone()).await?;
    let failover = Arc::new(Failover {
        hosts,
        attrs,
        current,
    });
    if failover.hosts.len() > 1 {
        tracing::info!(host = %failover.hosts[index].label, "PostgreSQL: connected");
        tokio::spawn(watch_hosts(Arc::downgrade(&failover), pool.clone()));
    }
    Ok((pool, failover))
}

impl Failover {
    /// Points the pool at host `index` (nothing when it already is).
    fn switch(&self, pool: &AnyPool, index: usize) {
        let was = self.current.borrow().index;
        if was == index {
            return;
        }
        pool.set_connect_options(self.hosts[index].any.clone());
        self.current.send_replace(Current {
            index,
            since: Instant::now(),
        });
        tracing::warn!(
            from = %self.hosts[was].label,
            to = %self.hosts[index].label,
            "PostgreSQL: switched to another host"
        );
    }

    /// A change listener on the host the pool uses now, on `channel`, and what tells it the
    /// host changed.
    pub(crate) async fn listener(
        &self,
        channel: &str,
    ) -> Result<(PgListener, watch::Receiver<Current>), StoreError> {
        let mut seen = self.current.subscribe();
        let index = seen.borrow_and_update().index;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(self.hosts[index].pg.clone())
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(channel).await?;
        Ok((listener, seen))
    }
}

/// The watcher: every [`CHECK_INTERVAL`], the current host still fits or the pool moves to the
/// first host that does.
async fn watch_hosts(failover: Weak<Failover>, pool: AnyPool) {
    let mut probe: Option<PgConnection> = None;
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        let Some(f) = failover.upgrade() else { return };
        if pool.is_closed() {
            return;
        }
        if let Some(conn) = probe.as_mut() {
            if fits(conn, f.attrs).await {
                continue;
            }
        }
        probe = None;
        let start = f.current.borrow().index;
        if let Some((index, conn)) = find(&f.hosts, f.attrs, start).await {
            probe = Some(conn);
            f.switch(&pool, index);
        }
    }
}

/// The first host that connects and fits, trying `start` first then the others in order.
async fn find(hosts: &[Host], attrs: SessionAttrs, start: usize) -> Option<(usize, PgConnection)> {
    let order = std::iter::once(start).chain((0..hosts.len()).filter(|&i| i != start));
    for index in order {
        let host = &hosts[index];
        let opened = tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(&host.pg));
        match opened.await {
            Ok(Ok(mut conn)) => {
                if fits(&mut conn, attrs).await {
                    return Some((index, conn));
                }
                tracing::debug!(host = %host.label, "PostgreSQL: host read-only, skipped");
            }
            Ok(Err(e)) => tracing::debug!(host = %host.label, error = %e, "PostgreSQL: host down"),
            Err(_) => tracing::debug!(host = %host.label, "PostgreSQL: host timed out"),
        }
    }
    None
}

/// Whether the server behind `conn` answers within [`PROBE_TIMEOUT`] and, for `read-write`,
/// takes writes.
async fn fits(conn: &mut PgConnection, attrs: SessionAttrs) -> bool {
    let check = async {
        match attrs {
            SessionAttrs::Any => conn.ping().await.map(|()| true),
            SessionAttrs::ReadWrite => sqlx::query_scalar::<_, bool>(READ_ONLY_SQL)
                .fetch_one(&mut *conn)
                .await
                .map(|read_only| !read_only),
        }
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, check).await,
        Ok(Ok(true))
    )
}
