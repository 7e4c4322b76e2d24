//! Small file helpers: atomic writes, private (0600) key files, reads with path-bearing errors.

use std::io::Write;
use std::path::Path;

use crate::error::BackendError;

/// Reads a whole UTF-8 text file.
pub(crate) fn read_text(path: &Path) -> Result<String, BackendError> {
    std::fs::read_to_string(path).map_err(|source| BackendError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` and its parents if missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), BackendError> {
    std::fs::create_dir_all(dir).map_err(|source| BackendError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file and a rename, so a reader (such as
/// mosquitto reloading its CRL) sees the old file or the new one, never half of one.
/// With `private`, the file is readable by its owner only (mode 0600 on Unix).
pub(crate) fn write_atomic(
    path: &Path,
    contents: &[u8],
    private: bool,
) -> Result<(), BackendError> {
    let io_err = |source| BackendError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    // A stale temporary file from a crash would keep its old mode: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err)
}
