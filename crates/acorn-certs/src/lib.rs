//! acorn-certs (work in progress).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod chain;
mod decode;
mod endpoint;
mod info;
mod keys;
mod kv;
mod memory;
mod report;
mod secret;
mod store;
mod types;
mod validate;

pub use info::{fingerprint, CertificateInfo};
pub use keys::KeyKind;
pub use kv::{
    CertKv, KEY_CERT_META, KEY_CERT_VALID, KEY_DEVICE_CERT, KEY_IOT_ENDPOINT, KEY_PRIVATE_KEY,
    NAMESPACE,
};
pub use memory::{MemoryKv, MemoryKvError, MemoryValue};
pub use report::{CertificateValidation, Check, CheckId, Problem, Status, ValidationReport};
pub use secret::PrivateKey;
pub use store::{CertStore, LoadedIdentity, StoreError};
pub use types::{CertificateMetadata, DeviceCertificates};
pub use validate::{
    is_valid_device_id, validate, validate_material, ValidationOptions, CLOCK_SYNCED_AFTER,
};

/// Largest accepted size of each stored item (certificate, key, endpoint), in bytes.
pub const MAX_ITEM_SIZE: usize = 16 * 1024;
/// A certificate expiring within this many days gets a warning.
pub const EXPIRY_WARNING_DAYS: u64 = 30;
