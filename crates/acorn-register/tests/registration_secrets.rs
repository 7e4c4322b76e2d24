//! Secret hygiene of registration: at trace level (HTTP client, TLS, NVS), through a
//! server-keygen registration, a CSR registration and a refused one, neither the private
//! keys' base64 nor the registration token appears in the logs, Debug output or errors.

use std::io::Write;
use std::sync::{Arc, Mutex};

use acorn_backend::{Backend, BackendConfig};
use acorn_register::{register, HostNetwork, ImageTarget, RegistrationOptions};
use acorn_transport::SecretString;
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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The base64 lines of a PEM key (what a leak would show).
fn key_lines(pem: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(pem)
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn no_key_or_token_in_trace_logs_debug_or_errors() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start(BackendConfig::new(dir.path().join("backend")))
        .await
        .unwrap();
    let mut secrets: Vec<String> = Vec::new();
    let mut shown = String::new();
    for (name, server_keygen) in [("gen", true), ("csr", false)] {
        let token = backend
            .mint_token(600)
            .await
            .unwrap()
            .token
            .expose_secret()
            .to_owned();
        secrets.push(token.clone());
        let mut options = RegistrationOptions::new(
            backend.base_url(),
            SecretString::from(token.clone()),
            format!("acorn-secret-{name}"),
        );
        options.server_keygen = server_keygen;
        let image = ImageTarget::new(dir.path().join(format!("{name}.bin")));
        let done = register(&options, &image, &mut HostNetwork).await.unwrap();
        shown.push_str(&format!("{options:?} {image:?} {done:?}"));
        let certs = image.load(now()).unwrap();
        shown.push_str(&format!("{certs:?}"));
        secrets.extend(key_lines(certs.private_key.expose_secret()));
        // The used token is refused: the error names the problem, not the token.
        let again = register(
            &options,
            &ImageTarget::new(dir.path().join(format!("{name}-2.bin"))),
            &mut HostNetwork,
        )
        .await
        .unwrap_err();
        shown.push_str(&format!("{again} {again:?}"));
    }
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(logs.contains("step 4: register with the backend"), "{logs}");
    assert!(secrets.len() > 4);
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
        assert!(
            !shown.contains(secret.as_str()),
            "a secret is in Debug/errors: {shown}"
        );
    }
}
