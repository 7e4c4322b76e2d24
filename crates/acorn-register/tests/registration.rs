//! The registration client against the real backend (`acorn-backend`, in-process) and a real
//! mosquitto: both flows end with a device connected over mutual TLS and its press received by
//! a subscriber; revocation is refused in plain language; 4xx stops, 5xx and network errors are
//! retried a bounded number of times.

use acorn_test_support::mqtt as common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acorn_backend::{Backend, BackendConfig, BackendHandle};
use acorn_devstack::broker::{free_port, Broker, BrokerConfig};
use acorn_mqtt::BackoffConfig;
use acorn_register::{
    register, HostNetwork, ImageTarget, KeyOrigin, KeyType, NetworkJoin, RegistrationError,
    RegistrationOptions, RetryPolicy,
};
use acorn_transport::{
    ping, BrokerTarget, ClientCertRejection, ClientIdentity, Diagnosis, PingOptions, SecretString,
    SessionOptions, TrustRoots,
};
use common::{Client, WAIT};
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The backend's service identity on the broker's service listener.
const BACKEND_ID: &str = "service:backend";

/// Backend + mosquitto sharing the backend's CA, CRL and server certificate.
struct Stack {
    dir: tempfile::TempDir,
    backend: BackendHandle,
    broker: Arc<Mutex<Option<Broker>>>,
    port: u16,
}

impl Stack {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let slot: Arc<Mutex<Option<Broker>>> = Arc::default();
        let hook_slot = Arc::clone(&slot);
        let mut config = BackendConfig::new(dir.path().join("backend"));
        config.iot_endpoint = format!("localhost:{port}");
        config.crl_hook = Some(Arc::new(move |e: &acorn_backend::CrlEvent| {
            let guard = hook_slot.lock().map_err(|e| e.to_string())?;
            match guard.as_ref() {
                Some(broker) => broker.install_crl(&e.crl_path).map_err(|e| e.to_string()),
                // A renewal before the broker runs: it starts with the newest file anyway.
                None => Ok(()),
            }
        }));
        let backend = Backend::start(config).await.unwrap();
        let paths = backend.paths().clone();
        let mut broker = BrokerConfig::new(
            dir.path().join("broker"),
            &paths.ca_cert,
            &paths.server_cert,
            &paths.server_key,
        );
        broker.crl_file = Some(paths.crl.clone());
        broker.port = Some(port);
        broker.service_ca_file = Some(paths.service_ca_cert.clone());
        broker.service_identities = vec![BACKEND_ID.to_owned()];
        let broker = Broker::start(broker).expect("mosquitto starts (apt-get install mosquitto)");
        *slot.lock().unwrap() = Some(broker);
        Self {
            dir,
            backend,
            broker: slot,
            port,
        }
    }

    async fn token(&self) -> SecretString {
        SecretString::from(
            self.backend
                .mint_token(600)
                .await
                .unwrap()
                .token
                .expose_secret()
                .to_owned(),
        )
    }

    fn options(&self, token: SecretString, device_id: &str) -> RegistrationOptions {
        let mut o = RegistrationOptions::new(self.backend.base_url(), token, device_id);
        o.retry = fast_retry(3);
        o
    }

    fn image(&self, name: &str) -> ImageTarget {
        ImageTarget::new(self.dir.path().join(format!("{name}.nvs.bin")))
    }

    fn roots(&self) -> TrustRoots {
        TrustRoots::from_pem(self.backend.ca_certificate_pem(), "ca.pem").unwrap()
    }

    /// Session options for the identity stored in `image`.
    fn device_session(&self, image: &ImageTarget) -> SessionOptions {
        let certs = image.load(now()).unwrap();
        let identity = ClientIdentity::new(
            String::from_utf8(certs.device_certificate.clone()).unwrap(),
            SecretString::from(
                String::from_utf8(certs.private_key.expose_secret().to_vec()).unwrap(),
            ),
        );
        let target = BrokerTarget::new(certs.iot_endpoint.clone(), self.port);
        SessionOptions::new(
            target,
            identity,
            self.roots(),
            certs.device_id.clone(),
            "1.0.0",
        )
    }

    /// A subscriber with the backend's service identity (from the service CA, on the
    /// broker's service listener, full access to `acorn-pups/#`).
    fn backend_session(&self) -> SessionOptions {
        let issued = self.backend.issue_service_identity("backend").unwrap();
        let identity = ClientIdentity::new(
            issued.certificate.pem.clone(),
            SecretString::from(issued.private_key_pem.expose_secret().to_owned()),
        );
        let guard = self.broker.lock().unwrap();
        let port = guard.as_ref().and_then(Broker::service_port).unwrap();
        SessionOptions::new(
            BrokerTarget::new("localhost", port),
            identity,
            self.roots(),
            BACKEND_ID,
            "1.0.0",
        )
    }

    fn admin(&self) -> String {
        self.backend.admin_key().expose_secret().to_owned()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The acorn-mqtt policy with 10 ms steps, so retry tests stay short.
fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        backoff: BackoffConfig {
            initial_ms: 10,
            cap_ms: 40,
            ..BackoffConfig::default()
        },
        max_attempts,
        request_timeout: Duration::from_secs(5),
    }
}

/// Registers, connects the device over mutual TLS, publishes a press, and checks a subscriber
/// with the backend identity receives it.
async fn press_is_received(stack: &Stack, image: &ImageTarget, device_id: &str) {
    let mut subscriber = Client::start(&stack.backend_session()).await;
    subscriber.subscribe("acorn-pups/button-press/+").await;
    let mut device = Client::start(&stack.device_session(image)).await;
    let topic = format!("acorn-pups/button-press/{device_id}");
    let payload = format!(r#"{{"deviceId":"{device_id}","buttonRfId":"rf-1"}}"#);
    device.publish(&topic, payload.as_bytes()).await;
    let got = subscriber.next_publish().await;
    assert_eq!(got.topic, topic);
    assert_eq!(&got.payload[..], payload.as_bytes());
}

#[tokio::test]
async fn csr_flow_stores_identity_and_device_connects() {
    let stack = Stack::start().await;
    let image = stack.image("csr");
    let options = stack.options(stack.token().await, "acorn-csr-1");
    let done = register(&options, &image, &mut HostNetwork).await.unwrap();
    assert!(!done.already_registered);
    assert_eq!(done.key_origin, Some(KeyOrigin::Device));
    assert_eq!(done.endpoint_host, "localhost");
    assert_eq!(done.endpoint_port, Some(stack.port));
    assert_eq!(done.certificate_id.len(), 64);
    assert_eq!(
        done.ca_certificate_pem.as_deref(),
        Some(stack.backend.ca_certificate_pem())
    );
    // The stored key is the one made here: PKCS#8 P-256, never sent.
    let certs = image.load(now()).unwrap();
    assert!(
        String::from_utf8_lossy(certs.private_key.expose_secret()).contains("BEGIN PRIVATE KEY")
    );
    press_is_received(&stack, &image, "acorn-csr-1").await;

    // A second run finds the identity and sends nothing (the token would be refused).
    let again = register(
        &stack.options(SecretString::from("used"), "acorn-csr-1"),
        &image,
        &mut HostNetwork,
    )
    .await
    .unwrap();
    assert!(again.already_registered);
    // Another device id on the same image is refused, naming both.
    let other = register(
        &stack.options(stack.token().await, "acorn-csr-2"),
        &image,
        &mut HostNetwork,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(other, RegistrationError::OtherDevice { .. }),
        "{other}"
    );
    assert!(other.to_string().contains("acorn-csr-1"));
}

#[tokio::test]
async fn server_keygen_flow_stores_backend_key_and_device_connects() {
    let stack = Stack::start().await;
    let image = stack.image("gen");
    let mut options = stack.options(stack.token().await, "acorn-gen-1");
    options.server_keygen = true;
    options.key_type = KeyType::Rsa2048;
    let done = register(&options, &image, &mut HostNetwork).await.unwrap();
    assert_eq!(done.key_origin, Some(KeyOrigin::Backend));
    let certs = image.load(now()).unwrap();
    // AWS's form: PKCS#1.
    assert!(String::from_utf8_lossy(certs.private_key.expose_secret())
        .contains("BEGIN RSA PRIVATE KEY"));
    press_is_received(&stack, &image, "acorn-gen-1").await;
}

#[tokio::test]
async fn encrypted_image_with_nvs_keys() {
    let stack = Stack::start().await;
    let mut image = stack.image("enc");
    let mut raw = [0u8; 64];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    image.keys = Some(acorn_nvs::NvsKeys::new(
        raw[..32].try_into().unwrap(),
        raw[32..].try_into().unwrap(),
    ));
    let options = stack.options(stack.token().await, "acorn-enc-1");
    register(&options, &image, &mut HostNetwork).await.unwrap();
    // Without the keys the identity is not readable.
    let plain = ImageTarget::new(image.path.clone());
    assert!(plain.load(now()).is_err());
    ping(&PingOptions::new(
        BrokerTarget::new("localhost", stack.port),
        stack.device_session(&image).identity,
        stack.roots(),
        "acorn-enc-1",
        "1.0.0",
    ))
    .await
    .unwrap_or_else(|f| panic!("{f}"));
}

#[tokio::test]
async fn revoked_device_is_refused_on_reconnect_in_plain_language() {
    let stack = Stack::start().await;
    let image = stack.image("rev");
    register(
        &stack.options(stack.token().await, "acorn-rev-1"),
        &image,
        &mut HostNetwork,
    )
    .await
    .unwrap();
    let session = stack.device_session(&image);
    let ping_options = || {
        PingOptions::new(
            session.target.clone(),
            session.identity.clone(),
            stack.roots(),
            "acorn-rev-1",
            "1.0.0",
        )
    };
    ping(&ping_options())
        .await
        .unwrap_or_else(|f| panic!("{f}"));

    // Revoke through the admin API; the hook makes mosquitto reload the CRL.
    let url = format!("{}/v1/devices/acorn-rev-1/revoke", stack.backend.base_url());
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(stack.admin())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // mosquitto reloads on SIGHUP asynchronously: retry (bounded) until it refuses.
    let deadline = tokio::time::Instant::now() + WAIT;
    let failure = loop {
        match ping(&ping_options()).await {
            Err(f) => break f,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(_) => panic!("the revoked device still connects"),
        }
    };
    assert_eq!(
        failure.diagnosis,
        Diagnosis::ClientCertificateRejected(ClientCertRejection::Revoked),
        "{failure}"
    );
    let text = failure.to_string();
    assert!(text.contains("it has been revoked"), "{text}");
    assert!(text.contains("Issue a new device certificate"), "{text}");
    let _ = &stack.broker;
}

#[tokio::test]
async fn refusal_4xx_stops_at_once_with_the_backend_message() {
    let stack = Stack::start().await;
    // Unknown token: 401 token_unknown.
    let options = stack.options(SecretString::from("not-a-token"), "acorn-4xx-1");
    let err = register(&options, &stack.image("u"), &mut HostNetwork)
        .await
        .unwrap_err();
    match &err {
        RegistrationError::Refused {
            status,
            code,
            message,
        } => {
            assert_eq!(*status, 401);
            assert_eq!(code, "token_unknown");
            assert!(!message.is_empty());
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(!err.is_transient());

    // A used token: 409 token_used, the image stays without identity.
    let token = stack.token().await;
    register(
        &stack.options(token.clone(), "acorn-4xx-2"),
        &stack.image("a"),
        &mut HostNetwork,
    )
    .await
    .unwrap();
    let image = stack.image("b");
    let err = register(
        &stack.options(token, "acorn-4xx-3"),
        &image,
        &mut HostNetwork,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RegistrationError::Refused { status: 409, code, .. } if code == "token_used"),
        "{err}"
    );
    assert!(err.to_string().contains("token_used"), "{err}");
    assert!(image.load(now()).is_err());

    // A device id the backend refuses locally never reaches it.
    let err = register(
        &stack.options(stack.token().await, "bad id"),
        &stack.image("c"),
        &mut HostNetwork,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistrationError::Config(_)), "{err}");
}

/// A server that answers every request with `503` and counts them (the real backend has no
/// switch to fail on purpose).
async fn failing_server(status_line: &'static str) -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut got = Vec::new();
                // Read the request head and body (bounded), then answer and close.
                loop {
                    match tokio::time::timeout(WAIT, sock.read(&mut buf)).await {
                        Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    }
                    if let Some(head_end) = find(&got, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                let body = r#"{"error":{"code":"internal_error","message":"database is locked"}}"#;
                let answer = format!(
                    "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, count)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let (url, count) = failing_server("HTTP/1.1 503 Service Unavailable").await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = RegistrationOptions::new(url, SecretString::from("t"), "acorn-5xx");
    options.retry = fast_retry(4);
    let err = register(
        &options,
        &ImageTarget::new(dir.path().join("i.bin")),
        &mut HostNetwork,
    )
    .await
    .unwrap_err();
    match &err {
        RegistrationError::Unavailable { attempts, last, .. } => {
            assert_eq!(*attempts, 4);
            assert!(
                last.contains("503") && last.contains("database is locked"),
                "{last}"
            );
        }
        other => panic!("expected Unavailable, got {other}"),
    }
    assert!(err.is_transient());
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn network_errors_are_retried_a_bounded_number_of_times() {
    // A port nobody listens on: connection refused at every attempt.
    let port = free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut options = RegistrationOptions::new(
        format!("http://127.0.0.1:{port}"),
        SecretString::from("t"),
        "acorn-net",
    );
    options.retry = fast_retry(3);
    let err = register(
        &options,
        &ImageTarget::new(dir.path().join("i.bin")),
        &mut HostNetwork,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RegistrationError::Unavailable { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Check the URL"), "{err}");
}

/// The Wi-Fi step runs first; its failure stops the flow before any request.
#[tokio::test]
async fn network_join_step_runs_first() {
    struct NoWifi(u32);
    impl NetworkJoin for NoWifi {
        fn name(&self) -> &str {
            "wifi"
        }
        fn join(&mut self) -> Result<(), String> {
            self.0 += 1;
            Err("no access point `acorn-test` in range".into())
        }
    }
    let (url, count) = failing_server("HTTP/1.1 503 Service Unavailable").await;
    let dir = tempfile::tempdir().unwrap();
    let options = RegistrationOptions::new(url, SecretString::from("t"), "acorn-wifi");
    let mut wifi = NoWifi(0);
    let err = register(
        &options,
        &ImageTarget::new(dir.path().join("i.bin")),
        &mut wifi,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("network step `wifi` failed"),
        "{err}"
    );
    assert_eq!(wifi.0, 1);
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn csr_flow_with_an_rsa2048_key_made_on_the_device() {
    let stack = Stack::start().await;
    let image = stack.image("rsa");
    let mut options = stack.options(stack.token().await, "acorn-rsa-1");
    options.key_type = KeyType::Rsa2048;
    let done = register(&options, &image, &mut HostNetwork).await.unwrap();
    assert_eq!(done.key_origin, Some(KeyOrigin::Device));
    let certs = image.load(now()).unwrap();
    let info = acorn_certs::validate(
        &certs,
        &acorn_certs::ValidationOptions::new(now()).allow_custom_endpoint(true),
    );
    assert!(
        matches!(
            info.certificate.as_ref().and_then(|c| c.public_key),
            Some(acorn_certs::KeyKind::Rsa { bits: 2048 })
        ),
        "{:?}",
        info.certificate
    );
    ping(&PingOptions::new(
        BrokerTarget::new("localhost", stack.port),
        stack.device_session(&image).identity,
        stack.roots(),
        "acorn-rsa-1",
        "1.0.0",
    ))
    .await
    .unwrap_or_else(|f| panic!("{f}"));
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let (url, count) = failing_server("HTTP/1.1 400 Bad Request").await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = RegistrationOptions::new(url, SecretString::from("t"), "acorn-400");
    options.retry = fast_retry(4);
    let err = register(
        &options,
        &ImageTarget::new(dir.path().join("i.bin")),
        &mut HostNetwork,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RegistrationError::Refused { status: 400, message, .. } if message == "database is locked"),
        "{err}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn https_backend_needs_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BackendConfig::new(dir.path().join("backend"));
    config.tls = true;
    config.iot_endpoint = "localhost:8883".into();
    let backend = Backend::start(config).await.unwrap();
    let url = backend.base_url();
    assert!(url.starts_with("https://"));
    let token = || async {
        SecretString::from(
            backend
                .mint_token(600)
                .await
                .unwrap()
                .token
                .expose_secret()
                .to_owned(),
        )
    };
    // Without the CA: refused at once with a hint, not retried as a network fault.
    let mut options = RegistrationOptions::new(&url, token().await, "acorn-tls-1");
    options.retry = fast_retry(3);
    let image = ImageTarget::new(dir.path().join("tls.bin"));
    let err = register(&options, &image, &mut HostNetwork)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistrationError::Config(_)), "{err}");
    assert!(err.to_string().contains("--ca"), "{err}");
    // With it: registered over HTTPS.
    options.backend_ca_pem = Some(backend.ca_certificate_pem().to_owned());
    let done = register(&options, &image, &mut HostNetwork).await.unwrap();
    assert!(!done.already_registered);
}
