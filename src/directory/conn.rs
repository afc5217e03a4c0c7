//! LDAP connections: TLS settings, timeouts, and small pools of reusable connections.
//!
//! Two pools per directory: `service` connections are bound once as the service account and
//! carry every search; `bind` connections only ever carry password checks (a user bind changes
//! a connection's identity, so they never search). An `ldap3::Ldap` handle multiplexes
//! operations, but a checkout pool keeps concurrent logins on distinct sockets and lets a broken
//! connection be dropped instead of returned.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::{DirectoryError, Unavailable};
use crate::config::DirectoryConfig;

/// Connections open at once per pool; more callers wait (within their timeout).
const MAX_OPEN: usize = 64;
/// Idle connections kept per pool: all of them. With fewer (it was 16), a burst of 50
/// concurrent logins closed most connections after each use and reopened them for the next
/// login: a TCP connect plus, on the service pool, a service bind, i.e. two extra directory
/// round trips per search (measured in bench/portal.sh). A stale one is replaced on use.
const MAX_IDLE: usize = MAX_OPEN;

/// LDAP result codes Sesame distinguishes.
pub(crate) const RC_SUCCESS: u32 = 0;
pub(crate) const RC_SIZE_LIMIT: u32 = 4;
pub(crate) const RC_NO_SUCH_OBJECT: u32 = 32;
pub(crate) const RC_INVALID_CREDENTIALS: u32 = 49;

/// Builds ldap3's connection settings: connect timeout, StartTLS, and, with `ca_file`, a rustls
/// config trusting that CA only (otherwise ldap3 uses the system roots). Certificates are always
/// verified: `set_no_tls_verify` is never called.
pub(crate) fn conn_settings(cfg: &DirectoryConfig) -> Result<LdapConnSettings, DirectoryError> {
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(cfg.timeout)
        .set_starttls(cfg.starttls);
    if let Some(ca) = &cfg.ca_file {
        settings = settings.set_config(tls_config(ca)?);
    }
    Ok(settings)
}

fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let pem = std::fs::read(ca_file).map_err(|source| Unavailable::CaFile {
        path: ca_file.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|source| Unavailable::CaPem {
            path: ca_file.to_path_buf(),
            source,
        })?;
        roots
            .add(cert)
            .map_err(|source| Unavailable::CaCertificate {
                path: ca_file.to_path_buf(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(Unavailable::NoCaCertificate {
            path: ca_file.to_path_buf(),
        }
        .into());
    }
    // The provider named here, not the process default: the CLI's directory commands build
    // this config without `sesame serve`'s start-up having installed one.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|source| Unavailable::TlsSettings { source })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An ldap3 error as `Unavailable`: a timeout says how long it waited, anything else keeps the
/// ldap3 error as its source.
pub(crate) fn unavailable(url: &str, timeout: Duration, e: LdapError) -> DirectoryError {
    let url = url.to_string();
    match e {
        LdapError::Timeout { .. } => Unavailable::Timeout { url, timeout },
        source => Unavailable::Ldap { url, source },
    }
    .into()
}

/// Whether an error means the connection itself is unusable (retry on a fresh one).
fn is_connection_error(e: &LdapError) -> bool {
    !matches!(e, LdapError::Timeout { .. } | LdapError::FilterParsing)
}

pub(crate) struct Pool {
    url: String,
    settings: LdapConnSettings,
    /// Service credentials bound right after connecting; `None` for the password-check pool.
    bind: Option<(String, String)>,
    timeout: Duration,
    idle: Mutex<Vec<ldap3::Ldap>>,
    open: Arc<Semaphore>,
}

/// A connection checked out of a pool; returned to it only by `Pool::put`.
pub(crate) struct Conn {
    ldap: ldap3::Ldap,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Pool {
    pub(crate) fn new(
        url: &str,
        settings: LdapConnSettings,
        bind: Option<(String, String)>,
        timeout: Duration,
    ) -> Pool {
        Pool {
            url: url.to_string(),
            settings,
            bind,
            timeout,
            idle: Mutex::new(Vec::new()),
            open: Arc::new(Semaphore::new(MAX_OPEN)),
        }
    }

    fn unavailable(&self, e: LdapError) -> DirectoryError {
        unavailable(&self.url, self.timeout, e)
    }

    /// An idle live connection, or a new one (connected, TLS done, service bind done).
    async fn get(&self, fresh: bool) -> Result<Conn, DirectoryError> {
        let permit =
            Arc::clone(&self.open)
                .acquire_owned()
                .await
                .map_err(|_| Unavailable::PoolClosed {
                    url: self.url.clone(),
                })?;
        if !fresh {
            loop {
                let next = self.idle.lock().pop();
                let Some(mut ldap) = next else { break };
                if !ldap.is_closed() {
                    return Ok(Conn {
                        ldap,
                        _permit: permit,
                    });
                }
            }
        }
        let ldap = self.connect().await?;
        Ok(Conn {
            ldap,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let (conn, mut ldap) = tokio::time::timeout(
            self.timeout,
            LdapConnAsync::with_settings(self.settings.clone(), &self.url),
        )
        .await
        .map_err(|e| self.unavailable(LdapError::from(e)))?
        .map_err(|e| self.unavailable(e))?;
        ldap3::drive!(conn);
        if let Some((dn, password)) = &self.bind {
            let res = ldap
                .with_timeout(self.timeout)
                .simple_bind(dn, password)
                .await
                .map_err(|e| self.unavailable(e))?;
            if res.rc != RC_SUCCESS {
                return Err(Unavailable::ServiceBind {
                    url: self.url.clone(),
                    dn: dn.clone(),
                    rc: res.rc,
                    text: res.text,
                }
                .into());
            }
        }
        Ok(ldap)
    }

    fn put(&self, conn: Conn) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(conn.ldap);
        }
    }

    /// A search on a service connection; a stale pooled connection (the directory restarted)
    /// is replaced once by a fresh one. Returns the entries (references dropped) and the
    /// result code, which the caller judges (0, size limit…).
    pub(crate) async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        size_limit: i32,
    ) -> Result<(Vec<SearchEntry>, u32), DirectoryError> {
        let mut fresh = false;
        loop {
            let mut conn = self.get(fresh).await?;
            let res = conn
                .ldap
                .with_timeout(self.timeout)
                .with_search_options(ldap3::SearchOptions::new().sizelimit(size_limit))
                .search(base, scope, filter, attrs.to_vec())
                .await;
            match res {
                Ok(ldap3::SearchResult(entries, result)) => {
                    self.put(conn);
                    let entries = entries
                        .into_iter()
                        .filter(|e| !e.is_ref() && !e.is_intermediate())
                        .map(SearchEntry::construct)
                        .collect();
                    return Ok((entries, result.rc));
                }
                Err(e) if !fresh && is_connection_error(&e) => {
                    tracing::debug!(url = %self.url, error = %e, "stale LDAP connection, reconnecting");
                    fresh = true;
                }
                Err(e) => return Err(self.unavailable(e)),
            }
        }
    }

    /// A subtree search read in pages of `page_size` (the paged results control, RFC 2696,
    /// which OpenLDAP and AD both honour), each entry handed to `entry` as it arrives rather
    /// than collected. Every message is awaited at most `timeout`. A stale pooled connection is
    /// replaced once, when the search cannot start on it; a failure once entries have arrived
    /// is an error (the caller's pass fails and the next one reads again). Returns the final
    /// result code, which the caller judges (0, size limit…).
    pub(crate) async fn paged_search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        page_size: i32,
        mut entry: impl FnMut(SearchEntry),
    ) -> Result<u32, DirectoryError> {
        let mut fresh = false;
        let (conn, mut stream) = loop {
            let mut conn = self.get(fresh).await?;
            let started = conn
                .ldap
                .with_timeout(self.timeout)
                .streaming_search_with(
                    ldap3::adapters::PagedResults::new(page_size),
                    base,
                    Scope::Subtree,
                    filter,
                    attrs.to_vec(),
                )
                .await;
            match started {
                Ok(stream) => break (conn, stream),
                Err(e) if !fresh && is_connection_error(&e) => {
                    tracing::debug!(url = %self.url, error = %e, "stale LDAP connection, reconnecting");
                    fresh = true;
                }
                Err(e) => return Err(self.unavailable(e)),
            }
        };
        while let Some(e) = stream.next().await.map_err(|e| self.unavailable(e))? {
            if !e.is_ref() && !e.is_intermediate() {
                entry(SearchEntry::construct(e));
            }
        }
        let result = stream.finish().await;
        self.put(conn);
        Ok(result.rc)
    }

    /// A simple bind as `dn`: `Ok(true)` if the directory accepted the password.
    pub(crate) async fn check_password(
        &self,
        dn: &str,
        password: &str,
    ) -> Result<bool, DirectoryError> {
        let mut fresh = false;
        loop {
            let mut conn = self.get(fresh).await?;
            match conn
                .ldap
                .with_timeout(self.timeout)
                .simple_bind(dn, password)
                .await
            {
                Ok(res) => {
                    self.put(conn);
                    return match res.rc {
                        RC_SUCCESS => Ok(true),
                        RC_INVALID_CREDENTIALS => Ok(false),
                        // busy, unavailable, other: the directory could not judge the password.
                        51 | 52 | 80 => Err(Unavailable::Bind {
                            url: self.url.clone(),
                            rc: res.rc,
                            text: res.text,
                        }
                        .into()),
                        rc => {
                            tracing::warn!(rc, text = %res.text, "unexpected LDAP bind result, treated as a refusal");
                            Ok(false)
                        }
                    };
                }
                Err(e) if !fresh && is_connection_error(&e) => fresh = true,
                Err(e) => return Err(self.unavailable(e)),
            }
        }
    }
}
