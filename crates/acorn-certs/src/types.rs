//! The certificate set and its stored metadata.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::PrivateKey;

/// A device's identity for AWS IoT mutual TLS.
///
/// Two sets are equal when every field is; the keys are compared in constant time (the key
/// itself has no `PartialEq`, so that no other comparison of it can be written by accident).
#[derive(Clone)]
pub struct DeviceCertificates {
    /// The device certificate: PEM (as AWS issues it) or DER.
    pub device_certificate: Vec<u8>,
    /// The private key: PEM (`RSA PRIVATE KEY`, `PRIVATE KEY`, `EC PRIVATE KEY`) or DER.
    pub private_key: PrivateKey,
    /// The MQTT endpoint host name, e.g. `a1b2c3-ats.iot.eu-west-1.amazonaws.com`.
    pub iot_endpoint: String,
    /// The device id (`[A-Za-z0-9_-]{1,128}`), also the MQTT client id.
    pub device_id: String,
}

impl PartialEq for DeviceCertificates {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        let same_key: bool = self
            .private_key
            .expose_secret()
            .ct_eq(other.private_key.expose_secret())
            .into();
        same_key
            && self.device_certificate == other.device_certificate
            && self.iot_endpoint == other.iot_endpoint
            && self.device_id == other.device_id
    }
}

impl Eq for DeviceCertificates {}

impl fmt::Debug for DeviceCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCertificates")
            .field("device_certificate_len", &self.device_certificate.len())
            .field("private_key", &self.private_key)
            .field("iot_endpoint", &self.iot_endpoint)
            .field("device_id", &self.device_id)
            .finish()
    }
}

/// Metadata stored beside the certificate as JSON (key `cert_meta`), with the seed's field names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateMetadata {
    /// Unix seconds when the set was stored.
    pub stored_at: u64,
    /// The device id the set belongs to.
    pub device_id: String,
    /// SHA-256 of the DER certificate, lowercase hex (the AWS IoT certificate id).
    pub certificate_fingerprint: String,
    /// The endpoint stored with the set.
    pub iot_endpoint: String,
    /// Result of the last validation.
    pub is_valid: bool,
    /// Unix seconds of the last successful load (`None` if never loaded with a synced clock).
    pub last_used: Option<u64>,
    /// How many times the stored set has been validated at load.
    pub validation_attempts: u32,
}
