//! The directory: who a person is, whether their password is right, and which groups they are in.
//!
//! The portal and the sync loop see the directory only through [`Directory`], so unit tests can
//! use a stand-in; the real implementation is LDAP (OpenLDAP or Active Directory) in `ldap`.

mod conn;
pub mod filter;
mod ldap;

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

/// Why the directory said no, or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Unknown user, or wrong password: deliberately indistinguishable to the caller's user.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Empty or whitespace-only password, refused before any bind (an LDAP empty-password bind
    /// is an unauthenticated bind that would succeed).
    #[error("empty password")]
    EmptyPassword,
    #[error("account disabled")]
    Disabled,
    /// The directory did not answer in time, refused the service bind, or TLS failed; from
    /// `LdapDirectory::new`: the configuration cannot be used (unreadable password or CA file),
    /// the message naming the key and file.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
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

    /// Whether the directory answers now (for `/readyz`); `Unavailable` if not.
    /// Stand-ins need not override it.
    fn ping(&self) -> DirFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
