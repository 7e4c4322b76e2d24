//! `acorn device run` and `acorn device ping` as processes, against a real mosquitto with an
//! AWS IoT-like ACL: stdin commands, the last will on `kill -9`, a clean `offline` on SIGTERM,
//! every step of `ping`, plain-language failures, and no key material in trace-level output.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acorn_agent::DeviceImage;
use acorn_backend::ca::{KeyType, LocalCa};
use acorn_devstack::broker::{Broker, BrokerConfig};
use acorn_transport::rumqttc::{self, AsyncClient, Event, Packet, QoS};
use acorn_transport::{BrokerTarget, ClientIdentity, SecretString, SessionOptions, TrustRoots};
use secrecy::ExposeSecret as _;
use serde_json::Value;
use tokio::sync::mpsc;

/// Bound of every wait.
const WAIT: Duration = Duration::from_secs(15);

struct Env {
    dir: tempfile::TempDir,
    ca: LocalCa,
    service_ca: LocalCa,
    broker: Broker,
}

/// The backend's service identity on the broker's service listener.
const BACKEND_ID: &str = "service:backend";

impl Env {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::create(&dir.path().join("ca")).unwrap();
        let server = ca.issue_server_certificate(&[]).unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.certificate.pem).unwrap();
        std::fs::write(
            dir.path().join("server.key"),
            server.private_key_pem.expose_secret(),
        )
        .unwrap();
        let service_ca = LocalCa::create_as(
            &dir.path().join("service-ca"),
            acorn_backend::CaRole::Service,
        )
        .unwrap();
        let mut config = BrokerConfig::new(
            dir.path(),
            ca.cert_path(),
            dir.path().join("server.pem"),
            dir.path().join("server.key"),
        );
        config.service_ca_file = Some(service_ca.cert_path());
        config.service_identities = vec![BACKEND_ID.to_owned()];
        let broker =
            Broker::start(config).expect("mosquitto must start (apt-get install mosquitto)");
        Self {
            dir,
            ca,
            service_ca,
            broker,
        }
    }

    /// An image holding a fresh identity for `id` (RSA-2048 PKCS#1 key, as AWS issues them);
    /// returns its path and the key PEM.
    fn image(&self, id: &str) -> (PathBuf, String) {
        self.image_with(id, KeyType::Rsa2048)
    }

    /// An image holding a fresh identity for `id` with a key of `key_type`.
    fn image_with(&self, id: &str, key_type: KeyType) -> (PathBuf, String) {
        let issued = self.ca.issue_with_new_key(id, key_type).unwrap();
        let key = issued.private_key_pem.expose_secret().to_owned();
        let path = self.dir.path().join(format!("{id}.bin"));
        provision(
            &path,
            issued.certificate.pem.as_bytes(),
            &key,
            id,
            unix_now(),
        );
        (path, key)
    }

    fn broker_arg(&self) -> String {
        format!("localhost:{}", self.broker.port())
    }

    fn ca_arg(&self) -> String {
        self.ca.cert_path().display().to_string()
    }

    /// A backend client (the service identity [`BACKEND_ID`] on the service listener)
    /// subscribed to `filter`.
    async fn backend(&self, filter: &str) -> Backend {
        let issued = self
            .service_ca
            .issue_with_new_key(BACKEND_ID, KeyType::P256)
            .unwrap();
        // The service identity (a P-256 key from the service CA).
        let identity = ClientIdentity::new(
            issued.certificate.pem,
            SecretString::from(issued.private_key_pem.expose_secret().to_owned()),
        );
        let mut options = SessionOptions::new(
            BrokerTarget::new("localhost", self.broker.service_port().unwrap()),
            identity,
            TrustRoots::from_pem(self.ca.certificate_pem(), "local CA").unwrap(),
            BACKEND_ID,
            "test",
        );
        options.clean_session = true;
        let (client, mut eventloop) = options.connect().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let stop = event.is_err();
                if tx.send(event).is_err() || stop {
                    return;
                }
            }
        });
        let mut backend = Backend { client, events };
        backend.wait(|p| matches!(p, Packet::ConnAck(_))).await;
        backend
            .client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        backend.wait(|p| matches!(p, Packet::SubAck(_))).await;
        backend
    }
}

fn unix_now() -> u64 {
    acorn_agent::device_image::unix_now()
}

fn provision(path: &Path, cert: &[u8], key: &str, id: &str, now: u64) {
    let mut image = DeviceImage::create(path, 0x8000, None).unwrap();
    let certs = acorn_certs::DeviceCertificates {
        device_certificate: cert.to_vec(),
        private_key: acorn_certs::PrivateKey::new(key.as_bytes().to_vec()),
        iot_endpoint: "localhost".into(),
        device_id: id.into(),
    };
    image.provision(&certs, now).unwrap();
}

struct Backend {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, rumqttc::ConnectionError>>,
}

impl Backend {
    async fn wait(&mut self, pred: impl Fn(&Packet) -> bool) -> Packet {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("timed out waiting for a packet")
                .expect("backend event loop ended");
            match event {
                Ok(Event::Incoming(p)) if pred(&p) => return p,
                Ok(_) => {}
                Err(e) => panic!("backend connection failed: {e}"),
            }
        }
    }

    /// The next JSON message on `topic` satisfying `pred`.
    async fn json(&mut self, topic: &str, pred: impl Fn(&Value) -> bool) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let packet =
                tokio::time::timeout_at(deadline, self.wait(|p| matches!(p, Packet::Publish(_))))
                    .await
                    .unwrap_or_else(|_| panic!("timed out waiting for a message on {topic}"));
            let Packet::Publish(p) = packet else {
                unreachable!()
            };
            if p.topic != topic {
                continue;
            }
            let text = String::from_utf8(p.payload.to_vec()).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            if pred(&value) {
                return (text, value);
            }
        }
    }

    async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .unwrap();
        self.wait(|p| matches!(p, Packet::PubAck(_))).await;
    }
}

/// A running `acorn device run` whose output is collected.
struct Agent {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    reader: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let thread = std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            let mut t = sink.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    (text, thread)
}

impl Agent {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_acorn"))
            .args(["device", "run"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start acorn");
        let (stdout, out_thread) = collect(child.stdout.take().unwrap());
        let (stderr, err_thread) = collect(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
            readers: vec![out_thread, err_thread],
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits (bounded) for the process to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The pipes are closed: the readers end once they have read everything.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status.code();
            }
            assert!(Instant::now() < deadline, "acorn did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        format!(
            "{}{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits (bounded) until stderr holds `needle`.
    async fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no '{needle}' on stderr: {}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until stdout holds a line containing `needle`.
    async fn wait_stdout(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self
                .stdout
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.contains(needle))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no '{needle}' on stdout: {}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The keys of the console's `status` object, on either transport.
const STATUS_KEYS: [&str; 16] = [
    "deviceId",
    "status",
    "connectedForMs",
    "settings",
    "connects",
    "connectAttempts",
    "failures",
    "queued",
    "inFlight",
    "delivered",
    "dropped",
    "expired",
    "lastError",
    "queuedPresses",
    "oldestQueuedPress",
    "droppedPresses",
];

fn assert_status_keys(status: &Value) {
    let mut keys: Vec<&str> = status
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {status}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected = STATUS_KEYS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{status}");
}

/// What the console prints on stderr for `rotate` without `--rotation-template`.
fn rotate_not_configured() -> String {
    format!(
        "rotate: {}",
        acorn_agent::device::RotateError::NotConfigured
    )
}

fn acorn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_acorn"))
        .args(args)
        .output()
        .expect("run acorn")
}

#[tokio::test]
async fn run_takes_stdin_commands_and_sigterm_publishes_offline() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/#").await;
    let (image, _) = env.image("dev-cli");
    let image_arg = image.display().to_string();
    let mut agent = Agent::start(
        &[
            "--image",
            &image_arg,
            "--broker",
            &env.broker_arg(),
            "--ca",
            &env.ca_arg(),
        ],
        &[],
    );
    backend
        .json("acorn-pups/status/dev-cli", |v| v["status"] == "online")
        .await;

    agent.send("press rf-9 42");
    let (text, _) = backend
        .json("acorn-pups/button-press/dev-cli", |_| true)
        .await;
    assert!(
        text.starts_with(r#"{"deviceId":"dev-cli","buttonRfId":"rf-9","timestamp":""#),
        "{text}"
    );
    // The seed's fields, then the press's stable id (15 hex digits).
    let (_, press_id) = text
        .split_once(r#"Z","batteryLevel":42,"pressId":""#)
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(press_id.len(), 17, "{text}");
    assert!(press_id.ends_with(r#""}"#), "{text}");
    // The console's answer names the same pressId.
    let answer: Value =
        serde_json::from_str(&agent.wait_stdout(r#""press":"rf-9""#).await).unwrap();
    assert_eq!(answer["queued"], true);
    assert_eq!(
        answer["pressId"].as_str(),
        press_id.strip_suffix(r#""}"#),
        "{answer}"
    );

    // Settings from the cloud are applied; `status` shows them.
    backend
        .publish(
            "acorn-pups/settings/dev-cli",
            br#"{"requestId":"s1","cooldownMs":0}"#,
        )
        .await;
    backend
        .json("acorn-pups/status/dev-cli", |v| v["requestId"] == "s1")
        .await;
    agent.send("status");
    let status: Value =
        serde_json::from_str(&agent.wait_stdout(r#""deviceId":"dev-cli""#).await).unwrap();
    assert_eq!(status["status"], "connected");
    assert_eq!(status["settings"]["cooldownMs"], 0);
    assert_status_keys(&status);
    // No rotation configured: refused on stderr, as the embedded transport refuses it.
    agent.send("rotate");
    agent.wait_stderr(&rotate_not_configured()).await;
    agent.send("press rf-9");
    agent.send("bogus command");
    // The lines are read before the signal goes (a signal may overtake unread input).
    agent.wait_stderr("unknown command 'bogus command'").await;

    // SIGTERM: `offline` published by the device itself, clean exit.
    agent.signal("TERM");
    let (_, offline) = backend
        .json("acorn-pups/status/dev-cli", |v| v["status"] == "offline")
        .await;
    assert_eq!(
        offline["firmwareVersion"],
        acorn_agent::device::AGENT_VERSION
    );
    assert_eq!(agent.wait_exit(), Some(0), "{}", agent.output());
    let output = agent.output();
    assert!(output.contains("offline status delivered"), "{output}");
    assert!(
        output.contains("unknown command 'bogus command'"),
        "{output}"
    );
    assert!(
        output.contains("health") || output.contains("connected"),
        "{output}"
    );
    // A clean disconnect: the broker did not have to publish the will.
    assert!(
        env.broker.log().contains("disconnected"),
        "{}",
        env.broker.log()
    );
}

#[tokio::test]
async fn kill_9_makes_the_broker_publish_the_last_will() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/status/#").await;
    let (image, _) = env.image("dev-will");
    let image_arg = image.display().to_string();
    let mut agent = Agent::start(
        &[
            "--image",
            &image_arg,
            "--broker",
            &env.broker_arg(),
            "--ca",
            &env.ca_arg(),
            "--log-format",
            "json",
        ],
        &[],
    );
    backend
        .json("acorn-pups/status/dev-will", |v| v["status"] == "online")
        .await;
    agent.child.kill().unwrap(); // SIGKILL
    let (_, will) = backend
        .json("acorn-pups/status/dev-will", |v| v["status"] == "offline")
        .await;
    assert_eq!(will["deviceId"], "dev-will");
    assert_eq!(agent.wait_exit(), None, "killed by a signal");
    // JSON logs: every stderr line is a JSON object.
    let stderr = agent.stderr.lock().unwrap().clone();
    assert!(!stderr.is_empty());
    for line in stderr.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
}

#[tokio::test]
async fn ping_prints_every_step() {
    let env = Env::start();
    let (image, _) = env.image("dev-ping");
    let image_arg = image.display().to_string();
    let before = std::fs::read(&image).unwrap();
    let args = [
        "device",
        "ping",
        "--image",
        &image_arg,
        "--broker",
        &env.broker_arg(),
        "--ca",
        &env.ca_arg(),
    ];
    let out = acorn(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "dns",
        "tcp",
        "tls",
        "connack",
        "suback",
        "puback",
        "disconnect",
        "total",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(step) && l.ends_with(" ms")),
            "{step} missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("ok: TLSv1_3"), "{stdout}");
    // ping never writes to the image (a running device may own it).
    assert_eq!(std::fs::read(&image).unwrap(), before);

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = acorn(&json_args);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["deviceId"], "dev-ping");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "dns",
            "tcp",
            "tls",
            "connack",
            "suback",
            "puback",
            "disconnect"
        ]
    );

    // Against the Amazon roots the local broker's certificate is from an unknown CA.
    let out = acorn(&[
        "device",
        "ping",
        "--image",
        &image_arg,
        "--broker",
        &env.broker_arg(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["failedStep"], "tls");
    assert!(
        report["diagnosis"].as_str().unwrap().contains("CA"),
        "{report}"
    );

    // Nothing listening: connection refused, after DNS.
    let port = acorn_devstack::broker::free_port().unwrap();
    let out = acorn(&[
        "device",
        "ping",
        "--image",
        &image_arg,
        "--broker",
        &format!("127.0.0.1:{port}"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tcp         FAILED"), "{stdout}");
    assert!(stdout.to_lowercase().contains("refused"), "{stdout}");
}

#[test]
fn an_expired_certificate_is_named_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dev-old");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, &ca).unwrap();
    let image = dir.path().join("old.bin");
    // Provisioned while it was valid (mid-2020).
    provision(
        &image,
        cert.pem().as_bytes(),
        &key.serialize_pem(),
        "dev-old",
        1_593_561_600,
    );
    let image_arg = image.display().to_string();
    for cmd in ["run", "ping"] {
        let out = acorn(&[
            "device",
            cmd,
            "--image",
            &image_arg,
            "--broker",
            "127.0.0.1:1",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("certificate expired"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = acorn(&["device", "run", "--image", "/nonexistent.bin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.bin"));
}

/// The base64 lines of a PEM key (what a leak would show).
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn no_key_material_in_trace_output_of_run_and_ping() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/#").await;
    let (image, key) = env.image("dev-secret");
    let image_arg = image.display().to_string();
    let trace = [("RUST_LOG", "trace")];
    let mut output = String::new();

    // Connect, publish, settings, a rejected message, shutdown.
    let mut agent = Agent::start(
        &[
            "--image",
            &image_arg,
            "--broker",
            &env.broker_arg(),
            "--ca",
            &env.ca_arg(),
        ],
        &trace,
    );
    backend
        .json("acorn-pups/status/dev-secret", |v| v["status"] == "online")
        .await;
    agent.send("press rf-1 10");
    backend
        .json("acorn-pups/button-press/dev-secret", |_| true)
        .await;
    backend
        .publish(
            "acorn-pups/commands/dev-secret",
            br#"{"requestId":"x","command":"nope"}"#,
        )
        .await;
    backend
        .json("acorn-pups/status/dev-secret", |v| v["requestId"] == "x")
        .await;
    agent.send("quit");
    assert_eq!(agent.wait_exit(), Some(0));
    output += &agent.output();

    // Failures: TLS refused (Amazon roots), nothing listening.
    let port = acorn_devstack::broker::free_port().unwrap().to_string();
    for broker_args in [
        vec!["--broker".to_owned(), env.broker_arg()],
        vec!["--broker".to_owned(), format!("127.0.0.1:{port}")],
    ] {
        let mut args = vec!["--image".to_owned(), image_arg.clone()];
        args.extend(broker_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut agent = Agent::start(&args, &trace);
        let deadline = Instant::now() + WAIT;
        while !agent.output().contains("next connect attempt") {
            assert!(Instant::now() < deadline, "{}", agent.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        agent.signal("INT");
        assert_eq!(agent.wait_exit(), Some(0));
        output += &agent.output();
        let mut ping_args = vec!["device", "ping"];
        ping_args.extend(&args);
        let out = Command::new(env!("CARGO_BIN_EXE_acorn"))
            .args(&ping_args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        output += &String::from_utf8_lossy(&out.stdout);
        output += &String::from_utf8_lossy(&out.stderr);
    }
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "trace logging ran"
    );
    assert!(output.contains("diagnosis") || output.contains("refused"));
    let lines = key_lines(&key);
    assert!(lines.len() > 10, "an RSA key has many base64 lines");
    for line in lines {
        assert!(!output.contains(&line), "key material leaked: {line}");
    }
}

#[tokio::test]
async fn encrypted_image_with_nvs_keys_and_simulated_presses() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/button-press/#").await;
    let issued = env.ca.issue_with_new_key("dev-enc", KeyType::P256).unwrap();
    let keys = acorn_nvs::NvsKeys::generate(&mut rand::rngs::OsRng);
    let keys_path = env.dir.path().join("nvs_keys.bin");
    std::fs::write(&keys_path, keys.to_partition()).unwrap();
    let image = env.dir.path().join("enc.bin");
    let mut nvs = DeviceImage::create(&image, 0x8000, Some(&keys)).unwrap();
    nvs.provision(
        &acorn_certs::DeviceCertificates {
            device_certificate: issued.certificate.pem.into_bytes(),
            private_key: acorn_certs::PrivateKey::new(
                issued.private_key_pem.expose_secret().as_bytes().to_vec(),
            ),
            iot_endpoint: "localhost".into(),
            device_id: "dev-enc".into(),
        },
        unix_now(),
    )
    .unwrap();
    drop(nvs);
    let image_arg = image.display().to_string();
    let keys_arg = keys_path.display().to_string();
    let broker = env.broker_arg();
    let ca = env.ca_arg();

    let out = acorn(&[
        "device",
        "ping",
        "--image",
        &image_arg,
        "--nvs-keys",
        &keys_arg,
        "--broker",
        &broker,
        "--ca",
        &ca,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the key the image cannot be read, and says so.
    let out = acorn(&[
        "device", "ping", "--image", &image_arg, "--broker", &broker, "--ca", &ca,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("enc.bin"), "{stderr}");
    assert!(stderr.contains("encrypted"), "{stderr}");
    assert_eq!(stderr.matches("decodes").count(), 1, "said once: {stderr}");
    // A missing CA file is named, once.
    let out = acorn(&[
        "device",
        "ping",
        "--image",
        &image_arg,
        "--nvs-keys",
        &keys_arg,
        "--broker",
        &broker,
        "--ca",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read CA file /nonexistent/ca.pem"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file").count(),
        1,
        "said once: {stderr}"
    );

    let mut agent = Agent::start(
        &[
            "--image",
            &image_arg,
            "--nvs-keys",
            &keys_arg,
            "--broker",
            &broker,
            "--ca",
            &ca,
            "--press-every",
            "200ms",
        ],
        &[],
    );
    let (_, press) = backend
        .json("acorn-pups/button-press/dev-enc", |_| true)
        .await;
    assert_eq!(press["buttonRfId"], "sim-button");
    agent.signal("INT");
    assert_eq!(agent.wait_exit(), Some(0), "{}", agent.output());
}

#[tokio::test]
async fn the_embedded_transport_pings_runs_presses_and_answers_like_the_firmware() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/#").await;
    let (image, _) = env.image_with("dev-emb", KeyType::P256);
    let image_arg = image.display().to_string();
    let conn = [
        "--image",
        image_arg.as_str(),
        "--broker",
        &env.broker_arg(),
        "--ca",
        &env.ca_arg(),
        "--transport",
        "embedded",
    ];
    // Ping: every step, TLS 1.3.
    let out = acorn(&[&["device", "ping"][..], &conn[..]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(embedded transport)"), "{stdout}");
    assert!(stdout.contains("TLSv1_3"), "{stdout}");
    for step in ["tls", "connack", "suback", "puback"] {
        assert!(stdout.contains(step), "{step}: {stdout}");
    }
    // Run: the seed's press JSON reaches a subscriber; a command is answered. (The ping kept
    // the device's persistent session, subscribed to its commands only, so the device finds its
    // session present and does not resubscribe: commands, not settings, are what it receives.)
    let mut agent = Agent::start(&conn, &[]);
    backend
        .json("acorn-pups/status/dev-emb", |v| v["status"] == "online")
        .await;
    agent.send("press rf-7 55");
    let (text, _) = backend
        .json("acorn-pups/button-press/dev-emb", |_| true)
        .await;
    assert!(
        text.starts_with(r#"{"deviceId":"dev-emb","buttonRfId":"rf-7","timestamp":""#),
        "{text}"
    );
    // The seed's fields, then the press's stable id (15 hex digits).
    let (_, press_id) = text
        .split_once(r#"Z","batteryLevel":55,"pressId":""#)
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(press_id.len(), 17, "{text}");
    assert!(press_id.ends_with(r#""}"#), "{text}");
    // The console's answer names the same pressId, as with the default transport.
    let answer: Value =
        serde_json::from_str(&agent.wait_stdout(r#""press":"rf-7""#).await).unwrap();
    assert_eq!(answer["queued"], true, "{answer}");
    assert_eq!(
        answer["pressId"].as_str(),
        press_id.strip_suffix(r#""}"#),
        "{answer}"
    );
    backend
        .publish(
            "acorn-pups/commands/dev-emb",
            br#"{"requestId":"e1","command":"get-status"}"#,
        )
        .await;
    let (_, reply) = backend
        .json("acorn-pups/status/dev-emb", |v| v["requestId"] == "e1")
        .await;
    assert_eq!(reply["result"], "ok", "{reply}");
    assert_eq!(reply["command"], "get-status", "{reply}");
    // SIGTERM: `offline` from the device itself, exit 0.
    agent.signal("TERM");
    backend
        .json("acorn-pups/status/dev-emb", |v| v["status"] == "offline")
        .await;
    assert_eq!(agent.wait_exit(), Some(0), "{}", agent.output());
}

/// `acorn device run --transport embedded` of a new P-256 device `id` on `env`'s broker, once
/// `backend` has seen it online.
async fn embedded_agent(env: &Env, backend: &mut Backend, id: &str) -> Agent {
    let (image, _) = env.image_with(id, KeyType::P256);
    let image_arg = image.display().to_string();
    let agent = Agent::start(
        &[
            "--image",
            &image_arg,
            "--broker",
            &env.broker_arg(),
            "--ca",
            &env.ca_arg(),
            "--transport",
            "embedded",
        ],
        &[],
    );
    backend
        .json(&format!("acorn-pups/status/{id}"), |v| {
            v["status"] == "online"
        })
        .await;
    agent
}

#[tokio::test]
async fn the_embedded_transport_answers_the_console_as_the_default_transport_does() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/#").await;
    let mut agent = embedded_agent(&env, &mut backend, "dev-emb-console").await;

    // A settings update from the cloud is applied; `status` shows it, with the press queue.
    backend
        .publish(
            "acorn-pups/settings/dev-emb-console",
            br#"{"requestId":"s1","soundVolume":7}"#,
        )
        .await;
    backend
        .json("acorn-pups/status/dev-emb-console", |v| {
            v["requestId"] == "s1"
        })
        .await;
    agent.send("status");
    let status: Value =
        serde_json::from_str(&agent.wait_stdout(r#""deviceId":"dev-emb-console""#).await).unwrap();
    assert_status_keys(&status);
    assert_eq!(status["status"], "connected", "{status}");
    assert_eq!(status["settings"]["soundVolume"], 7, "{status}");
    assert_eq!(status["settings"]["cooldownMs"], 1000, "{status}");
    assert_eq!(status["connects"], 1, "{status}");
    assert!(status["connectedForMs"].is_u64(), "{status}");
    assert_eq!(status["queuedPresses"], 0, "{status}");
    assert_eq!(status["oldestQueuedPress"], Value::Null, "{status}");
    assert_eq!(status["droppedPresses"], 0, "{status}");

    // The same button twice at once: queued, then cooled down (the default cooldown, 1 s).
    agent.send("press rf-8");
    agent.send("press rf-8");
    agent
        .wait_stdout(r#"{"press":"rf-8","queued":false,"reason":"cooldown"}"#)
        .await;
    let queued: Value = serde_json::from_str(&agent.wait_stdout(r#""queued":true"#).await).unwrap();
    assert_eq!(queued["press"], "rf-8", "{queued}");
    let (_, published) = backend
        .json("acorn-pups/button-press/dev-emb-console", |_| true)
        .await;
    assert_eq!(published["pressId"], queued["pressId"], "{published}");

    // Refusals on stderr, in the default transport's words; nothing on stdout for them.
    agent.send("rotate");
    agent.wait_stderr(&rotate_not_configured()).await;
    agent.send("press rf-8 101");
    agent
        .wait_stderr("press: battery level must be 0..=100, got '101'")
        .await;
    agent.send("bogus command");
    agent
        .wait_stderr(
            "unknown command 'bogus command': use `press <buttonRfId> [battery]`, `status`, `rotate` or `quit`",
        )
        .await;

    // `quit`: `offline` from the device itself, exit 0.
    agent.send("quit");
    backend
        .json("acorn-pups/status/dev-emb-console", |v| {
            v["status"] == "offline"
        })
        .await;
    assert_eq!(agent.wait_exit(), Some(0), "{}", agent.output());
    // Stdout holds the answers only, each a JSON line: two presses and one status.
    let stdout = agent.stdout.lock().unwrap().clone();
    let answers: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    let stderr = agent.stderr.lock().unwrap().clone();
    assert!(!stderr.contains(r#""rotate""#), "{stderr}");
    assert!(stderr.contains("offline status delivered"), "{stderr}");
}

#[test]
fn the_embedded_transport_refuses_an_rsa_identity_before_connecting() {
    let env = Env::start();
    let (image, _) = env.image("dev-rsa");
    let image_arg = image.display().to_string();
    let out = acorn(&[
        "device",
        "ping",
        "--image",
        &image_arg,
        "--broker",
        &env.broker_arg(),
        "--ca",
        &env.ca_arg(),
        "--transport",
        "embedded",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("P-256"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !env.broker.log().contains("New client connected"),
        "{}",
        env.broker.log()
    );
}

#[tokio::test]
async fn kill_9_of_the_embedded_transport_makes_the_broker_publish_its_last_will() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/status/#").await;
    let mut agent = embedded_agent(&env, &mut backend, "dev-emb-will").await;
    agent.child.kill().unwrap(); // SIGKILL: no DISCONNECT, the broker sends the will
    let (_, will) = backend
        .json("acorn-pups/status/dev-emb-will", |v| {
            v["status"] == "offline"
        })
        .await;
    assert_eq!(will["deviceId"], "dev-emb-will");
    assert_eq!(agent.wait_exit(), None, "killed by a signal");
}
