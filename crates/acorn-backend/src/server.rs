//! Starting and stopping the backend: configuration, the files it keeps in its data
//! directory, and the handle a caller (test, CLI dev stack, demo) holds while it runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::ca::{self, CaRole, IssuedKeyPair, KeyType, LocalCa};
use crate::error::BackendError;
use crate::files;
use crate::registry::{DatabaseUrl, MintedToken, PoolOptions, Registry};
use crate::serve::ServeLimits;
use crate::signer::{Signer, SignerConfig};
use crate::stats::{BackendStats, Count};
use secrecy::{ExposeSecret, SecretString};

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
/// Directory (inside the data dir) of the service CA, which signs service identities only.
pub const SERVICE_CA_DIR: &str = "service-ca";
/// Directory (inside the data dir) of the claim CA, which signs claim certificates only
/// (made at the first [`BackendHandle::issue_claim_identity`]).
pub const CLAIM_CA_DIR: &str = "claim-ca";

/// A device just revoked.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The revoked device.
    pub device_id: String,
    /// Its certificate serial, lowercase hex.
    pub certificate_serial: String,
    /// Its firmware version as registered (for the offline status sent on its behalf).
    pub firmware_version: String,
}

/// What a CRL hook is told each time the CRL file is rewritten.
#[derive(Debug, Clone)]
pub struct CrlEvent {
    /// The CRL file just written.
    pub crl_path: PathBuf,
    /// Its CRL number.
    pub crl_number: u64,
    /// The device whose revocation caused this CRL; `None` for a scheduled renewal.
    pub revoked: Option<Revocation>,
}

/// Called after each CRL write (a revocation or a scheduled renewal), e.g. to make the broker
/// re-read its CRL and close a revoked device's live connection. It runs on a blocking thread;
/// an `Err` (a message, logged, never shown to clients) makes a revocation answer 500.
pub type CrlHook = Arc<dyn Fn(&CrlEvent) -> Result<(), String> + Send + Sync>;

/// Default lifetime of each CRL (its nextUpdate).
pub const DEFAULT_CRL_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default interval between CRL renewals: one day, well inside the lifetime.
pub const DEFAULT_CRL_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Default number of server-side key generations allowed at once.
pub const DEFAULT_KEYGEN_CONCURRENCY: usize = 2;

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
    /// The broker address handed to service identities (the broker's service listener, e.g.
    /// `localhost:8884`), if there is one.
    pub service_endpoint: Option<String>,
    /// The admin key; `None` reads the data dir's `admin.key`, or makes and saves one.
    pub admin_key: Option<SecretString>,
    /// Called after each CRL write (revocations and renewals).
    pub crl_hook: Option<CrlHook>,
    /// Lifetime of each CRL (its nextUpdate); default 30 days.
    pub crl_validity: Duration,
    /// How often the CRL is re-issued (and the hook called); default daily. Must be at most
    /// half of `crl_validity`, so a CRL never lapses while the backend runs.
    pub crl_refresh: Duration,
    /// Server-side key generations allowed at once (each RSA-2048 costs ~100 ms of CPU).
    pub keygen_concurrency: usize,
    /// Limits on HTTP clients (connections, header, request and idle timeouts).
    pub limits: ServeLimits,
    /// Serve HTTPS with the data dir's server certificate (`server.pem`, valid for
    /// `localhost`, `127.0.0.1` and `::1`; clients trust `ca.pem`) instead of plain HTTP.
    pub tls: bool,
    /// More DNS names or IP addresses the server certificate (`server.pem`, also the dev
    /// broker's) is valid for, e.g. a LAN address hardware connects to. A certificate in the
    /// data dir that lacks one is replaced. Default: none.
    pub server_names: Vec<String>,
    /// The registry: `None` is the data dir's SQLite file ([`REGISTRY_FILE`]); PostgreSQL
    /// lets several instances share one registry.
    pub database: Option<DatabaseUrl>,
    /// The PostgreSQL connection pool (ignored for SQLite).
    pub pool: PoolOptions,
    /// Who issues device certificates: the local CA (default) or AWS IoT Core.
    pub signer: SignerConfig,
    /// A front end (the web console) merged into the HTTP server, built from the backend's
    /// [`crate::Admin`] calls; `None` serves the API alone.
    pub console: Option<crate::ConsoleMount>,
}

impl core::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("iot_endpoint", &self.iot_endpoint)
            .field("service_endpoint", &self.service_endpoint)
            .field("admin_key", &self.admin_key)
            .field("crl_hook", &self.crl_hook.as_ref().map(|_| "<fn>"))
            .field("crl_validity", &self.crl_validity)
            .field("crl_refresh", &self.crl_refresh)
            .field("keygen_concurrency", &self.keygen_concurrency)
            .field("limits", &self.limits)
            .field("tls", &self.tls)
            .field("server_names", &self.server_names)
            .field("database", &self.database)
            .field("pool", &self.pool)
            .field("signer", &self.signer)
            .field("console", &self.console.as_ref().map(|_| "<mount>"))
            .finish()
    }
}

impl BackendConfig {
    /// A configuration keeping its files in `data_dir`, listening on `127.0.0.1:0` over plain
    /// HTTP, handing out the endpoint `localhost:8883`, with a generated admin key, no CRL
    /// hook and the default limits.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            iot_endpoint: "localhost:8883".into(),
            service_endpoint: None,
            admin_key: None,
            crl_hook: None,
            crl_validity: DEFAULT_CRL_VALIDITY,
            crl_refresh: DEFAULT_CRL_REFRESH,
            keygen_concurrency: DEFAULT_KEYGEN_CONCURRENCY,
            limits: ServeLimits::default(),
            tls: false,
            server_names: Vec::new(),
            database: None,
            pool: PoolOptions::default(),
            signer: SignerConfig::Local,
            console: None,
        }
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.iot_endpoint.trim().is_empty() {
            return Err(BackendError::Config(
                "iot_endpoint is empty; set the MQTT endpoint devices should connect to".into(),
            ));
        }
        if self.crl_validity < Duration::from_secs(2)
            || self.crl_refresh.is_zero()
            || self.crl_refresh > self.crl_validity / 2
        {
            return Err(BackendError::Config(format!(
                "crl_refresh ({:?}) must be non-zero and at most half of crl_validity ({:?}, at least 2 s), so the CRL is renewed well before it lapses",
                self.crl_refresh, self.crl_validity
            )));
        }
        if self.keygen_concurrency == 0 {
            return Err(BackendError::Config(
                "keygen_concurrency must be at least 1".into(),
            ));
        }
        self.limits.check().map_err(BackendError::Config)
    }
}

/// Paths of the files a running backend keeps (for the broker: CA, server cert/key, CRL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPaths {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The CA certificate (PEM): the broker's `cafile`.
    pub ca_cert: PathBuf,
    /// The service CA certificate (PEM): the `cafile` of the broker's service listener.
    pub service_ca_cert: PathBuf,
    /// The server certificate (PEM): the broker's `certfile`.
    pub server_cert: PathBuf,
    /// The server key (PEM): the broker's `keyfile`.
    pub server_key: PathBuf,
    /// The CRL (PEM): the broker's `crlfile`.
    pub crl: PathBuf,
    /// The SQLite registry (when no other database is configured).
    pub registry: PathBuf,
}

impl BackendPaths {
    fn new(dir: &Path) -> Self {
        Self {
            data_dir: dir.to_path_buf(),
            ca_cert: dir.join(ca::CA_CERT_FILE),
            service_ca_cert: dir.join(SERVICE_CA_DIR).join(ca::CA_CERT_FILE),
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
        config.check()?;
        let listen = config.listen;
        let tls = config.tls;
        let limits = config.limits;
        let crl_refresh = config.crl_refresh;
        let reconcile_interval = match &config.signer {
            SignerConfig::Aws(aws) => aws.reconcile_interval,
            SignerConfig::Local => Duration::ZERO,
        };
        let console = config.console.clone();
        let (state, paths) = prepare(config).await?;
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
        let acceptor = if tls {
            Some(crate::tls::acceptor(
                &paths.server_cert,
                &paths.ca_cert,
                &paths.server_key,
            )?)
        } else {
            None
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut app = api::router(Arc::clone(&state));
        if let Some(mount) = console {
            let admin = crate::Admin::new(Arc::clone(&state), tls, stop_rx.clone());
            app = app.merge(mount(admin));
        }
        let task = tokio::spawn(crate::serve::serve(
            listener,
            acceptor,
            app,
            limits,
            stop_rx.clone(),
        ));
        let renewals = if state.signer.uses_crl() {
            tokio::spawn(renew_crl_forever(
                Arc::clone(&state),
                crl_refresh,
                stop_rx.clone(),
            ))
        } else {
            tokio::spawn(async {})
        };
        // The aws signer's schedule of reconciliations (the local CA sees every step itself).
        let reconciliations = if reconcile_interval.is_zero() || state.signer.uses_crl() {
            tokio::spawn(async {})
        } else {
            tracing::info!(interval = ?reconcile_interval, "reconciliation with AWS IoT Core scheduled");
            tokio::spawn(crate::reconcile::reconcile_forever(
                Arc::clone(&state),
                reconcile_interval,
                stop_rx.clone(),
            ))
        };
        tracing::info!(%local_addr, tls, data_dir = %paths.data_dir.display(),
            registry = %state.registry.describe(), signer = state.signer.name(),
            "registration backend listening");
        Ok(BackendHandle {
            local_addr,
            tls,
            paths,
            state,
            stop: stop_tx,
            task: Some(task),
            renewals,
            reconciliations,
        })
    }
}

/// Re-issues the CRL every `refresh` until `stop`, so it never lapses while the backend runs.
async fn renew_crl_forever(
    state: Arc<AppState>,
    refresh: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(refresh) => {}
        }
        match api::publish_crl(&state, None).await {
            Ok(number) => tracing::info!(crl_number = number, "CRL renewed"),
            Err(e) => {
                tracing::error!(error = %e, "CRL renewal failed; retrying at the next interval")
            }
        }
    }
}

/// The files `start` prepares in the data directory (blocking work).
struct Prepared {
    ca: LocalCa,
    service_ca: LocalCa,
    paths: BackendPaths,
    admin_key: SecretString,
}

/// Everything `start` does before listening: files (blocking thread), registry, signer, CRL.
async fn prepare(config: BackendConfig) -> Result<(Arc<AppState>, BackendPaths), BackendError> {
    let dir = config.data_dir.clone();
    let admin_key = config.admin_key.clone();
    let server_names = config.server_names.clone();
    let files = tokio::task::spawn_blocking(move || prepare_files(&dir, admin_key, &server_names))
        .await
        .map_err(|e| BackendError::Task(e.to_string()))??;
    let database = config
        .database
        .clone()
        .unwrap_or_else(|| DatabaseUrl::Sqlite(files.paths.registry.clone()));
    let registry = Registry::connect(&database, &config.pool).await?;
    let signer = Signer::start(&config.signer).await?;
    let state = Arc::new(AppState {
        ca: Arc::new(files.ca),
        signer,
        service_ca: files.service_ca,
        registry,
        iot_endpoint: config.iot_endpoint,
        service_endpoint: config.service_endpoint,
        admin_key: files.admin_key,
        crl_path: files.paths.crl.clone(),
        crl_validity: config.crl_validity,
        crl_hook: config.crl_hook,
        crl_lock: tokio::sync::Mutex::new(()),
        last_crl_issued: Mutex::new(None),
        keygen_limit: tokio::sync::Semaphore::new(config.keygen_concurrency),
        counters: Default::default(),
        metrics: Default::default(),
        draining: AtomicBool::new(false),
        last_ready: AtomicBool::new(true),
        command_sink: Mutex::new(None),
        reconciler: Default::default(),
    });
    // A fresh CRL at every start: the broker needs the file, and its nextUpdate moves on.
    if state.signer.uses_crl() {
        api::write_crl(&state).await?;
        state.metrics.crl_issued();
    }
    Ok((state, files.paths))
}

/// The CAs, the server certificate and the admin key in `dir`, each made once and reused.
fn prepare_files(
    dir: &Path,
    admin_key: Option<SecretString>,
    server_names: &[String],
) -> Result<Prepared, BackendError> {
    files::create_dir(dir)?;
    let paths = BackendPaths::new(dir);
    let ca = LocalCa::load_or_create(dir)?;
    let service_ca = LocalCa::load_or_create_as(&dir.join(SERVICE_CA_DIR), CaRole::Service)?;
    // Reuse the server certificate while this CA signed it, it has 30 days left and it names
    // every server name asked for; a new CA, an old certificate or a new name gets a new one.
    let names: Vec<&str> = server_names.iter().map(String::as_str).collect();
    let reusable = paths.server_key.exists()
        && std::fs::read_to_string(&paths.server_cert).is_ok_and(|pem| {
            ca.still_vouches_for(&pem, time::Duration::days(30))
                && crate::ca::names_all(&pem, &names)
        });
    if !reusable {
        let server = ca.issue_server_certificate(&names)?;
        files::write_atomic(
            &paths.server_key,
            server.private_key_pem.expose_secret().as_bytes(),
            true,
        )?;
        files::write_atomic(&paths.server_cert, server.certificate.pem.as_bytes(), false)?;
    }
    let admin_key = match admin_key {
        Some(key) if key.expose_secret().trim().is_empty() => {
            return Err(BackendError::Config(
                "the admin key is empty; set a non-empty key or leave it unset to generate one"
                    .into(),
            ))
        }
        Some(key) => key,
        None => load_or_make_admin_key(&dir.join(ADMIN_KEY_FILE))?,
    };
    Ok(Prepared {
        ca,
        service_ca,
        paths,
        admin_key,
    })
}

fn load_or_make_admin_key(path: &Path) -> Result<SecretString, BackendError> {
    if path.exists() {
        // The admin key mints registration tokens and revokes devices: refuse one that other
        // users could read or change.
        files::check_private(path, "admin key")?;
        let key = SecretString::from(files::read_text(path)?.trim());
        if !key.expose_secret().is_empty() {
            return Ok(key);
        }
    }
    let key = SecretString::from(hex::encode(rand::random::<[u8; 32]>()));
    files::write_atomic(path, key.expose_secret().as_bytes(), true)?;
    Ok(key)
}

/// A running backend. Dropping it stops the server too; [`BackendHandle::shutdown`] also
/// waits for it to finish.
pub struct BackendHandle {
    local_addr: SocketAddr,
    tls: bool,
    paths: BackendPaths,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    renewals: JoinHandle<()>,
    reconciliations: JoinHandle<()>,
}

impl core::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
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
    pub fn admin_key(&self) -> &SecretString {
        &self.state.admin_key
    }

    /// The CA certificate, PEM.
    pub fn ca_certificate_pem(&self) -> &str {
        self.state.ca.certificate_pem()
    }

    /// The service CA certificate, PEM.
    pub fn service_ca_certificate_pem(&self) -> &str {
        self.state.service_ca.certificate_pem()
    }

    /// The files the backend keeps.
    pub fn paths(&self) -> &BackendPaths {
        &self.paths
    }

    /// What the backend did since it started.
    pub fn stats(&self) -> BackendStats {
        self.state.counters.snapshot()
    }

    /// The registry this backend uses (SQLite or PostgreSQL).
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// `local` or `aws`.
    pub fn signer_name(&self) -> &'static str {
        self.state.signer.name()
    }

    /// Starts draining before a shutdown: `/v1/ready` answers 503 `draining` from now on (so
    /// a load balancer stops sending requests), everything else still works.
    pub fn begin_drain(&self) {
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!("draining: /v1/ready now answers 503");
    }

    /// Mints one registration token valid for `ttl_seconds` (e.g. for the dev stack to print).
    pub async fn mint_token(&self, ttl_seconds: i64) -> Result<MintedToken, BackendError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut minted = self
            .state
            .registry
            .mint_tokens(1, ttl_seconds.max(1), now)
            .await?;
        self.state.counters.add(Count::TokensMinted(1));
        self.state.metrics.tokens_minted(1);
        tracing::info!(count = 1, ttl_seconds, "registration token minted");
        minted
            .pop()
            .ok_or_else(|| BackendError::Task("no token was minted".into()))
    }

    /// Issues a service identity `service:<name>` from the service CA: trusted only on the
    /// broker's service listener, where it may read and write every device's topics. No
    /// registration can ever obtain one (see [`acorn_mqtt::SERVICE_CLIENT_PREFIX`]).
    pub fn issue_service_identity(&self, name: &str) -> Result<IssuedKeyPair, BackendError> {
        crate::admin::issue_service_identity(&self.state, name)
    }

    /// Issues a claim certificate `claim:<name>` (P-256, new key) from the claim CA (made in
    /// [`CLAIM_CA_DIR`] the first time): shared by many devices for fleet provisioning by
    /// claim; trusted only by the local stack's claim endpoint. Returns it with the claim
    /// CA's certificate (PEM), which that endpoint must trust.
    pub fn issue_claim_identity(
        &self,
        name: &str,
    ) -> Result<(IssuedKeyPair, String), BackendError> {
        let ca =
            LocalCa::load_or_create_as(&self.paths.data_dir.join(CLAIM_CA_DIR), CaRole::Claim)?;
        let cn = format!("{}{name}", acorn_mqtt::topics::CLAIM_CLIENT_PREFIX);
        let issued = ca.issue_with_new_key(&cn, KeyType::P256)?;
        tracing::info!(%cn, "claim certificate issued");
        Ok((issued, ca.certificate_pem().to_owned()))
    }

    /// Issues a takeover identity for `device_id` from the service CA: its client id is the
    /// device's, so connecting with it closes the device's live session (MQTT session
    /// takeover), but on the service listener it has no rights at all. Used to end a revoked
    /// device's connection at once.
    pub fn issue_takeover_identity(&self, device_id: &str) -> Result<IssuedKeyPair, BackendError> {
        acorn_mqtt::check_device_id(device_id).map_err(|e| BackendError::Config(e.to_string()))?;
        self.state
            .service_ca
            .issue_with_new_key(device_id, KeyType::P256)
    }

    /// The calls a local MQTT responder makes to serve AWS IoT's provisioning MQTT API
    /// (`CreateCertificateFromCsr`, `RegisterThing` of `template`) and to finish rotations;
    /// see [`crate::rotation`].
    pub fn local_iot(&self, template: &str) -> Result<crate::rotation::LocalIot, BackendError> {
        acorn_mqtt::provisioning::check_template_name(template)
            .map_err(|e| BackendError::Config(e.to_string()))?;
        Ok(crate::rotation::LocalIot {
            state: Arc::clone(&self.state),
            template: template.to_owned(),
        })
    }

    /// Gives the service a way to publish commands to devices (`POST
    /// /v1/devices/{id}/rotate`): the dev stack's MQTT link. Replaces any earlier one.
    pub fn set_command_sink(&self, sink: crate::rotation::CommandSink) {
        *self
            .state
            .command_sink
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Stops accepting requests, lets requests in flight finish (at most 10 s), and returns.
    pub async fn shutdown(mut self) -> Result<(), BackendError> {
        let _ = self.stop.send(true);
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
        let _ = self.stop.send(true);
        self.renewals.abort();
        self.reconciliations.abort();
    }
}
