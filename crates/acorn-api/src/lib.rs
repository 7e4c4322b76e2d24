//! The registration API's wire types, in one place for every party: the registration backend
//! (`acorn-backend`) serves them, the host client (`acorn-register`) and the firmware send and
//! read them. `no_std` + alloc; JSON field names are camelCase as `docs/backend.md` describes.
//!
//! ```
//! use acorn_api::{KeyType, RegisterRequest};
//!
//! let request = RegisterRequest {
//!     device_id: "acorn-0001".into(),
//!     serial_number: "SN-0001".into(),
//!     mac_address: "24:6F:28:AA:BB:CC".into(),
//!     firmware_version: "1.0.0".into(),
//!     csr: None,
//!     key_type: Some(KeyType::Rsa2048.api_name().into()),
//! };
//! let json = serde_json::to_string(&request).unwrap();
//! assert!(json.contains(r#""keyType":"rsa2048""#));
//! assert_eq!(KeyType::parse("RSA2048"), Some(KeyType::Rsa2048));
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

use alloc::string::String;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Path of the registration endpoint.
pub const REGISTER_PATH: &str = "/v1/devices/register";

/// The key type of a key pair the backend generates for a device (server-side key
/// generation, AWS `CreateKeysAndCertificate`'s flow).
///
/// Exhaustive on purpose: a new key type must be handled by every party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA on NIST P-256 (the default: small, fast, accepted by AWS IoT; returned as PKCS#8
    /// `BEGIN PRIVATE KEY`).
    #[default]
    P256,
    /// RSA 2048 (returned as PKCS#1 `BEGIN RSA PRIVATE KEY`, as AWS `CreateKeysAndCertificate`).
    Rsa2048,
}

impl KeyType {
    /// The name the API uses: `p256` or `rsa2048`.
    pub fn api_name(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::Rsa2048 => "rsa2048",
        }
    }

    /// A readable label: `P-256` or `RSA-2048`.
    pub fn label(self) -> &'static str {
        match self {
            KeyType::P256 => "P-256",
            KeyType::Rsa2048 => "RSA-2048",
        }
    }

    /// Parses an API name, case-insensitive: `p256` (or `p-256`) and `rsa2048` (or
    /// `rsa-2048`). The one parser of key type names, for the backend and every client.
    pub fn parse(name: &str) -> Option<Self> {
        let known = [
            ("p256", KeyType::P256),
            ("p-256", KeyType::P256),
            ("rsa2048", KeyType::Rsa2048),
            ("rsa-2048", KeyType::Rsa2048),
        ];
        known
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, k)| k)
    }
}

/// Body of `POST /v1/devices/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// The device id (`[A-Za-z0-9_-]{1,128}`): certificate CN and MQTT client id.
    pub device_id: String,
    /// The hardware serial number.
    pub serial_number: String,
    /// The MAC address, `AA:BB:CC:DD:EE:FF`.
    pub mac_address: String,
    /// The firmware version.
    pub firmware_version: String,
    /// A PEM PKCS#10 request signed by the device's key (the key stays on the device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// Without a CSR: the key type the backend makes ([`KeyType::api_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
}

/// The `201 Created` answer of `POST /v1/devices/register`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    /// The registered device id.
    pub device_id: String,
    /// The device certificate, PEM.
    pub certificate_pem: String,
    /// The private key, PEM: only with server-side key generation. A secret (wiped from memory
    /// on drop, `[REDACTED]` in Debug); serialized only by the backend that sends it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_for_the_wire"
    )]
    pub private_key_pem: Option<SecretString>,
    /// SHA-256 of the certificate's DER, lowercase hex (AWS IoT's certificate id).
    pub certificate_id: String,
    /// The MQTT endpoint to connect to.
    pub iot_endpoint: String,
    /// The CA the certificate (and the broker's server certificate) chains to.
    pub ca_certificate_pem: String,
}

impl core::fmt::Debug for RegisterResponse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegisterResponse")
            .field("device_id", &self.device_id)
            .field("certificate_id", &self.certificate_id)
            .field("iot_endpoint", &self.iot_endpoint)
            .field("private_key_pem", &self.private_key_pem)
            .finish_non_exhaustive()
    }
}

/// Writes a secret into a JSON answer: the one place the private key leaves the backend
/// (`secrecy` serializes nothing by itself, so that no secret reaches a log as JSON).
fn expose_for_the_wire<S: serde::Serializer>(
    key: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    key.as_ref()
        .map(|key| key.expose_secret())
        .serialize(serializer)
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A machine-readable code and a message for people (what is wrong and how to fix it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code, e.g. `token_used`.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}
