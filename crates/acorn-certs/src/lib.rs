//! Device identity for AWS IoT mutual TLS: parse and check a device certificate, its private
//! key and the IoT endpoint, and keep them in NVS (namespace `mqtt_certs`) power-cut safely.
//!
//! `#![no_std]` + `alloc`; builds for `riscv32imc-unknown-none-elf` (ESP32-C3).
//!
//! ```
//! use acorn_certs::{
//!     validate, CertStore, CertificateValidation, DeviceCertificates, MemoryKv, PrivateKey,
//!     ValidationOptions,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Test material made with rcgen: a CA and a device certificate with a P-256 key.
//! # let ca_key = rcgen::KeyPair::generate()?;
//! # let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
//! # ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
//! # let ca = ca_params.self_signed(&ca_key)?;
//! # let device_key = rcgen::KeyPair::generate()?;
//! # let device_cert = rcgen::CertificateParams::new(vec!["acorn-0001".to_string()])?
//! #     .signed_by(&device_key, &ca, &ca_key)?;
//! # let (cert_pem, key_pem, ca_pem) = (device_cert.pem(), device_key.serialize_pem(), ca.pem());
//! # let now = 1_780_272_000; // seconds since 1970, from SNTP on a device
//! let certs = DeviceCertificates {
//!     device_certificate: cert_pem.into_bytes(),
//!     private_key: PrivateKey::new(key_pem.into_bytes()), // zeroized on drop, Debug: [REDACTED]
//!     iot_endpoint: "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com".into(),
//!     device_id: "acorn-0001".into(),
//! };
//!
//! // Every check, each with pass/fail/warning and a plain explanation.
//! let report = validate(&certs, &ValidationOptions::new(now).with_ca(ca_pem.as_bytes()));
//! for check in &report.checks {
//!     println!("{} {}: {}", check.status.name(), check.id.name(), check.explanation);
//! }
//! assert_eq!(report.verdict(), CertificateValidation::Valid);
//!
//! // The store runs on any `CertKv` (NVS on a device; memory here).
//! let mut store = CertStore::new(MemoryKv::new());
//! store.store(&certs, now)?;
//! let loaded = store.load(now)?; // re-validated: key matches cert, fingerprint matches metadata
//! assert_eq!(loaded.certificates, certs);
//! assert_eq!(loaded.metadata.validation_attempts, 1);
//! # Ok(())
//! # }
//! ```
//!
//! Modules, each with one job: `decode` (PEM/DER), `keys` (key parsing, key match),
//! `endpoint`, `chain` (signature check against a CA), `validate` (runs the checks into a
//! [`ValidationReport`]), `kv` ([`CertKv`], the store's key-value interface), `store`
//! ([`CertStore`]), `memory` ([`MemoryKv`], for tests).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

#[cfg(feature = "rsa")]
mod bigint;
pub mod candidate;
mod chain;
mod decode;
mod endpoint;
mod info;
mod keys;
mod kv;
mod material;
mod memory;
mod names;
#[cfg(feature = "nvs")]
pub mod nvs_kv;
mod report;
mod secret;
pub mod slots;
mod store;
mod types;
mod validate;

pub use endpoint::is_aws_iot_endpoint;
pub use info::{fingerprint, CertificateInfo};
pub use keys::KeyKind;
pub use kv::{
    CertKv, KEY_CERT_META, KEY_CERT_VALID, KEY_DEVICE_CERT, KEY_IOT_ENDPOINT, KEY_PRIVATE_KEY,
    NAMESPACE,
};
pub use material::{DecodeError, PrivateKeyDer, PrivateKeyFormat};
pub use memory::{MemoryKv, MemoryKvError, MemoryValue};
pub use report::{CertificateValidation, Check, CheckId, Problem, Status, ValidationReport};
/// The one secret type of the workspace and the one trait that reads it (re-exported so that
/// users of this crate read a [`PrivateKey`] without naming `secrecy`).
pub use secrecy::{ExposeSecret, SecretSlice};
pub use secret::PrivateKey;
pub use slots::{Recovery, Slot, SlotError, SlotKv, Slots, CANDIDATE_NAMESPACE};
pub use store::{CertStore, LoadedIdentity, StoreError};
pub use types::{CertificateMetadata, DeviceCertificates};
pub use validate::{
    is_valid_device_id, validate, validate_material, ValidationOptions, CLOCK_SYNCED_AFTER,
};

/// Largest accepted size of each stored item (certificate, key, endpoint), in bytes.
pub const MAX_ITEM_SIZE: usize = 16 * 1024;
/// A certificate expiring within this many days gets a warning.
pub const EXPIRY_WARNING_DAYS: u64 = 30;
