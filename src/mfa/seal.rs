//! TOTP secrets sealed at rest: ChaCha20-Poly1305 with the `[mfa] secret_key_file` key, bound to the user name.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore as _;

use crate::gateway::keys::{self, KeyError};

const NONCE_LEN: usize = 12;
const WHAT: &str = "mfa.secret_key_file";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("second-factor key file ([mfa] secret_key_file): {0}")]
    Key(#[source] KeyError),
    /// Wrong key file, or a row changed by hand: the secret cannot be read back.
    #[error(
        "un secret de second facteur ne se déchiffre pas avec la clé [mfa] secret_key_file : \
         réinitialisez ce facteur (`sesame mfa reset --user …`) / a second-factor secret does not \
         decrypt with the [mfa] secret_key_file key: reset that factor"
    )]
    Open,
    #[error("sealing a second-factor secret failed")]
    Seal,
    /// `[mfa.radius] secret_file` cannot be used (read with the other second-factor keys at start).
    #[error(transparent)]
    Radius(#[from] super::radius::SecretError),
}

/// The 32-byte key that seals TOTP secrets; its file holds it in base64, mode 0600.
pub struct SecretKey(Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    /// The key from raw bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(Key::from(bytes))
    }

    /// The key at `path`, created (0600, never overwriting) if the file does not exist, as
    /// `sesame serve` does for the audit key on its first start. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), SealError> {
        match keys::read_secret_file(path, WHAT) {
            Ok(bytes) => Ok((SecretKey::from_bytes(bytes), false)),
            Err(KeyError::Missing { .. }) => {
                let mut bytes = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                keys::write_secret_file(path, &bytes).map_err(SealError::Key)?;
                Ok((SecretKey::from_bytes(bytes), true))
            }
            Err(e) => Err(SealError::Key(e)),
        }
    }

    /// Seals `secret` for `username`: base64 of a random nonce followed by the ciphertext.
    pub fn seal(&self, username: &str, secret: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = ChaCha20Poly1305::new(&self.0);
        let payload = Payload {
            msg: secret,
            aad: username.as_bytes(),
        };
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Opens what [`SecretKey::seal`] sealed for the same `username`.
    pub fn open(&self, username: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SealError::Open)?;
        if bytes.len() <= NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: username.as_bytes(),
        };
        ChaCha20Poly1305::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn sealed_secrets_open_for_their_user_only_and_with_their_key_only() {
        let key = SecretKey::from_bytes([7; 32]);
        let sealed = key.seal("alice", b"0123456789abcdefghij").unwrap();
        assert!(!sealed.contains("0123456789"));
        assert_eq!(key.open("alice", &sealed).unwrap(), b"0123456789abcdefghij");
        assert!(matches!(key.open("bob", &sealed), Err(SealError::Open)));
        let other = SecretKey::from_bytes([8; 32]);
        assert!(matches!(other.open("alice", &sealed), Err(SealError::Open)));
        assert_ne!(sealed, key.seal("alice", b"0123456789abcdefghij").unwrap());
    }

    #[test]
    fn key_file_is_created_0600_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfa.key");
        let (key, created) = SecretKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let sealed = key.seal("alice", b"secret-secret-secret").unwrap();
        let (again, created) = SecretKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(
            again.open("alice", &sealed).unwrap(),
            b"secret-secret-secret"
        );
    }
}
