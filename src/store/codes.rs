//! One-time enrolment codes: generation, normalisation, hashed storage, state.
//!
//! A code is 12 characters of a 31-letter alphabet without look-alikes (no 0/O, 1/I/L), shown as
//! `XXXX-XXXX-XXXX`: 59 bits, short enough to dictate over the phone. Only its SHA-256 is stored.

use std::time::Duration;

use rand::Rng as _;
use sqlx::{AnyConnection, Row as _};

use super::audit;
use super::users::normalize_username;
use super::{hash_secret, Store, StoreError};
use crate::audit::{Action, AuditContext, NewAuditEvent};
use crate::time::duration_ms;

/// Characters a code is made of: no 0, 1, I, L, O.
pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Characters in a code, dashes excluded.
const CODE_LEN: usize = 12;
/// Characters between dashes in the displayed form.
const GROUP: usize = 4;
/// How long a code stays valid unless told otherwise.
pub const DEFAULT_CODE_TTL: Duration = Duration::from_secs(72 * 3600);
/// Longest user or device name accepted.
const MAX_NAME_LEN: usize = 128;

/// Where a code stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeState {
    Pending,
    Redeemed { at: i64, device_id: Option<i64> },
    Expired,
}

/// A code as stored (without the code itself, which is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolmentCode {
    pub code_hash: String,
    pub username: String,
    pub device_name: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: CodeState,
}

/// What to create a code for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCode {
    pub username: String,
    pub device_name: String,
    pub ttl: Duration,
}

/// A freshly created code: the only time the plaintext exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedCode {
    /// `XXXX-XXXX-XXXX`.
    pub code: String,
    pub username: String,
    pub device_name: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A new random code from the OS RNG, formatted `XXXX-XXXX-XXXX`.
pub fn generate_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let mut out = String::with_capacity(CODE_LEN + CODE_LEN / GROUP);
    for i in 0..CODE_LEN {
        if i > 0 && i % GROUP == 0 {
            out.push('-');
        }
        let c = CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())];
        out.push(char::from(c));
    }
    out
}

/// The canonical form of a typed code (upper case, spaces and dashes removed), or `None` if it
/// cannot be a code (wrong length, a character outside the alphabet).
pub fn normalize_code(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok = s.len() == CODE_LEN && s.bytes().all(|b| CODE_ALPHABET.contains(&b));
    ok.then_some(s)
}

/// Hash under which a typed code is stored, or `None` if it cannot be a code.
pub(crate) fn code_hash(input: &str) -> Option<String> {
    normalize_code(input).map(|c| hash_secret(&c))
}

fn check_name(what: &str, value: &str) -> Result<(), StoreError> {
    if value.trim().is_empty() {
        return Err(StoreError::InvalidInput(format!("{what} is empty")));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(StoreError::InvalidInput(format!(
            "{what} is longer than {MAX_NAME_LEN} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

/// Validates one code request; the error names the field.
pub fn validate(new: &NewCode) -> Result<(), StoreError> {
    check_name("user", &new.username)?;
    check_name("device name", &new.device_name)?;
    if new.ttl.is_zero() {
        return Err(StoreError::InvalidInput("ttl must be positive".into()));
    }
    Ok(())
}

pub(crate) fn state_of(
    now: i64,
    expires_at: i64,
    redeemed_at: Option<i64>,
    device_id: Option<i64>,
) -> CodeState {
    match redeemed_at {
        Some(at) => CodeState::Redeemed { at, device_id },
        None if now >= expires_at => CodeState::Expired,
        None => CodeState::Pending,
    }
}

pub(crate) async fn fetch(
    conn: &mut AnyConnection,
    hash: &str,
    now: i64,
) -> Result<Option<EnrolmentCode>, StoreError> {
    let row = sqlx::query(
        "SELECT code_hash, username, device_name, created_by, created_at, expires_at, redeemed_at, device_id \
         FROM enrolment_codes WHERE code_hash = $1",
    )
    .bind(hash)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let expires_at: i64 = row.try_get("expires_at")?;
    Ok(Some(EnrolmentCode {
        code_hash: row.try_get("code_hash")?,
        username: row.try_get("username")?,
        device_name: row.try_get("device_name")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at,
        state: state_of(
            now,
            expires_at,
            row.try_get("redeemed_at")?,
            row.try_get("device_id")?,
        ),
    }))
}

pub(crate) async fn insert(
    conn: &mut AnyConnection,
    new: &NewCode,
    ctx: &AuditContext,
    now: i64,
    batch_id: Option<i64>,
) -> Result<CreatedCode, StoreError> {
    let code = generate_code();
    let username = normalize_username(&new.username);
    let device_name = new.device_name.trim().to_string();
    let expires_at = now.saturating_add(duration_ms(new.ttl));
    let hash = code_hash(&code).ok_or_else(|| StoreError::InvalidInput("generated code".into()))?;
    sqlx::query(
        "INSERT INTO enrolment_codes (code_hash, username, device_name, created_by, created_at, expires_at, batch_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&hash)
    .bind(&username)
    .bind(&device_name)
    .bind(&ctx.actor)
    .bind(now)
    .bind(expires_at)
    .bind(batch_id)
    .execute(&mut *conn)
    .await?;
    audit::append(
        conn,
        now,
        &NewAuditEvent::new(Action::EnrolCodeCreated, ctx, username.clone())
            .details(serde_json::json!({ "device_name": device_name, "expires_at": expires_at })),
    )
    .await?;
    Ok(CreatedCode {
        code,
        username,
        device_name,
        created_at: now,
        expires_at,
    })
}

/// Validates every request; `InvalidInput` names the 0-based index of the first bad one.
pub(crate) fn validate_all(news: &[NewCode]) -> Result<(), StoreError> {
    for (i, new) in news.iter().enumerate() {
        validate(new).map_err(|e| match e {
            StoreError::InvalidInput(m) => StoreError::InvalidInput(format!("entry {i}: {m}")),
            other => other,
        })?;
    }
    Ok(())
}

impl Store {
    /// Creates one enrolment code (and its `enrol.code_created` audit event).
    pub async fn create_code(
        &self,
        new: &NewCode,
        ctx: &AuditContext,
    ) -> Result<CreatedCode, StoreError> {
        let mut codes = self.create_codes(std::slice::from_ref(new), ctx).await?;
        codes
            .pop()
            .ok_or_else(|| StoreError::InvalidInput("no code requested".into()))
    }

    /// Creates several codes in one transaction: all of them, or none if any request is invalid.
    /// On invalid input the error is `InvalidInput` naming the 0-based index of the first bad one.
    pub async fn create_codes(
        &self,
        news: &[NewCode],
        ctx: &AuditContext,
    ) -> Result<Vec<CreatedCode>, StoreError> {
        validate_all(news)?;
        let now = self.now_ms();
        let mut tx = self.write_tx().await?;
        let mut out = Vec::with_capacity(news.len());
        for new in news {
            out.push(insert(&mut tx, new, ctx, now, None).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Looks a typed code up (any case, spaces or dashes). `Ok(None)`: no such code.
    pub async fn code(&self, code: &str) -> Result<Option<EnrolmentCode>, StoreError> {
        let Some(hash) = code_hash(code) else {
            return Ok(None);
        };
        let mut conn = self.pool.acquire().await?;
        fetch(&mut conn, &hash, self.now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_display_shape_and_normalise_back() {
        for _ in 0..200 {
            let c = generate_code();
            assert_eq!(c.len(), 14);
            assert_eq!(c.as_bytes()[4], b'-');
            assert_eq!(c.as_bytes()[9], b'-');
            let n = normalize_code(&c).expect("own code normalises");
            assert_eq!(n, c.replace('-', ""));
        }
        assert_ne!(generate_code(), generate_code());
    }

    #[test]
    fn normalisation_ignores_case_spaces_and_dashes() {
        assert_eq!(
            normalize_code(" abcd efgh-jkmn "),
            Some("ABCDEFGHJKMN".to_string())
        );
        assert_eq!(normalize_code("ABCD-EFGH-JKM"), None, "too short");
        assert_eq!(
            normalize_code("ABCD-EFGH-JKM0"),
            None,
            "0 is not in the alphabet"
        );
        assert_eq!(
            normalize_code("ABCD-EFGH-JKMO"),
            None,
            "O is not in the alphabet"
        );
    }

    #[test]
    fn alphabet_has_no_look_alikes_and_enough_entropy() {
        for bad in b"01ILO" {
            assert!(!CODE_ALPHABET.contains(bad));
        }
        let bits = (CODE_ALPHABET.len() as f64).log2() * CODE_LEN as f64;
        assert!(bits >= 55.0, "{bits} bits");
    }

    #[test]
    fn state_follows_time_and_redemption() {
        assert_eq!(state_of(10, 20, None, None), CodeState::Pending);
        assert_eq!(state_of(20, 20, None, None), CodeState::Expired);
        assert_eq!(
            state_of(30, 20, Some(15), Some(3)),
            CodeState::Redeemed {
                at: 15,
                device_id: Some(3)
            }
        );
    }
}
