//! [`ConfigError`]: problems found locally, before any connection is attempted.

use std::path::PathBuf;

/// A connection cannot even be attempted: the identity, roots or target are unusable.
/// Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The client certificate PEM has no usable `CERTIFICATE` block.
    #[error("client certificate: no PEM CERTIFICATE block could be read ({detail}); expected '-----BEGIN CERTIFICATE-----'")]
    BadCertificatePem {
        /// What the PEM reader said.
        detail: String,
    },
    /// The private key PEM is not PKCS#1, PKCS#8 or SEC1.
    #[error("private key: no PEM key block could be read ({detail}); expected 'BEGIN RSA PRIVATE KEY' (PKCS#1), 'BEGIN PRIVATE KEY' (PKCS#8) or 'BEGIN EC PRIVATE KEY' (SEC1)")]
    BadKeyPem {
        /// What the PEM reader said (never key bytes).
        detail: String,
    },
    /// The private key was read but the TLS library cannot use it (algorithm/curve).
    #[error(
        "private key: unsupported key ({detail}); use RSA 2048+, ECDSA P-256/P-384 or Ed25519"
    )]
    UnsupportedKey {
        /// What rustls said.
        detail: String,
    },
    /// The private key does not belong to the certificate (different public key).
    #[error("the private key does not match the client certificate (their public keys differ): the certificate and key come from different pairs; re-provision the device or load the key that was generated with this certificate")]
    KeyMismatch,
    /// The client certificate could not be parsed as X.509.
    #[error("client certificate is not a valid X.509 certificate: {detail}")]
    BadCertificate {
        /// What the parser said.
        detail: String,
    },
    /// No root certificate could be read from the given PEM.
    #[error("trusted roots {source_name}: no usable CA certificate found ({detail})")]
    BadRoots {
        /// File name or `built-in`.
        source_name: String,
        /// What went wrong.
        detail: String,
    },
    /// A roots file could not be read.
    #[error("cannot read CA file {path}: {error}")]
    RootsFile {
        /// The file.
        path: PathBuf,
        /// The I/O error (not a `source()`: the message already says it).
        error: std::io::Error,
    },
    /// The host or TLS server name is not a valid DNS name or IP address.
    #[error("'{name}' is not a valid server name for TLS (DNS name or IP address expected)")]
    BadServerName {
        /// The name.
        name: String,
    },
    /// `host[:port]` could not be parsed.
    #[error("broker address '{input}' is not HOST or HOST:PORT ({detail})")]
    BadBrokerAddress {
        /// The input.
        input: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// rumqttc connects to and verifies the same name; a different TLS server name needs `ping`.
    #[error("the MQTT client verifies the TLS server name it connects to: server name '{server_name}' must equal host '{host}' (connect to '{server_name}' instead)")]
    ServerNameMustEqualHost {
        /// The host.
        host: String,
        /// The requested TLS server name.
        server_name: String,
    },
    /// Some TLS setting was rejected by rustls.
    #[error("TLS configuration rejected: {detail}")]
    Tls {
        /// What rustls said.
        detail: String,
    },
}
