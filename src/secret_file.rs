//! The one rule for secret files (keys, passwords): refused when group or others may read them.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// A secret file that fails the check; the message says the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error(
        "le fichier secret {path} ({what}) est lisible par d'autres (mode {mode:o}) : exécutez `chmod 600 {path}` / \
         secret file {path} ({what}) is readable by group or others (mode {mode:o}): run `chmod 600 {path}`"
    )]
    TooOpen {
        path: PathBuf,
        what: &'static str,
        mode: u32,
    },
    #[error("cannot read secret file {path} ({what}): {source}")]
    Stat {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SecretFileError {
    /// True when the file does not exist (callers that create missing files may go on).
    pub fn is_missing(&self) -> bool {
        matches!(self, SecretFileError::Stat { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Checks that only the owner may read `path`; `what` names it for people (e.g. the config key).
pub fn check(path: &Path, what: &'static str) -> Result<(), SecretFileError> {
    let meta = std::fs::metadata(path).map_err(|source| SecretFileError::Stat {
        path: path.to_path_buf(),
        what,
        source,
    })?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_path_buf(),
            what,
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn owner_only_passes_and_group_or_other_bits_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ldap.password");
        std::fs::write(&path, "secret").unwrap();
        for ok in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(ok)).unwrap();
            check(&path, "directory.bind_password_file").unwrap();
        }
        for bad in [0o640, 0o604, 0o660, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
            let e = check(&path, "directory.bind_password_file").unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("chmod 600 {}", path.display())),
                "{msg}"
            );
            assert!(msg.contains("directory.bind_password_file"), "{msg}");
            assert!(!e.is_missing());
        }
        let e = check(&dir.path().join("absent"), "x").unwrap_err();
        assert!(e.is_missing());
    }
}
