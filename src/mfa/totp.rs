//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step) with totp-rs, and the TOTP [`Provider`]: a step is accepted once per user.

use std::sync::Arc;

use rand::RngCore as _;
use totp_rs::{Algorithm, Builder, Secret, Totp};

use super::{Check, CheckFuture, Provider, ProviderError, SecretKey};
use crate::store::{Factor, Store};

/// Seconds per step (what every authenticator application uses).
pub const STEP_SECS: u64 = 30;
/// Bytes of a new secret (160 bits, RFC 4226's recommendation).
const SECRET_LEN: usize = 20;
/// The issuer shown by authenticator applications next to the account.
pub const ISSUER: &str = "Sesame";

/// A new random secret.
pub fn generate_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; SECRET_LEN];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// The RFC 6238 generator for `secret` (SHA-1, 6 digits, 30 s, skew 1), labelled `account`.
fn totp(secret: &[u8], account: &str) -> Totp {
    // build_noncompliant: the parameters are the RFC's; secrets shorter than 128 bits only come
    // from the RFC's own test vectors (the 20-byte "12345678901234567890"), which pass anyway.
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some(ISSUER))
        .with_account_name(account.replace(':', "_"))
        .build_noncompliant()
}

/// The secret in base32 (what people type into an authenticator by hand).
pub fn base32(secret: &[u8]) -> String {
    Secret::from(secret.to_vec()).to_base32()
}

/// The bytes of a base32 secret (as [`base32`] writes it and authenticators read it).
pub fn from_base32(text: &str) -> Option<Vec<u8>> {
    Secret::try_from_base32(text.trim())
        .ok()
        .map(|s| s.as_ref().to_vec())
}

/// The `otpauth://totp/Sesame:alice?secret=…&issuer=Sesame` URI the QR code holds.
pub fn otpauth_uri(secret: &[u8], username: &str) -> String {
    totp(secret, username)
        .to_url()
        .unwrap_or_else(|_| format!("otpauth://totp/{ISSUER}?secret={}", base32(secret)))
}

/// The code for `secret` at `unix_secs` (tests, the bench, and nobody else).
pub fn code_at(secret: &[u8], unix_secs: u64) -> String {
    totp(secret, "x").generate(unix_secs).to_string()
}

/// The step `code` belongs to when it is good for `secret` at `now_ms` (±1 step), else `None`.
pub fn check(secret: &[u8], code: &str, now_ms: i64) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = u64::try_from(now_ms / 1000).ok()?;
    totp(secret, "x")
        .check(&code, now)
        .and_then(|step| i64::try_from(step).ok())
}

/// `[mfa] provider = "totp"`: secrets sealed in the store, each step accepted once per user.
pub struct TotpProvider {
    store: Store,
    key: Arc<SecretKey>,
}

impl TotpProvider {
    pub fn new(store: Store, key: Arc<SecretKey>) -> TotpProvider {
        TotpProvider { store, key }
    }

    async fn check_now(
        &self,
        username: &str,
        code: &str,
        factor: Option<&Factor>,
    ) -> Result<Check, ProviderError> {
        let read;
        let factor = match factor {
            Some(f) => Some(f),
            None => {
                read = self.store.mfa_factor(username).await?;
                read.as_ref()
            }
        };
        let Some(factor) = factor.filter(|f| f.is_registered()) else {
            return Ok(Check::Invalid);
        };
        let Some(sealed) = &factor.secret_enc else {
            return Ok(Check::Invalid);
        };
        let secret = self.key.open(username, sealed)?;
        match check(&secret, code, self.store.now_ms()) {
            // A step at or before the last one spent is a replay: refused without a write.
            Some(step) if factor.last_step.is_none_or(|last| step > last) => {
                Ok(Check::Good { step: Some(step) })
            }
            _ => Ok(Check::Invalid),
        }
    }
}

impl Provider for TotpProvider {
    fn kind(&self) -> &'static str {
        "totp"
    }

    fn needs_registration(&self) -> bool {
        true
    }

    fn check<'a>(
        &'a self,
        username: &'a str,
        code: &'a str,
        factor: Option<&'a Factor>,
    ) -> CheckFuture<'a> {
        Box::pin(self.check_now(username, code, factor))
    }
}

#[cfg(test)]
#[path = "totp_tests.rs"]
mod tests;
