//! Small file helpers: atomic writes, private (0600) key files and a private (0700) data
//! directory through `acorn-files`, reads with path-bearing errors.

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

/// Creates `dir` and its parents if missing; `dir` itself is private (mode 0700), and an
/// existing `dir` of ours is tightened to 0700: it holds the CA key and the admin key.
pub(crate) fn create_dir(dir: &Path) -> Result<(), BackendError> {
    acorn_files::create_private_dir(dir).map_err(|e| file_error("create directory", dir, e))
}

/// Writes `contents` to `path` through a temporary file and a rename, so a reader (such as
/// mosquitto reloading its CRL) sees the old file or the new one, never half of one.
/// With `private`, the file is readable by its owner only (mode 0600), from its creation on;
/// otherwise it is 0644. A symbolic link at `path` is replaced, never written through.
pub(crate) fn write_atomic(
    path: &Path,
    contents: &[u8],
    private: bool,
) -> Result<(), BackendError> {
    let result = if private {
        acorn_files::write_private(path, contents)
    } else {
        acorn_files::write_public(path, contents)
    };
    result.map_err(|e| file_error("write", path, e))
}

/// Refuses a secret file (`what`: "CA key", "admin key") that other users could read or change:
/// a symbolic link, a file of another user, or one readable or writable by group or others.
pub(crate) fn check_private(path: &Path, what: &str) -> Result<(), BackendError> {
    acorn_files::check_private(path, what).map_err(|e| match e {
        acorn_files::FileError::Io { source, .. } => BackendError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        },
        // The message names the file, what is wrong and the command that fixes it.
        unsafe_file => BackendError::UnsafeFile(unsafe_file),
    })
}

/// An `acorn-files` error as a backend error: I/O keeps the operating system's error.
fn file_error(action: &'static str, path: &Path, error: acorn_files::FileError) -> BackendError {
    match error {
        acorn_files::FileError::Io { source, .. } => BackendError::Io {
            action,
            path: path.to_path_buf(),
            source,
        },
        other => BackendError::UnsafeFile(other),
    }
}
