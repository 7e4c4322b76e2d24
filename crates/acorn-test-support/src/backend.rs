//! Helpers shared by the integration tests: a backend in a temporary directory, an HTTP
//! client, CSRs made with rcgen, and certificate checks with x509-parser.

use std::time::Duration;

use acorn_backend::{Backend, BackendConfig, BackendHandle};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use secrecy::ExposeSecret as _;
use serde_json::{json, Value};

/// A running backend and its temporary data directory (removed on drop).
pub struct TestBackend {
    /// The running backend.
    pub handle: BackendHandle,
    /// Its data directory.
    pub dir: tempfile::TempDir,
    /// An HTTP client with a 30 s timeout.
    pub client: reqwest::Client,
}

/// A backend with the default configuration (endpoint `localhost:8883`).
pub async fn start() -> TestBackend {
    start_with(|_| {}).await
}

/// A backend whose configuration `adjust` changes first.
pub async fn start_with(adjust: impl FnOnce(&mut BackendConfig)) -> TestBackend {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BackendConfig::new(dir.path());
    config.iot_endpoint = "localhost:8883".into();
    adjust(&mut config);
    let handle = Backend::start(config).await.expect("backend starts");
    TestBackend {
        handle,
        dir,
        client: client(),
    }
}

/// An HTTP client for the tests (30 s timeout).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

impl TestBackend {
    /// The full URL of `path` on this backend.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.handle.base_url(), path)
    }

    /// The admin key.
    pub fn admin(&self) -> String {
        self.handle.admin_key().expose_secret().to_owned()
    }

    /// Mints `count` tokens through the API.
    pub async fn tokens(&self, count: u32) -> Vec<String> {
        let resp = self
            .client
            .post(self.url("/v1/tokens"))
            .bearer_auth(self.admin())
            .json(&json!({ "count": count, "ttlSeconds": 600 }))
            .send()
            .await
            .expect("mint request");
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.expect("json");
        body["tokens"]
            .as_array()
            .expect("tokens array")
            .iter()
            .map(|t| t["token"].as_str().expect("token").to_owned())
            .collect()
    }

    /// One fresh registration token (10 minutes).
    pub async fn token(&self) -> String {
        self.tokens(1).await.remove(0)
    }

    /// POSTs a registration; returns status and JSON body.
    pub async fn register(&self, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self
            .client
            .post(self.url("/v1/devices/register"))
            .json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("register request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    /// Admin GET; returns status and JSON body.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(self.url(path))
            .bearer_auth(self.admin())
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    /// Admin POST with no body; returns status and JSON body.
    pub async fn admin_post(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .bearer_auth(self.admin())
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    /// Row counts of (devices, used tokens) read straight from the SQLite file.
    pub fn counts(&self) -> (i64, i64) {
        let conn = rusqlite::Connection::open(&self.handle.paths().registry).expect("open db");
        let devices = conn
            .query_row("SELECT COUNT(*) FROM devices", [], |r| r.get(0))
            .expect("count devices");
        let used = conn
            .query_row(
                "SELECT COUNT(*) FROM tokens WHERE used_at IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .expect("count tokens");
        (devices, used)
    }
}

/// A valid registration body (server keygen unless a CSR is added).
pub fn body(device_id: &str) -> Value {
    json!({
        "deviceId": device_id,
        "serialNumber": "SN-0001",
        "macAddress": "aa:bb:cc:dd:ee:ff",
        "firmwareVersion": "1.0.0",
    })
}

/// A fresh P-256 key and a CSR with subject CN = `cn`.
pub fn csr(cn: &str) -> (KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).expect("csr");
    (key, csr.pem().expect("csr pem"))
}

/// Standard base64 with padding and 64-character lines.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= n {
                out.push(A[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(64)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `der` as a PEM block labelled `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        base64(der)
    )
}

/// DER of the first PEM block of `text`.
pub fn der(text: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(text.as_bytes()).expect("pem");
    p.contents
}

/// Checks that `cert_pem` is signed by `ca_pem`, is an end-entity clientAuth certificate
/// with CN = `cn`; returns its SubjectPublicKeyInfo DER and serial bytes.
pub fn check_device_cert(cert_pem: &str, ca_pem: &str, cn: &str) -> (Vec<u8>, Vec<u8>) {
    let cert_der = der(cert_pem);
    let ca_der = der(ca_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).expect("cert parses");
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("ca parses");
    cert.verify_signature(Some(ca.public_key()))
        .expect("certificate verifies against the returned CA");
    assert_eq!(cert.issuer(), ca.subject());
    let got_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .expect("cn");
    assert_eq!(got_cn, cn);
    let eku = cert
        .extended_key_usage()
        .expect("eku parses")
        .expect("eku present");
    assert!(eku.value.client_auth, "clientAuth EKU");
    let bc = cert.basic_constraints().expect("bc parses");
    assert!(bc.is_none_or(|b| !b.value.ca), "end entity");
    assert!(cert.validity().is_valid(), "valid now");
    (cert.public_key().raw.to_vec(), cert.raw_serial().to_vec())
}
