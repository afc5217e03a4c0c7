//! Secret key files (the gateway's WireGuard key, the audit signing key): base64 as `wg genkey` writes it, mode 0600, refused if others can read it.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::key::{KeyError as KeyRefused, PrivateKey, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "fichier de clé privée introuvable : {path} / private key file {path} not found: \
         create it with `sesame keygen --out {path}`"
    )]
    Missing { path: PathBuf },
    #[error(transparent)]
    TooOpen(crate::secret_file::SecretFileError),
    #[error("cannot read private key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "private key file {path} is not a WireGuard key ({reason}); \
         write a new one with `sesame keygen --out FILE` or `wg genkey`"
    )]
    Invalid {
        path: PathBuf,
        #[source]
        reason: KeyRefused,
    },
    #[error(
        "{path} exists already: refusing to overwrite a key (move it away first if you really mean it)"
    )]
    Exists { path: PathBuf },
    #[error("cannot write private key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the private key; refuses a missing file or one that group or others may read.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, KeyError> {
    read_secret_file(path, "gateway.private_key_file").map(PrivateKey::from_bytes)
}

/// Writes a new random key with mode 0600 (never overwriting); returns the public key.
pub fn write_new_key(path: &Path) -> Result<PublicKey, KeyError> {
    let secret = PrivateKey::generate();
    write_file(path, &secret.to_base64())?;
    Ok(secret.public_key())
}

/// Reads a 32-byte secret written in base64 (a gateway key, the audit signing key); refuses a
/// missing file or one that group or others may read (`what` names it: its config key).
pub fn read_secret_file(path: &Path, what: &'static str) -> Result<[u8; 32], KeyError> {
    match crate::secret_file::check(path, what) {
        Ok(()) => {}
        Err(e) if e.is_missing() => {
            return Err(KeyError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(KeyError::TooOpen(e)),
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    crate::key::decode_base64(&text).map_err(|reason| KeyError::Invalid {
        path: path.to_path_buf(),
        reason,
    })
}

/// Writes a 32-byte secret in base64 to a new file with mode 0600, synced; never overwrites.
pub fn write_secret_file(path: &Path, secret: &[u8; 32]) -> Result<(), KeyError> {
    write_file(path, &crate::key::encode_base64(secret))
}

/// Writes one line of base64 to a new file with mode 0600, synced; never overwrites.
fn write_file(path: &Path, base64: &str) -> Result<(), KeyError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                KeyError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let text = format!("{base64}\n");
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    #[test]
    fn written_key_is_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.key");
        let public = write_new_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let secret = load_private_key(&path).unwrap();
        assert_eq!(secret.public_key(), public);
        assert!(matches!(write_new_key(&path), Err(KeyError::Exists { .. })));
    }

    #[test]
    fn refuses_missing_and_readable_files_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.key");
        let Err(e) = load_private_key(&path) else {
            panic!("loaded")
        };
        assert!(e.to_string().contains("sesame keygen --out"), "{e}");
        write_new_key(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let Err(e) = load_private_key(&path) else {
            panic!("loaded")
        };
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        assert!(matches!(
            e,
            KeyError::TooOpen(crate::secret_file::SecretFileError::TooOpen { mode: 0o640, .. })
        ));
    }

    #[test]
    fn reads_wg_genkey_format_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        // Any 32 bytes in base64, as `wg genkey` prints them.
        std::fs::write(&path, "d3Q+LQy6WjGhR6nG1yLzTZpLmzM4uJzVQ5dU2vyxnLA=\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_private_key(&path).is_ok());
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            load_private_key(&path),
            Err(KeyError::Invalid { .. })
        ));
    }
}
