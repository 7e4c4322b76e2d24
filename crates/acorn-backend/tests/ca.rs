//! The local CA on its own: create/load, damaged CA directories, CSR checks, CRLs.

use acorn_test_support::backend as common;

use acorn_backend::ca::{RevokedSerial, CA_CERT_FILE, CA_KEY_FILE};
use acorn_backend::{BackendError, CsrError, KeyType, LocalCa};
use x509_parser::prelude::FromDer;

#[test]
fn a_created_ca_loads_back_identically_and_signs_for_both_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let created = LocalCa::load_or_create(dir.path()).expect("create");
    let loaded = LocalCa::load_or_create(dir.path()).expect("load");
    assert_eq!(created.certificate_pem(), loaded.certificate_pem());
    let issued = loaded
        .issue_with_new_key("dev-1", KeyType::P256)
        .expect("issue");
    common::check_device_cert(&issued.certificate.pem, created.certificate_pem(), "dev-1");
    // The CA certificate is a CA that may sign certificates and CRLs.
    let der = common::der(created.certificate_pem());
    let (_, ca) = x509_parser::parse_x509_certificate(&der).expect("parse");
    assert!(ca.is_ca());
    let ku = ca.key_usage().expect("ku").expect("present").value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert!(
        LocalCa::create(dir.path()).is_err(),
        "create never overwrites"
    );
}

#[test]
fn damaged_ca_directories_are_refused_with_the_file_named() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    LocalCa::create(a.path()).expect("a");
    LocalCa::create(b.path()).expect("b");
    // Key of another CA.
    std::fs::copy(b.path().join(CA_KEY_FILE), a.path().join(CA_KEY_FILE)).expect("copy");
    let err = LocalCa::load(a.path()).expect_err("mismatch");
    assert!(matches!(err, BackendError::CaFile { .. }), "{err}");
    assert!(err.to_string().contains("does not belong"), "{err}");
    // Missing key.
    std::fs::remove_file(a.path().join(CA_KEY_FILE)).expect("rm");
    let err = LocalCa::load_or_create(a.path()).expect_err("half a CA");
    assert!(err.to_string().contains(CA_KEY_FILE), "{err}");
    // Garbage certificate.
    std::fs::write(b.path().join(CA_CERT_FILE), "not a certificate").expect("write");
    let err = LocalCa::load(b.path()).expect_err("garbage");
    assert!(err.to_string().contains(CA_CERT_FILE), "{err}");
}

#[test]
fn csr_with_an_unsupported_extension_is_refused() {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "dev-x");
    params.distinguished_name = dn;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[1, 2, 3, 4],
            vec![5, 0],
        ));
    let csr = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let err = LocalCa::check_csr("dev-x", &csr).expect_err("refused");
    assert_eq!(err, CsrError::UnsupportedExtension);
    // And a plain one passes.
    let (_, ok) = common::csr("dev-x");
    assert!(LocalCa::check_csr("dev-x", &ok).is_ok());
    // The CN must match exactly (case matters: it is the MQTT client id).
    assert!(matches!(
        LocalCa::check_csr("DEV-X", &ok),
        Err(CsrError::CommonNameMismatch { .. })
    ));
}

#[test]
fn crl_lists_exactly_the_given_serials_and_carries_its_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = LocalCa::create(dir.path()).expect("ca");
    let a = ca.issue_with_new_key("a", KeyType::P256).expect("a");
    let b = ca.issue_with_new_key("b", KeyType::P256).expect("b");
    let revoked = vec![RevokedSerial {
        serial_hex: b.certificate.serial_hex.clone(),
        revoked_at: time::OffsetDateTime::now_utc(),
    }];
    let pem = ca
        .crl_pem(
            &revoked,
            7,
            LocalCa::crl_issue_time(None),
            time::Duration::days(30),
        )
        .expect("crl");
    let der = common::der(&pem);
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&der).expect("parse");
    let serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert_eq!(serials, vec![b.certificate.serial_hex.clone()]);
    assert_ne!(a.certificate.serial_hex, b.certificate.serial_hex);
    assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("7".into()));
    let ca_der = common::der(ca.certificate_pem());
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).expect("ca");
    crl.verify_signature(ca_cert.public_key()).expect("signed");
}

#[test]
fn issued_key_material_never_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = LocalCa::create(dir.path()).expect("ca");
    let issued = ca.issue_with_new_key("a", KeyType::P256).expect("a");
    let debug = format!("{issued:?} {ca:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn the_ca_vouches_only_for_its_own_unexpired_certificates() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let ca_a = LocalCa::create(a.path()).expect("a");
    let ca_b = LocalCa::create(b.path()).expect("b");
    let server = ca_a.issue_server_certificate(&[]).expect("server");
    let pem = &server.certificate.pem;
    assert!(ca_a.still_vouches_for(pem, time::Duration::days(30)));
    assert!(
        !ca_b.still_vouches_for(pem, time::Duration::days(30)),
        "other CA"
    );
    assert!(
        !ca_a.still_vouches_for(pem, time::Duration::days(400)),
        "expires too soon"
    );
    assert!(!ca_a.still_vouches_for("junk", time::Duration::ZERO));
}

/// A CSR made by the `openssl` CLI for an EC key on `curve`, signed with `digest`.
fn openssl_ec_csr(cn: &str, curve: &str, digest: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            digest,
        ])
        .args([
            "-newkey",
            "ec",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
        ])
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Found by the fuzz target `backend_register`: the certificate issued for a P-384 CSR signed
/// with ECDSA-SHA256 (openssl's default) declared a P-256 key, because the key's curve was
/// taken from the CSR's signature algorithm. The certificate must carry the CSR's public key
/// exactly as the CSR states it, whatever hash signed the request.
#[test]
fn the_certificate_carries_the_csr_key_whatever_hash_signed_the_csr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = LocalCa::create(dir.path()).expect("ca");
    for (curve, digest) in [
        ("P-384", "-sha256"),
        ("P-256", "-sha384"),
        ("P-256", "-sha256"),
        ("P-384", "-sha384"),
    ] {
        let csr = openssl_ec_csr("dev-x", curve, digest);
        let checked = LocalCa::check_csr("dev-x", &csr).expect("a valid CSR");
        let issued = ca.issue_for_csr(&checked).expect("issued");
        let csr_der = common::der(&csr);
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der)
                .expect("csr");
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).expect("certificate");
        assert_eq!(
            cert.public_key().raw,
            req.certification_request_info.subject_pki.raw,
            "{curve} signed with {digest}: the certificate's key is not the CSR's"
        );
    }
}
