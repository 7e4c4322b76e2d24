//! Errors of the embedded transport (thiserror, no_std).

use alloc::string::String;

use crate::identity::REQUIRED_KEY_TYPE;

/// Why an identity cannot be used by this transport. Found before any connection is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key is not P-256 (e.g. an RSA key as AWS `CreateKeysAndCertificate` issues).
    #[error(
        "this device identity uses {found}, but the embedded TLS transport signs only with \
         {REQUIRED_KEY_TYPE} keys: register the device with a P-256 key and CSR (`acorn device \
         register`), or use the default rustls transport, which accepts RSA identities"
    )]
    UnsupportedKeyType {
        /// The key type found.
        found: &'static str,
    },
    /// The device certificate could not be read.
    #[error("the device certificate cannot be used: {detail}")]
    Certificate {
        /// What was wrong.
        detail: String,
    },
    /// The private key could not be read.
    #[error("the device private key cannot be used: {detail}")]
    Key {
        /// What was wrong (never key bytes).
        detail: String,
    },
    /// The key does not belong to the certificate.
    #[error(
        "the private key does not match the device certificate: they come from different key \
         pairs. Re-provision the device, or load the key that was created with this certificate"
    )]
    KeyMismatch,
}

/// Why trust anchors could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RootsError {
    /// The CA file holds no certificate.
    #[error("the CA file holds no CERTIFICATE")]
    Empty,
    /// A CA certificate could not be parsed.
    #[error("a CA certificate cannot be read: {detail}")]
    Unreadable {
        /// What was wrong.
        detail: String,
    },
}
