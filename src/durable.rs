//! The one way to replace a small state file so that a crash leaves the old or the new content, never a mix, and a caller told "written" can rely on it after a power cut.
//!
//! Hand-written (a dozen lines of std): the crates that do this (atomicwrites, tempfile's
//! `persist`) either cannot set the file's mode at creation or do not sync the directory.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Which step of a durable replace failed, and on which path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct DurableError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> DurableError + '_ {
    move |source| DurableError {
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `parts` (written in order) through `PATH.tmp`: the temporary file is
/// created with `mode`, written and synced, renamed over `path`, then the directory is synced
/// so that the rename itself survives a crash. Returns once all of it is on disk.
pub fn replace(path: &Path, mode: u32, parts: &[&[u8]]) -> Result<(), DurableError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(at(&tmp))?;
    for part in parts {
        file.write_all(part).map_err(at(&tmp))?;
    }
    file.sync_all().map_err(at(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(at(path))?;
    sync_dir(path)
}

/// Syncs the directory holding `path` (its entries: a creation, a rename, a removal).
pub fn sync_dir(path: &Path) -> Result<(), DurableError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn replaces_the_content_with_the_mode_asked_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        replace(&path, 0o600, &[b"new ", b"content"]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new content");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_temporary_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("state.json");
        let e = replace(&path, 0o600, &[b"x"]).unwrap_err();
        assert_eq!(e.path, dir.path().join("absent").join("state.json.tmp"));
    }
}
