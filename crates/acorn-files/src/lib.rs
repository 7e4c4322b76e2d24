//! # acorn-files
//!
//! The one home of host file safety in acorn: every tool that writes a file holding a secret
//! (an NVS partition image with a device private key, an `nvs_keys` file, a CA key, an admin
//! key) writes it through this crate, and every tool that loads such a file checks it here.
//!
//! - [`write_private`] writes a file only its owner may read (mode 0600), [`write_public`] one
//!   everybody may read (0644: certificates, CRLs). Both write a new temporary file in the same
//!   directory, created exclusively (`O_CREAT|O_EXCL`) without following a symbolic link
//!   (`O_NOFOLLOW`), flush it to disk, rename it over the target and flush the directory. A
//!   reader sees the old file or the new one, never half of one; a crash or an error leaves
//!   the old file and no temporary file; a symbolic link planted at a temporary name or at the
//!   target is never written through.
//! - [`create_private_dir`] makes a directory only its owner may enter (0700), or tightens an
//!   existing one of ours.
//! - [`check_private`] refuses a key file that is a symbolic link, belongs to another user, or
//!   that other users may read or write, with the command that fixes it.
//!
//! Errors ([`FileError`]) say what failed, on which path, and how to fix it.
//!
//! ```
//! # fn main() -> Result<(), acorn_files::FileError> {
//! let dir = tempfile::tempdir().unwrap();
//! let keys = dir.path().join("secrets");
//! acorn_files::create_private_dir(&keys)?;
//! acorn_files::write_private(&keys.join("admin.key"), b"0123abcd")?;
//! acorn_files::check_private(&keys.join("admin.key"), "admin key")?;
//! # Ok(())
//! # }
//! ```
//!
//! On platforms other than Unix, files are written the same way but without modes, and the
//! ownership and mode checks are skipped (symbolic links are still refused).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Mode of a file only its owner may read and write.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of a file its owner may write and everybody may read.
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode of a directory only its owner may list, enter and change.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Why a file could not be written, created or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// An operating-system call failed.
    #[error("cannot {action} {path}: {source}; {hint}")]
    Io {
        /// What was being done ("create a temporary file in", "replace", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
        /// How to fix it.
        hint: String,
    },
    /// The path to write names no file (it is empty or ends in `..`).
    #[error(
        "cannot write {path}: it does not name a file; give the path of a file, not of a directory"
    )]
    NotAFilePath {
        /// The path given.
        path: PathBuf,
    },
    /// A file that must be trusted is a symbolic link.
    #[error("the {what} {path} is a symbolic link, which is not followed for a secret; replace the link with the file itself: run `cp --remove-destination \"$(readlink -f {})\" {}` and `chmod 600 {}`", Shell(.path), Shell(.path), Shell(.path))]
    Symlink {
        /// What the file is ("CA key", "admin key").
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// A file that must be trusted is not a regular file (a directory, a device, a FIFO).
    #[error("the {what} {path} is not a regular file; point to the key file itself")]
    NotARegularFile {
        /// What the file is.
        what: String,
        /// The path.
        path: PathBuf,
    },
    /// A file that must be trusted belongs to another user, who could change it.
    #[error("the {what} {path} is owned by uid {owner}, not by you (uid {me}); run `chown {me} {}` (as root), or run this program as uid {owner}", Shell(.path))]
    NotOwned {
        /// What the file is.
        what: String,
        /// The file.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// The current user.
        me: u32,
    },
    /// A file that must be private is readable or writable by other users.
    #[error("the {what} {path} is {access} (mode {mode:04o}); run `chmod 600 {}`", Shell(.path))]
    TooOpen {
        /// What the file is.
        what: String,
        /// The file.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
        /// Who may do what ("readable by other users", "writable by its group", ...).
        access: &'static str,
    },
    /// A directory to create or use exists but is something else.
    #[error("{path} exists and is not a directory; remove it or pick another directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
}

impl FileError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::NotFound => {
                "check that the directory exists (create it first)".to_owned()
            }
            io::ErrorKind::PermissionDenied => {
                "check that this user may write to that directory (`ls -ld` it)".to_owned()
            }
            io::ErrorKind::AlreadyExists => {
                "remove the leftover temporary files `.<name>.*.tmp` next to it".to_owned()
            }
            _ => "check the disk (free space, read-only file system) and try again".to_owned(),
        };
        FileError::Io {
            action,
            path: path.to_path_buf(),
            source,
            hint,
        }
    }
}

/// A path as a shell word, quoted when it holds characters a shell would interpret.
struct Shell<'a>(&'a Path);

impl fmt::Display for Shell<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string_lossy();
        let plain = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c));
        if plain {
            f.write_str(&text)
        } else {
            write!(f, "'{}'", text.replace('\'', r"'\''"))
        }
    }
}

/// Writes `bytes` to `path` as a file only its owner may read and write (mode 0600), atomically.
///
/// The bytes go to a new temporary file `.<name>.<random>.tmp` in the same directory, created
/// with `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0600 (so the secret is never readable by others,
/// not even for a moment), flushed to disk, renamed over `path`; then the directory is
/// flushed. On any failure the temporary file is removed and `path` is left as it was.
///
/// An existing `path` is replaced, whatever its mode was. If `path` is a symbolic link, the
/// link itself is replaced by the new file: nothing is written through it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_with_mode(path, bytes, PRIVATE_FILE_MODE)
}

/// Writes `bytes` to `path` as a file everybody may read (mode 0644), atomically and safely
/// like [`write_private`]. For certificates, CRLs and other public files.
pub fn write_public(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_with_mode(path, bytes, PUBLIC_FILE_MODE)
}

/// The directory a file path is in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let name = path.file_name().ok_or_else(|| FileError::NotAFilePath {
        path: path.to_path_buf(),
    })?;
    let dir = parent_dir(path);
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .rand_bytes(8)
        .make_in(dir, |candidate| create_new_nofollow(candidate, mode))
        .map_err(|e| FileError::io("create a temporary file in", dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    let file = tmp.as_file_mut();
    // The mode given at creation is reduced by the umask; set it exactly.
    set_mode(file, mode).map_err(|e| FileError::io("set the mode of", &tmp_path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| FileError::io("write", &tmp_path, e))?;
    // On failure the temporary file comes back inside the error and is removed when dropped.
    tmp.persist(path)
        .map_err(|e| FileError::io("replace", path, e.error))?;
    sync_dir(dir)
}

/// Creates a new file at exactly `path`: fails if anything, even a dangling symbolic link, is
/// there already.
fn create_new_nofollow(path: &Path, mode: u32) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_EXCL alone already refuses a symbolic link at the last component; O_NOFOLLOW says
        // so twice, for file systems that get O_EXCL wrong.
        options
            .mode(mode)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Flushes a directory, so that a rename in it survives a power cut.
fn sync_dir(dir: &Path) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        let result = File::open(dir).and_then(|d| d.sync_all());
        match result {
            // Some file systems cannot flush a directory; the rename is done all the same.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            other => other.map_err(|e| FileError::io("flush the directory", dir, e)),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates the directory `path` (and its missing parents) so that only its owner may list,
/// enter and change it (mode 0700).
///
/// Parents are made with the default mode. If `path` exists already and belongs to the
/// current user, its mode is set to 0700; a directory of another user is used as it is.
pub fn create_private_dir(path: &Path) -> Result<(), FileError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| FileError::io("create the directory", parent, e))?;
            }
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(PRIVATE_DIR_MODE);
            }
            match builder.create(path) {
                Ok(()) => {}
                // Made by someone else meanwhile: checked and tightened below.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(FileError::io("create the directory", path, e)),
            }
        }
        Err(e) => return Err(FileError::io("inspect", path, e)),
    }
    // A symbolic link to a directory (e.g. onto another disk) is the user's choice: follow it.
    let meta = std::fs::metadata(path).map_err(|e| FileError::io("inspect", path, e))?;
    if !meta.is_dir() {
        return Err(FileError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if meta.uid() == current_uid() && meta.mode() & 0o777 != PRIVATE_DIR_MODE {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
                .map_err(|e| FileError::io("set the mode 0700 of", path, e))?;
        }
    }
    Ok(())
}

/// Checks that the file holding a secret (`what`, e.g. "CA key") at `path` can be trusted:
/// not a symbolic link, a regular file, owned by the current user, and neither readable nor
/// writable by its group or other users. Call it before reading the secret.
///
/// The error says what is wrong and the command that fixes it, e.g. "the CA key /x/ca.key is
/// readable by other users (mode 0644); run `chmod 600 /x/ca.key`".
pub fn check_private(path: &Path, what: &str) -> Result<(), FileError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| FileError::io("read", path, e))?;
    if meta.file_type().is_symlink() {
        return Err(FileError::Symlink {
            what: what.to_owned(),
            path: path.to_path_buf(),
        });
    }
    if !meta.is_file() {
        return Err(FileError::NotARegularFile {
            what: what.to_owned(),
            path: path.to_path_buf(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        judge(path, what, meta.uid(), meta.mode(), current_uid())
    }
    #[cfg(not(unix))]
    Ok(())
}

/// The ownership and mode rules of [`check_private`], on the facts of one file.
#[cfg(unix)]
fn judge(path: &Path, what: &str, owner: u32, mode: u32, me: u32) -> Result<(), FileError> {
    if owner != me {
        return Err(FileError::NotOwned {
            what: what.to_owned(),
            path: path.to_path_buf(),
            owner,
            me,
        });
    }
    let access = if mode & 0o004 != 0 {
        "readable by other users"
    } else if mode & 0o002 != 0 {
        "writable by other users"
    } else if mode & 0o040 != 0 {
        "readable by its group"
    } else if mode & 0o020 != 0 {
        "writable by its group"
    } else if mode & 0o011 != 0 {
        "executable by other users"
    } else {
        return Ok(());
    };
    Err(FileError::TooOpen {
        what: what.to_owned(),
        path: path.to_path_buf(),
        mode: mode & 0o7777,
        access,
    })
}

/// The real user id of this process.
#[cfg(unix)]
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn private_files_are_0600_and_public_files_0644() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("nvs_keys.bin");
        write_private(&secret, b"keys").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"keys");
        assert_eq!(mode(&secret), 0o600);
        let cert = dir.path().join("ca.pem");
        write_public(&cert, b"cert").unwrap();
        assert_eq!(mode(&cert), 0o644);
        assert_eq!(
            entries(dir.path()),
            ["ca.pem", "nvs_keys.bin"],
            "no temp files"
        );
    }

    #[test]
    fn replacing_a_world_readable_file_makes_it_private() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img.bin");
        std::fs::write(&image, b"old").unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_private(&image, b"new").unwrap();
        assert_eq!(std::fs::read(&image).unwrap(), b"new");
        assert_eq!(mode(&image), 0o600);
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("img.bin")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/img.bin")), Path::new("a"));
        assert!(matches!(
            write_private(Path::new("/tmp/.."), b"x"),
            Err(FileError::NotAFilePath { .. })
        ));
    }

    #[test]
    fn a_symlink_at_the_temporary_name_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let victim_mode = mode(&victim);
        let planted = dir.path().join(".img.bin.planted.tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let err = create_new_nofollow(&planted, 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        // Dangling links too: O_CREAT would otherwise create the link's target.
        let dangling = dir.path().join(".img.bin.dangling.tmp");
        std::os::unix::fs::symlink(dir.path().join("made-through-link"), &dangling).unwrap();
        assert!(create_new_nofollow(&dangling, 0o600).is_err());
        assert!(!dir.path().join("made-through-link").exists());
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(mode(&victim), victim_mode);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let victim_mode = mode(&victim);
        let image = dir.path().join("img.bin");
        std::os::unix::fs::symlink(&victim, &image).unwrap();
        write_private(&image, b"secret").unwrap();
        assert!(std::fs::symlink_metadata(&image).unwrap().is_file());
        assert_eq!(std::fs::read(&image).unwrap(), b"secret");
        assert_eq!(mode(&image), 0o600);
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(mode(&victim), victim_mode);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temporary file is made.
        let target = dir.path().join("img.bin");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"x").unwrap();
        let err = write_private(&target, b"secret").unwrap_err();
        assert!(err.to_string().contains("cannot replace"), "{err}");
        assert_eq!(entries(dir.path()), ["img.bin"]);
        // A missing directory names the directory and says what to do.
        let err = write_private(&dir.path().join("no/such/img.bin"), b"x").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no/such") && text.contains("check that the directory exists"),
            "{text}"
        );
    }

    #[test]
    fn private_dirs_are_0700_and_existing_ones_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b/data");
        create_private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            create_private_dir(&file),
            Err(FileError::NotADirectory { .. })
        ));
    }

    #[test]
    fn check_private_accepts_0600_and_0400_of_ours() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca.key");
        write_private(&key, b"k").unwrap();
        check_private(&key, "CA key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        check_private(&key, "CA key").unwrap();
    }

    #[test]
    fn check_private_refuses_open_modes_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca.key");
        std::fs::write(&key, b"k").unwrap();
        for (m, access) in [
            (0o644, "readable by other users"),
            (0o602, "writable by other users"),
            (0o640, "readable by its group"),
            (0o620, "writable by its group"),
        ] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m)).unwrap();
            let text = check_private(&key, "CA key").unwrap_err().to_string();
            let path = key.display();
            assert_eq!(
                text,
                format!("the CA key {path} is {access} (mode {m:04o}); run `chmod 600 {path}`")
            );
        }
    }

    #[test]
    fn check_private_refuses_a_symlink_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("admin.key");
        write_private(&key, b"k").unwrap();
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        let text = check_private(&link, "admin key").unwrap_err().to_string();
        assert!(
            text.contains("admin key") && text.contains("symbolic link"),
            "{text}"
        );
        assert!(matches!(
            check_private(dir.path(), "admin key"),
            Err(FileError::NotARegularFile { .. })
        ));
        let text = check_private(&dir.path().join("missing.key"), "admin key")
            .unwrap_err()
            .to_string();
        assert!(text.contains("missing.key"), "{text}");
    }

    #[test]
    fn check_private_refuses_a_file_of_another_user() {
        let path = Path::new("/x/ca.key");
        let text = judge(path, "CA key", 1000, 0o100600, 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            text,
            "the CA key /x/ca.key is owned by uid 1000, not by you (uid 0); run `chown 0 /x/ca.key` (as root), or run this program as uid 1000"
        );
        // For real, where this test may change owners (as root).
        if current_uid() == 0 {
            let dir = tempfile::tempdir().unwrap();
            let key = dir.path().join("ca.key");
            write_private(&key, b"k").unwrap();
            std::os::unix::fs::chown(&key, Some(1000), None).unwrap();
            let err = check_private(&key, "CA key").unwrap_err();
            assert!(
                matches!(err, FileError::NotOwned { owner: 1000, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn paths_in_commands_are_quoted_for_the_shell() {
        let text = judge(Path::new("/my keys/ca.key"), "CA key", 0, 0o644, 0)
            .unwrap_err()
            .to_string();
        assert!(
            text.ends_with("run `chmod 600 '/my keys/ca.key'`"),
            "{text}"
        );
        assert_eq!(Shell(Path::new("it's")).to_string(), r"'it'\''s'");
    }
}
