//! Test support: a PKI made at test time with rcgen, a real mosquitto started by
//! `acorn_devstack::broker`, and rumqttc clients whose events arrive on a channel.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use acorn_devstack::broker::{Broker, BrokerConfig};
use acorn_transport::rumqttc::{self, AsyncClient, Event, Packet, QoS};
use acorn_transport::{BrokerTarget, ClientIdentity, SecretString, SessionOptions, TrustRoots};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::sync::mpsc;

/// Bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A certificate's validity window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// 1975..4096 (rcgen's default).
    Valid,
    /// 2020-01-01 .. 2021-01-01.
    Expired,
}

/// A certificate authority.
pub struct Ca {
    /// The CA: certificate and key.
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// Its certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `public_key` with common name `cn` and DNS names `sans`.
    pub fn sign(
        &self,
        cn: &str,
        sans: &[&str],
        validity: Validity,
        public_key: &KeyPair,
    ) -> String {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if validity == Validity::Expired {
            params.not_before = time::macros::datetime!(2020-01-01 0:00 UTC);
            params.not_after = time::macros::datetime!(2021-01-01 0:00 UTC);
        }
        params.signed_by(public_key, &self.issuer).unwrap().pem()
    }

    /// A new P-256 key and a certificate for it: (cert PEM, PKCS#8 key PEM).
    pub fn leaf(&self, cn: &str, sans: &[&str], validity: Validity) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        (self.sign(cn, sans, validity, &key), key.serialize_pem())
    }

    /// A device identity with common name `cn` and certificate serial number `serial`.
    pub fn device_with_serial(&self, cn: &str, serial: u64) -> ClientIdentity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.issuer).unwrap().pem();
        ClientIdentity::new(cert, SecretString::from(key.serialize_pem()))
    }

    /// A CRL (PEM) revoking `serials`, valid from 2020 to 4000.
    pub fn crl(&self, serials: &[u64]) -> String {
        let params = rcgen::CertificateRevocationListParams {
            this_update: time::macros::datetime!(2020-01-01 0:00 UTC),
            next_update: time::macros::datetime!(4000-01-01 0:00 UTC),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: time::macros::datetime!(2021-01-01 0:00 UTC),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }

    /// A device identity (P-256, PKCS#8) with common name `cn`.
    pub fn device(&self, cn: &str, validity: Validity) -> ClientIdentity {
        let (cert, key) = self.leaf(cn, &[], validity);
        ClientIdentity::new(cert, SecretString::from(key))
    }
}

/// Runs `openssl` with `args` and stdin `input`, returning stdout (the test fails loudly if
/// the openssl command-line tool is missing).
pub fn openssl(args: &[&str], input: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl command-line tool is needed to convert key formats (apt-get install openssl)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// How to set up the broker in a test.
pub struct BrokerSetup {
    /// Validity of the broker's server certificate.
    pub server_validity: Validity,
    /// DNS names of the server certificate.
    pub server_sans: Vec<String>,
    /// Sign the server certificate by another CA than the one devices trust.
    pub server_from_other_ca: bool,
    /// mosquitto's `tls_version` (the minimum).
    pub tls_version: Option<String>,
    /// Run mosquitto with an OpenSSL config that caps the protocol at TLS 1.1 (mosquitto's
    /// own `tls_version` only sets a minimum), making a broker that only speaks TLS 1.0/1.1.
    pub tls11_only: bool,
    /// Serial numbers the CA revokes in a CRL given to the broker (`crlfile`).
    pub revoked_serials: Vec<u64>,
    /// Extra `pattern` lines for the device listener's ACL.
    pub extra_acl_lines: Vec<String>,
}

/// OpenSSL configuration for a TLS 1.0/1.1-only server.
const OPENSSL_TLS11_ONLY: &str = "openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1
MaxProtocol = TLSv1.1
CipherString = DEFAULT@SECLEVEL=0
";

impl Default for BrokerSetup {
    fn default() -> Self {
        Self {
            server_validity: Validity::Valid,
            server_sans: vec!["localhost".into()],
            server_from_other_ca: false,
            tls_version: None,
            tls11_only: false,
            revoked_serials: Vec::new(),
            extra_acl_lines: Vec::new(),
        }
    }
}

/// The backend's service identity: trusted only on the broker's service listener.
pub const BACKEND_ID: &str = "service:backend";

/// A CA, a broker whose server certificate it signed (normally), a service CA for the
/// broker's service listener, and helpers.
pub struct Env {
    /// The temporary directory holding the broker's files.
    pub dir: tempfile::TempDir,
    /// The device CA (it also signs the server certificate unless told otherwise).
    pub ca: Ca,
    /// The service CA (the service listener trusts only it).
    pub service_ca: Ca,
    /// The running broker.
    pub broker: Broker,
}

/// The broker settings every start of a test broker shares: the device CA, the server
/// certificate, and the service listener for [`BACKEND_ID`].
fn broker_config(dir: &Path) -> BrokerConfig {
    let mut config = BrokerConfig::new(
        dir,
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    config.service_ca_file = Some(dir.join("service-ca.pem"));
    config.service_identities = vec![BACKEND_ID.to_owned()];
    config
}

impl Env {
    /// A broker with the default setup.
    pub fn start() -> Self {
        Self::with(BrokerSetup::default())
    }

    /// A broker as `setup` says.
    pub fn with(setup: BrokerSetup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("Acorn Test CA");
        let server_ca = if setup.server_from_other_ca {
            Ca::new("Some Other CA")
        } else {
            Ca::new("unused")
        };
        let signer = if setup.server_from_other_ca {
            &server_ca
        } else {
            &ca
        };
        let sans: Vec<&str> = setup.server_sans.iter().map(String::as_str).collect();
        let (server_cert, server_key) = signer.leaf("broker", &sans, setup.server_validity);
        let service_ca = Ca::new("Acorn Test Service CA");
        write(dir.path(), "ca.pem", &ca.pem());
        write(dir.path(), "service-ca.pem", &service_ca.pem());
        write(dir.path(), "server.pem", &server_cert);
        write(dir.path(), "server.key", &server_key);
        let mut config = broker_config(dir.path());
        config.tls_version = setup.tls_version;
        config.extra_acl_lines = setup.extra_acl_lines;
        if !setup.revoked_serials.is_empty() {
            write(dir.path(), "crl.pem", &ca.crl(&setup.revoked_serials));
            config.crl_file = Some(dir.path().join("crl.pem"));
        }
        if setup.tls11_only {
            write(dir.path(), "openssl-tls11.cnf", OPENSSL_TLS11_ONLY);
            let conf = dir.path().join("openssl-tls11.cnf");
            config
                .env
                .push(("OPENSSL_CONF".into(), conf.display().to_string()));
        }
        let broker =
            Broker::start(config).expect("mosquitto must start (apt-get install mosquitto)");
        Self {
            dir,
            ca,
            service_ca,
            broker,
        }
    }

    /// `localhost:<port>`, which the server certificate names.
    pub fn target(&self) -> BrokerTarget {
        BrokerTarget::new("localhost", self.broker.port())
    }

    /// The test CA as trusted roots.
    pub fn roots(&self) -> TrustRoots {
        TrustRoots::from_pem(&self.ca.pem(), "test CA").unwrap()
    }

    /// Session options for a device signed by the test CA.
    pub fn session(&self, cn: &str) -> SessionOptions {
        SessionOptions::new(
            self.target(),
            self.ca.device(cn, Validity::Valid),
            self.roots(),
            cn,
            "1.0.0-test",
        )
    }

    /// Session options of the backend ([`BACKEND_ID`] from the service CA, on the service
    /// listener, clean session).
    pub fn backend_session(&self) -> SessionOptions {
        let port = self.broker.service_port().expect("service listener");
        let mut options = SessionOptions::new(
            BrokerTarget::new("localhost", port),
            self.service_ca.device(BACKEND_ID, Validity::Valid),
            self.roots(),
            BACKEND_ID,
            "1.0.0-test",
        );
        options.clean_session = true;
        options
    }

    /// A connected backend client ([`BACKEND_ID`] from the service CA, on the service
    /// listener, where it may read and write all of `acorn-pups/#`), subscribed to `filter`.
    pub async fn backend(&self, filter: &str) -> Client {
        let options = self.backend_session();
        let mut client = Client::start(&options).await;
        client.subscribe(filter).await;
        client
    }

    /// Whether the broker ever saw an MQTT CONNECT (application data) in this test.
    pub fn broker_saw_mqtt(&self) -> bool {
        self.broker.log().contains("New client connected")
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A rumqttc client whose event loop runs in a task; events arrive on `events`.
pub struct Client {
    /// The rumqttc client.
    pub client: AsyncClient,
    /// Events of its event loop, in order.
    pub events: mpsc::UnboundedReceiver<Result<Event, rumqttc::ConnectionError>>,
    /// The task that runs the event loop.
    pub task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects and waits for the CONNACK.
    pub async fn start(options: &SessionOptions) -> Self {
        let mut client = Self::spawn(options);
        client.wait_for(|p| matches!(p, Packet::ConnAck(_))).await;
        client
    }

    /// Starts the event loop without waiting.
    pub fn spawn(options: &SessionOptions) -> Self {
        let (client, eventloop) = options.connect().unwrap();
        Self::run(client, eventloop)
    }

    /// Runs an event loop made by the caller.
    pub fn run(client: AsyncClient, mut eventloop: rumqttc::EventLoop) -> Self {
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
        Self {
            client,
            events,
            task,
        }
    }

    /// Waits (bounded) for an incoming packet matching `pred`; returns it. Panics with the
    /// error if the connection fails first.
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
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }

    /// Waits (bounded) for the first error of the event loop.
    pub async fn wait_error(&mut self) -> rumqttc::ConnectionError {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("timed out waiting for an error")
                .expect("event loop ended");
            if let Err(e) = next {
                return e;
            }
        }
    }

    /// Subscribes to `filter` at QoS 1 and waits (bounded) for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.wait_for(|p| matches!(p, Packet::SubAck(_))).await;
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
        self.wait_for(|p| matches!(p, Packet::PubAck(_))).await;
    }

    /// Waits (bounded) for the next PUBLISH received.
    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        match self.wait_for(|p| matches!(p, Packet::Publish(_))).await {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }
}

/// A device image (NVS partition file) at `dir/<cn>.bin` holding an identity for device `cn`
/// signed by `ca`, with endpoint `localhost`. Returns the path and the private key PEM.
pub fn device_image(dir: &Path, ca: &Ca, cn: &str) -> (std::path::PathBuf, String) {
    let (cert, key) = ca.leaf(cn, &[], Validity::Valid);
    let path = dir.join(format!("{cn}.bin"));
    let mut image = acorn_agent::DeviceImage::create(&path, 0x8000, None).unwrap();
    let certs = acorn_certs::DeviceCertificates {
        device_certificate: cert.into_bytes(),
        private_key: acorn_certs::PrivateKey::new(key.clone().into_bytes()),
        iot_endpoint: "localhost".into(),
        device_id: cn.into(),
    };
    image
        .provision(&certs, acorn_agent::device_image::unix_now())
        .unwrap();
    (path, key)
}

impl Env {
    /// Device options for the image at `path`, connecting to this broker with the test CA.
    pub fn device_options(&self, path: &Path) -> acorn_agent::DeviceOptions {
        let mut options = acorn_agent::DeviceOptions::new(path);
        options.broker = Some(self.target());
        options.roots = self.roots();
        options.firmware_version = "1.0.0-test".into();
        options
    }

    /// Kills the broker process (SIGKILL), as a crash would.
    pub fn kill_broker(&mut self) {
        let pid = self.broker.pid().expect("broker running");
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts a new broker on the same port with the same files (after [`Env::kill_broker`]).
    pub fn start_broker_again(&mut self) {
        let mut config = broker_config(self.dir.path());
        config.port = Some(self.broker.port());
        config.service_port = self.broker.service_port();
        let new = Broker::start(config).expect("mosquitto restarts");
        drop(std::mem::replace(&mut self.broker, new));
    }
}
