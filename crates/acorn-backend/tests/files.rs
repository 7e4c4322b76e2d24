//! The backend's files on disk: a private data directory (0700), private keys (0600), and a
//! refusal to start with a CA key or admin key that other users could read or change.
#![cfg(unix)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use acorn_backend::ca::{CA_CERT_FILE, CA_KEY_FILE};
use acorn_backend::{
    Backend, BackendConfig, LocalCa, ADMIN_KEY_FILE, CRL_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE,
};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Starts a backend on `dir` and stops it again.
async fn start_and_stop(dir: &Path) {
    let handle = Backend::start(BackendConfig::new(dir))
        .await
        .expect("backend starts");
    handle.shutdown().await.expect("shutdown");
}

/// Every directory under `dir` is 0700 and every `*.key` file 0600.
fn assert_private_tree(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            assert_private_tree(&path);
        } else if path.extension().is_some_and(|e| e == "key") {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}

#[tokio::test]
async fn the_data_directory_is_0700_and_the_keys_0600() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("var/acorn");
    start_and_stop(&data).await;
    assert_eq!(mode(&data), 0o700);
    for key in [CA_KEY_FILE, SERVER_KEY_FILE, ADMIN_KEY_FILE] {
        assert_eq!(mode(&data.join(key)), 0o600, "{key}");
    }
    // Certificates and the CRL are public.
    for public in [CA_CERT_FILE, SERVER_CERT_FILE, CRL_FILE] {
        assert_eq!(mode(&data.join(public)), 0o644, "{public}");
    }
    assert_private_tree(&data);
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn an_existing_open_data_directory_is_tightened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    chmod(&data, 0o755);
    start_and_stop(&data).await;
    assert_eq!(mode(&data), 0o700);
    // And again at the next start, after someone opened it up.
    chmod(&data, 0o755);
    start_and_stop(&data).await;
    assert_private_tree(&data);
}

#[tokio::test]
async fn a_world_readable_ca_key_stops_the_backend_with_the_fix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    start_and_stop(&data).await;
    let key = data.join(CA_KEY_FILE);
    chmod(&key, 0o644);
    let err = Backend::start(BackendConfig::new(&data))
        .await
        .expect_err("a CA key readable by others is refused");
    let text = err.to_string();
    assert!(
        text.contains("CA key")
            && text.contains(&key.display().to_string())
            && text.contains("readable by other users")
            && text.contains("chmod 600"),
        "{text}"
    );
    // The same from the CA on its own, and for a key its group may write.
    chmod(&key, 0o620);
    let Err(err) = LocalCa::load(&data) else {
        panic!("a CA key its group may write is refused");
    };
    let text = err.to_string();
    assert!(
        text.contains("writable by its group") && text.contains("chmod 600"),
        "{text}"
    );
    // Following the advice fixes it.
    chmod(&key, 0o600);
    start_and_stop(&data).await;
}

#[tokio::test]
async fn a_world_readable_admin_key_stops_the_backend_with_the_fix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    start_and_stop(&data).await;
    let key = data.join(ADMIN_KEY_FILE);
    chmod(&key, 0o644);
    let err = Backend::start(BackendConfig::new(&data))
        .await
        .expect_err("an admin key readable by others is refused");
    let text = err.to_string();
    assert!(
        text.contains("admin key")
            && text.contains(&key.display().to_string())
            && text.contains("chmod 600"),
        "{text}"
    );
    chmod(&key, 0o600);
    start_and_stop(&data).await;
}

#[tokio::test]
async fn a_symlinked_or_foreign_ca_key_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    start_and_stop(&data).await;
    let key = data.join(CA_KEY_FILE);
    let moved = tmp.path().join("real-ca.key");
    std::fs::rename(&key, &moved).expect("move");
    std::os::unix::fs::symlink(&moved, &key).expect("symlink");
    let text = Backend::start(BackendConfig::new(&data))
        .await
        .expect_err("a symlinked CA key is refused")
        .to_string();
    assert!(text.contains("symbolic link"), "{text}");
    std::fs::remove_file(&key).expect("unlink");
    std::fs::rename(&moved, &key).expect("move back");

    // Owned by another user (only root can make one).
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0) {
        std::os::unix::fs::chown(&key, Some(1000), None).expect("chown");
        let text = Backend::start(BackendConfig::new(&data))
            .await
            .expect_err("a CA key of another user is refused")
            .to_string();
        assert!(
            text.contains("owned by uid 1000, not by you (uid 0)") && text.contains("chown"),
            "{text}"
        );
        std::os::unix::fs::chown(&key, Some(0), None).expect("chown back");
    }
    start_and_stop(&data).await;
}
