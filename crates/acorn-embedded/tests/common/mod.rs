//! Test support: a PKI made at test time with rcgen (root CA → intermediate → broker
//! certificate, as AWS sends it; P-256 device certificates), a real mosquitto started by
//! `acorn_devstack::broker` with TLS 1.3 only, a rumqttc "backend" client on the broker's
//! service listener, and the embedded transport run over tokio.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use acorn_devstack::broker::{Broker, BrokerConfig};
use acorn_embedded::diagnosis::Diagnosis;
use acorn_embedded::host::{SystemClock, TokioConnector};
use acorn_embedded::transport::{Connector, Target};
use acorn_embedded::{Step, TlsIdentity, TrustAnchors};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

/// Bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// The backend's service identity (outside the device-id alphabet).
pub const BACKEND_ID: &str = "service:backend";

/// A certificate authority.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca {
            issuer: CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &self.issuer)
                .unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A P-256 leaf: (cert PEM, PKCS#8 key PEM).
    pub fn leaf(&self, cn: &str, sans: &[&str], expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = time::macros::datetime!(2020-01-01 0:00 UTC);
            params.not_after = time::macros::datetime!(2021-01-01 0:00 UTC);
        }
        (
            params.signed_by(&key, &self.issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    }

    /// A device identity (P-256) with common name `cn`, as the certificate store holds it.
    pub fn device(&self, cn: &str) -> acorn_certs::DeviceCertificates {
        let (cert, key) = self.leaf(cn, &[], false);
        acorn_certs::DeviceCertificates {
            device_certificate: cert.into_bytes(),
            private_key: acorn_certs::PrivateKey::new(key.into_bytes()),
            iot_endpoint: "localhost".into(),
            device_id: cn.into(),
        }
    }

    pub fn identity(&self, cn: &str) -> TlsIdentity {
        TlsIdentity::from_certificates(&self.device(cn)).unwrap()
    }
}

/// How to set up the broker's server certificate.
pub struct Setup {
    pub server_sans: Vec<String>,
    pub server_expired: bool,
    /// The server chain comes from a CA the device does not trust.
    pub rogue_server_ca: bool,
    /// Devices may use AWS IoT's provisioning API under `acorn-local/<id>/`, answered by
    /// the backend client (as in `acorn dev up`).
    pub local_provisioning: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            server_sans: vec!["localhost".into()],
            server_expired: false,
            rogue_server_ca: false,
            local_provisioning: false,
        }
    }
}

/// A root CA (trusted by devices; signs device certificates), an intermediate that signs the
/// broker's certificate (sent as leaf + intermediate), a service CA, and the broker.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub service_ca: Ca,
    pub broker: Broker,
    local_provisioning: bool,
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn broker_config(dir: &Path, local_provisioning: bool) -> BrokerConfig {
    let mut config = BrokerConfig::new(
        dir,
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    config.service_ca_file = Some(dir.join("service-ca.pem"));
    config.service_identities = vec![BACKEND_ID.to_owned()];
    config.tls_version = Some("tlsv1.3".into());
    config.local_provisioning =
        local_provisioning.then(|| acorn_devstack::broker::LocalProvisioning {
            template: "acorn-pups".into(),
            responder: BACKEND_ID.into(),
        });
    config
}

impl Env {
    pub fn start() -> Self {
        Self::with(Setup::default())
    }

    pub fn with(setup: Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("Acorn Test Root CA");
        let rogue = Ca::new("Acorn Test Root CA"); // same name, other key
        let server_root = if setup.rogue_server_ca { &rogue } else { &ca };
        let intermediate = server_root.intermediate("Acorn Test Broker CA 1");
        let sans: Vec<&str> = setup.server_sans.iter().map(String::as_str).collect();
        let (leaf, key) = intermediate.leaf("broker", &sans, setup.server_expired);
        let service_ca = Ca::new("Acorn Test Service CA");
        write(dir.path(), "ca.pem", &ca.pem());
        write(dir.path(), "service-ca.pem", &service_ca.pem());
        write(
            dir.path(),
            "server.pem",
            &format!("{leaf}{}", intermediate.pem()),
        );
        write(dir.path(), "server.key", &key);
        let broker = Broker::start(broker_config(dir.path(), setup.local_provisioning))
            .expect("mosquitto must start (apt-get install mosquitto)");
        Env {
            dir,
            ca,
            service_ca,
            broker,
            local_provisioning: setup.local_provisioning,
        }
    }

    pub fn target(&self) -> Target {
        Target::new("localhost", self.broker.port())
    }

    pub fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem(self.ca.pem().as_bytes()).unwrap()
    }

    /// Whether the broker ever saw an MQTT CONNECT.
    pub fn broker_saw_mqtt(&self) -> bool {
        self.broker.log().contains("New client connected")
    }

    /// Kills the broker (SIGKILL), as a crash would.
    pub fn kill_broker(&mut self) {
        let pid = self.broker.pid().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts a new broker on the same ports with the same files.
    pub fn start_broker_again(&mut self) {
        let mut config = broker_config(self.dir.path(), self.local_provisioning);
        config.port = Some(self.broker.port());
        config.service_port = self.broker.service_port();
        let new = Broker::start(config).expect("mosquitto restarts");
        drop(std::mem::replace(&mut self.broker, new));
    }

    /// A rumqttc client as the backend (service CA, service listener), subscribed to
    /// `filter`.
    pub async fn backend(&self, filter: &str) -> Backend {
        let (cert, key) = self.service_ca.leaf(BACKEND_ID, &[], false);
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject as _;
        roots
            .add(
                rustls_pki_types::CertificateDer::from_pem_slice(self.ca.pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        let port = self.broker.service_port().unwrap();
        let mut options = MqttOptions::new(BACKEND_ID, "localhost", port);
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let stop = event.is_err();
                if tx.send(event).is_err() || stop {
                    return;
                }
            }
        });
        let mut backend = Backend {
            client,
            events,
            task,
        };
        backend.wait_for(|p| matches!(p, Packet::ConnAck(_))).await;
        backend
            .client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        backend.wait_for(|p| matches!(p, Packet::SubAck(_))).await;
        backend
    }
}

/// The backend client.
pub struct Backend {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<Event, rumqttc::ConnectionError>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn wait_for(&mut self, pred: impl Fn(&Packet) -> bool) -> Packet {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("timed out waiting for a packet")
                .expect("event loop ended");
            match next {
                Ok(Event::Incoming(p)) if pred(&p) => return p,
                Ok(_) => {}
                Err(e) => panic!("backend connection failed: {e}"),
            }
        }
    }

    /// The next PUBLISH received: (topic, payload).
    pub async fn next_publish(&mut self) -> (String, Vec<u8>) {
        match self.wait_for(|p| matches!(p, Packet::Publish(_))).await {
            Packet::Publish(p) => (p.topic, p.payload.to_vec()),
            _ => unreachable!(),
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
        self.wait_for(|p| matches!(p, Packet::PubAck(_))).await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connector with a gate: while closed, connects are refused (the test decides when the
/// device may reach the broker again).
#[derive(Clone, Default)]
pub struct GatedConnector {
    pub closed: Arc<AtomicBool>,
}

impl Connector for GatedConnector {
    type Reader<'c> = <TokioConnector as Connector>::Reader<'static>;
    type Writer<'c> = <TokioConnector as Connector>::Writer<'static>;

    async fn connect<'c>(
        &'c mut self,
        host: &str,
        port: u16,
    ) -> Result<(Self::Reader<'c>, Self::Writer<'c>), (Step, Diagnosis)> {
        if self.closed.load(Ordering::SeqCst) {
            return Err((
                Step::Tcp,
                Diagnosis::ConnectionRefused {
                    address: format!("{host}:{port} (gate closed by the test)"),
                },
            ));
        }
        TokioConnector.connect(host, port).await
    }
}

/// The system clock.
pub fn clock() -> SystemClock {
    SystemClock::new()
}

/// Wall clock in Unix ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
