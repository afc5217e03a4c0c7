//! Private files of the agent: a 0700 directory, 0600 files written atomically, permission checks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is readable by others (mode {mode:o})")]
    Insecure { path: PathBuf, mode: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` if needed and makes it private (0700 on Unix).
pub fn ensure_private_dir(dir: &Path) -> Result<(), FileError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Writes `contents` to `path` so that a crash leaves either the old file or the new one:
/// a 0600 temporary file in the same directory, fsync, rename over `path`, fsync the directory.
pub fn write_private_atomic(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Like [`write_private_atomic`] without fsync: for reports rewritten often (`status.json`),
/// where a crash may lose the latest version but never leaves a torn file.
pub fn write_private_replace(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(contents)?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Renames `from` over `to` and makes the rename durable.
pub fn rename_durable(from: &Path, to: &Path) -> Result<(), FileError> {
    fs::rename(from, to).map_err(io_err(to))?;
    sync_parent(to).map_err(io_err(to))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        // The mode above only applies to a new file: force it on a leftover one too.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// An exclusive lock on the agent's directory, held while a config file is read-modified-written
/// (`rotate` and the daemon's grant refresh must not overwrite each other's key). Released on drop.
pub struct DirLock {
    _file: File,
}

pub fn lock_dir(dir: &Path) -> Result<DirLock, FileError> {
    let path = dir.join(".lock");
    let file = create_private_keep(&path).map_err(io_err(&path))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&path)(io::Error::last_os_error()));
        }
    }
    Ok(DirLock { _file: file })
}

fn create_private_keep(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Refuses a file that group or others may read or write (Unix); it holds secrets.
pub fn check_private(path: &Path) -> Result<(), FileError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(FileError::Insecure {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Reads a private file after checking its mode.
pub fn read_private(path: &Path) -> Result<String, FileError> {
    check_private(path)?;
    fs::read_to_string(path).map_err(io_err(path))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn private_dir_and_atomic_file_modes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("agent");
        ensure_private_dir(&dir).expect("dir");
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("sesame.conf");
        write_private_atomic(&file, b"one").expect("write");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read_to_string(&file).expect("read"), "one");
        // Replacing keeps the mode and leaves no temporary file behind.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private_atomic(&file, b"two").expect("write");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read_to_string(&file).expect("read"), "two");
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn readable_files_are_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("agent.toml");
        write_private_atomic(&file, b"x").expect("write");
        assert!(read_private(&file).is_ok());
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("chmod");
        match read_private(&file) {
            Err(FileError::Insecure { mode, .. }) => assert_eq!(mode, 0o640),
            other => panic!("expected Insecure, got {other:?}"),
        }
    }

    #[test]
    fn failed_write_leaves_old_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("missing-dir").join("f");
        assert!(write_private_atomic(&file, b"x").is_err());
        assert!(!file.exists());
    }
}
