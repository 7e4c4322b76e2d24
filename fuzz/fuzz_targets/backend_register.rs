//! The backend's registration body and CSR handling: `acorn_backend::fields::check_registration`
//! (every check the API makes before the registry and the CA), then issuing a certificate for
//! an accepted CSR with a device CA.
//!
//! Input: a mode byte. Even: the rest is the HTTP body, read as the API reads it (serde_json
//! into `acorn_api::RegisterRequest`). Odd: a device id field and then the DER of a CSR, sent
//! as PEM in an otherwise valid body (so the fuzzer works on the DER directly).
//!
//! Properties:
//! - never a panic; the verdict is deterministic;
//! - an accepted body has fields that follow the written rules (device id, serial number,
//!   MAC address normalised to `AA:BB:CC:DD:EE:FF`, firmware version) and a `keyType` only
//!   without a CSR;
//! - a certificate only for a CSR that should be accepted: x509-parser (with ring) verifies
//!   its self-signature, its subject CN is the device id, its key is RSA 2048 to 4096 bits or
//!   EC P-256/P-384; and the certificate issued for it names the device id, carries exactly
//!   the CSR's public key, and verifies with the CA's key.
#![no_main]

use std::sync::OnceLock;

use acorn_api::RegisterRequest;
use acorn_backend::fields::check_registration;
use acorn_backend::LocalCa;
use acorn_fuzz::{oracle, Fields};
use libfuzzer_sys::fuzz_target;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

fn ca() -> &'static LocalCa {
    static CA: OnceLock<LocalCa> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("acorn-fuzz-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        LocalCa::create(&dir).expect("a device CA")
    })
}

fn pem_der(text: &str, labels: &[&str]) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
        .map_while(Result::ok)
        .find(|p| labels.contains(&p.label.as_str()))
        .map(|p| p.contents)
}

fn check_accepted_csr(device_id: &str, csr_pem: &str, csr: &acorn_backend::ca::CheckedCsr) {
    let der = pem_der(csr_pem, &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"])
        .expect("an accepted CSR has a PEM block");
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .expect("an accepted CSR parses");
    req.verify_signature()
        .expect("an accepted CSR's self-signature verifies (x509-parser, ring)");
    let info = &req.certification_request_info;
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    assert_eq!(cn, Some(device_id), "accepted CSR's CN");
    let spki = &info.subject_pki;
    match spki.parsed().expect("an accepted CSR's key parses") {
        PublicKey::RSA(rsa) => assert!(
            (2048..=4096).contains(&rsa.key_size()),
            "accepted RSA-{}",
            rsa.key_size()
        ),
        PublicKey::EC(_) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            assert!(
                matches!(
                    curve.as_deref(),
                    Some("1.2.840.10045.3.1.7" | "1.3.132.0.34")
                ),
                "accepted a key on curve {curve:?}"
            );
        }
        other => panic!("accepted a CSR with a {other:?} key"),
    }

    let issued = ca().issue_for_csr(csr).expect("a checked CSR is issued");
    let (_, cert) = X509Certificate::from_der(&issued.der).expect("the issued certificate parses");
    let cert_cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    assert_eq!(cert_cn, Some(device_id), "issued certificate's CN");
    assert_eq!(
        cert.public_key().raw,
        spki.raw,
        "the issued certificate carries another key than the CSR's"
    );
    let ca_der = pem_der(ca().certificate_pem(), &["CERTIFICATE"]).expect("CA PEM");
    assert_eq!(
        oracle::signed_by(&issued.der, &ca_der),
        Ok(true),
        "issued by the CA"
    );
}

fn check(req: &RegisterRequest) {
    let first = check_registration(req);
    let again = check_registration(req);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "check_registration is not deterministic"
    );
    let Ok(checked) = first else {
        return;
    };
    assert!(oracle::is_device_id(&checked.device_id));
    assert_eq!(checked.device_id, req.device_id);
    let serial = &checked.serial_number;
    assert!((1..=64).contains(&serial.len()));
    assert!(serial
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let mac = checked.mac_address.as_bytes();
    assert_eq!(mac.len(), 17);
    for (i, b) in mac.iter().enumerate() {
        if i % 3 == 2 {
            assert_eq!(*b, b':');
        } else {
            assert!(
                b.is_ascii_digit() || (b'A'..=b'F').contains(b),
                "MAC {mac:?}"
            );
        }
    }
    let fw = &checked.firmware_version;
    assert!((1..=32).contains(&fw.len()) && fw.bytes().all(|b| b.is_ascii_graphic()));
    assert_eq!(checked.csr.is_some(), req.csr.is_some());
    if req.csr.is_some() {
        assert!(req.key_type.is_none(), "keyType accepted with a CSR");
    }
    if let (Some(csr), Some(pem)) = (&checked.csr, &req.csr) {
        check_accepted_csr(&checked.device_id, pem, csr);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut f = Fields::new(data);
    if f.byte() & 1 == 0 {
        let body = data.get(1..).unwrap_or_default();
        if let Ok(req) = serde_json::from_slice::<RegisterRequest>(body) {
            check(&req);
        }
        return;
    }
    let device_id = f.text();
    let der = f.field();
    let pem = pem_rfc7468::encode_string("CERTIFICATE REQUEST", pem_rfc7468::LineEnding::LF, der)
        .expect("PEM encoding");
    check(&RegisterRequest {
        device_id,
        serial_number: "SN-0001".into(),
        mac_address: "aa:bb:cc:dd:ee:0f".into(),
        firmware_version: "1.0.0".into(),
        csr: Some(pem),
        key_type: None,
    });
});
