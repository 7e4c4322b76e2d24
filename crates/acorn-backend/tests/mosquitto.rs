//! The CA's certificates and CRL against a real mosquitto 2.0 (OpenSSL) on 127.0.0.1: a
//! registered device completes mutual TLS and an MQTT CONNECT; after revocation through the
//! API (whose hook makes mosquitto reload), the same certificate is refused.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acorn_backend::broker::{Broker, BrokerConfig};
use common::{body, start_with};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
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

/// Mutual TLS to `port` with the device's certificate and key, then MQTT 3.1.1 CONNECT.
async fn connect(
    port: u16,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    client_id: &str,
) -> Outcome {
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
        other => return Outcome::Refused(format!("tcp: {other:?}")),
    };
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = match tokio::time::timeout(STEP, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Outcome::Refused(format!("handshake: {e}")),
        Err(_) => return Outcome::Refused("handshake timed out".into()),
    };
    // CONNECT: protocol "MQTT" level 4, clean session, keepalive 60 s, client id.
    let id = client_id.as_bytes();
    let mut packet = vec![
        0x10,
        (12 + id.len()) as u8,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0x02,
        0,
        60,
    ];
    packet.extend_from_slice(&(id.len() as u16).to_be_bytes());
    packet.extend_from_slice(id);
    if let Err(e) = tls.write_all(&packet).await {
        return Outcome::Refused(format!("write: {e}"));
    }
    let mut connack = [0u8; 4];
    match tokio::time::timeout(STEP, tls.read_exact(&mut connack)).await {
        Ok(Ok(_)) if connack == [0x20, 0x02, 0x00, 0x00] => Outcome::Accepted,
        Ok(Ok(_)) => Outcome::Refused(format!("CONNACK {connack:02x?}")),
        Ok(Err(e)) => Outcome::Refused(format!("read: {e}")),
        Err(_) => Outcome::Refused("no CONNACK in time".into()),
    }
}

#[tokio::test]
async fn mosquitto_accepts_a_registered_device_and_refuses_it_once_revoked() {
    // The broker is started after the backend (it needs the CA, server cert and CRL files);
    // the revocation hook reaches it through this slot.
    let slot: Arc<Mutex<Option<Broker>>> = Arc::default();
    let hook_slot = Arc::clone(&slot);
    let b = start_with(move |c| {
        c.revocation_hook = Some(Arc::new(move |_: &acorn_backend::Revocation| {
            let guard = hook_slot.lock().map_err(|e| e.to_string())?;
            let broker = guard.as_ref().ok_or("broker not started")?;
            broker.reload().map_err(|e| e.to_string())
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
    // mosquitto reloads on SIGHUP asynchronously: retry (bounded) until the refusal shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        match connect(port, &ca, &gen_cert, &gen_key, "dev-gen").await {
            Outcome::Refused(why) => break why,
            Outcome::Accepted if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Outcome::Accepted => {
                let log = slot
                    .lock()
                    .expect("lock")
                    .as_ref()
                    .map(|b| b.log())
                    .unwrap_or_default();
                panic!("revoked certificate still accepted after 20 s; broker log:\n{log}");
            }
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
