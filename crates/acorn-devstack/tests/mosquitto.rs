//! The CA's certificates and CRL against a real mosquitto 2.0 (OpenSSL) on 127.0.0.1: a
//! registered device completes mutual TLS and an MQTT CONNECT; after revocation through the
//! API (whose CRL hook installs the new CRL in mosquitto), the same certificate is refused.
//! Rights follow the trust path: a service name only counts on the listener that trusts the
//! service CA. The broker runs unprivileged and re-reads an installed CRL before
//! `install_crl` returns.

use acorn_test_support::backend as common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use acorn_backend::ca::RevokedSerial;
use acorn_backend::{KeyType, LocalCa};
use acorn_devstack::broker::{Broker, BrokerConfig, BrokerError, CONF_FILE_NAME};
use common::{body, start_with};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(10);

/// How one MQTT connection attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// CONNACK with return code 0.
    Accepted,
    /// TLS or connection refusal (alert, reset, EOF) before a CONNACK.
    Refused(String),
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// MQTT 3.1.1 CONNECT: clean session, keepalive 60 s, `client_id`, and an optional will
/// (topic, message; QoS 0, not retained).
fn connect_packet(client_id: &str, will: Option<(&str, &str)>) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let flags = if will.is_some() { 0x06 } else { 0x02 };
    let mut rest = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
    field(&mut rest, client_id.as_bytes());
    if let Some((topic, message)) = will {
        field(&mut rest, topic.as_bytes());
        field(&mut rest, message.as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = rest.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&rest);
    packet
}

/// Mutual TLS to `port` with the certificate and key, then MQTT 3.1.1 CONNECT; the open
/// connection once CONNACK 0 came back.
async fn open(
    port: u16,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    client_id: &str,
    will: Option<(&str, &str)>,
) -> Result<Tls, String> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca pem");
    roots.add(ca).expect("root");
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert pem");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key pem");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .expect("client auth");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = match tokio::time::timeout(STEP, tokio::net::TcpStream::connect(("127.0.0.1", port)))
        .await
    {
        Ok(Ok(tcp)) => tcp,
        other => return Err(format!("tcp: {other:?}")),
    };
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = match tokio::time::timeout(STEP, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(format!("handshake: {e}")),
        Err(_) => return Err("handshake timed out".into()),
    };
    if let Err(e) = tls.write_all(&connect_packet(client_id, will)).await {
        return Err(format!("write: {e}"));
    }
    let mut connack = [0u8; 4];
    match tokio::time::timeout(STEP, tls.read_exact(&mut connack)).await {
        Ok(Ok(_)) if connack == [0x20, 0x02, 0x00, 0x00] => Ok(tls),
        Ok(Ok(_)) => Err(format!("CONNACK {connack:02x?}")),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no CONNACK in time".into()),
    }
}

/// [`open`], then close: whether the broker let this client in.
async fn connect(
    port: u16,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    client_id: &str,
) -> Outcome {
    match open(port, ca_pem, cert_pem, key_pem, client_id, None).await {
        Ok(_) => Outcome::Accepted,
        Err(why) => Outcome::Refused(why),
    }
}

/// A client certificate and key, in memory and as files for the mosquitto command-line
/// clients.
struct Identity {
    cn: String,
    cert_pem: String,
    key_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

impl Identity {
    fn new(dir: &Path, cn: &str, cert_pem: String, key_pem: String) -> Self {
        let stem = format!("{}-{}", cn.replace(':', "_"), rand::random::<u32>());
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &cert_pem).expect("write cert");
        std::fs::write(&key, &key_pem).expect("write key");
        Self {
            cn: cn.to_owned(),
            cert_pem,
            key_pem,
            cert,
            key,
        }
    }

    /// A P-256 certificate for `cn` from the local CA, and its serial number (hex).
    fn issue(ca: &LocalCa, cn: &str, dir: &Path) -> (Self, String) {
        let issued = ca.issue_with_new_key(cn, KeyType::P256).expect("issue");
        let serial = issued.certificate.serial_hex.clone();
        let key = issued.private_key_pem.expose_secret().to_owned();
        (Self::new(dir, cn, issued.certificate.pem, key), serial)
    }

    /// Whether the broker on `port` lets this identity in.
    async fn connect(&self, port: u16, server_ca_pem: &str) -> Outcome {
        connect(port, server_ca_pem, &self.cert_pem, &self.key_pem, &self.cn).await
    }
}

/// The TLS arguments of mosquitto_sub and mosquitto_pub for `id` on `port`.
fn client_args(port: u16, server_ca: &Path, id: &Identity) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--cafile",
        &server_ca.display().to_string(),
        "--cert",
        &id.cert.display().to_string(),
        "--key",
        &id.key.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A `mosquitto_sub -v` subscriber: an independent MQTT client whose printed messages show
/// what the broker really delivered (a denied subscribe is still granted in MQTT 3.1.1).
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Sub {
    /// Subscribes `id` through `port` to `filter` and waits (bounded) until the broker has
    /// sent its SUBACK.
    fn start(broker: &Broker, port: u16, server_ca: &Path, id: &Identity, filter: &str) -> Sub {
        let suback = format!("Sending SUBACK to {}", id.cn);
        let before = broker.log().matches(&suback).count();
        let mut child = Command::new("mosquitto_sub")
            .args(client_args(port, server_ca, id))
            .args(["-q", "1", "-v", "-t", filter])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let sub = Sub { child, lines };
        let deadline = Instant::now() + STEP;
        while broker.log().matches(&suback).count() <= before {
            assert!(
                Instant::now() < deadline,
                "no SUBACK to {} within {STEP:?}; broker log:\n{}",
                id.cn,
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sub
    }

    /// The `topic payload` lines received until every line of `want` came or `within`
    /// passed (so with `want` empty: everything received within `within`).
    fn received(&self, want: &[&str], within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got: Vec<String> = Vec::new();
        loop {
            if !want.is_empty() && want.iter().all(|w| got.iter().any(|g| g == w)) {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => return got,
            }
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_pub` of `message` to `topic` as `id` through `port`, QoS 1 (waits for PUBACK);
/// panics unless it succeeded within [`STEP`].
fn publish(port: u16, server_ca: &Path, id: &Identity, topic: &str, message: &str) {
    let mut child = Command::new("mosquitto_pub")
        .args(client_args(port, server_ca, id))
        .args(["-q", "1", "-t", topic, "-m", message])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosquitto_pub as {} to {topic} hung", id.cn);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        status.success(),
        "mosquitto_pub as {} to {topic}: {status}",
        id.cn
    );
}

/// A CA made with rcgen. Unlike [`LocalCa`], whose role limits the names it issues, it
/// signs any common name: the tests need a device certificate named like a service.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    path: PathBuf,
}

impl TestCa {
    fn new(name: &str, dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("self-signed");
        let path = dir.join(format!("{}.pem", name.replace(' ', "-")));
        std::fs::write(&path, issuer.pem()).expect("write ca");
        Self { issuer, path }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A P-256 key and a certificate for it with common name `cn` and names `sans`.
    fn leaf(&self, cn: &str, sans: &[&str], dir: &Path) -> Identity {
        let key = KeyPair::generate().expect("key");
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("sign").pem();
        Identity::new(dir, cn, cert, key.serialize_pem())
    }
}

/// A device CA (which also signs the server certificate) and a service CA in one directory.
struct TwoCas {
    dir: tempfile::TempDir,
    device_ca: TestCa,
    service_ca: TestCa,
    server: Identity,
}

impl TwoCas {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let device_ca = TestCa::new("device CA", dir.path());
        let service_ca = TestCa::new("service CA", dir.path());
        let server = device_ca.leaf("localhost", &["localhost", "127.0.0.1"], dir.path());
        Self {
            dir,
            device_ca,
            service_ca,
            server,
        }
    }

    /// Both listeners; `service:backend` and `service:monitor` are service identities.
    fn start_broker(&self) -> Broker {
        let mut config = BrokerConfig::new(
            self.dir.path().join("broker"),
            &self.device_ca.path,
            &self.server.cert,
            &self.server.key,
        );
        config.service_ca_file = Some(self.service_ca.path.clone());
        config.service_identities = vec!["service:backend".into(), "service:monitor".into()];
        Broker::start(config).expect("mosquitto starts (apt-get install mosquitto)")
    }

    fn device(&self, cn: &str) -> Identity {
        self.device_ca.leaf(cn, &[], self.dir.path())
    }

    fn service(&self, cn: &str) -> Identity {
        self.service_ca.leaf(cn, &[], self.dir.path())
    }

    /// The root that vouches for the broker's server certificate, as a file.
    fn server_ca(&self) -> PathBuf {
        self.device_ca.path.clone()
    }
}

#[tokio::test]
async fn mosquitto_accepts_a_registered_device_and_refuses_it_once_revoked() {
    // The broker is started after the backend (it needs the CA, server cert and CRL files);
    // the CRL hook reaches it through this slot and installs each new CRL.
    let slot: Arc<Mutex<Option<Broker>>> = Arc::default();
    let hook_slot = Arc::clone(&slot);
    let b = start_with(move |c| {
        c.crl_hook = Some(Arc::new(move |e: &acorn_backend::CrlEvent| {
            let guard = hook_slot.lock().map_err(|e| e.to_string())?;
            match guard.as_ref() {
                Some(broker) => broker.install_crl(&e.crl_path).map_err(|e| e.to_string()),
                // The first CRL, written before the broker starts, is its start-up CRL.
                None => Ok(()),
            }
        }));
    })
    .await;
    let paths = b.handle.paths().clone();
    let mut config = BrokerConfig::new(
        b.dir.path().join("broker"),
        &paths.ca_cert,
        &paths.server_cert,
        &paths.server_key,
    );
    config.crl_file = Some(paths.crl.clone());
    let broker = Broker::start(config).expect("mosquitto starts (apt-get install mosquitto)");
    let port = broker.port();
    *slot.lock().expect("lock") = Some(broker);

    // Two devices: one registered with a CSR (key made here), one with a server-made key.
    let ca = b.handle.ca_certificate_pem().to_owned();
    let (key, csr_pem) = common::csr("dev-csr");
    let mut req = body("dev-csr");
    req["csr"] = serde_json::json!(csr_pem);
    let t = b.token().await;
    let (status, csr_resp) = b.register(Some(&t), &req).await;
    assert_eq!(status, 201, "{csr_resp}");
    let csr_cert = csr_resp["certificatePem"]
        .as_str()
        .expect("cert")
        .to_owned();
    let csr_key = key.serialize_pem();
    let t = b.token().await;
    let (status, gen_resp) = b.register(Some(&t), &body("dev-gen")).await;
    assert_eq!(status, 201, "{gen_resp}");
    let gen_cert = gen_resp["certificatePem"]
        .as_str()
        .expect("cert")
        .to_owned();
    let gen_key = gen_resp["privateKeyPem"].as_str().expect("key").to_owned();

    assert_eq!(
        connect(port, &ca, &csr_cert, &csr_key, "dev-csr").await,
        Outcome::Accepted
    );
    assert_eq!(
        connect(port, &ca, &gen_cert, &gen_key, "dev-gen").await,
        Outcome::Accepted
    );

    let (status, v) = b.admin_post("/v1/devices/dev-gen/revoke").await;
    assert_eq!(status, 200, "{v}");
    // The hook installed the new CRL, and install_crl returns once mosquitto has re-read
    // it: the very next handshake is refused.
    let refusal = match connect(port, &ca, &gen_cert, &gen_key, "dev-gen").await {
        Outcome::Refused(why) => why,
        Outcome::Accepted => {
            let log = slot
                .lock()
                .expect("lock")
                .as_ref()
                .map(|b| b.log())
                .unwrap_or_default();
            panic!("revoked certificate still accepted; broker log:\n{log}");
        }
    };
    // The other device is unaffected.
    assert_eq!(
        connect(port, &ca, &csr_cert, &csr_key, "dev-csr").await,
        Outcome::Accepted
    );
    // OpenSSL in mosquitto found the serial in our CRL and said so in its TLS alert.
    assert!(refusal.contains("CertificateRevoked"), "refusal: {refusal}");
    let broker = slot.lock().expect("lock").take();
    if let Some(broker) = broker {
        broker.stop().expect("stop");
    }
}

#[tokio::test]
async fn a_service_name_counts_only_on_the_listener_that_trusts_the_service_ca() {
    let cas = TwoCas::new();
    let broker = cas.start_broker();
    let port = broker.port();
    let service_port = broker.service_port().expect("service listener");
    let server_ca = cas.server_ca();
    let pem = cas.device_ca.pem();
    let dev_a = cas.device("dev-a");
    let dev_b = cas.device("dev-b");
    // A device that registered a service's name: a valid device certificate, nothing more.
    let impostor = cas.device("service:backend");
    let backend = cas.service("service:backend");
    let monitor = cas.service("service:monitor");

    // Each listener trusts its own CA only.
    assert_eq!(dev_a.connect(port, &pem).await, Outcome::Accepted);
    assert_eq!(impostor.connect(port, &pem).await, Outcome::Accepted);
    assert_eq!(backend.connect(service_port, &pem).await, Outcome::Accepted);
    for (who, id, port) in [
        ("device cert on the service listener", &dev_a, service_port),
        ("impostor on the service listener", &impostor, service_port),
        ("service cert on the device listener", &backend, port),
    ] {
        let outcome = id.connect(port, &pem).await;
        assert!(matches!(outcome, Outcome::Refused(_)), "{who}: {outcome:?}");
    }

    // The impostor subscribes to everything through the device listener and receives
    // nothing, while a real service subscribed the same way (the control) receives every
    // device's presses.
    let stolen = Sub::start(&broker, port, &server_ca, &impostor, "acorn-pups/#");
    let control = Sub::start(&broker, service_port, &server_ca, &monitor, "acorn-pups/#");
    publish(
        port,
        &server_ca,
        &dev_a,
        "acorn-pups/button-press/dev-a",
        "a1",
    );
    publish(
        port,
        &server_ca,
        &dev_b,
        "acorn-pups/button-press/dev-b",
        "b1",
    );
    let want = [
        "acorn-pups/button-press/dev-a a1",
        "acorn-pups/button-press/dev-b b1",
    ];
    let seen = control.received(&want, STEP);
    assert!(want.iter().all(|w| seen.iter().any(|s| s == w)), "{seen:?}");
    let leaked = stolen.received(&[], Duration::from_millis(500));
    assert!(leaked.is_empty(), "the impostor received {leaked:?}");
    // (One client id, one connection: the impostor's next connection would close this one.)
    drop(stolen);

    // Nor can it command a device (dev-c never connects otherwise: its subscription stays).
    let dev_c = cas.device("dev-c");
    let commands = Sub::start(
        &broker,
        port,
        &server_ca,
        &dev_c,
        "acorn-pups/commands/dev-c",
    );
    publish(
        port,
        &server_ca,
        &impostor,
        "acorn-pups/commands/dev-c",
        "evil",
    );

    // The real service identity, through the service listener, reads every device's presses
    // and commands a device.
    let real = Sub::start(
        &broker,
        service_port,
        &server_ca,
        &backend,
        "acorn-pups/button-press/+",
    );
    publish(
        port,
        &server_ca,
        &dev_a,
        "acorn-pups/button-press/dev-a",
        "a2",
    );
    publish(
        port,
        &server_ca,
        &dev_b,
        "acorn-pups/button-press/dev-b",
        "b2",
    );
    let want = [
        "acorn-pups/button-press/dev-a a2",
        "acorn-pups/button-press/dev-b b2",
    ];
    let seen = real.received(&want, STEP);
    assert!(want.iter().all(|w| seen.iter().any(|s| s == w)), "{seen:?}");
    drop(real);
    publish(
        service_port,
        &server_ca,
        &backend,
        "acorn-pups/commands/dev-c",
        "ping",
    );
    // Published after "evil", so "evil" would have come first.
    let got = commands.received(&["acorn-pups/commands/dev-c ping"], STEP);
    assert_eq!(
        got,
        ["acorn-pups/commands/dev-c ping"],
        "only the service's command"
    );

    // This broker has no CRL: one cannot be added by a reload.
    assert!(matches!(
        broker.install_crl(&cas.dir.path().join("none.pem")),
        Err(BrokerError::CrlNotConfigured)
    ));
    drop((control, commands));
    broker.stop().expect("stop");
}

/// Documents a limit of the broker-side split: mosquitto keeps one table of client ids for
/// all listeners, so a service-CA certificate whose CN equals a device id takes over that
/// device's session (the device's connection is closed and its last will is published). The
/// service CA must therefore only issue names outside the device-id alphabet.
#[tokio::test]
async fn a_service_certificate_named_like_a_device_takes_over_its_session() {
    let cas = TwoCas::new();
    let broker = cas.start_broker();
    let (port, service_port) = (broker.port(), broker.service_port().expect("service"));
    let pem = cas.device_ca.pem();
    let backend = cas.service("service:backend");
    let observer = Sub::start(
        &broker,
        service_port,
        &cas.server_ca(),
        &backend,
        "acorn-pups/#",
    );
    let dev = cas.device("dev-a");
    let will = Some(("acorn-pups/status/dev-a", "offline"));
    let mut device = open(port, &pem, &dev.cert_pem, &dev.key_pem, "dev-a", will)
        .await
        .expect("the device connects");
    let twin = cas.service("dev-a");
    let started = Instant::now();
    let _twin = open(
        service_port,
        &pem,
        &twin.cert_pem,
        &twin.key_pem,
        "dev-a",
        None,
    )
    .await
    .expect("the service listener accepts a service-CA certificate named dev-a");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(STEP, device.read(&mut buf)).await;
    let closed_after = started.elapsed();
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the device's connection stayed open: {read:?}"
    );
    let got = observer.received(&["acorn-pups/status/dev-a offline"], STEP);
    assert!(
        got.iter().any(|l| l == "acorn-pups/status/dev-a offline"),
        "no last will: {got:?}"
    );
    assert!(broker
        .log()
        .contains("Client dev-a already connected, closing old connection."));
    eprintln!(
        "takeover across listeners: the device's connection closed {closed_after:?} after \
         the twin started its TLS handshake; its last will was published"
    );
    drop(observer);
    broker.stop().expect("stop");
}

/// The uid of process `pid` (all four ids of the `Uid:` line must agree).
fn process_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line");
    let ids: Vec<u32> = line
        .split_whitespace()
        .map(|v| v.parse().expect("uid"))
        .collect();
    assert!(ids.iter().all(|&id| id == ids[0]), "Uid: {line}");
    ids[0]
}

#[tokio::test]
async fn the_broker_runs_unprivileged_and_reads_an_installed_crl_before_returning() {
    use std::os::unix::fs::MetadataExt as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = LocalCa::create(&dir.path().join("ca")).expect("ca");
    let server = ca.issue_server_certificate(&[]).expect("server");
    std::fs::write(dir.path().join("server.pem"), &server.certificate.pem).expect("write");
    std::fs::write(
        dir.path().join("server.key"),
        server.private_key_pem.expose_secret(),
    )
    .expect("write");
    let (dev_a, _) = Identity::issue(&ca, "dev-a", dir.path());
    let (dev_b, dev_b_serial) = Identity::issue(&ca, "dev-b", dir.path());
    let crl_1 = dir.path().join("crl-1.pem");
    let first_issue = LocalCa::crl_issue_time(None);
    std::fs::write(
        &crl_1,
        ca.crl_pem(&[], 1, first_issue, time::Duration::days(30))
            .expect("crl"),
    )
    .expect("write");
    let mut config = BrokerConfig::new(
        dir.path().join("broker"),
        ca.cert_path(),
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
    );
    config.crl_file = Some(crl_1.clone());
    let broker = Broker::start(config).expect("mosquitto starts");
    let port = broker.port();
    let pem = ca.certificate_pem().to_owned();

    // Not root, and every file it reads is its own and private.
    let uid = process_uid(broker.pid().expect("pid"));
    let we_are_root = process_uid(std::process::id()) == 0;
    if we_are_root {
        assert_ne!(uid, 0, "mosquitto runs as root");
    } else {
        eprintln!("not root: mosquitto runs as our uid {uid}, no user change");
    }
    let runtime = std::fs::metadata(broker.runtime_dir()).expect("runtime dir");
    assert_eq!(runtime.mode() & 0o777, 0o700);
    assert_eq!(runtime.uid(), uid);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(broker.runtime_dir()).expect("list") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(meta.mode() & 0o777, 0o600, "{name}");
        assert_eq!(meta.uid(), uid, "{name}");
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            CONF_FILE_NAME,
            "crl.pem",
            "device-ca.pem",
            "device.acl",
            "server.key",
            "server.pem"
        ]
    );

    assert_eq!(dev_a.connect(port, &pem).await, Outcome::Accepted);
    assert_eq!(dev_b.connect(port, &pem).await, Outcome::Accepted);

    // A CRL issued later (thisUpdate has 1-second resolution) that revokes dev-b.
    std::thread::sleep(Duration::from_millis(1100));
    let crl_2 = dir.path().join("crl-2.pem");
    let revoked = RevokedSerial {
        serial_hex: dev_b_serial,
        revoked_at: time::OffsetDateTime::now_utc(),
    };
    std::fs::write(
        &crl_2,
        ca.crl_pem(
            &[revoked],
            2,
            LocalCa::crl_issue_time(Some(first_issue)),
            time::Duration::days(30),
        )
        .expect("crl"),
    )
    .expect("write");
    broker.install_crl(&crl_2).expect("install the CRL");
    // No retry: the reload has happened when install_crl returns.
    match dev_b.connect(port, &pem).await {
        Outcome::Refused(why) => assert!(why.contains("CertificateRevoked"), "{why}"),
        Outcome::Accepted => panic!("revoked dev-b accepted; log:\n{}", broker.log()),
    }
    assert_eq!(dev_a.connect(port, &pem).await, Outcome::Accepted);

    // An older CRL, or something that is not a CRL, is refused before anything changes.
    assert!(matches!(
        broker.install_crl(&crl_1),
        Err(BrokerError::CrlOlder { .. })
    ));
    assert!(matches!(
        broker.install_crl(&dev_a.cert),
        Err(BrokerError::BadCrl { .. })
    ));
    // A plain reload re-reads the installed CRL, not the one given at start.
    broker.reload().expect("reload");
    assert!(matches!(
        dev_b.connect(port, &pem).await,
        Outcome::Refused(_)
    ));
    assert_eq!(dev_a.connect(port, &pem).await, Outcome::Accepted);
    broker.stop().expect("stop");
}
