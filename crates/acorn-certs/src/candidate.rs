//! A rotation's new certificate, checked before it becomes the candidate identity: the one
//! rule the Linux agent and the chip both apply. The certificate must match the key made on
//! the device, be within its dates and name a usable endpoint (what [`Slots::stage`] checks),
//! and come from the expected issuer: a given CA certificate when the driver was told one
//! (the local stack's), or else the issuer of the certificate in use (AWS IoT Core issues
//! rotated certificates under the same CA as the first one and does not publish it).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::slots::{SlotKv, Slots};
use crate::{validate, DeviceCertificates, Status, ValidationOptions};

/// Who must have issued a new certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedIssuer<'a> {
    /// The issuer of the certificate in use (its distinguished name as
    /// [`crate::CertificateInfo::issuer`] prints it).
    SameAs(&'a str),
    /// This CA certificate (PEM or DER) must have signed it.
    Ca(&'a [u8]),
}

/// Checks `certs` (the new certificate with the key made for it) at `now` (Unix seconds)
/// against `expected` and stores them as the candidate identity. On success, the new
/// certificate's issuer; on refusal, why in plain language (nothing is left staged).
pub fn stage_checked<S: SlotKv>(
    slots: &mut Slots<S>,
    certs: &DeviceCertificates,
    now: u64,
    expected: ExpectedIssuer<'_>,
) -> Result<String, String> {
    if let ExpectedIssuer::Ca(ca) = expected {
        let options = ValidationOptions::new(now)
            .allow_custom_endpoint(true)
            .with_ca(ca);
        let report = validate(certs, &options);
        if !report.is_valid() {
            let failures: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.explanation.as_str())
                .collect();
            return Err(format!(
                "it does not validate against the expected CA: {}",
                failures.join("; ")
            ));
        }
    }
    let report = slots
        .stage(certs, now)
        .map_err(|e| format!("it was not stored: {e}"))?;
    let issuer = report
        .certificate
        .as_ref()
        .map(|c| c.issuer.clone())
        .unwrap_or_default();
    if let ExpectedIssuer::SameAs(current) = expected {
        if issuer != current {
            let _ = slots.discard();
            return Err(format!(
                "it is issued by {issuer:?}, not by {current:?} as the current certificate"
            ));
        }
    }
    Ok(issuer)
}
