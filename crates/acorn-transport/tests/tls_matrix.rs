//! TLS negative matrix: each failure has its own diagnosis, and the broker never sees MQTT.

use acorn_test_support::mqtt as common;

use acorn_transport::{
    ping, ClientCertRejection, ClientIdentity, Diagnosis, PingFailure, PingOptions, SecretString,
    Step, TlsVersions,
};
use common::{BrokerSetup, Ca, Env, Validity};

async fn ping_as(env: &Env, identity: ClientIdentity, versions: TlsVersions) -> PingFailure {
    let mut options = PingOptions::new(
        env.target(),
        identity,
        env.roots(),
        "device-a",
        "1.0.0-test",
    );
    options.tls_versions = versions;
    match ping(&options).await {
        Ok(report) => panic!("ping should fail, got {report:?}"),
        Err(failure) => failure,
    }
}

/// Checks the failure, its plain-language text, and that no MQTT reached the broker.
fn assert_failure(env: &Env, failure: &PingFailure, step: Step, expected: &Diagnosis, words: &str) {
    assert_eq!(&failure.diagnosis, expected, "{failure}");
    assert_eq!(failure.step, step, "{failure}");
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
async fn server_certificate_from_another_ca() {
    let env = Env::with(BrokerSetup {
        server_from_other_ca: true,
        ..BrokerSetup::default()
    });
    let failure = ping_as(
        &env,
        env.ca.device("device-a", Validity::Valid),
        TlsVersions::default(),
    )
    .await;
    assert_failure(
        &env,
        &failure,
        Step::Tls,
        &Diagnosis::UnknownServerCa,
        "unknown server CA",
    );
}

#[tokio::test]
async fn hostname_mismatch() {
    let env = Env::with(BrokerSetup {
        server_sans: vec!["broker.example.com".into()],
        ..BrokerSetup::default()
    });
    let failure = ping_as(
        &env,
        env.ca.device("device-a", Validity::Valid),
        TlsVersions::default(),
    )
    .await;
    let expected = Diagnosis::HostnameMismatch {
        expected: "localhost".into(),
        presented: vec!["DnsName(\"broker.example.com\")".into()],
    };
    assert_failure(&env, &failure, Step::Tls, &expected, "hostname mismatch");
}

#[tokio::test]
async fn expired_server_certificate() {
    let env = Env::with(BrokerSetup {
        server_validity: Validity::Expired,
        ..BrokerSetup::default()
    });
    let failure = ping_as(
        &env,
        env.ca.device("device-a", Validity::Valid),
        TlsVersions::default(),
    )
    .await;
    assert_failure(
        &env,
        &failure,
        Step::Tls,
        &Diagnosis::ServerCertificateExpired,
        "expired",
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_tls13() {
    let env = Env::start();
    let stranger = Ca::new("Stranger CA").device("device-a", Validity::Valid);
    let failure = ping_as(&env, stranger, TlsVersions::Tls13Only).await;
    let expected = Diagnosis::ClientCertificateRejected(ClientCertRejection::UnknownCa);
    assert_failure(
        &env,
        &failure,
        Step::Tls,
        &expected,
        "client certificate rejected",
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_tls12() {
    let env = Env::start();
    let stranger = Ca::new("Stranger CA").device("device-a", Validity::Valid);
    let failure = ping_as(&env, stranger, TlsVersions::Tls12Only).await;
    let expected = Diagnosis::ClientCertificateRejected(ClientCertRejection::UnknownCa);
    assert_failure(
        &env,
        &failure,
        Step::Tls,
        &expected,
        "client certificate rejected",
    );
}

#[tokio::test]
async fn expired_client_certificate() {
    let env = Env::start();
    let expired = env.ca.device("device-a", Validity::Expired);
    let failure = ping_as(&env, expired, TlsVersions::default()).await;
    let expected = Diagnosis::ClientCertificateRejected(ClientCertRejection::Expired);
    assert_failure(&env, &failure, Step::Tls, &expected, "expired");
}

#[tokio::test]
async fn key_not_matching_the_certificate_is_caught_before_connecting() {
    let env = Env::start();
    let (cert, _) = env.ca.leaf("device-a", &[], Validity::Valid);
    let (_, other_key) = env.ca.leaf("device-a", &[], Validity::Valid);
    let identity = ClientIdentity::new(cert, SecretString::new(other_key));
    let failure = ping_as(&env, identity, TlsVersions::default()).await;
    assert_failure(
        &env,
        &failure,
        Step::Config,
        &Diagnosis::KeyMismatch,
        "does not match",
    );
    // Not even DNS or TCP ran: nothing was sent. (The broker log is no witness here: the
    // launcher's readiness probe connects too.)
    assert!(failure.completed.is_empty(), "{failure:?}");
}

#[tokio::test]
async fn broker_that_only_speaks_tls_1_1() {
    let env = Env::with(BrokerSetup {
        tls_version: Some("tlsv1.1".into()),
        tls11_only: true,
        ..BrokerSetup::default()
    });
    let failure = ping_as(
        &env,
        env.ca.device("device-a", Validity::Valid),
        TlsVersions::default(),
    )
    .await;
    assert_failure(
        &env,
        &failure,
        Step::Tls,
        &Diagnosis::TlsVersionNotSupported,
        "TLS version not supported",
    );
}

#[tokio::test]
async fn broker_requiring_tls_1_3_and_a_client_limited_to_tls_1_2() {
    let env = Env::with(BrokerSetup {
        tls_version: Some("tlsv1.3".into()),
        ..BrokerSetup::default()
    });
    let failure = ping_as(
        &env,
        env.ca.device("device-a", Validity::Valid),
        TlsVersions::Tls12Only,
    )
    .await;
    assert_failure(
        &env,
        &failure,
        Step::Tls,
        &Diagnosis::TlsVersionNotSupported,
        "TLS version not supported",
    );
}

#[tokio::test]
async fn revoked_client_certificate() {
    let env = Env::with(BrokerSetup {
        revoked_serials: vec![666],
        ..BrokerSetup::default()
    });
    // A certificate of the same CA that is not on the CRL still works...
    let good = PingOptions::new(
        env.target(),
        env.ca.device_with_serial("device-b", 42),
        env.roots(),
        "device-b",
        "1",
    );
    ping(&good).await.unwrap_or_else(|f| panic!("{f}"));
    // ...the revoked one is refused, before any MQTT.
    let env_saw_mqtt_before = env.broker_saw_mqtt();
    assert!(env_saw_mqtt_before);
    let failure = ping_as(
        &env,
        env.ca.device_with_serial("device-a", 666),
        TlsVersions::default(),
    )
    .await;
    let expected = Diagnosis::ClientCertificateRejected(ClientCertRejection::Revoked);
    assert_eq!(failure.diagnosis, expected, "{failure}");
    assert_eq!(failure.step, Step::Tls);
    assert!(failure.to_string().contains("revoked"));
    assert!(
        !env.broker.log().contains("as device-a"),
        "{}",
        env.broker.log()
    );
}
