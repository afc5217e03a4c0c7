//! The second factor's building blocks: the [`Provider`] seam (TOTP here, RADIUS in its own module), TOTP codes, sealed secrets, QR codes, recovery codes.
//!
//! A [`Provider`] answers one question: is this one-time code good for this user now? The TOTP
//! provider reads the user's sealed secret from the store and names the 30 s step the code
//! belongs to, which the caller spends once (a step at or before the last one spent is
//! [`Check::Invalid`]); a RADIUS provider asks the académie's OTP server.
//! `service::mfa` holds one `Arc<dyn Provider>` chosen by `[mfa] provider` and builds the rules
//! (registration, windows, limits, audit) on top of it.

pub mod qr;
pub mod radius;
pub mod recovery;
pub mod seal;
pub mod totp;

use std::future::Future;
use std::pin::Pin;

use crate::store::{Factor, StoreError};

pub use seal::{SealError, SecretKey};
pub use totp::TotpProvider;

/// Why a provider could not answer: the caller answers 503, never "accepted".
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The verifier (e.g. every RADIUS server) did not answer or answered something unusable.
    #[error("second-factor server unavailable ({what}): {source}")]
    Unavailable {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What [`Provider::check`] says of a code, nothing spent yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The code is good. For TOTP, `step` is the step it belongs to: good only once the caller
    /// has spent it (`Store::mfa_accept_step`, or inside the login's own write), since a step is
    /// accepted once per user.
    Good { step: Option<i64> },
    /// Wrong, replayed (a step already spent, as last read), too old, or no factor.
    Invalid,
}

/// What [`Provider::check`] returns (a boxed future: the trait is used as `dyn Provider`).
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<Check, ProviderError>> + Send + 'a>>;

/// One way of checking one-time codes (`[mfa] provider`).
pub trait Provider: Send + Sync + 'static {
    /// `totp` or `radius`: the `kind` stored with the user's factor and shown in the access review.
    fn kind(&self) -> &'static str;

    /// True when a user must register a factor with Sesame first (TOTP: the secret lives in
    /// Sesame); false when the verifier already knows every user (RADIUS: the académie's tokens).
    fn needs_registration(&self) -> bool;

    /// Checks `code` for `username` (lower-cased login) now without spending its step ([`Check::Good`] says which
    /// one the caller must spend). `factor` is the user's row when the caller read it already
    /// (a login does, to tell "no factor" apart): not read a second time.
    fn check<'a>(
        &'a self,
        username: &'a str,
        code: &'a str,
        factor: Option<&'a Factor>,
    ) -> CheckFuture<'a>;
}

/// What the service needs of the second factor, built once from `[mfa]` at start: the provider
/// and the key that seals TOTP secrets.
pub struct Kit {
    pub provider: std::sync::Arc<dyn Provider>,
    pub key: std::sync::Arc<SecretKey>,
}

impl Kit {
    /// The provider `[mfa] provider` names over `store`, with the key of `[mfa]
    /// secret_key_file` (created 0600 on first start; the bool says whether it was).
    pub fn from_config(
        config: &crate::config::MfaConfig,
        store: &crate::store::Store,
    ) -> Result<(Kit, bool), SealError> {
        let (key, created) = SecretKey::load_or_create(&config.secret_key_file)?;
        let key = std::sync::Arc::new(key);
        let provider: std::sync::Arc<dyn Provider> = match (config.provider, &config.radius) {
            (crate::config::MfaProvider::Radius, Some(radius)) => {
                std::sync::Arc::new(radius::from_config(radius).map_err(SealError::Radius)?)
            }
            // Validation gives `[mfa.radius]` to the RADIUS provider and to it only.
            _ => std::sync::Arc::new(TotpProvider::new(store.clone(), key.clone())),
        };
        Ok((Kit { provider, key }, created))
    }
}
