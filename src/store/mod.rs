//! Persistence: users, devices, enrolment codes, web sessions and the audit chain, on SQLite or PostgreSQL.
//!
//! One code path serves both databases: the pool is a sqlx `Any` pool and every query is written
//! once, with `$1`-style placeholders (SQLite accepts them too). Every multi-step write runs in a
//! *writer transaction* ([`Store::write_tx`]) that is serialised across processes: `BEGIN
//! IMMEDIATE` on SQLite, a transaction-scoped advisory lock on PostgreSQL. That is what keeps the
//! audit hash chain from forking and two enrolments from picking the same tunnel address.
//!
//! Times are `i64` unix milliseconds (UTC), read from the store's [`Clock`] so tests control time.

mod audit;
mod audit_query;
mod batches;
mod changed_devices;
mod codes;
mod device_search;
mod devices;
mod enrol;
mod failover;
mod group;
mod leases;
mod login_failures;
mod mfa;
mod peer_changes;
mod pg_hosts;
mod review;
mod sessions;
mod sites;
mod suspend;
mod users;

pub use crate::audit::AuditFilter;
pub use audit::INSERT_ROWS;
pub use audit_query::LastSeen;
pub use batches::{Batch, BatchCode};
pub use codes::{
    generate_code, normalize_code, validate as validate_code_request, CodeKey, CodeState,
    CreatedCode, EnrolmentCode, NewCode, CODE_ALPHABET, DEFAULT_CODE_TTL,
};
pub use device_search::DeviceSearch;
pub use devices::{Device, DeviceStatus, DeviceWithUser, Rotation};
pub use enrol::{AddressPool, EnrolRequest, Enrolled};
pub use login_failures::{FailureCount, FailureWindows};
pub use mfa::{Factor, OpenWindow, Window, WindowOpening};
pub use peer_changes::{ChangeHorizon, PeerChange, PeerChangeListener};
pub use pg_hosts::{PgTargets, PgUrlError, SessionAttrs};
pub use review::{FactorUse, GrantedTo};
pub use sessions::{NewSession, WebSession};
pub use suspend::GRACE_EXPIRED_REASON;
pub use users::{normalize_username, User};

use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Any, AnyPool, ConnectOptions as _, Connection as _, Executor as _, Transaction};

use crate::time::{Clock, SystemClock};

/// How long a connection attempt or a pool checkout may wait before the store reports
/// [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on a lock held by another connection or process.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite page cache per connection (KiB; SQLite's default is 2,000). An audit append batch
/// (512 events) dirties a leaf page per device of the device index: with the default cache
/// those pages spilled to the WAL before the commit wrote them again (bench/REPORT.md,
/// "Audit inserts, before/after (auditins)"). 8 MiB keeps a batch in memory; at most 4
/// connections, so 32 MiB at worst.
const SQLITE_CACHE_KIB: i64 = 8 * 1024;
/// WAL pages after which a commit checkpoints into the database file (SQLite's default is 1,000).
/// A batch writes ~560 pages, so the default checkpointed every other batch and copied the same
/// index pages again each time; 10,000 pages (~40 MiB of WAL) copies each page once per many
/// batches. Measured in the same bench as above.
const SQLITE_WAL_AUTOCHECKPOINT: u32 = 10_000;
/// Key of the PostgreSQL advisory lock serialising writer transactions ("SESAME" in ASCII).
const PG_WRITER_LOCK: i64 = 0x5345_5341_4d45;

// Embedded at compile time: cargo does not watch migrations/, so a new migration file alone does
// not rebuild the crate (the change that comes with it does).
static MIGRATOR_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static MIGRATOR_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Everything the store can fail with. Domain refusals are distinct variants so the portal can
/// map each to its stable API code; [`StoreError::Unavailable`] means "answer 503, retry later".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite:///path/to/sesame.db or postgres://user@host/db")]
    InvalidUrl(String),
    #[error("invalid PostgreSQL URL {url}: {source}")]
    PgUrl {
        url: String,
        #[source]
        source: PgUrlError,
    },
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Rotation would extend the device beyond `devices.max_lifetime`: enrol again.
    #[error("device {0} reached its maximum lifetime")]
    DeviceTooOld(i64),
    /// The device rotated its key less than the minimum interval ago.
    #[error("device rotated too recently; retry in {retry_after_secs}s")]
    RotationTooSoon { retry_after_secs: u64 },
    #[error("unknown enrolment code")]
    CodeNotFound,
    #[error("enrolment code expired")]
    CodeExpired,
    #[error("enrolment code already used")]
    CodeAlreadyUsed,
    #[error("enrolment code issued for another user")]
    CodeWrongUser,
    #[error("this public key is already used by a device")]
    PublicKeyInUse,
    #[error("no free tunnel address left in {network}")]
    AddressPoolExhausted { network: ipnet::Ipv4Net },
    #[error("no device with id {0}")]
    DeviceNotFound(i64),
    #[error("device {0} is revoked")]
    DeviceRevoked(i64),
    /// A second-factor registration code that is unknown, expired, used or another user's.
    #[error("second-factor registration code unknown, expired or already used")]
    MfaRegistrationCode,
    /// Confirming a second factor with no registration in progress.
    #[error("no second-factor registration in progress")]
    MfaNotPending,
    #[error("the audit log is append-only")]
    AuditAppendOnly,
    #[error("audit checkpoint: {0}")]
    Checkpoint(#[from] crate::audit::checkpoint::CheckpointError),
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            sqlx::Error::Database(db) => {
                let text = format!("{} {}", db.constraint().unwrap_or(""), db.message());
                if db.is_unique_violation() && text.contains("public_key") {
                    StoreError::PublicKeyInUse
                } else if text.contains("append-only") {
                    StoreError::AuditAppendOnly
                } else if is_unavailable_code(db.code().as_deref()) {
                    StoreError::Unavailable(e)
                } else {
                    StoreError::Database(e)
                }
            }
            _ => StoreError::Database(e),
        }
    }
}

/// Database error codes that mean "the database cannot serve now" rather than "bad request":
/// SQLite BUSY/LOCKED, PostgreSQL connection exceptions (08*), shutdown (57P*), too many
/// connections (53300), a write on a server that became read-only (25006: a demoted primary,
/// until the pool moves to the new one, see `failover`).
fn is_unavailable_code(code: Option<&str>) -> bool {
    match code {
        Some("5") | Some("6") | Some("517") | Some("261") | Some("53300") | Some("25006") => true,
        Some(c) => c.starts_with("08") || c.starts_with("57P"),
        None => false,
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A bound value of a dynamically built query (the audit log's and the device list's filters).
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// `q` with `binds` bound in order (`$1`, `$2`, …).
pub(crate) fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s),
            Bind::Int(i) => q.bind(i),
        };
    }
    q
}

/// The numbered placeholders of a multi-row `VALUES` list: `($1, $2), ($3, $4)` for 2 rows of 2
/// (the group committer writes a batch's rows with one statement).
pub(crate) fn row_placeholders(rows: usize, per_row: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=per_row)
                .map(|c| format!("${}", r * per_row + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Handle on the database; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    clock: Arc<dyn Clock>,
    /// Committer shared by the clones of this store (see `group`).
    group: Arc<group::GroupCommit>,
    /// The portal key codes are hashed with (`[portal] secret_key_file`); without it (tests,
    /// tools that issue no code) codes are stored under plain SHA-256.
    code_key: Option<Arc<CodeKey>>,
    /// PostgreSQL: the hosts of the URL and the one the pool uses (the change listener
    /// follows it, [`Store::listen_peer_changes`]).
    failover: Option<Arc<failover::Failover>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database at `url` and applies pending migrations.
    ///
    /// `sqlite:///var/lib/sesame/sesame.db` creates the parent directory and the file if needed,
    /// in WAL mode with `synchronous=FULL`, foreign keys on, a busy timeout, an 8 MiB page cache and
    /// a checkpoint every 10,000 WAL pages.
    /// `postgres://user@host/db` expects the database to exist; `postgres://user@h1:5432,h2:5432/db?target_session_attrs=read-write`
    /// lists a primary and its standbys, libpq style (`failover` follows the one that takes writes).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, pool, failover) = if let Some(path) = sqlite_path(url) {
            let pool = sqlite_pool(url, &path).await?;
            (Backend::Sqlite, pool, None)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (pool, failover) = failover::connect(url).await?;
            (Backend::Postgres, pool, Some(failover))
        } else {
            return Err(StoreError::InvalidUrl(redact_url(url)));
        };
        let migrator = match backend {
            Backend::Sqlite => &MIGRATOR_SQLITE,
            Backend::Postgres => &MIGRATOR_POSTGRES,
        };
        // A least-privilege PostgreSQL role (docs/audit.md) may not create the migrations table
        // nor change the schema: when the owner role already applied every migration, there is
        // nothing to run.
        if !(backend == Backend::Postgres && all_applied(&pool, migrator).await) {
            migrator.run(&pool).await?;
        }
        let mut conn = pool.acquire().await?;
        device_search::fill_search_text(&mut conn).await?;
        if backend == Backend::Postgres {
            device_search::warn_without_trigram_index(&mut conn).await?;
        }
        drop(conn);
        Ok(Store {
            pool,
            backend,
            clock: Arc::new(SystemClock),
            group: Arc::new(group::GroupCommit::default()),
            code_key: None,
            failover,
        })
    }

    /// The same store hashing enrolment and registration codes with `key` (the portal key):
    /// set it before the store is cloned into the services.
    pub fn with_code_key(mut self, key: Arc<CodeKey>) -> Store {
        self.code_key = Some(key);
        self
    }

    /// The portal key codes are hashed with, when set.
    pub(crate) fn code_key(&self) -> Option<&CodeKey> {
        self.code_key.as_deref()
    }

    /// The same store reading time from `clock` (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Store {
        self.clock = clock;
        self
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool, for queries the repositories do not cover.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Now, in unix milliseconds, from the store's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Checks that the database answers (`/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    /// Closes every connection (waits for checked-out ones to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a writer transaction: serialised with every other writer of this database, in any
    /// process. Use it for every write that reads before it writes.
    pub async fn write_tx(&self) -> Result<Transaction<'static, Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                    .bind(PG_WRITER_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }
}

/// The pool of the SQLite file at `path` (`url` names it in errors).
async fn sqlite_pool(url: &str, path: &std::path::Path) -> Result<AnyPool, StoreError> {
    sqlite_prepare(path).await?;
    let any = sqlite_any_url(path)
        .and_then(|u| AnyConnectOptions::from_str(&u).ok())
        .ok_or_else(|| StoreError::InvalidUrl(url.to_string()))?;
    let pool = AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                conn.execute(format!("PRAGMA cache_size = -{SQLITE_CACHE_KIB}").as_str())
                    .await?;
                conn.execute(
                    format!("PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT}").as_str(),
                )
                .await?;
                Ok(())
            })
        })
        .connect_with(any)
        .await?;
    Ok(pool)
}

/// Whether every migration of `migrator` is recorded as applied in `_sqlx_migrations`.
async fn all_applied(pool: &AnyPool, migrator: &sqlx::migrate::Migrator) -> bool {
    let applied: Result<Vec<i64>, _> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await;
    applied.is_ok_and(|v| migrator.iter().all(|m| v.contains(&m.version)))
}

/// `sqlite:///abs/path`, `sqlite://rel/path` or `sqlite:path` → the file path (percent-decoded
/// with the codec sqlx reads it with: `%20` is a space, a stray `%` stays). Query parameters are
/// ignored.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() || rest == ":memory:" {
        return None;
    }
    let path = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .ok()?;
    Some(PathBuf::from(path.as_ref()))
}

/// The URL sqlx's `Any` driver opens for `path`: every byte but unreserved ones and `/` is
/// percent-encoded (sqlx's own URL builder leaves `%` as is, which would open another file).
fn sqlite_any_url(path: &std::path::Path) -> Option<String> {
    let path = crate::text::percent_encode(path.to_str()?);
    Some(format!("sqlite://{path}?mode=rwc"))
}

/// Creates the parent directory and the file and switches it to WAL (a persistent property of
/// the file, so every later connection uses it).
async fn sqlite_prepare(path: &std::path::Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let conn = options.connect().await?;
    conn.close().await?;
    Ok(())
}

/// The URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// SHA-256 of `secret`, hex: how codes, device tokens and session ids are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// 32 random bytes from the OS, base64url without padding: device tokens and session ids.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_placeholders_number_every_column_of_every_row() {
        assert_eq!(row_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(row_placeholders(1, 1), "($1)");
        assert_eq!(row_placeholders(0, 6), "");
    }

    #[test]
    fn sqlite_urls() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/sesame/s.db"),
            Some(PathBuf::from("/var/lib/sesame/s.db"))
        );
        assert_eq!(sqlite_path("sqlite://s.db"), Some(PathBuf::from("s.db")));
        assert_eq!(
            sqlite_path("sqlite:///tmp/a%20b/%C3%A9.db?mode=rwc"),
            Some(PathBuf::from("/tmp/a b/é.db"))
        );
        // Not an escape: kept as sqlx keeps it (both read the same file).
        assert_eq!(
            sqlite_path("sqlite:///tmp/bad%zz.db"),
            Some(PathBuf::from("/tmp/bad%zz.db"))
        );
        assert_eq!(sqlite_path("sqlite:///tmp/%FF.db"), None, "not UTF-8");
        let path = std::path::Path::new("/tmp/dir with space/é%x?.db");
        let url = sqlite_any_url(path).expect("utf-8 path");
        assert_eq!(
            url,
            "sqlite:///tmp/dir%20with%20space/%C3%A9%25x%3F.db?mode=rwc"
        );
        assert_eq!(sqlite_path(&url).as_deref(), Some(path));
        assert_eq!(sqlite_path("postgres://x"), None);
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("postgres://sesame:secret@db/sesame"),
            "postgres://sesame:***@db/sesame"
        );
        assert_eq!(redact_url("postgres://db/sesame"), "postgres://db/sesame");
    }

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
