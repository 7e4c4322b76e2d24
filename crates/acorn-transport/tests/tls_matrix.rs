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

/// Who the client is in a case of the matrix.
#[derive(Clone, Copy)]
enum Client {
    /// A valid certificate of the broker's CA.
    Valid,
    /// An expired certificate of the broker's CA.
    Expired,
    /// A valid certificate of a CA the broker does not trust.
    Stranger,
}

/// One row of the matrix: the broker, the client, the TLS versions tried, what must be said.
struct Case {
    name: &'static str,
    broker: fn() -> BrokerSetup,
    client: Client,
    versions: &'static [TlsVersions],
    expected: fn() -> Diagnosis,
    words: &'static str,
}

const BOTH: &[TlsVersions] = &[TlsVersions::Tls12Only, TlsVersions::Tls13Only];

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "server certificate from another CA",
            broker: || BrokerSetup {
                server_from_other_ca: true,
                ..BrokerSetup::default()
            },
            client: Client::Valid,
            versions: BOTH,
            expected: || Diagnosis::UnknownServerCa,
            words: "unknown server CA",
        },
        Case {
            name: "hostname mismatch",
            broker: || BrokerSetup {
                server_sans: vec!["broker.example.com".into()],
                ..BrokerSetup::default()
            },
            client: Client::Valid,
            versions: BOTH,
            expected: || Diagnosis::HostnameMismatch {
                expected: "localhost".into(),
                presented: vec!["DnsName(\"broker.example.com\")".into()],
            },
            words: "hostname mismatch",
        },
        Case {
            name: "expired server certificate",
            broker: || BrokerSetup {
                server_validity: Validity::Expired,
                ..BrokerSetup::default()
            },
            client: Client::Valid,
            versions: BOTH,
            expected: || Diagnosis::ServerCertificateExpired,
            words: "expired",
        },
        Case {
            name: "client certificate from another CA",
            broker: BrokerSetup::default,
            client: Client::Stranger,
            versions: BOTH,
            expected: || Diagnosis::ClientCertificateRejected(ClientCertRejection::UnknownCa),
            words: "client certificate rejected",
        },
        Case {
            name: "expired client certificate",
            broker: BrokerSetup::default,
            client: Client::Expired,
            versions: BOTH,
            expected: || Diagnosis::ClientCertificateRejected(ClientCertRejection::Expired),
            words: "expired",
        },
        Case {
            name: "a broker that only speaks TLS 1.1",
            broker: || BrokerSetup {
                tls_version: Some("tlsv1.1".into()),
                tls11_only: true,
                ..BrokerSetup::default()
            },
            client: Client::Valid,
            versions: &[TlsVersions::Tls12AndUp],
            expected: || Diagnosis::TlsVersionNotSupported,
            words: "TLS version not supported",
        },
        Case {
            name: "a broker requiring TLS 1.3, a client limited to TLS 1.2",
            broker: || BrokerSetup {
                tls_version: Some("tlsv1.3".into()),
                ..BrokerSetup::default()
            },
            client: Client::Valid,
            versions: &[TlsVersions::Tls12Only],
            expected: || Diagnosis::TlsVersionNotSupported,
            words: "TLS version not supported",
        },
    ]
}

#[tokio::test]
async fn every_tls_failure_has_its_own_diagnosis_and_no_mqtt_is_sent() {
    let mut rows = 0;
    for case in cases() {
        for &versions in case.versions {
            let env = Env::with((case.broker)());
            let identity = match case.client {
                Client::Valid => env.ca.device("device-a", Validity::Valid),
                Client::Expired => env.ca.device("device-a", Validity::Expired),
                Client::Stranger => Ca::new("Stranger CA").device("device-a", Validity::Valid),
            };
            let failure = ping_as(&env, identity, versions).await;
            eprintln!("{} ({versions:?}): {failure}", case.name);
            assert_failure(&env, &failure, Step::Tls, &(case.expected)(), case.words);
            rows += 1;
        }
    }
    assert_eq!(rows, 12, "every row of the matrix ran");
}

#[tokio::test]
async fn key_not_matching_the_certificate_is_caught_before_connecting() {
    let env = Env::start();
    let (cert, _) = env.ca.leaf("device-a", &[], Validity::Valid);
    let (_, other_key) = env.ca.leaf("device-a", &[], Validity::Valid);
    let identity = ClientIdentity::new(cert, SecretString::from(other_key));
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
