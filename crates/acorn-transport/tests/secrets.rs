//! Secret hygiene: at trace level, through successful and failing connections, no line of
//! the private key's base64 appears in the logs, Debug output or error messages.

use acorn_test_support::mqtt as common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use acorn_transport::{ping, ClientIdentity, PingOptions, SecretString, TlsVersions};
use common::{Ca, Client, Env, Validity};
use secrecy::ExposeSecret as _;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The base64 lines of a PEM key (what a leak would show).
fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn no_key_material_in_trace_logs_debug_or_errors() {
    let capture = Capture::default();
    let writer = capture.clone();
    // Also bridges the `log` records of rustls and rumqttc (tracing-log).
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let env = Env::start();
    let (cert, key) = env.ca.leaf("device-a", &[], Validity::Valid);
    let identity = ClientIdentity::new(cert.clone(), SecretString::from(key.clone()));
    let mut text = String::new();

    // Success: ping, and a session that connects and publishes.
    let options = PingOptions::new(env.target(), identity.clone(), env.roots(), "device-a", "1");
    text += &format!("{options:?}\n{:?}\n", ping(&options).await);
    let mut session = env.session("device-a");
    session.identity = identity.clone();
    text += &format!("{session:?}\n");
    let mut device = Client::start(&session).await;
    device.publish("acorn-pups/status/device-a", b"{}").await;
    device.client.disconnect().await.unwrap();

    // Failures: wrong key, stranger CA (TLS 1.2 and 1.3), bad PEM.
    let (_, other_key) = env.ca.leaf("device-a", &[], Validity::Valid);
    let mismatched = ClientIdentity::new(cert.clone(), SecretString::from(other_key.clone()));
    let mut bad = PingOptions::new(env.target(), mismatched, env.roots(), "device-a", "1");
    text += &format!("{:?}\n", ping(&bad).await);
    let stranger = Ca::new("Stranger").device("device-a", Validity::Valid);
    let stranger_key = stranger.key_pem().expose_secret().to_owned();
    bad.identity = stranger;
    for versions in [TlsVersions::Tls12Only, TlsVersions::Tls13Only] {
        bad.tls_versions = versions;
        let failure = ping(&bad).await.unwrap_err();
        text += &format!("{failure}\n{failure:?}\n");
    }
    let truncated = ClientIdentity::new(cert, SecretString::from(key[..key.len() / 2].to_owned()));
    bad.identity = truncated;
    let failure = ping(&bad).await.unwrap_err();
    text += &format!("{failure}\n{failure:?}\n");

    text += &String::from_utf8_lossy(&capture.0.lock().unwrap());
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "logging did not run"
    );
    for secret in [&key, &other_key, &stranger_key] {
        for line in key_lines(secret) {
            assert!(!text.contains(&line), "key material leaked: {line}");
        }
    }
}
