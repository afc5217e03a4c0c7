//! The directory: who a person is, whether their password is right, and which groups they are in.
//!
//! The portal and the sync loop see the directory only through [`Directory`], so unit tests can
//! use a stand-in; the real implementation is LDAP (OpenLDAP or Active Directory) in `ldap`.
//!
//! LDAP behaviour in short (details in `ldap.rs` and `conn.rs`):
//! - login: empty/blank password refused before any traffic; login with control characters
//!   refused; service-account search with the RFC 4515-escaped login must find exactly one
//!   entry; the password is checked by a bind as that DN on a separate connection. Unknown
//!   login and wrong password give the same `InvalidCredentials` (and cost the same bind).
//! - groups: OpenLDAP memberOf plus member/uniqueMember searches under `group_base`, nested
//!   groups followed to a fixed point (10 levels at most, cycles harmless: `nesting`); AD: the
//!   in-chain matching rule. Group DNs are returned as the server writes them, sorted. A login
//!   reuses the groups resolved for the same entry less than `min(sync_interval, 60 s)` ago
//!   while its `memberOf` is unchanged (`cache`); `lookup` (role refresh) and `lookup_many`
//!   (sync) always read.
//! - sync pass (`lookup_many`, `bulk.rs`): the same answers as one `lookup` per user, from the
//!   users read 100 to a search and, on OpenLDAP, the groups of `group_base` read once (one
//!   paged search) and walked in memory; what a size limit cuts is read one by one.
//! - disabled: OpenLDAP `pwdAccountLockedTime: 000001010000Z` (ppolicy permanent lock; a
//!   lockout after failed binds is not "disabled"); AD `userAccountControl` bit 0x2.
//! - TLS: ldaps:// or StartTLS, always verified; with `ca_file` only that CA is trusted,
//!   otherwise the system roots. Every connect and operation is bounded by `timeout`, and so is
//!   each `authenticate`/`lookup` as a whole (in a sync pass: each batch, each user's groups).
//! - connections: pooled and reused (service searches; password binds), reopened when stale.

mod cache;
mod conn;
mod error;
pub mod filter;
mod ldap;
mod nesting;

pub use crate::dn::{normalize_dn, Dn, DnError};
pub use error::{DirectoryError, Unavailable};
pub use filter::escape_filter_value;
pub use ldap::{read_bind_password, LdapDirectory};

use std::future::Future;
use std::pin::Pin;

/// A person as the directory describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// Login name (uid / sAMAccountName), as stored in the directory.
    pub username: String,
    /// The entry's DN.
    pub dn: String,
    /// Display name (cn / displayName), may contain accents and commas.
    pub display_name: String,
    /// DNs of every group the user is a member of, nested groups resolved.
    pub groups: Vec<String>,
    /// Account disabled in the directory (AD userAccountControl, OpenLDAP pwdAccountLockedTime…).
    pub disabled: bool,
}

pub type DirFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DirectoryError>> + Send + 'a>>;

/// What the rest of Sesame needs from a directory.
pub trait Directory: Send + Sync + 'static {
    /// Checks a password and returns the user with their groups.
    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a str,
    ) -> DirFuture<'a, DirectoryUser>;

    /// Looks a user up without their password (for periodic sync). `Ok(None)`: no such user.
    fn lookup<'a>(&'a self, username: &'a str) -> DirFuture<'a, Option<DirectoryUser>>;

    /// Looks many users up at once (a sync pass): for each of `usernames`, in order, what
    /// `lookup` would answer, with at most `in_flight` directory requests at a time. Stand-ins
    /// need not override it (one `lookup` per name); `LdapDirectory` reads the entries in
    /// batches and the groups once for the whole pass (`bulk.rs`).
    fn lookup_many<'a>(
        &'a self,
        usernames: &'a [String],
        in_flight: usize,
    ) -> DirFuture<'a, Vec<Option<DirectoryUser>>> {
        use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
        Box::pin(
            stream::iter(usernames)
                .map(|name| self.lookup(name))
                .buffered(in_flight.max(1))
                .try_collect(),
        )
    }

    /// Whether the directory answers now (for `/readyz`); `Unavailable` if not.
    /// Stand-ins need not override it.
    fn ping(&self) -> DirFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
