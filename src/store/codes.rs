//! One-time enrolment codes: generation, normalisation, keyed hashed storage, state.
//!
//! A code is 12 characters of a 31-letter alphabet without look-alikes (no 0/O, 1/I/L), shown as
//! `XXXX-XXXX-XXXX`: 59 bits, short enough to dictate over the phone. Only its HMAC-SHA256 under
//! the portal key (`[portal] secret_key_file`, outside the database) is stored: a copy of the
//! database alone does not let anyone try the 2^59 codes offline. Rows written before the key
//! (migration 0013) keep their plain SHA-256 and still redeem until they expire.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use rand::Rng as _;
use rand::RngCore as _;
use sha2::Sha256;
use sqlx::{AnyConnection, Row as _};

use super::audit;
use super::users::normalize_username;
use super::{hash_secret, Store, StoreError};
use crate::audit::{Action, AuditContext, NewAuditEvent};
use crate::gateway::keys::{self, KeyError};
use crate::time::duration_ms;

/// `hash_kind` of a code hashed with the portal key.
pub(crate) const KEYED: &str = "hmac-sha256";
/// `hash_kind` of a code stored before the portal key existed (or by a store without one).
pub(crate) const UNKEYED: &str = "sha256";
/// Binds the MAC to its use: the same key will sign other things (issue 21: cookies).
const CODE_CONTEXT: &[u8] = b"sesame code v1\0";

/// The portal key (`[portal] secret_key_file`, 32 random bytes in base64, mode 0600) that codes
/// are hashed with. One file per académie: every portal of it must hold the same one.
pub struct CodeKey([u8; 32]);

impl std::fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeKey(…)")
    }
}

impl CodeKey {
    /// The key from raw bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> CodeKey {
        CodeKey(bytes)
    }

    /// The key at `path`, created (0600, never overwriting) if the file does not exist, as the
    /// audit and second-factor keys are on the first start. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(CodeKey, bool), KeyError> {
        match keys::read_secret_file(path, "portal.secret_key_file") {
            Ok(bytes) => Ok((CodeKey(bytes), false)),
            Err(KeyError::Missing { .. }) => {
                let mut bytes = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                keys::write_secret_file(path, &bytes)?;
                Ok((CodeKey(bytes), true))
            }
            Err(e) => Err(e),
        }
    }

    /// A key for another use of the portal key (`context` names it): HMAC-SHA256 of the
    /// context, so each use has its own key and every portal sharing the key file derives the
    /// same one.
    pub fn subkey(&self, context: &[u8]) -> [u8; 32] {
        let Ok(mut mac) = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.0) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(context);
        mac.finalize().into_bytes().into()
    }

    /// HMAC-SHA256 (hex) of a normalized code.
    fn hash(&self, normalized: &str) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.0) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(CODE_CONTEXT);
        mac.update(normalized.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The hash a new code is stored under, and its `hash_kind`: keyed when the store has the
/// portal key.
pub(crate) fn stored_hash(key: Option<&CodeKey>, code: &str) -> Option<(String, &'static str)> {
    let normalized = normalize_code(code)?;
    Some(match key {
        Some(k) => (k.hash(&normalized), KEYED),
        None => (hash_secret(&normalized), UNKEYED),
    })
}

/// The hashes a typed code may be stored under: keyed with the portal key, or plain SHA-256
/// (a row written before the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodeLookup {
    keyed: Option<String>,
    unkeyed: String,
}

impl CodeLookup {
    /// `None` if `input` cannot be a code.
    pub(crate) fn new(key: Option<&CodeKey>, input: &str) -> Option<CodeLookup> {
        let normalized = normalize_code(input)?;
        Some(CodeLookup {
            keyed: key.map(|k| k.hash(&normalized)),
            unkeyed: hash_secret(&normalized),
        })
    }

    /// The SQL condition matching the code's row, with placeholders `$first` and `$first + 1`
    /// (bind with [`CodeLookup::bind`]): each hash only against rows of its own kind.
    pub(crate) fn condition(first: usize) -> String {
        format!(
            "((code_hash = ${first} AND hash_kind = '{KEYED}') OR (code_hash = ${} AND hash_kind = '{UNKEYED}'))",
            first + 1
        )
    }

    /// Binds the two hashes of [`CodeLookup::condition`], in order.
    pub(crate) fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        q.bind(self.keyed.clone()).bind(self.unkeyed.clone())
    }
}

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
    lookup: &CodeLookup,
    now: i64,
) -> Result<Option<EnrolmentCode>, StoreError> {
    let sql = format!(
        "SELECT code_hash, username, device_name, created_by, created_at, expires_at, redeemed_at, device_id \
         FROM enrolment_codes WHERE {}",
        CodeLookup::condition(1)
    );
    let row = lookup
        .bind(sqlx::query(&sql))
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
    key: Option<&CodeKey>,
    new: &NewCode,
    ctx: &AuditContext,
    now: i64,
    batch_id: Option<i64>,
) -> Result<CreatedCode, StoreError> {
    let code = generate_code();
    let username = normalize_username(&new.username);
    let device_name = new.device_name.trim().to_string();
    let expires_at = now.saturating_add(duration_ms(new.ttl));
    let (hash, kind) =
        stored_hash(key, &code).ok_or_else(|| StoreError::InvalidInput("generated code".into()))?;
    sqlx::query(
        "INSERT INTO enrolment_codes (code_hash, username, device_name, created_by, created_at, expires_at, batch_id, hash_kind) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&hash)
    .bind(&username)
    .bind(&device_name)
    .bind(&ctx.actor)
    .bind(now)
    .bind(expires_at)
    .bind(batch_id)
    .bind(kind)
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
            out.push(insert(&mut tx, self.code_key(), new, ctx, now, None).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Looks a typed code up (any case, spaces or dashes). `Ok(None)`: no such code.
    pub async fn code(&self, code: &str) -> Result<Option<EnrolmentCode>, StoreError> {
        let Some(lookup) = CodeLookup::new(self.code_key(), code) else {
            return Ok(None);
        };
        let mut conn = self.pool.acquire().await?;
        fetch(&mut conn, &lookup, self.now_ms()).await
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
    #[allow(clippy::unwrap_used)]
    fn the_portal_key_is_created_0600_once_then_loaded_and_refused_when_open() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portal.key");
        let (first, created) = CodeKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let (again, created) = CodeKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.hash("ABCDEFGHJKMN"), again.hash("ABCDEFGHJKMN"));
        assert_ne!(
            first.hash("ABCDEFGHJKMN"),
            CodeKey::from_bytes([0; 32]).hash("ABCDEFGHJKMN")
        );
        assert_ne!(first.hash("ABCDEFGHJKMN"), hash_secret("ABCDEFGHJKMN"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = CodeKey::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_code_is_stored_keyed_with_the_key_and_looked_up_both_ways() {
        let key = CodeKey::from_bytes([1; 32]);
        let (hash, kind) = stored_hash(Some(&key), "abcd-efgh-jkmn").expect("code");
        assert_eq!(
            (hash.as_str(), kind),
            (key.hash("ABCDEFGHJKMN").as_str(), KEYED)
        );
        let (plain, kind) = stored_hash(None, "ABCD EFGH JKMN").expect("code");
        assert_eq!(
            (plain.as_str(), kind),
            (hash_secret("ABCDEFGHJKMN").as_str(), UNKEYED)
        );
        let lookup = CodeLookup::new(Some(&key), "abcdefghjkmn").expect("code");
        assert_eq!(lookup.keyed.as_deref(), Some(hash.as_str()));
        assert_eq!(lookup.unkeyed, plain);
        assert_eq!(
            CodeLookup::condition(3),
            "((code_hash = $3 AND hash_kind = 'hmac-sha256') OR (code_hash = $4 AND hash_kind = 'sha256'))"
        );
        assert!(stored_hash(Some(&key), "not a code").is_none());
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
