//! Why the directory said no or could not answer: each cause typed, the ldap3, I/O and TLS errors kept as sources.

use std::path::PathBuf;
use std::time::Duration;

use ldap3::LdapError;

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
    /// `LdapDirectory::new`: the configuration cannot be used (unreadable password or CA file).
    /// Boxed: ldap3's and rustls' errors are large, and logins return this on every path.
    #[error("directory unavailable: {0}")]
    Unavailable(#[source] Box<Unavailable>),
}

impl From<Unavailable> for DirectoryError {
    fn from(why: Unavailable) -> Self {
        DirectoryError::Unavailable(Box::new(why))
    }
}

/// What kept the directory from answering, in words an operator can act on (naming the URL,
/// the `[directory]` key or the file).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// An LDAP operation (connect, TLS, search, bind) failed.
    #[error("{url}: {source}{hint}", hint = ldap_hint(source))]
    Ldap {
        url: String,
        #[source]
        source: LdapError,
    },
    #[error("{url}: no answer within {}s (the directory is down or overloaded; timeout in [directory] sets the wait)", timeout.as_secs_f32())]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: the service bind as {dn} was refused ({rc} {text}): check bind_dn and bind_password_file")]
    ServiceBind {
        url: String,
        dn: String,
        rc: u32,
        text: String,
    },
    /// Busy, unavailable or unwilling: the directory could not judge a password.
    #[error("{url}: bind refused with LDAP result {rc} {text}")]
    Bind { url: String, rc: u32, text: String },
    #[error("{url}: {key} = {base:?} does not exist or the service account may not read it")]
    MissingBase {
        url: String,
        key: &'static str,
        base: String,
    },
    #[error("{url}: search under {base:?} failed with LDAP result {rc}")]
    Search { url: String, base: String, rc: u32 },
    #[error("{url}: connection pool closed")]
    PoolClosed { url: String },
    #[error("user_filter = {filter:?} is not a valid LDAP filter (it gives {sample:?}): write it like (uid={{username}})")]
    UserFilter { filter: String, sample: String },
    #[error("cannot read the directory service password from bind_password_file = {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bind_password_file = {} is empty: put the service account's password in it", path.display())]
    EmptyPasswordFile { path: PathBuf },
    #[error("cannot read the directory CA file ca_file = {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: unreadable PEM: {source}", path.display())]
    CaPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: not a usable CA certificate: {source}", path.display())]
    CaCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS settings for the directory: {source}")]
    TlsSettings {
        #[source]
        source: rustls::Error,
    },
    #[error("{}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCaCertificate { path: PathBuf },
}

/// What to check for an ldap3 error, from its text (ldap3 wraps TLS and socket errors).
fn ldap_hint(e: &LdapError) -> &'static str {
    let text = e.to_string();
    if text.contains("certificate") {
        " (the directory's TLS certificate is not trusted for this name: set ca_file to the CA that signed it, and use the name or address its certificate carries in url)"
    } else if text.contains("refused") {
        " (is the directory running, and is the port in url right?)"
    } else {
        ""
    }
}
