//! Starting and stopping the backend: configuration, the files it keeps in its data
//! directory, and the handle a caller (test, CLI dev stack, demo) holds while it runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::ca::{self, LocalCa};
use crate::error::BackendError;
use crate::files;
use crate::registry::{MintedToken, Registry};
use crate::secret::Secret;

/// File name of the server certificate (for `localhost`, `127.0.0.1`, `::1`) in the data dir.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// File name of the server private key (mode 0600) in the data dir.
pub const SERVER_KEY_FILE: &str = "server.key";
/// File name of the certificate revocation list (PEM) in the data dir.
pub const CRL_FILE: &str = "crl.pem";
/// File name of the SQLite registry in the data dir.
pub const REGISTRY_FILE: &str = "registry.sqlite3";
/// File name of the generated admin key (mode 0600) in the data dir.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// What a revocation hook is told after a device is revoked and the CRL file rewritten.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The revoked device.
    pub device_id: String,
    /// Its certificate serial, lowercase hex.
    pub certificate_serial: String,
    /// The CRL file just rewritten.
    pub crl_path: PathBuf,
}

/// Called after each revocation, e.g. to make mosquitto reload its CRL (SIGHUP). It runs on a
/// blocking thread; an `Err` (a message) is reported to the admin client as a server fault.
pub type RevocationHook = Arc<dyn Fn(&Revocation) -> Result<(), String> + Send + Sync>;

/// Configuration of a backend instance.
#[derive(Clone)]
pub struct BackendConfig {
    /// Directory for the CA, server certificate, CRL, registry and admin key (created if missing).
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The MQTT endpoint handed to registered devices (e.g. `localhost:8883` or an AWS
    /// `<prefix>-ats.iot.<region>.amazonaws.com`).
    pub iot_endpoint: String,
    /// The admin key; `None` reads the data dir's `admin.key`, or makes and saves one.
    pub admin_key: Option<Secret>,
    /// Called after each revocation.
    pub revocation_hook: Option<RevocationHook>,
    /// Serve HTTPS with the data dir's server certificate (`server.pem`, valid for
    /// `localhost`, `127.0.0.1` and `::1`; clients trust `ca.pem`) instead of plain HTTP.
    pub tls: bool,
}

impl core::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("iot_endpoint", &self.iot_endpoint)
            .field("admin_key", &self.admin_key)
            .field(
                "revocation_hook",
                &self.revocation_hook.as_ref().map(|_| "<fn>"),
            )
            .finish()
    }
}

impl BackendConfig {
    /// A configuration keeping its files in `data_dir`, listening on `127.0.0.1:0` over plain
    /// HTTP, handing out the endpoint `localhost:8883`, with a generated admin key and no
    /// revocation hook.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            iot_endpoint: "localhost:8883".into(),
            admin_key: None,
            revocation_hook: None,
            tls: false,
        }
    }
}

/// Paths of the files a running backend keeps (for the broker: CA, server cert/key, CRL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPaths {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The CA certificate (PEM): the broker's `cafile`.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM): the broker's `certfile`.
    pub server_cert: PathBuf,
    /// The server key (PEM): the broker's `keyfile`.
    pub server_key: PathBuf,
    /// The CRL (PEM): the broker's `crlfile`.
    pub crl: PathBuf,
    /// The SQLite registry.
    pub registry: PathBuf,
}

impl BackendPaths {
    fn new(dir: &Path) -> Self {
        Self {
            data_dir: dir.to_path_buf(),
            ca_cert: dir.join(ca::CA_CERT_FILE),
            server_cert: dir.join(SERVER_CERT_FILE),
            server_key: dir.join(SERVER_KEY_FILE),
            crl: dir.join(CRL_FILE),
            registry: dir.join(REGISTRY_FILE),
        }
    }
}

/// The registration backend.
#[derive(Debug)]
pub struct Backend;

impl Backend {
    /// Prepares the data directory (CA, server certificate, registry, admin key and a fresh
    /// CRL, each made once and reused), then serves the API on `config.listen` in a tokio task.
    /// Must be called inside a tokio runtime.
    pub async fn start(config: BackendConfig) -> Result<BackendHandle, BackendError> {
        if config.iot_endpoint.trim().is_empty() {
            return Err(BackendError::Config(
                "iot_endpoint is empty; set the MQTT endpoint devices should connect to".into(),
            ));
        }
        let listen = config.listen;
        let tls = config.tls;
        let (state, paths) = tokio::task::spawn_blocking(move || prepare(config))
            .await
            .map_err(|e| BackendError::Task(e.to_string()))??;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| BackendError::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| BackendError::Bind {
            addr: listen,
            source,
        })?;
        let admin_key = state.admin_key.clone();
        let ca_certificate_pem = state.ca.certificate_pem().to_owned();
        let registry = state.registry.clone();
        let app = api::router(state);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = if tls {
            let acceptor =
                crate::tls::acceptor(&paths.server_cert, &paths.ca_cert, &paths.server_key)?;
            tokio::spawn(crate::tls::serve(listener, acceptor, app, stop_rx))
        } else {
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        // A dropped handle also stops the server.
                        let _ = stop_rx.await;
                    })
                    .await
            })
        };
        tracing::info!(%local_addr, tls, data_dir = %paths.data_dir.display(), "registration backend listening");
        Ok(BackendHandle {
            local_addr,
            tls,
            paths,
            admin_key,
            ca_certificate_pem,
            registry,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// Everything `start` does before listening; runs on a blocking thread.
fn prepare(config: BackendConfig) -> Result<(Arc<AppState>, BackendPaths), BackendError> {
    let dir = config.data_dir.as_path();
    files::create_dir(dir)?;
    let paths = BackendPaths::new(dir);
    let ca = LocalCa::load_or_create(dir)?;
    // Reuse the server certificate while this CA signed it and it has 30 days left; a new CA
    // or an old certificate gets a new one.
    let reusable = paths.server_key.exists()
        && std::fs::read_to_string(&paths.server_cert)
            .is_ok_and(|pem| ca.still_vouches_for(&pem, time::Duration::days(30)));
    if !reusable {
        let server = ca.issue_server_certificate(&[])?;
        files::write_atomic(
            &paths.server_key,
            server.private_key_pem.expose().as_bytes(),
            true,
        )?;
        files::write_atomic(&paths.server_cert, server.certificate.pem.as_bytes(), false)?;
    }
    let registry = Registry::open(&paths.registry)?;
    let admin_key = match config.admin_key {
        Some(key) if key.expose().trim().is_empty() => {
            return Err(BackendError::Config(
                "the admin key is empty; set a non-empty key or leave it unset to generate one"
                    .into(),
            ))
        }
        Some(key) => key,
        None => load_or_make_admin_key(&dir.join(ADMIN_KEY_FILE))?,
    };
    let state = Arc::new(AppState {
        ca,
        registry,
        iot_endpoint: config.iot_endpoint,
        admin_key,
        crl_path: paths.crl.clone(),
        revocation_hook: config.revocation_hook,
        crl_lock: Mutex::new(()),
    });
    // A fresh CRL at every start: the broker needs the file, and its nextUpdate moves on.
    api::write_crl(&state)?;
    Ok((state, paths))
}

fn load_or_make_admin_key(path: &Path) -> Result<Secret, BackendError> {
    if path.exists() {
        let key = Secret::new(files::read_text(path)?.trim());
        if !key.expose().is_empty() {
            return Ok(key);
        }
    }
    let key = Secret::new(hex::encode(rand::random::<[u8; 32]>()));
    files::write_atomic(path, key.expose().as_bytes(), true)?;
    Ok(key)
}

/// A running backend. Dropping it stops the server too; [`BackendHandle::shutdown`] also
/// waits for it to finish.
#[derive(Debug)]
pub struct BackendHandle {
    local_addr: SocketAddr,
    tls: bool,
    paths: BackendPaths,
    admin_key: Secret,
    ca_certificate_pem: String,
    registry: Registry,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl BackendHandle {
    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The API's base URL, e.g. `http://127.0.0.1:41234` (`https://` with TLS on).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The admin key (for `Authorization: Bearer`). Do not log it.
    pub fn admin_key(&self) -> &Secret {
        &self.admin_key
    }

    /// The CA certificate, PEM.
    pub fn ca_certificate_pem(&self) -> &str {
        &self.ca_certificate_pem
    }

    /// The files the backend keeps.
    pub fn paths(&self) -> &BackendPaths {
        &self.paths
    }

    /// Mints one registration token valid for `ttl_seconds` (e.g. for the dev stack to print).
    pub async fn mint_token(&self, ttl_seconds: i64) -> Result<MintedToken, BackendError> {
        let registry = self.registry.clone();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut minted =
            tokio::task::spawn_blocking(move || registry.mint_tokens(1, ttl_seconds.max(1), now))
                .await
                .map_err(|e| BackendError::Task(e.to_string()))??;
        minted
            .pop()
            .ok_or_else(|| BackendError::Task("no token was minted".into()))
    }

    /// Stops accepting requests, lets requests in flight finish (at most 10 s), and returns.
    pub async fn shutdown(mut self) -> Result<(), BackendError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(10), &mut task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(BackendError::Task(format!("the HTTP server failed: {e}"))),
            Ok(Err(e)) => Err(BackendError::Task(e.to_string())),
            Err(_) => {
                task.abort();
                tracing::warn!("backend did not stop within 10 s; aborted open connections");
                Ok(())
            }
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
