//! Certificate, private key and endpoint parsing and `validate()` (acorn-certs), PEM and DER.
//!
//! Input: a flags byte (bit 0 custom endpoints allowed, bit 1 check against a CA, bit 2
//! expect a fingerprint, bit 3 no device id: `validate_material`), the time as 8 bytes
//! (Unix seconds, little-endian), then fields (16-bit little-endian length + bytes):
//! certificate, private key, endpoint, device id, CA certificate, expected fingerprint.
//!
//! Properties:
//! - never a panic; the report is the same when run twice (deterministic);
//! - the verdict is `Valid` exactly when no check failed;
//! - `Valid` only for a real pair: the RustCrypto key crates read the key, find it
//!   consistent and derive the certificate's public key from it; and only when the endpoint
//!   is a host name (an AWS ATS one unless custom endpoints are allowed), the device id is
//!   well formed, the certificate is not a CA and is within its validity at a synced time,
//!   its fingerprint is the one expected, and (with a CA) its signature verifies with the
//!   CA's key according to x509-parser;
//! - a PEM certificate and its DER give the same validity.
#![no_main]

use acorn_certs::{
    validate, validate_material, CertificateValidation, DeviceCertificates, PrivateKey,
    ValidationOptions, ValidationReport, CLOCK_SYNCED_AFTER,
};
use acorn_fuzz::{oracle, Fields};
use libfuzzer_sys::fuzz_target;

struct Input<'a> {
    allow_custom: bool,
    with_ca: bool,
    with_fingerprint: bool,
    material_only: bool,
    now: u64,
    cert: &'a [u8],
    key: &'a [u8],
    endpoint: String,
    device_id: String,
    ca: &'a [u8],
    fingerprint: String,
}

fn run(input: &Input<'_>, cert: &[u8]) -> ValidationReport {
    let mut options = ValidationOptions::new(input.now).allow_custom_endpoint(input.allow_custom);
    if input.with_ca {
        options = options.with_ca(input.ca);
    }
    if input.with_fingerprint {
        options = options.expect_fingerprint(&input.fingerprint);
    }
    let key = PrivateKey::from_slice(input.key);
    if input.material_only {
        validate_material(cert, &key, &input.endpoint, &options)
    } else {
        let certs = DeviceCertificates {
            device_certificate: cert.to_vec(),
            private_key: key,
            iot_endpoint: input.endpoint.clone(),
            device_id: input.device_id.clone(),
        };
        validate(&certs, &options)
    }
}

fn check_valid(input: &Input<'_>) {
    oracle::assert_pair(input.cert, input.key, "validate() said Valid");
    assert!(
        oracle::is_host_name(&input.endpoint),
        "Valid with endpoint {:?}, not a host name",
        input.endpoint
    );
    assert!(
        input.allow_custom || oracle::looks_like_aws_ats(&input.endpoint),
        "Valid with endpoint {:?}, not an AWS ATS endpoint",
        input.endpoint
    );
    if !input.material_only {
        assert!(
            oracle::is_device_id(&input.device_id),
            "Valid with device id {:?}",
            input.device_id
        );
    }
    let der = oracle::certificate_der(input.cert).expect("checked by assert_pair");
    assert_eq!(
        oracle::is_ca(&der),
        Some(false),
        "Valid for a CA certificate"
    );
    if input.now >= CLOCK_SYNCED_AFTER {
        let (from, to) = oracle::validity(&der).expect("parsed by assert_pair");
        assert!(
            (from..=to).contains(&input.now),
            "Valid at {} outside {from}..={to}",
            input.now
        );
    }
    if input.with_fingerprint {
        assert!(
            oracle::fingerprint(&der).eq_ignore_ascii_case(&input.fingerprint),
            "Valid with another fingerprint expected"
        );
    }
    if input.with_ca {
        let ca = oracle::certificate_der(input.ca).expect("Valid with an undecodable CA");
        assert_eq!(
            oracle::signed_by(&der, &ca),
            Ok(true),
            "Valid, but x509-parser finds the signature not made by the CA"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut f = Fields::new(data);
    let flags = f.byte();
    let now = f.u64();
    let input = Input {
        allow_custom: flags & 1 != 0,
        with_ca: flags & 2 != 0,
        with_fingerprint: flags & 4 != 0,
        material_only: flags & 8 != 0,
        now,
        cert: f.field(),
        key: f.field(),
        endpoint: f.text(),
        device_id: f.text(),
        ca: f.field(),
        fingerprint: f.text(),
    };

    let report = run(&input, input.cert);
    assert_eq!(
        report,
        run(&input, input.cert),
        "validate() is not deterministic"
    );
    let valid = report.verdict() == CertificateValidation::Valid;
    assert_eq!(valid, report.is_valid(), "verdict and is_valid() disagree");
    if valid {
        check_valid(&input);
    }

    // The same certificate as DER, when it came as PEM: the same validity.
    if input.cert.first() != Some(&0x30) {
        if let Some(der) = oracle::certificate_der(input.cert) {
            let as_der = run(&input, &der);
            assert_eq!(
                as_der.is_valid(),
                valid,
                "a PEM certificate and its DER disagree: {:?} vs {:?}",
                report.failures(),
                as_der.failures()
            );
        }
    }
});
