//! An MQTT 3.1.1 broker in the process (feature `embedded`, on by default): what `acorn demo`
//! runs so that nothing has to be installed, with the same rules as the dev stack's mosquitto
//! ([`crate::broker`]).
//!
//! * **Mutual TLS** (rustls 0.23, ring): every client must present a certificate that chains
//!   to the CA of the listener it connects to (`WebPkiClientVerifier`); TLS 1.2 and 1.3.
//!   A device certificate listed in the device CA's CRL ([`EmbeddedConfig::device_crls`],
//!   replaced while running through [`EmbeddedBroker::crl_installer`]) is refused at the
//!   handshake; a connection already open is not closed by a new CRL.
//! * **Two listeners**: the *device* listener trusts the device CA, and each client there gets
//!   exactly [`acorn_mqtt::DEVICE_POLICY`] on its own id (publish to its button-press and
//!   status topics, subscribe to its settings and commands topics, each literally, no
//!   wildcard); the *service* listener trusts only the service CA, takes only service
//!   identities ([`acorn_mqtt::SERVICE_CLIENT_PREFIX`]) and gives them all of
//!   [`SERVICE_TOPICS`](crate::broker::SERVICE_TOPICS). Each listener is its own name space
//!   of sessions. With [`EmbeddedConfig::local_provisioning`], mosquitto's rules for AWS
//!   IoT's provisioning MQTT API: each device also its own six topics of it under
//!   `acorn-local/<its id>/`, literally, and the responder identity all of `acorn-local/#`.
//! * **Identity**: the client id is the certificate's common name, whatever the CONNECT says
//!   (mosquitto's `use_identity_as_username` + `use_username_as_clientid`); a device listener
//!   CN outside the device-id alphabet is refused (CONNACK 5).
//! * **MQTT**: QoS 0 and 1 (PUBACK; QoS 2 is refused as AWS IoT Core does: a QoS 2 PUBLISH
//!   closes the connection and a QoS 2 subscription is granted QoS 1), `+`/`#` filters,
//!   persistent sessions (`clean_session = false` keeps subscriptions and queues QoS 1
//!   messages while offline; unacknowledged ones are sent again with DUP on reconnect), the
//!   last will on any end without DISCONNECT (including a takeover and a keepalive timeout),
//!   keepalive enforcement (1.5 × the client's keepalive), session takeover (a second
//!   connection with the same client id closes the first). Topics and filters follow AWS IoT
//!   Core's limits ([`acorn_mqtt::limits::check_topic`]). Retained messages are not stored.
//! * **Denied is silent, as in mosquitto**: a publish outside the client's rights is
//!   acknowledged and dropped; a subscription outside them gets the SUBACK failure code, and
//!   nothing a client may not receive is ever delivered to it.
//! * **Bounded**: connections, sessions, subscriptions per session, packet size (256 KB),
//!   queued and in-flight messages per session, TLS handshake and CONNECT time, each write
//!   ([`Limits`]).
//!
//! ```no_run
//! use acorn_devstack::embedded::{EmbeddedBroker, EmbeddedConfig};
//! # async fn run() -> Result<(), acorn_devstack::embedded::EmbeddedError> {
//! let dir = std::path::Path::new("/tmp/acorn-demo");
//! let mut config = EmbeddedConfig::from_pem_files(
//!     &dir.join("ca.pem"),
//!     &dir.join("server.pem"),
//!     &dir.join("server.key"),
//! )?;
//! config.service_roots = Some(EmbeddedConfig::roots_from_pem_file(&dir.join("service-ca.pem"))?);
//! let broker = EmbeddedBroker::start(config).await?;
//! println!("devices:  mqtts://127.0.0.1:{}", broker.device_port());
//! println!("services: mqtts://127.0.0.1:{}", broker.service_port().unwrap_or_default());
//! broker.stop().await;
//! # Ok(()) }
//! ```

mod connection;
mod router;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use self::router::Router;
use crate::broker::LocalProvisioning;

/// Which listener a client came in on (and so which CA vouched for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// Devices: certificates from the device CA, [`acorn_mqtt::DEVICE_POLICY`] rights.
    Device,
    /// Service identities: certificates from the service CA, all of `acorn-pups/#`.
    Service,
    /// Fleet provisioning by claim: the shared claim certificate (from the claim CA, common
    /// name `claim:<name>`) with a client id of its own choosing, `claim:<device id>`; rights:
    /// the provisioning API under `acorn-claim/<client id>/` and nothing else. mosquitto
    /// cannot serve this (its client ids come from the certificate, or are free for anyone),
    /// hence this listener.
    Claim,
}

/// Every bound of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections (both listeners); more are closed at accept.
    pub max_connections: usize,
    /// Sessions (connected, or persistent and offline); a CONNECT for a new one beyond this is
    /// refused (CONNACK 3, server unavailable).
    pub max_sessions: usize,
    /// Largest MQTT packet read; a larger one closes the connection.
    pub max_packet_size: usize,
    /// Messages waiting to be sent to one session (while it is offline, or behind its
    /// in-flight window); beyond it new messages are dropped for that session, as mosquitto's
    /// `max_queued_messages` does.
    pub max_queued_messages: usize,
    /// QoS 1 messages sent to one client and not yet acknowledged.
    pub max_inflight: usize,
    /// Subscriptions of one session; more get the SUBACK failure code.
    pub max_subscriptions: usize,
    /// Time for the TLS handshake, and then again for the CONNECT.
    pub connect_timeout: Duration,
    /// Time for one write to a client; a client that does not read is disconnected.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_sessions: 10_000,
            max_packet_size: 256 * 1024,
            max_queued_messages: 1000,
            max_inflight: 100,
            max_subscriptions: 64,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// How to start an [`EmbeddedBroker`].
#[derive(Debug)]
pub struct EmbeddedConfig {
    /// Address the listeners bind (default 127.0.0.1).
    pub address: IpAddr,
    /// Where the device and claim listeners bind instead of [`Self::address`] (e.g. a LAN
    /// address, for hardware: `acorn dev up --lan-address`); the service listener always
    /// stays on [`Self::address`]. Default: `None`.
    pub device_address: Option<IpAddr>,
    /// Device listener port; 0 picks a free one.
    pub device_port: u16,
    /// Service listener port; 0 picks a free one. Used only with [`Self::service_roots`].
    pub service_port: u16,
    /// The broker's certificate chain, leaf first.
    pub server_chain: Vec<CertificateDer<'static>>,
    /// The broker's private key.
    pub server_key: PrivateKeyDer<'static>,
    /// CA certificates device certificates must chain to.
    pub device_roots: Vec<CertificateDer<'static>>,
    /// Revocation lists of the device CA: a device certificate listed in one is refused at
    /// the handshake. Replaced while running by [`CrlInstaller::install`].
    pub device_crls: Vec<CertificateRevocationListDer<'static>>,
    /// CA certificates of service identities; `None`: no service listener.
    pub service_roots: Option<Vec<CertificateDer<'static>>>,
    /// AWS IoT's provisioning MQTT API served locally, with mosquitto's rules for it
    /// ([`LocalProvisioning::device_patterns`]): each device may also publish its own two
    /// requests and receive its own four answers under `acorn-local/<its id>/`, and the
    /// responder (a service identity) may use all of
    /// [`LocalProvisioning::RESPONDER_TOPICS`]. Default: off.
    pub local_provisioning: Option<LocalProvisioning>,
    /// Claim listener port; 0 picks a free one. Used only with [`Self::claim_roots`].
    pub claim_port: u16,
    /// CA certificates of claim certificates; `Some` opens the claim listener (needs
    /// [`Self::local_provisioning`] for the template and the responder).
    pub claim_roots: Option<Vec<CertificateDer<'static>>>,
    /// Open the device listener (default); `false` for a broker that serves only claims.
    pub device_listener: bool,
    /// Bounds.
    pub limits: Limits,
}

impl EmbeddedConfig {
    /// A device listener on a free port of 127.0.0.1 trusting the CA(s) in `device_ca`, with
    /// the server certificate chain in `server_cert` and its key in `server_key` (PEM files);
    /// no service listener.
    pub fn from_pem_files(
        device_ca: &Path,
        server_cert: &Path,
        server_key: &Path,
    ) -> Result<Self, EmbeddedError> {
        let server_chain = Self::roots_from_pem_file(server_cert)?;
        let server_key =
            PrivateKeyDer::from_pem_file(server_key).map_err(|e| EmbeddedError::Pem {
                path: server_key.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            device_address: None,
            device_port: 0,
            service_port: 0,
            server_chain,
            server_key,
            device_roots: Self::roots_from_pem_file(device_ca)?,
            device_crls: Vec::new(),
            service_roots: None,
            local_provisioning: None,
            claim_port: 0,
            claim_roots: None,
            device_listener: true,
            limits: Limits::default(),
        })
    }

    /// Every certificate of a PEM file (at least one).
    pub fn roots_from_pem_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, EmbeddedError> {
        pem_items(path, "CERTIFICATE")
    }

    /// Every CRL of a PEM file (at least one), e.g. the registration backend's `crl.pem`.
    pub fn crls_from_pem_file(
        path: &Path,
    ) -> Result<Vec<CertificateRevocationListDer<'static>>, EmbeddedError> {
        pem_items(path, "X509 CRL")
    }
}

/// Every `label` block of a PEM file (at least one).
fn pem_items<T: PemObject>(path: &Path, label: &str) -> Result<Vec<T>, EmbeddedError> {
    let pem = |reason: String| EmbeddedError::Pem {
        path: path.to_owned(),
        reason,
    };
    let items = T::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if items.is_empty() {
        return Err(pem(format!("no {label} block")));
    }
    Ok(items)
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The TLS configuration was refused (a CA certificate rustls cannot use, a key that
    /// does not match the certificate...).
    #[error("TLS configuration of the {listener:?} listener: {reason}")]
    Tls {
        /// The listener.
        listener: Listener,
        /// rustls's reason.
        reason: String,
    },
    /// The local provisioning settings are unusable (a template name AWS would refuse, a
    /// responder that is not a service identity).
    #[error("local provisioning: {0}")]
    LocalProvisioning(String),
    /// A listener could not bind its address.
    #[error("cannot listen on {address}: {source} (is the port taken?)")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A listener's TLS settings, kept so that a new CRL makes a new configuration; connections
/// already open keep the one they were accepted with.
struct ListenerTls {
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
    current: RwLock<tokio_rustls::TlsAcceptor>,
}

/// Installs new device CRLs into a running [`EmbeddedBroker`] (e.g. from the registration
/// backend's CRL hook); cheap to clone, usable from any thread. A device connection open with
/// a certificate the new CRLs revoke is closed at once and its last will published, as the
/// dev stack does with mosquitto (which checks CRLs only at the handshake) by taking the
/// session over.
#[derive(Clone)]
pub struct CrlInstaller {
    tls: Arc<ListenerTls>,
    revoked: Arc<watch::Sender<Arc<Revoked>>>,
}

/// A certificate as a CRL names it: its issuer's name and its serial number, as DER.
pub(crate) type RevocationKey = (Vec<u8>, Vec<u8>);

/// The certificates the installed CRLs revoke.
#[derive(Debug, Default)]
pub(crate) struct Revoked(std::collections::HashSet<RevocationKey>);

impl Revoked {
    /// What `crls` revoke (a CRL that does not parse revokes nothing here; rustls refused it
    /// already when it was installed).
    fn from_crls(crls: &[CertificateRevocationListDer<'static>]) -> Self {
        let mut revoked = std::collections::HashSet::new();
        for crl in crls {
            let Ok((_, crl)) = x509_parser::parse_x509_crl(crl.as_ref()) else {
                continue;
            };
            let issuer = crl.issuer().as_raw().to_vec();
            for entry in crl.iter_revoked_certificates() {
                revoked.insert((issuer.clone(), entry.raw_serial().to_vec()));
            }
        }
        Revoked(revoked)
    }

    /// How a CRL would name the certificate `der` (`None` when it does not parse).
    pub(crate) fn key_of(der: &[u8]) -> Option<RevocationKey> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some((cert.issuer().as_raw().to_vec(), cert.raw_serial().to_vec()))
    }

    /// Whether the certificate named `key` is revoked.
    pub(crate) fn contains(&self, key: &RevocationKey) -> bool {
        self.0.contains(key)
    }
}

impl std::fmt::Debug for CrlInstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrlInstaller")
    }
}

impl CrlInstaller {
    /// From the next handshake on, device certificates are checked against `crls` (they
    /// replace the earlier ones).
    pub fn install(
        &self,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<(), EmbeddedError> {
        let revoked = Revoked::from_crls(&crls);
        let acceptor = self
            .tls
            .acceptor_with(crls)
            .map_err(|reason| EmbeddedError::Tls {
                listener: Listener::Device,
                reason,
            })?;
        *self.tls.current.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        // Open connections look at the new set and close themselves if it names them.
        self.revoked.send_replace(Arc::new(revoked));
        Ok(())
    }
}

impl ListenerTls {
    /// The settings of a listener whose clients chain to `roots`, checked against `crls`.
    fn new(
        provider: Arc<rustls::crypto::CryptoProvider>,
        config: &EmbeddedConfig,
        roots: &[CertificateDer<'static>],
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Self, String> {
        let current = server_config(
            Arc::clone(&provider),
            &config.server_chain,
            &config.server_key,
            roots,
            crls,
        )?;
        Ok(Self {
            provider,
            chain: config.server_chain.clone(),
            key: config.server_key.clone_key(),
            roots: roots.to_vec(),
            current: RwLock::new(tokio_rustls::TlsAcceptor::from(current)),
        })
    }

    fn acceptor_with(
        &self,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<tokio_rustls::TlsAcceptor, String> {
        let config = server_config(
            Arc::clone(&self.provider),
            &self.chain,
            &self.key,
            &self.roots,
            crls,
        )?;
        Ok(tokio_rustls::TlsAcceptor::from(config))
    }

    /// The acceptor for the next handshake.
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the connection tasks share.
pub(crate) struct Shared {
    pub(crate) router: Mutex<Router>,
    pub(crate) limits: Limits,
    pub(crate) local_provisioning: Option<LocalProvisioning>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// What the installed device CRLs revoke (changes with [`CrlInstaller::install`]).
    pub(crate) revoked: watch::Receiver<Arc<Revoked>>,
}

/// A running broker. Dropping it stops accepting and closes every connection (without
/// waiting); [`EmbeddedBroker::stop`] waits for them.
#[derive(Debug)]
pub struct EmbeddedBroker {
    device_port: u16,
    service_port: Option<u16>,
    claim_port: Option<u16>,
    shutdown: watch::Sender<bool>,
    connections: Arc<Semaphore>,
    max_connections: u32,
    accept_tasks: Vec<JoinHandle<()>>,
    device_tls: CrlInstaller,
}

impl EmbeddedBroker {
    /// Binds the listeners and starts accepting on the current tokio runtime. Returns once
    /// both ports accept connections.
    pub async fn start(config: EmbeddedConfig) -> Result<Self, EmbeddedError> {
        if let Some(local) = &config.local_provisioning {
            check_local_provisioning(local)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = |listener: Listener, roots: &[CertificateDer<'static>], crls| {
            ListenerTls::new(Arc::clone(&provider), &config, roots, crls)
                .map(Arc::new)
                .map_err(|reason| EmbeddedError::Tls { listener, reason })
        };
        let device_tls = tls(
            Listener::Device,
            &config.device_roots,
            config.device_crls.clone(),
        )?;
        let mut listeners = Vec::new();
        if config.device_listener {
            listeners.push((
                Listener::Device,
                config.device_port,
                Arc::clone(&device_tls),
            ));
        }
        if let Some(roots) = &config.claim_roots {
            if config.local_provisioning.is_none() {
                return Err(EmbeddedError::LocalProvisioning(
                    "the claim listener needs local_provisioning (its template and responder)"
                        .into(),
                ));
            }
            listeners.push((
                Listener::Claim,
                config.claim_port,
                tls(Listener::Claim, roots, Vec::new())?,
            ));
        }
        if let Some(roots) = &config.service_roots {
            listeners.push((
                Listener::Service,
                config.service_port,
                tls(Listener::Service, roots, Vec::new())?,
            ));
        }
        let max_connections = u32::try_from(config.limits.max_connections)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        let connections = Arc::new(Semaphore::new(max_connections as usize));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (revoked, revoked_rx) =
            watch::channel(Arc::new(Revoked::from_crls(&config.device_crls)));
        let shared = Arc::new(Shared {
            router: Mutex::new(Router::new(config.limits.clone())),
            limits: config.limits,
            local_provisioning: config.local_provisioning,
            shutdown: shutdown_rx,
            revoked: revoked_rx,
        });
        let mut bound = Vec::new();
        for (listener, port, tls) in listeners {
            let ip = match listener {
                Listener::Service => config.address,
                Listener::Device | Listener::Claim => {
                    config.device_address.unwrap_or(config.address)
                }
            };
            let address = SocketAddr::new(ip, port);
            let socket = TcpListener::bind(address)
                .await
                .map_err(|source| EmbeddedError::Bind { address, source })?;
            let port = socket
                .local_addr()
                .map_err(|source| EmbeddedError::Bind { address, source })?
                .port();
            bound.push((listener, port, socket, tls));
        }
        let mut broker = Self {
            device_port: 0,
            service_port: None,
            claim_port: None,
            shutdown,
            connections: Arc::clone(&connections),
            max_connections,
            accept_tasks: Vec::new(),
            device_tls: CrlInstaller {
                tls: device_tls,
                revoked: Arc::new(revoked),
            },
        };
        for (listener, port, socket, tls) in bound {
            match listener {
                Listener::Device => broker.device_port = port,
                Listener::Service => broker.service_port = Some(port),
                Listener::Claim => broker.claim_port = Some(port),
            }
            tracing::info!(?listener, port, "embedded MQTT broker listening");
            broker.accept_tasks.push(tokio::spawn(accept(
                listener,
                socket,
                tls,
                Arc::clone(&shared),
                Arc::clone(&connections),
            )));
        }
        Ok(broker)
    }

    /// The device listener's port.
    pub fn device_port(&self) -> u16 {
        self.device_port
    }

    /// A handle that installs new device CRLs while the broker runs.
    pub fn crl_installer(&self) -> CrlInstaller {
        self.device_tls.clone()
    }

    /// The service listener's port, if there is one.
    pub fn service_port(&self) -> Option<u16> {
        self.service_port
    }

    /// The claim listener's port, if there is one.
    pub fn claim_port(&self) -> Option<u16> {
        self.claim_port
    }

    /// Stops accepting, closes every connection (no last wills are published) and waits
    /// (at most 5 s) for the connection tasks to end.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.accept_tasks.drain(..) {
            let _ = task.await;
        }
        let all = self.connections.acquire_many(self.max_connections);
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            tracing::warn!("embedded broker: connections still closing after 5 s");
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.accept_tasks {
            task.abort();
        }
    }
}

/// Returns once the broker stops (or its handle is gone).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Refuses a template the devices' topics cannot be made from, and a responder that is not a
/// service identity (it could never connect on the service listener).
fn check_local_provisioning(local: &LocalProvisioning) -> Result<(), EmbeddedError> {
    acorn_mqtt::provisioning::check_template_name(&local.template)
        .map_err(|e| EmbeddedError::LocalProvisioning(e.to_string()))?;
    if !local
        .responder
        .starts_with(acorn_mqtt::SERVICE_CLIENT_PREFIX)
    {
        return Err(EmbeddedError::LocalProvisioning(format!(
            "the responder {:?} is not a service identity ({}<name>)",
            local.responder,
            acorn_mqtt::SERVICE_CLIENT_PREFIX
        )));
    }
    Ok(())
}

fn server_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    roots: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ServerConfig>, String> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).map_err(|e| e.to_string())?;
    }
    // Client certificates are required: build() refuses anonymous clients by default. The
    // CRLs are the device CA's: only the client's own certificate is looked up, and a
    // certificate of another issuer (no CRL of its own) is not refused for that alone.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| e.to_string())?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.to_vec(), key.clone_key())
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

async fn accept(
    listener: Listener,
    socket: TcpListener,
    tls: Arc<ListenerTls>,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = stopping(&mut shutdown) => return,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => match Arc::clone(&connections).try_acquire_owned() {
                Ok(permit) => {
                    let conn = connection::Connection::new(listener, peer, Arc::clone(&shared));
                    tokio::spawn(conn.serve(stream, tls.acceptor(), permit));
                }
                Err(_) => {
                    tracing::warn!(%peer, ?listener, "connection limit reached: connection closed");
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(?listener, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
