//! The transport against a real mosquitto configured like the AWS IoT policy.

use acorn_test_support::mqtt as common;

use acorn_transport::{ping, ClientIdentity, Diagnosis, PingOptions, SecretString, Step};
use common::{openssl, Client, Env, Validity};
use rcgen::KeyPair;

fn ping_options(env: &Env, identity: ClientIdentity, id: &str) -> PingOptions {
    PingOptions::new(env.target(), identity, env.roots(), id, "1.0.0-test")
}

#[tokio::test]
async fn ping_times_every_step_and_its_status_reaches_the_backend() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/#").await;
    let options = ping_options(&env, env.ca.device("device-a", Validity::Valid), "device-a");
    let report = ping(&options).await.unwrap_or_else(|f| panic!("{f}"));
    let steps: Vec<Step> = report.steps.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        [
            Step::Dns,
            Step::Tcp,
            Step::Tls,
            Step::Connack,
            Step::Suback,
            Step::Puback,
            Step::Disconnect
        ]
    );
    assert_eq!(report.tls_version, "TLSv1_3");
    assert_eq!(report.peer.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert!(!report.session_present);
    let got = backend.next_publish().await;
    assert_eq!(got.topic, "acorn-pups/status/device-a");
    assert_eq!(&got.payload[..], &options.payload[..]);
    // A second ping finds the persistent session (clean session off).
    let again = ping(&options).await.unwrap_or_else(|f| panic!("{f}"));
    assert!(again.session_present);
}

#[tokio::test]
async fn ping_accepts_pkcs1_rsa_sec1_ec_and_tls12() {
    let env = Env::start();
    // PKCS#1 RSA, as AWS CreateKeysAndCertificate returns it.
    let pkcs8 = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        "",
    );
    let rsa = KeyPair::from_pem(&pkcs8).unwrap();
    let cert = env.ca.sign("device-rsa", &[], Validity::Valid, &rsa);
    let pkcs1 = openssl(&["pkey", "-traditional"], &pkcs8);
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let identity = ClientIdentity::new(cert, SecretString::from(pkcs1));
    ping(&ping_options(&env, identity, "device-rsa"))
        .await
        .unwrap_or_else(|f| panic!("{f}"));

    // SEC1 EC key.
    let ec = KeyPair::generate().unwrap();
    let cert = env.ca.sign("device-ec", &[], Validity::Valid, &ec);
    let sec1 = openssl(&["pkey", "-traditional"], &ec.serialize_pem());
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let identity = ClientIdentity::new(cert, SecretString::from(sec1));
    let mut options = ping_options(&env, identity, "device-ec");
    options.tls_versions = acorn_transport::TlsVersions::Tls12Only;
    let report = ping(&options).await.unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(report.tls_version, "TLSv1_2");
}

#[tokio::test]
async fn a_button_press_arrives_at_the_backend_with_the_exact_bytes() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/button-press/+").await;
    let mut device = Client::start(&env.session("device-a")).await;
    let payload = br#"{"deviceId":"device-a","buttonRfId":"rf-1","timestamp":"2026-11-28T17:00:00.000Z","batteryLevel":87}"#;
    device
        .publish("acorn-pups/button-press/device-a", payload)
        .await;
    let got = backend.next_publish().await;
    assert_eq!(got.topic, "acorn-pups/button-press/device-a");
    assert_eq!(&got.payload[..], &payload[..]);
    assert_eq!(got.qos, acorn_transport::rumqttc::QoS::AtLeastOnce);
}

#[tokio::test]
async fn a_device_cannot_read_or_write_another_devices_topics() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/button-press/+").await;
    let mut device_a = Client::start(&env.session("device-a")).await;
    // mosquitto grants both subscriptions (MQTT 3.1.1 has no per-topic denial on read)...
    device_a.subscribe("acorn-pups/commands/device-b").await;
    device_a.subscribe("acorn-pups/commands/device-a").await;
    // ...but only delivers what the ACL allows.
    backend
        .publish("acorn-pups/commands/device-b", b"for-b")
        .await;
    backend
        .publish("acorn-pups/commands/device-a", b"for-a")
        .await;
    let got = device_a.next_publish().await;
    assert_eq!(
        got.topic, "acorn-pups/commands/device-a",
        "device A received B's command"
    );
    assert_eq!(&got.payload[..], b"for-a");

    // A publish on B's topic is PUBACKed (MQTT 3.1.1) but never delivered.
    device_a
        .publish("acorn-pups/button-press/device-b", b"forged")
        .await;
    device_a
        .publish("acorn-pups/button-press/device-a", b"real")
        .await;
    let got = backend.next_publish().await;
    assert_eq!(got.topic, "acorn-pups/button-press/device-a");
    assert_eq!(&got.payload[..], b"real");
}

#[tokio::test]
async fn the_last_will_says_offline_when_the_connection_drops() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/status/+").await;
    let device = Client::start(&env.session("device-a")).await;
    // Drop the socket without DISCONNECT, as a crash or power cut would.
    device.task.abort();
    let _ = device.task.await;
    drop(device.client);
    let got = backend.next_publish().await;
    assert_eq!(got.topic, "acorn-pups/status/device-a");
    let status: serde_json::Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(status["status"], "offline");
    assert_eq!(status["deviceId"], "device-a");
}

#[tokio::test]
async fn the_session_diagnoses_an_untrusted_broker() {
    let env = Env::start();
    let mut options = env.session("device-a");
    options.roots = acorn_transport::TrustRoots::Amazon;
    let mut client = Client::spawn(&options);
    let err = client.wait_error().await;
    assert_eq!(options.diagnose(&err), Diagnosis::UnknownServerCa, "{err}");
}

#[tokio::test]
async fn ping_reports_connection_refused() {
    let port = acorn_devstack::broker::free_port().unwrap();
    let ca = common::Ca::new("x");
    let options = PingOptions::new(
        acorn_transport::BrokerTarget::new("127.0.0.1", port),
        ca.device("d", Validity::Valid),
        acorn_transport::TrustRoots::from_pem(&ca.pem(), "x").unwrap(),
        "d",
        "1",
    );
    let failure = ping(&options).await.unwrap_err();
    assert_eq!(failure.step, Step::Tcp);
    assert!(matches!(
        failure.diagnosis,
        Diagnosis::ConnectionRefused { .. }
    ));
    assert!(failure.to_string().contains("connection refused"));
}

#[tokio::test]
async fn the_session_diagnoses_a_rejected_client_certificate() {
    // With TLS 1.3 the broker's verdict arrives after the client's handshake is done, while
    // rumqttc waits for the CONNACK: it must still read as a rejected client certificate.
    let env = Env::start();
    let mut options = env.session("device-a");
    options.identity = common::Ca::new("Stranger CA").device("device-a", Validity::Valid);
    let mut client = Client::spawn(&options);
    let err = client.wait_error().await;
    assert_eq!(
        options.diagnose(&err),
        Diagnosis::ClientCertificateRejected(acorn_transport::ClientCertRejection::UnknownCa),
        "{err}"
    );
    assert!(!env.broker_saw_mqtt());
}
