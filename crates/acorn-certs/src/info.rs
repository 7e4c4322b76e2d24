//! [`CertificateInfo`]: what a person wants to see about a certificate, and [`fingerprint`].

use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

use crate::keys::{spki_public, KeyKind};
use crate::names;
use crate::validate::CLOCK_SYNCED_AFTER;

/// SHA-256 of DER bytes as lowercase hex: for a certificate, the AWS IoT certificate id.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A readable summary of a certificate (never includes key material).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// Subject distinguished name (RFC 4514 form).
    pub subject: String,
    /// Issuer distinguished name (RFC 4514 form).
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// Start of validity, RFC 3339.
    pub not_before_text: String,
    /// End of validity, RFC 3339.
    pub not_after_text: String,
    /// Whole days until `not_after` (negative once expired); `None` when the clock is not synced.
    pub days_left: Option<i64>,
    /// The certificate's public key type and size, when supported.
    pub public_key: Option<KeyKind>,
    /// SHA-256 of the DER certificate, lowercase hex (the AWS IoT certificate id).
    pub fingerprint: String,
}

impl CertificateInfo {
    pub(crate) fn new(cert: &Certificate, fingerprint: String, now: u64) -> Self {
        let tbs = &cert.tbs_certificate;
        let not_before = tbs.validity.not_before.to_unix_duration().as_secs();
        let not_after = tbs.validity.not_after.to_unix_duration().as_secs();
        let days_left = (now >= CLOCK_SYNCED_AFTER).then(|| {
            let diff = i128::from(not_after) - i128::from(now);
            i64::try_from(diff.div_euclid(86_400)).unwrap_or(i64::MIN)
        });
        Self {
            subject: names::display(&tbs.subject),
            issuer: names::display(&tbs.issuer),
            serial: hex(tbs.serial_number.as_bytes()),
            not_before,
            not_after,
            not_before_text: tbs.validity.not_before.to_string(),
            not_after_text: tbs.validity.not_after.to_string(),
            days_left,
            public_key: spki_public(&tbs.subject_public_key_info, "certificate")
                .ok()
                .map(|k| k.kind()),
            fingerprint,
        }
    }
}
