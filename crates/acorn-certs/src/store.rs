//! [`CertStore`]: the device identity in NVS (namespace `mqtt_certs`), stored power-cut safely.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use secrecy::ExposeSecret;

use crate::kv::{
    CertKv, KEY_CERT_META, KEY_CERT_VALID, KEY_DEVICE_CERT, KEY_IOT_ENDPOINT, KEY_PRIVATE_KEY,
};
use crate::report::{CheckId, Problem};
use crate::{
    validate, CertificateMetadata, CertificateValidation, DeviceCertificates, PrivateKey,
    ValidationOptions, ValidationReport, CLOCK_SYNCED_AFTER,
};

/// Errors of the certificate store; `E` is the key-value store's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError<E> {
    /// The key-value store failed.
    #[error(
        "certificate store: {operation} of key `{key}` (namespace `mqtt_certs`) failed: {error}"
    )]
    Kv {
        /// `read`, `write`, `length query` or `erase`.
        operation: &'static str,
        /// The key.
        key: &'static str,
        /// The store's error.
        error: E,
    },
    /// No complete identity is stored.
    #[error("no device identity is stored: key `{key}` in namespace `mqtt_certs` {why}; provision the device (`acorn certs import`)")]
    Missing {
        /// The key found absent (or `cert_valid` not set).
        key: &'static str,
        /// What was found.
        why: &'static str,
    },
    /// A stored text value is not UTF-8.
    #[error("the stored `{key}` (namespace `mqtt_certs`) is not UTF-8 text: the store is corrupted; provision again")]
    NotUtf8 {
        /// The key.
        key: &'static str,
    },
    /// The metadata JSON could not be read or written.
    #[error("the stored metadata `cert_meta` (namespace `mqtt_certs`) is not valid: {reason}; provision again")]
    Metadata {
        /// What serde_json reported.
        reason: String,
    },
    /// `store()` refused a set that does not validate; nothing was written.
    #[error("refusing to store an invalid certificate set ({:?}): {}; nothing was written", .report.verdict(), first_failure(.report))]
    Rejected {
        /// The validation report.
        report: Box<ValidationReport>,
    },
    /// The stored set does not validate.
    #[error("the stored certificate set is not usable ({:?}): {}", .report.verdict(), first_failure(.report))]
    Invalid {
        /// The validation report.
        report: Box<ValidationReport>,
    },
}

fn first_failure(report: &ValidationReport) -> &str {
    report
        .checks
        .iter()
        .find(|c| c.status == crate::Status::Fail)
        .map_or("no check failed", |c| c.explanation.as_str())
}

impl<E> StoreError<E> {
    /// The seed's category for this error.
    pub fn verdict(&self) -> CertificateValidation {
        match self {
            StoreError::Missing { .. } => CertificateValidation::Missing,
            StoreError::NotUtf8 { .. } | StoreError::Metadata { .. } => {
                CertificateValidation::Corrupted
            }
            StoreError::Rejected { report } | StoreError::Invalid { report } => report.verdict(),
            // The flash failed or holds something unreadable: not "no identity", which would
            // send a device to register again over an identity it still has.
            StoreError::Kv { .. } => CertificateValidation::Corrupted,
        }
    }
}

/// A loaded, validated identity.
#[derive(Debug)]
pub struct LoadedIdentity {
    /// The certificate set (device id from the metadata).
    pub certificates: DeviceCertificates,
    /// The metadata as updated by this load (`last_used`, `validation_attempts`).
    pub metadata: CertificateMetadata,
    /// The validation report of this load (may hold warnings).
    pub report: ValidationReport,
}

/// The certificate store over a [`CertKv`].
///
/// Write order in [`CertStore::store`]: `cert_valid = 0`, `device_cert`, `private_key`,
/// `iot_endpoint`, `cert_meta` (with the new certificate's fingerprint), `cert_valid = 1`.
/// [`CertStore::load`] refuses anything unless `cert_valid == 1`, then re-validates (key
/// matches certificate, fingerprint matches metadata): a power cut at any point leaves either
/// the old set, the new set, or nothing loadable — never a certificate with a foreign key.
#[derive(Debug)]
pub struct CertStore<K> {
    kv: K,
    allow_custom_endpoint: bool,
}

impl<K: CertKv> CertStore<K> {
    /// A store over `kv` (already scoped to namespace [`crate::NAMESPACE`]).
    pub fn new(kv: K) -> Self {
        Self {
            kv,
            allow_custom_endpoint: false,
        }
    }

    /// Accepts any DNS host name as endpoint (local brokers) when `allow` is true.
    pub fn allow_custom_endpoint(mut self, allow: bool) -> Self {
        self.allow_custom_endpoint = allow;
        self
    }

    /// The key-value store.
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// The key-value store, mutably.
    pub fn kv_mut(&mut self) -> &mut K {
        &mut self.kv
    }

    /// Gives the key-value store back.
    pub fn into_inner(self) -> K {
        self.kv
    }

    fn options(&self, now: u64) -> ValidationOptions<'static> {
        ValidationOptions::new(now).allow_custom_endpoint(self.allow_custom_endpoint)
    }

    /// Validates `certs` at time `now` (Unix seconds) and, if valid, stores them power-cut safely.
    ///
    /// Returns the validation report (which may hold warnings). An invalid set is rejected
    /// before anything is written.
    pub fn store(
        &mut self,
        certs: &DeviceCertificates,
        now: u64,
    ) -> Result<ValidationReport, StoreError<K::Error>> {
        let report = validate(certs, &self.options(now));
        let fingerprint = match (&report.fingerprint, report.is_valid()) {
            (Some(fp), true) => fp.clone(),
            _ => {
                return Err(StoreError::Rejected {
                    report: Box::new(report),
                })
            }
        };
        let meta = CertificateMetadata {
            stored_at: now,
            device_id: certs.device_id.clone(),
            certificate_fingerprint: fingerprint,
            iot_endpoint: certs.iot_endpoint.clone(),
            is_valid: true,
            last_used: None,
            validation_attempts: 0,
        };
        let meta_json = serde_json::to_vec(&meta).map_err(|e| StoreError::Metadata {
            reason: alloc::format!("{e}"),
        })?;
        self.write_u8(KEY_CERT_VALID, 0)?;
        self.write(KEY_DEVICE_CERT, &certs.device_certificate)?;
        self.write(KEY_PRIVATE_KEY, certs.private_key.expose_secret())?;
        self.write(KEY_IOT_ENDPOINT, certs.iot_endpoint.as_bytes())?;
        self.write(KEY_CERT_META, &meta_json)?;
        self.write_u8(KEY_CERT_VALID, 1)?;
        Ok(report)
    }

    /// Loads and validates the stored set at time `now` (Unix seconds).
    ///
    /// Every buffer is sized from the stored length. The metadata is updated:
    /// `validation_attempts` + 1, `is_valid`, and `last_used = now` on success with a synced
    /// clock. A set that does not validate is returned as [`StoreError::Invalid`] (its
    /// metadata is still updated).
    pub fn load(&mut self, now: u64) -> Result<LoadedIdentity, StoreError<K::Error>> {
        match self.read_u8(KEY_CERT_VALID)? {
            None => {
                return Err(StoreError::Missing {
                    key: KEY_CERT_VALID,
                    why: "is absent",
                })
            }
            Some(1) => {}
            Some(_) => {
                return Err(StoreError::Missing {
                    key: KEY_CERT_VALID,
                    why: "is not set (a store was interrupted, or the identity was erased)",
                })
            }
        }
        let device_certificate = self.read_required(KEY_DEVICE_CERT)?;
        let private_key = PrivateKey::new(self.read_required(KEY_PRIVATE_KEY)?);
        let iot_endpoint =
            String::from_utf8(self.read_required(KEY_IOT_ENDPOINT)?).map_err(|_| {
                StoreError::NotUtf8 {
                    key: KEY_IOT_ENDPOINT,
                }
            })?;
        let mut meta = self.read_metadata_required()?;
        let certs = DeviceCertificates {
            device_certificate,
            private_key,
            iot_endpoint,
            device_id: meta.device_id.clone(),
        };
        let options = self
            .options(now)
            .expect_fingerprint(&meta.certificate_fingerprint);
        let mut report = validate(&certs, &options);
        if meta.iot_endpoint != certs.iot_endpoint {
            report.fail(
                CheckId::Integrity,
                Problem::MetadataMismatch,
                alloc::format!(
                    "the stored endpoint `{}` differs from `{}` recorded in the metadata: the \
                     store is corrupted; provision again",
                    certs.iot_endpoint,
                    meta.iot_endpoint
                ),
            );
        }
        meta.validation_attempts = meta.validation_attempts.saturating_add(1);
        meta.is_valid = report.is_valid();
        if meta.is_valid && now >= CLOCK_SYNCED_AFTER {
            meta.last_used = Some(now);
        }
        let meta_json = serde_json::to_vec(&meta).map_err(|e| StoreError::Metadata {
            reason: alloc::format!("{e}"),
        })?;
        self.write(KEY_CERT_META, &meta_json)?;
        if !report.is_valid() {
            return Err(StoreError::Invalid {
                report: Box::new(report),
            });
        }
        Ok(LoadedIdentity {
            certificates: certs,
            metadata: meta,
            report,
        })
    }

    /// The stored metadata, if any (for display; does not validate or update anything).
    pub fn metadata(&mut self) -> Result<Option<CertificateMetadata>, StoreError<K::Error>> {
        match self.read_value(KEY_CERT_META)? {
            None => Ok(None),
            Some(json) => parse_meta(&json).map(Some),
        }
    }

    /// The stored `cert_valid` flag: `Some(true)` when a complete set was stored.
    pub fn validity_flag(&mut self) -> Result<Option<bool>, StoreError<K::Error>> {
        Ok(self.read_u8(KEY_CERT_VALID)?.map(|v| v == 1))
    }

    /// Erases the identity: `cert_valid` first, so an interrupted erase loads as `Missing`.
    pub fn erase(&mut self) -> Result<(), StoreError<K::Error>> {
        for key in [
            KEY_CERT_VALID,
            KEY_PRIVATE_KEY,
            KEY_DEVICE_CERT,
            KEY_IOT_ENDPOINT,
            KEY_CERT_META,
        ] {
            self.kv.erase(key).map_err(|error| StoreError::Kv {
                operation: "erase",
                key,
                error,
            })?;
        }
        Ok(())
    }

    fn read_metadata_required(&mut self) -> Result<CertificateMetadata, StoreError<K::Error>> {
        let json = self.read_required(KEY_CERT_META)?;
        parse_meta(&json)
    }

    fn read_required(&mut self, key: &'static str) -> Result<Vec<u8>, StoreError<K::Error>> {
        self.read_value(key)?.ok_or(StoreError::Missing {
            key,
            why: "is absent",
        })
    }

    /// Reads a value into a buffer of exactly its stored length (strings lose their NUL).
    fn read_value(&mut self, key: &'static str) -> Result<Option<Vec<u8>>, StoreError<K::Error>> {
        let kv_err = |operation| {
            move |error| StoreError::Kv {
                operation,
                key,
                error,
            }
        };
        let Some(len) = self.kv.stored_len(key).map_err(kv_err("length query"))? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; len];
        let Some(value_len) = self.kv.read(key, &mut buf).map_err(kv_err("read"))? else {
            return Ok(None);
        };
        buf.truncate(value_len);
        Ok(Some(buf))
    }

    fn read_u8(&mut self, key: &'static str) -> Result<Option<u8>, StoreError<K::Error>> {
        self.kv.read_u8(key).map_err(|error| StoreError::Kv {
            operation: "read",
            key,
            error,
        })
    }

    fn write(&mut self, key: &'static str, value: &[u8]) -> Result<(), StoreError<K::Error>> {
        self.kv.write(key, value).map_err(|error| StoreError::Kv {
            operation: "write",
            key,
            error,
        })
    }

    fn write_u8(&mut self, key: &'static str, value: u8) -> Result<(), StoreError<K::Error>> {
        self.kv
            .write_u8(key, value)
            .map_err(|error| StoreError::Kv {
                operation: "write",
                key,
                error,
            })
    }
}

fn parse_meta<E>(json: &[u8]) -> Result<CertificateMetadata, StoreError<E>> {
    serde_json::from_slice(json).map_err(|e| StoreError::Metadata {
        reason: alloc::format!("{e}"),
    })
}
