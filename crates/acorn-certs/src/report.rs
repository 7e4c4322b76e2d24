//! The validation report: one [`Check`] per thing checked, and a verdict.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The seed's coarse validation categories: the verdict of a [`ValidationReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CertificateValidation {
    /// Every check passed (warnings allowed).
    Valid,
    /// The bytes are not a well-formed PEM/DER certificate or key.
    InvalidFormat,
    /// Well-formed, but unusable: wrong key, CA certificate, wrong endpoint, untrusted issuer...
    InvalidContent,
    /// The certificate is past its `notAfter` date.
    Expired,
    /// Stored data does not match its recorded fingerprint.
    Corrupted,
    /// No certificate is stored.
    Missing,
}

/// What one check looks at. The `snake_case` form is the name shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    /// Each item (certificate, key, endpoint) is at most [`crate::MAX_ITEM_SIZE`] bytes.
    Size,
    /// The device id is `[A-Za-z0-9_-]{1,128}`.
    DeviceId,
    /// The certificate's PEM armor and base64 (or raw DER).
    CertificateEncoding,
    /// The certificate's DER structure (X.509).
    CertificateStructure,
    /// The private key's PEM armor, label and base64 (or raw DER).
    PrivateKeyEncoding,
    /// The private key's DER structure (PKCS#1, PKCS#8 or SEC1).
    PrivateKeyStructure,
    /// The certificate is an end-entity certificate, not a CA.
    EndEntity,
    /// The key type and size are allowed (RSA 2048–4096, EC P-256/P-384).
    KeyType,
    /// The private key belongs to the certificate's public key.
    KeyMatch,
    /// The endpoint is an AWS IoT data endpoint (or a DNS name when custom endpoints are allowed).
    Endpoint,
    /// The certificate is within its validity period at the given time.
    Validity,
    /// The certificate's signature verifies with the given CA's key.
    Chain,
    /// The certificate's SHA-256 fingerprint matches the stored metadata.
    Integrity,
}

impl CheckId {
    /// The name shown to users (`snake_case`).
    pub fn name(self) -> &'static str {
        match self {
            CheckId::Size => "size",
            CheckId::DeviceId => "device_id",
            CheckId::CertificateEncoding => "certificate_encoding",
            CheckId::CertificateStructure => "certificate_structure",
            CheckId::PrivateKeyEncoding => "private_key_encoding",
            CheckId::PrivateKeyStructure => "private_key_structure",
            CheckId::EndEntity => "end_entity",
            CheckId::KeyType => "key_type",
            CheckId::KeyMatch => "key_match",
            CheckId::Endpoint => "endpoint",
            CheckId::Validity => "validity",
            CheckId::Chain => "chain",
            CheckId::Integrity => "integrity",
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The check passed.
    Pass,
    /// The check failed: the set must not be used.
    Fail,
    /// Usable, but something needs attention (expiring soon, clock not synced).
    Warning,
    /// Not checked: an earlier check failed, or there was nothing to check against.
    Skipped,
}

impl Status {
    /// `pass`, `fail`, `warning` or `skipped`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Warning => "warning",
            Status::Skipped => "skipped",
        }
    }
}

/// The precise reason a check failed or warned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// An item is larger than [`crate::MAX_ITEM_SIZE`].
    Oversize,
    /// The device id is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    BadDeviceId,
    /// The PEM `-----BEGIN/END-----` lines are missing or malformed.
    BadPemArmor,
    /// The text between the PEM lines is not valid base64.
    BadBase64,
    /// The PEM label is not the one expected (e.g. a key given as the certificate).
    WrongPemLabel,
    /// The DER bytes are not a valid certificate or key structure (truncated, corrupted).
    BadDer,
    /// The private key is encrypted (PKCS#8 `ENCRYPTED PRIVATE KEY` or OpenSSL `Proc-Type`).
    EncryptedKeyUnsupported,
    /// The private key's own parts disagree (an RSA modulus that is not the product of its
    /// primes, or exponents and CRT coefficients that do not agree with them).
    InconsistentKey,
    /// The key is neither RSA nor EC P-256/P-384.
    UnsupportedKeyType,
    /// An RSA key outside 2048–4096 bits.
    KeySizeNotAllowed,
    /// The certificate is a CA certificate (basicConstraints cA = true).
    CaCertificate,
    /// The private key does not belong to the certificate.
    KeyMismatch,
    /// The endpoint is not an AWS IoT data endpoint (or not a DNS name).
    BadEndpoint,
    /// The certificate's `notBefore` is in the future.
    NotYetValid,
    /// The certificate's `notAfter` is in the past.
    Expired,
    /// The clock reads before 2024-01-01: validity could not be checked.
    ClockNotSynced,
    /// The certificate expires within [`crate::EXPIRY_WARNING_DAYS`] days.
    ExpiringSoon,
    /// The given CA certificate could not be read.
    UnreadableCa,
    /// The certificate was not issued by (does not verify with) the given CA.
    UntrustedIssuer,
    /// The certificate's signature algorithm is not supported for chain checks.
    UnsupportedSignature,
    /// The stored certificate's fingerprint differs from the one in the metadata.
    FingerprintMismatch,
    /// The stored metadata disagrees with the stored values (e.g. another endpoint).
    MetadataMismatch,
    /// Nothing is stored.
    Missing,
}

impl Problem {
    /// The seed's coarse category for this problem.
    pub fn category(self) -> CertificateValidation {
        use CertificateValidation as V;
        match self {
            Problem::BadPemArmor
            | Problem::BadBase64
            | Problem::WrongPemLabel
            | Problem::BadDer
            | Problem::EncryptedKeyUnsupported
            | Problem::UnreadableCa => V::InvalidFormat,
            Problem::Expired => V::Expired,
            Problem::FingerprintMismatch | Problem::MetadataMismatch | Problem::InconsistentKey => {
                V::Corrupted
            }
            Problem::Missing => V::Missing,
            // Warnings never decide a verdict, but they still have a category.
            Problem::ClockNotSynced | Problem::ExpiringSoon => V::Valid,
            Problem::Oversize
            | Problem::BadDeviceId
            | Problem::UnsupportedKeyType
            | Problem::KeySizeNotAllowed
            | Problem::CaCertificate
            | Problem::KeyMismatch
            | Problem::BadEndpoint
            | Problem::NotYetValid
            | Problem::UntrustedIssuer
            | Problem::UnsupportedSignature => V::InvalidContent,
        }
    }
}

/// One check: what was looked at, the outcome, and a plain explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked.
    pub id: CheckId,
    /// Pass, fail, warning or skipped.
    pub status: Status,
    /// Why it failed or warned (`None` on pass/skip).
    pub problem: Option<Problem>,
    /// A plain-language explanation, with what to do about a failure.
    pub explanation: String,
}

/// The result of validating a certificate set: every check, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// SHA-256 of the DER certificate, lowercase hex (the AWS IoT certificate id), when readable.
    pub fingerprint: Option<String>,
    /// A summary of the certificate, when it could be parsed.
    pub certificate: Option<crate::CertificateInfo>,
}

impl ValidationReport {
    /// The verdict: [`CertificateValidation::Corrupted`] when the fingerprint does not match
    /// (corruption explains every other failure), else the category of the first failed check,
    /// else [`CertificateValidation::Valid`].
    pub fn verdict(&self) -> CertificateValidation {
        let failures = self.failures();
        if failures.contains(&Problem::FingerprintMismatch)
            || failures.contains(&Problem::MetadataMismatch)
        {
            return CertificateValidation::Corrupted;
        }
        failures
            .first()
            .map_or(CertificateValidation::Valid, |p| p.category())
    }

    /// True when no check failed (warnings allowed).
    pub fn is_valid(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The problems of the failed checks, in order.
    pub fn failures(&self) -> Vec<Problem> {
        self.with_status(Status::Fail)
    }

    /// The problems of the checks that warned, in order.
    pub fn warnings(&self) -> Vec<Problem> {
        self.with_status(Status::Warning)
    }

    /// The check with this id, if it ran.
    pub fn check(&self, id: CheckId) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    fn with_status(&self, status: Status) -> Vec<Problem> {
        self.checks
            .iter()
            .filter(|c| c.status == status)
            .filter_map(|c| c.problem)
            .collect()
    }

    pub(crate) fn push(
        &mut self,
        id: CheckId,
        status: Status,
        problem: Option<Problem>,
        explanation: String,
    ) {
        self.checks.push(Check {
            id,
            status,
            problem,
            explanation,
        });
    }

    pub(crate) fn pass(&mut self, id: CheckId, explanation: String) {
        self.push(id, Status::Pass, None, explanation);
    }

    pub(crate) fn fail(&mut self, id: CheckId, problem: Problem, explanation: String) {
        self.push(id, Status::Fail, Some(problem), explanation);
    }

    pub(crate) fn warn(&mut self, id: CheckId, problem: Problem, explanation: String) {
        self.push(id, Status::Warning, Some(problem), explanation);
    }

    pub(crate) fn skip(&mut self, id: CheckId, explanation: String) {
        self.push(id, Status::Skipped, None, explanation);
    }
}
