//! The embedded transport (embedded-tls TLS 1.3 + mqttrs MQTT 3.1.1, driven by the
//! `acorn-mqtt` session) against a real mosquitto over tokio TCP: presses, inbound messages,
//! a broker crash with presses queued meanwhile, and the TLS refusal matrix.

mod common;
/// The device core (`acorn-device`) driving this transport (feature `device`).
#[cfg(feature = "device")]
mod device_core;

use std::sync::atomic::Ordering;
use std::time::Duration;

use acorn_embedded::app::{BasicDevice, RequestSource};
use acorn_embedded::host::{self, OsRng, TokioConnector};
use acorn_embedded::transport::Connector;
use acorn_embedded::{
    Buffers, ClientCertRejection, Diagnosis, PingFailure, PingOptions, Request, Step, TlsIdentity,
    Transport, TransportConfig,
};
use acorn_mqtt::{ButtonPressMessage, ConnectionStatus, Session, SessionConfig, Topics};
use common::{Backend, Env, GatedConnector, Setup, WAIT};
use tokio::sync::mpsc;

struct Channel(mpsc::UnboundedReceiver<Request>);

impl RequestSource for Channel {
    async fn next(&mut self) -> Request {
        self.0.recv().await.unwrap_or(Request::Stop)
    }
}

type Device = BasicDevice<Channel>;

fn device(topics: &Topics) -> (Device, mpsc::UnboundedSender<Request>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        BasicDevice::new(topics.clone(), "1.0.0-test", common::unix_ms, Channel(rx)),
        tx,
    )
}

fn session(topics: &Topics) -> Session<rand::rngs::StdRng> {
    use rand::SeedableRng;
    Session::new(
        SessionConfig::for_device(topics),
        rand::rngs::StdRng::seed_from_u64(7),
    )
    .unwrap()
}

/// Runs the device until `check` is done (it then sends Stop); returns the device.
async fn run_device<C, F>(
    env: &Env,
    connector: C,
    identity: &TlsIdentity,
    topics: &Topics,
    check: impl FnOnce(mpsc::UnboundedSender<Request>) -> F,
) -> Device
where
    C: Connector,
    F: std::future::Future<Output = ()>,
{
    let anchors = env.anchors();
    let (mut dev, tx) = device(topics);
    let mut config = TransportConfig::new(env.target());
    config.will = dev.last_will();
    let mut buffers = Buffers::new();
    let mut transport = Transport::new(
        connector,
        common::clock(),
        OsRng,
        identity,
        &anchors,
        config,
        &mut buffers,
    );
    let mut session = session(topics);
    let stopper = tx.clone();
    let checked = async move {
        check(tx).await;
        let _ = stopper.send(Request::Stop);
    };
    let run = async {
        tokio::time::timeout(WAIT * 3, transport.run(&mut session, &mut dev))
            .await
            .expect("the transport stops after Stop");
    };
    tokio::join!(run, checked);
    dev
}

fn press(topics: &Topics, rf: &str) -> (Request, Vec<u8>) {
    let unix = 1_795_884_127_123;
    let json = ButtonPressMessage::new(topics.device_id(), rf, unix, Some(87))
        .unwrap()
        .to_json()
        .unwrap();
    (Device::press(topics, rf, unix, Some(87)).unwrap(), json)
}

async fn expect_online(backend: &mut Backend, topics: &Topics) {
    let (topic, payload) = backend.next_publish().await;
    assert_eq!(topic, topics.status());
    let text = String::from_utf8(payload).unwrap();
    assert!(text.contains("\"status\":\"online\""), "{text}");
}

#[tokio::test]
async fn a_press_reaches_the_backend_with_the_exact_json() {
    let env = Env::start();
    let topics = Topics::new("acorn-0001").unwrap();
    let identity = env.ca.identity("acorn-0001");
    let mut backend = env.backend("acorn-pups/#").await;
    let (request, json) = press(&topics, "rf-5a3c");
    let t = topics.clone();
    run_device(&env, TokioConnector, &identity, &topics, |tx| async move {
        expect_online(&mut backend, &t).await;
        tx.send(request).unwrap();
        let (topic, payload) = backend.next_publish().await;
        assert_eq!(topic, t.button_press());
        assert_eq!(payload, json, "{}", String::from_utf8_lossy(&payload));
    })
    .await;
    // A clean stop sends DISCONNECT: mosquitto logs it, and publishes no last will.
    assert!(env.broker.log().contains("New client connected"));
}

#[tokio::test]
async fn settings_and_commands_reach_the_device() {
    let env = Env::start();
    let topics = Topics::new("acorn-0002").unwrap();
    let identity = env.ca.identity("acorn-0002");
    let mut backend = env.backend("acorn-pups/#").await;
    let settings = br#"{"requestId":"req-42","soundVolume":7}"#.to_vec();
    let command = br#"{"requestId":"req-7","command":"get-status"}"#.to_vec();
    let (s, c) = (settings.clone(), command.clone());
    let t = topics.clone();
    let mut dev = run_device(&env, TokioConnector, &identity, &topics, |_tx| async move {
        expect_online(&mut backend, &t).await;
        backend.publish(t.settings(), &s).await;
        backend.publish(t.commands(), &c).await;
        // Give the device time to read them.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let inbox = dev.take_inbox();
    assert_eq!(
        inbox,
        vec![
            (topics.settings().to_string(), settings),
            (topics.commands().to_string(), command)
        ]
    );
}

#[tokio::test]
async fn presses_made_while_the_broker_is_down_arrive_in_order() {
    let mut env = Env::start();
    let topics = Topics::new("acorn-0003").unwrap();
    let identity = env.ca.identity("acorn-0003");
    let gate = GatedConnector::default();
    let closed = gate.closed.clone();
    let mut backend = env.backend("acorn-pups/button-press/#").await;
    let t = topics.clone();
    let presses: Vec<(Request, Vec<u8>)> =
        (0..5).map(|i| press(&topics, &format!("rf-{i}"))).collect();
    let expected: Vec<Vec<u8>> = presses.iter().map(|(_, j)| j.clone()).collect();
    let env_ref = &mut env;
    let anchors = env_ref.anchors();
    let (mut dev, tx) = device(&topics);
    let mut config = TransportConfig::new(env_ref.target());
    config.will = dev.last_will();
    let mut buffers = Buffers::new();
    let mut transport = Transport::new(
        gate,
        common::clock(),
        OsRng,
        &identity,
        &anchors,
        config,
        &mut buffers,
    );
    let mut session = session(&topics);
    let check = async {
        // Connected once: the first press arrives.
        let (first, first_json) = press(&t, "rf-first");
        tx.send(first).unwrap();
        assert_eq!(backend.next_publish().await.1, first_json);
        // The broker crashes; the device may not reach the new one until the gate opens.
        closed.store(true, Ordering::SeqCst);
        drop(backend);
        env_ref.kill_broker();
        for (request, _) in presses {
            tx.send(request).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        env_ref.start_broker_again();
        let mut backend = env_ref.backend("acorn-pups/button-press/#").await;
        closed.store(false, Ordering::SeqCst);
        let _ = tx.send(Request::Reconnect);
        // At least once: when the broker died between forwarding the first press and its
        // PUBACK reaching the device, the device sends it again first (DUP); nothing else may
        // come twice or out of order.
        let mut redelivered_first = false;
        for want in &expected {
            let (mut topic, mut payload) = backend.next_publish().await;
            if payload == first_json && !redelivered_first {
                redelivered_first = true;
                (topic, payload) = backend.next_publish().await;
            }
            assert_eq!(topic, t.button_press());
            assert_eq!(
                &payload,
                want,
                "in order: {}",
                String::from_utf8_lossy(&payload)
            );
        }
        tx.send(Request::Stop).unwrap();
    };
    let run = async {
        tokio::time::timeout(WAIT * 3, transport.run(&mut session, &mut dev))
            .await
            .expect("stops");
    };
    tokio::join!(run, check);
    assert!(session.stats().connects >= 2);
}

async fn ping_failure(env: &Env, identity: &TlsIdentity) -> PingFailure {
    let options = PingOptions::new(env.target(), identity.device_id(), b"{}".to_vec());
    match host::ping(identity, &env.anchors(), &options).await {
        Ok(report) => panic!("ping should fail, got {report:?}"),
        Err(failure) => failure,
    }
}

fn assert_refused(env: &Env, failure: &PingFailure, expected: &Diagnosis, words: &str) {
    assert_eq!(&failure.diagnosis, expected, "{failure}");
    assert_eq!(failure.step, Step::Tls, "{failure}");
    assert!(
        failure.to_string().contains(words),
        "{failure} should say '{words}'"
    );
    assert!(
        !env.broker_saw_mqtt(),
        "the broker received MQTT:\n{}",
        env.broker.log()
    );
}

#[tokio::test]
async fn ping_passes_every_step_over_an_intermediate_chain() {
    let env = Env::start();
    let identity = env.ca.identity("acorn-0004");
    let options = PingOptions::new(env.target(), "acorn-0004", b"{\"ping\":1}".to_vec());
    let report = host::ping(&identity, &env.anchors(), &options)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    let steps: Vec<Step> = report.steps.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        [
            Step::Tcp,
            Step::Tls,
            Step::Connack,
            Step::Suback,
            Step::Puback,
            Step::Disconnect
        ]
    );
    assert_eq!(report.tls_version, "TLSv1_3");
}

#[tokio::test]
async fn rogue_server_ca_is_refused() {
    let env = Env::with(Setup {
        rogue_server_ca: true,
        ..Setup::default()
    });
    let failure = ping_failure(&env, &env.ca.identity("acorn-0005")).await;
    assert_refused(
        &env,
        &failure,
        &Diagnosis::UnknownServerCa,
        "unknown server CA",
    );
}

#[tokio::test]
async fn hostname_mismatch_is_refused() {
    let env = Env::with(Setup {
        server_sans: vec!["broker.example.com".into()],
        ..Setup::default()
    });
    let failure = ping_failure(&env, &env.ca.identity("acorn-0006")).await;
    let expected = Diagnosis::HostnameMismatch {
        expected: "localhost".into(),
        presented: vec!["broker.example.com".into()],
    };
    assert_refused(&env, &failure, &expected, "hostname mismatch");
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let env = Env::with(Setup {
        server_expired: true,
        ..Setup::default()
    });
    let failure = ping_failure(&env, &env.ca.identity("acorn-0007")).await;
    assert_refused(
        &env,
        &failure,
        &Diagnosis::ServerCertificateExpired,
        "has expired",
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused_by_the_broker() {
    let env = Env::start();
    let stranger = common::Ca::new("Someone Else's CA");
    let failure = ping_failure(&env, &stranger.identity("acorn-0008")).await;
    // The broker's `unknown_ca` alert is read when it arrives before the broker hangs up;
    // otherwise the refusal is still named as the broker rejecting the client certificate.
    let expected = match failure.diagnosis {
        Diagnosis::ClientCertificateRejected(ClientCertRejection::UnknownCa) => {
            Diagnosis::ClientCertificateRejected(ClientCertRejection::UnknownCa)
        }
        _ => Diagnosis::ClientCertificateRejected(ClientCertRejection::Unspecified),
    };
    assert_refused(&env, &failure, &expected, "client certificate rejected");
}

#[tokio::test]
async fn the_transport_reports_the_refusal_to_the_session() {
    let env = Env::with(Setup {
        rogue_server_ca: true,
        ..Setup::default()
    });
    let topics = Topics::new("acorn-0009").unwrap();
    let identity = env.ca.identity("acorn-0009");
    let mut dev = run_device(&env, TokioConnector, &identity, &topics, |_tx| async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
    })
    .await;
    let failures = dev.take_failures();
    assert!(
        failures
            .first()
            .is_some_and(|f| f.contains("unknown server CA")),
        "{failures:?}"
    );
    assert!(matches!(
        dev.status(),
        ConnectionStatus::Error(_) | ConnectionStatus::Disconnected
    ));
    assert!(!env.broker_saw_mqtt());
}

fn openssl(args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command-line tool");
    assert!(status.success(), "openssl {args:?}");
}

#[test]
fn an_rsa_identity_is_refused_up_front_naming_p256() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let cert = dir.path().join("c.pem");
    let pkcs1 = dir.path().join("k1.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=acorn-rsa",
        "-days",
        "2",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    openssl(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-traditional",
        "-out",
        pkcs1.to_str().unwrap(),
    ]);
    for key_file in [&key, &pkcs1] {
        let certs = acorn_certs::DeviceCertificates {
            device_certificate: std::fs::read(&cert).unwrap(),
            private_key: acorn_certs::PrivateKey::new(std::fs::read(key_file).unwrap()),
            iot_endpoint: "localhost".into(),
            device_id: "acorn-rsa".into(),
        };
        let err = TlsIdentity::from_certificates(&certs).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                acorn_embedded::IdentityError::UnsupportedKeyType { found: "RSA" }
            ),
            "{text}"
        );
        assert!(text.contains("P-256") && text.contains("RSA"), "{text}");
    }
}

#[test]
fn a_key_of_another_certificate_is_refused_up_front() {
    let ca = common::Ca::new("ca");
    let mut certs = ca.device("acorn-x");
    certs.private_key = ca.device("acorn-y").private_key;
    assert_eq!(
        TlsIdentity::from_certificates(&certs).unwrap_err(),
        acorn_embedded::IdentityError::KeyMismatch
    );
}
