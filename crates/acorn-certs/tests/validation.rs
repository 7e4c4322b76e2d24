//! One test per failing case, each with its own verdict; valid sets of every supported shape.

mod common;

use acorn_certs::{
    validate, validate_material, CertificateValidation, CheckId, DeviceCertificates, ExposeSecret,
    PrivateKey, Problem, Status, ValidationOptions, ValidationReport,
};
use common::*;

fn opts() -> ValidationOptions<'static> {
    ValidationOptions::new(NOW)
}

/// Asserts exactly one failure, `problem`, with verdict `verdict`.
fn assert_only_failure(
    report: &ValidationReport,
    problem: Problem,
    verdict: CertificateValidation,
) {
    assert_eq!(report.failures(), vec![problem], "report: {report:#?}");
    assert_eq!(report.verdict(), verdict);
    assert!(!report.is_valid());
}

fn assert_valid(report: &ValidationReport) {
    assert!(report.is_valid(), "report: {report:#?}");
    assert_eq!(report.verdict(), CertificateValidation::Valid);
    assert!(report.warnings().is_empty(), "report: {report:#?}");
}

#[test]
fn aws_shaped_set_is_valid_and_sized_like_aws() {
    let set = aws_set();
    let ca = rsa_ca().cert.pem();
    let report = validate(&set, &opts().with_ca(ca.as_bytes()));
    assert_valid(&report);
    assert_eq!(
        report.check(CheckId::Chain).map(|c| c.status),
        Some(Status::Pass)
    );
    assert_eq!(
        report.check(CheckId::KeyMatch).map(|c| c.status),
        Some(Status::Pass)
    );
    let key_len = set.private_key.len();
    let cert_len = set.device_certificate.len();
    eprintln!("AWS-shaped set: key PEM {key_len} bytes, cert PEM {cert_len} bytes");
    assert!((1_600..=1_760).contains(&key_len), "key PEM {key_len}");
    assert!((900..=1_400).contains(&cert_len), "cert PEM {cert_len}");
    assert!(std::str::from_utf8(set.private_key.expose_secret())
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    // The fingerprint is the SHA-256 of the DER certificate.
    let fp = report.fingerprint.clone().unwrap();
    assert_eq!(fp.len(), 64);
    assert!(fp
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
}

fn with_cert(set: &DeviceCertificates, cert: Vec<u8>) -> DeviceCertificates {
    DeviceCertificates {
        device_certificate: cert,
        ..set.clone()
    }
}

fn with_key(set: &DeviceCertificates, key: &[u8]) -> DeviceCertificates {
    DeviceCertificates {
        private_key: PrivateKey::from_slice(key),
        ..set.clone()
    }
}

fn rsa_set_valid(from: u64, to: u64) -> DeviceCertificates {
    let key = rsa_key(1);
    let cert = device_cert_valid(&key.key_pair, rsa_ca(), from, to);
    with_cert(&aws_set(), cert.pem().into_bytes())
}

#[test]
fn expired() {
    let set = rsa_set_valid(NOW - 400 * DAY, NOW - 10 * DAY);
    let report = validate(&set, &opts());
    assert_only_failure(&report, Problem::Expired, CertificateValidation::Expired);
    let why = &report.check(CheckId::Validity).unwrap().explanation;
    assert!(why.contains("expired 10 days ago"), "{why}");
}

#[test]
fn not_yet_valid() {
    let set = rsa_set_valid(NOW + 10 * DAY, NOW + 400 * DAY);
    let report = validate(&set, &opts());
    assert_only_failure(
        &report,
        Problem::NotYetValid,
        CertificateValidation::InvalidContent,
    );
}

#[test]
fn expiring_within_30_days_is_a_warning() {
    let set = rsa_set_valid(NOW - 300 * DAY, NOW + 10 * DAY);
    let report = validate(&set, &opts());
    assert!(report.is_valid());
    assert_eq!(report.verdict(), CertificateValidation::Valid);
    assert_eq!(report.warnings(), vec![Problem::ExpiringSoon]);
    let check = report.check(CheckId::Validity).unwrap();
    assert_eq!(check.status, Status::Warning);
    assert!(
        check.explanation.contains("expires in 10 days"),
        "{}",
        check.explanation
    );
}

#[test]
fn unsynced_clock_says_so_instead_of_expired_or_not_yet_valid() {
    // A clock at 1970 (no SNTP yet): not "not yet valid".
    let set = aws_set();
    let report = validate(&set, &ValidationOptions::new(0));
    assert!(report.failures().is_empty(), "{report:#?}");
    assert_eq!(report.warnings(), vec![Problem::ClockNotSynced]);
    assert_eq!(report.verdict(), CertificateValidation::Valid);
    // A clock stuck in 2023 with an expired certificate: not "expired" either.
    let old = rsa_set_valid(1_600_000_000, 1_650_000_000);
    let report = validate(&old, &ValidationOptions::new(1_690_000_000));
    assert!(report.failures().is_empty(), "{report:#?}");
    assert_eq!(report.warnings(), vec![Problem::ClockNotSynced]);
    let why = &report.check(CheckId::Validity).unwrap().explanation;
    assert!(why.contains("not synced"), "{why}");
}

#[test]
fn rsa_key_mismatch() {
    let set = with_key(&aws_set(), rsa_key(2).pkcs1_pem.as_bytes());
    let report = validate(&set, &opts());
    assert_only_failure(
        &report,
        Problem::KeyMismatch,
        CertificateValidation::InvalidContent,
    );
    let why = &report.check(CheckId::KeyMatch).unwrap().explanation;
    assert!(why.contains("both are RSA-2048"), "{why}");
}

#[test]
fn ec_key_mismatch() {
    let set = ec_set();
    let other = p256();
    let report = validate(&with_key(&set, other.serialize_pem().as_bytes()), &opts());
    assert_only_failure(
        &report,
        Problem::KeyMismatch,
        CertificateValidation::InvalidContent,
    );
}

#[test]
fn ec_key_for_rsa_certificate_is_a_mismatch() {
    let set = with_key(&aws_set(), p256().serialize_pem().as_bytes());
    let report = validate(&set, &opts());
    assert_only_failure(
        &report,
        Problem::KeyMismatch,
        CertificateValidation::InvalidContent,
    );
    let why = &report.check(CheckId::KeyMatch).unwrap().explanation;
    assert!(
        why.contains("RSA-2048") && why.contains("EC P-256"),
        "{why}"
    );
}

#[test]
fn ca_certificate_used_as_device_certificate() {
    let ca = rsa_ca();
    let set = DeviceCertificates {
        device_certificate: ca.cert.pem().into_bytes(),
        private_key: PrivateKey::from_slice(rsa_key(0).pkcs1_pem.as_bytes()),
        ..aws_set()
    };
    let report = validate(&set, &opts());
    assert_only_failure(
        &report,
        Problem::CaCertificate,
        CertificateValidation::InvalidContent,
    );
}

#[test]
fn bad_base64() {
    let set = aws_set();
    let mut pem = set.device_certificate.clone();
    // A character in the middle of the third base64 line.
    let at = pem
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(2)
        .unwrap()
        .0
        + 10;
    pem[at] = b'*';
    let report = validate(&with_cert(&set, pem), &opts());
    assert_only_failure(
        &report,
        Problem::BadBase64,
        CertificateValidation::InvalidFormat,
    );
    assert_eq!(
        report.check(CheckId::KeyMatch).unwrap().status,
        Status::Skipped
    );
}

#[test]
fn truncated_der() {
    let set = aws_set();
    let der = rsa_cert_der(&set);
    let truncated = &der[..der.len() - 40];
    let pem =
        pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, truncated).unwrap();
    let report = validate(&with_cert(&set, pem.into_bytes()), &opts());
    assert_only_failure(
        &report,
        Problem::BadDer,
        CertificateValidation::InvalidFormat,
    );
    assert_eq!(
        report.check(CheckId::CertificateStructure).unwrap().status,
        Status::Fail
    );
    // Raw DER, truncated, too.
    let report = validate(&with_cert(&set, truncated.to_vec()), &opts());
    assert_only_failure(
        &report,
        Problem::BadDer,
        CertificateValidation::InvalidFormat,
    );
}

fn rsa_cert_der(set: &DeviceCertificates) -> Vec<u8> {
    pem_rfc7468::decode_vec(&set.device_certificate).unwrap().1
}

#[test]
fn wrong_pem_label() {
    let set = aws_set();
    // The key file given as the certificate.
    let swapped = with_cert(&set, set.private_key.expose_secret().to_vec());
    let report = validate(&swapped, &opts());
    assert_only_failure(
        &report,
        Problem::WrongPemLabel,
        CertificateValidation::InvalidFormat,
    );
    // The certificate given as the key.
    let swapped = with_key(&set, &set.device_certificate);
    let report = validate(&swapped, &opts());
    assert_only_failure(
        &report,
        Problem::WrongPemLabel,
        CertificateValidation::InvalidFormat,
    );
}

#[test]
fn wrong_endpoint() {
    let set = aws_set();
    let bad = [
        "",
        "mqtts://a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com",
        "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com:8883",
        "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com/mqtt",
        " a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com",
        "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com\n",
        "a1b2c3d4e5f6g7.iot.eu-west-1.amazonaws.com",
        "a1b2c3d4e5f6g7-ats.execute-api.eu-west-1.amazonaws.com",
        "broker.example.com",
        "exa_mple.com",
    ];
    for endpoint in bad {
        let report = validate(
            &DeviceCertificates {
                iot_endpoint: endpoint.to_string(),
                ..set.clone()
            },
            &opts(),
        );
        assert_only_failure(
            &report,
            Problem::BadEndpoint,
            CertificateValidation::InvalidContent,
        );
    }
    let legacy = validate(
        &DeviceCertificates {
            iot_endpoint: "a1b2c3d4e5f6g7.iot.eu-west-1.amazonaws.com".into(),
            ..set.clone()
        },
        &opts(),
    );
    let why = &legacy.check(CheckId::Endpoint).unwrap().explanation;
    assert!(why.contains("-ats"), "{why}");
    for good in [
        "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com",
        "a1b2c3d4e5f6g7-ats.iot.cn-north-1.amazonaws.com.cn",
        "A1B2C3D4E5F6G7-ats.iot.us-gov-west-1.amazonaws.com",
    ] {
        let report = validate(
            &DeviceCertificates {
                iot_endpoint: good.to_string(),
                ..set.clone()
            },
            &opts(),
        );
        assert_valid(&report);
    }
    // Custom endpoints: any DNS name when allowed, but still no scheme or port.
    let custom = opts().allow_custom_endpoint(true);
    for (endpoint, ok) in [
        ("localhost", true),
        ("broker.example.com", true),
        ("127.0.0.1", true),
        ("mqtts://localhost", false),
        ("localhost:8883", false),
    ] {
        let report = validate(
            &DeviceCertificates {
                iot_endpoint: endpoint.to_string(),
                ..set.clone()
            },
            &custom,
        );
        assert_eq!(report.is_valid(), ok, "{endpoint}: {report:#?}");
    }
}

#[test]
fn oversize() {
    let key = p256();
    let ca = make_ca("Acorn EC CA", p256());
    let names: Vec<String> = (0..700)
        .map(|i| format!("device-{i:05}.sensors.example.com"))
        .collect();
    let mut params = device_params("big", NOW - DAY, NOW + 365 * DAY);
    params.subject_alt_names = names
        .into_iter()
        .map(|n| rcgen::SanType::DnsName(n.try_into().unwrap()))
        .collect();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap().pem();
    assert!(cert.len() > 16 * 1024, "{}", cert.len());
    let set = DeviceCertificates {
        device_certificate: cert.into_bytes(),
        private_key: PrivateKey::new(key.serialize_pem().into_bytes()),
        ..aws_set()
    };
    let report = validate(&set, &opts());
    assert_only_failure(
        &report,
        Problem::Oversize,
        CertificateValidation::InvalidContent,
    );
}

#[test]
fn untrusted_issuer() {
    let set = aws_set();
    // Another CA altogether.
    let other = make_ca("Some Other CA", p256());
    let pem = other.cert.pem();
    let report = validate(&set, &opts().with_ca(pem.as_bytes()));
    assert_only_failure(
        &report,
        Problem::UntrustedIssuer,
        CertificateValidation::InvalidContent,
    );
    // Same name as the real CA, different key: the signature does not verify.
    let impostor = make_ca(
        "Acorn Test Root CA",
        rcgen::KeyPair::from_pem(&rsa_key(3).pkcs8_pem).unwrap(),
    );
    let pem = impostor.cert.pem();
    let report = validate(&set, &opts().with_ca(pem.as_bytes()));
    assert_only_failure(
        &report,
        Problem::UntrustedIssuer,
        CertificateValidation::InvalidContent,
    );
    let why = &report.check(CheckId::Chain).unwrap().explanation;
    assert!(why.contains("does not verify"), "{why}");
}

#[test]
fn encrypted_pkcs8_is_unsupported() {
    let set = ec_set();
    let plain = pkcs8::PrivateKeyInfo::try_from(
        pem_rfc7468::decode_vec(set.private_key.expose_secret())
            .unwrap()
            .1
            .as_slice(),
    )
    .unwrap()
    .encrypt(rand::thread_rng(), b"hunter2")
    .unwrap();
    let pem = plain
        .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
        .unwrap();
    let report = validate(&with_key(&set, pem.as_bytes()), &opts());
    assert_only_failure(
        &report,
        Problem::EncryptedKeyUnsupported,
        CertificateValidation::InvalidFormat,
    );
    let why = &report
        .check(CheckId::PrivateKeyEncoding)
        .unwrap()
        .explanation;
    assert!(why.contains("not supported"), "{why}");
    // OpenSSL's legacy encrypted PEM gets the same verdict.
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                  DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n\
                  MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n\
                  -----END RSA PRIVATE KEY-----\n";
    let report = validate(&with_key(&set, legacy.as_bytes()), &opts());
    assert_only_failure(
        &report,
        Problem::EncryptedKeyUnsupported,
        CertificateValidation::InvalidFormat,
    );
}

#[test]
fn rsa_1024_key_is_not_allowed() {
    struct RsaPublic(Vec<u8>);
    impl rcgen::PublicKeyData for RsaPublic {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }
        fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
            RSA_SHA256
        }
    }
    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
    let small = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
    let public = RsaPublic(small.to_public_key().to_pkcs1_der().unwrap().into_vec());
    let cert = device_cert(&public, rsa_ca()).pem();
    let key = small.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let set = DeviceCertificates {
        device_certificate: cert.into_bytes(),
        private_key: PrivateKey::from_slice(key.as_bytes()),
        ..aws_set()
    };
    let report = validate(&set, &opts());
    assert_only_failure(
        &report,
        Problem::KeySizeNotAllowed,
        CertificateValidation::InvalidContent,
    );
}

#[test]
fn every_supported_shape_is_valid() {
    // P-384 key (PKCS#8) under a P-384 CA: ECDSA-SHA384 chain.
    let ca = make_ca("Acorn P-384 CA", p384());
    let key = p384();
    let cert = device_cert(&key, &ca);
    let set = DeviceCertificates {
        device_certificate: cert.pem().into_bytes(),
        private_key: PrivateKey::new(key.serialize_pem().into_bytes()),
        ..aws_set()
    };
    let ca_pem = ca.cert.pem();
    assert_valid(&validate(&set, &opts().with_ca(ca_pem.as_bytes())));

    // P-256 key as SEC1 `EC PRIVATE KEY`, certificate as DER.
    use p256::pkcs8::DecodePrivateKey;
    let key = p256();
    let cert = device_cert(&key, &ca);
    let sec1 = p256::SecretKey::from_pkcs8_pem(&key.serialize_pem())
        .unwrap()
        .to_sec1_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let set = DeviceCertificates {
        device_certificate: cert.der().to_vec(),
        private_key: PrivateKey::from_slice(sec1.as_bytes()),
        ..aws_set()
    };
    assert_valid(&validate(&set, &opts().with_ca(ca_pem.as_bytes())));

    // RSA key as PKCS#8, and as PKCS#1 DER; certificate with CRLF, trailing NUL and spaces.
    let aws = aws_set();
    assert_valid(&validate(
        &with_key(&aws, rsa_key(1).pkcs8_pem.as_bytes()),
        &opts(),
    ));
    let der = pem_rfc7468::decode_vec(rsa_key(1).pkcs1_pem.as_bytes())
        .unwrap()
        .1;
    assert_valid(&validate(&with_key(&aws, &der), &opts()));
    let crlf = String::from_utf8(aws.device_certificate.clone())
        .unwrap()
        .replace('\n', "\r\n");
    let mut padded = format!("\n  {crlf}  \n").into_bytes();
    padded.push(0);
    assert_valid(&validate(&with_cert(&aws, padded), &opts()));

    // validate_material (no device id) on the AWS set.
    let report = validate_material(
        &aws.device_certificate,
        &aws.private_key,
        &aws.iot_endpoint,
        &opts(),
    );
    assert_valid(&report);
    assert!(report.check(CheckId::DeviceId).is_none());
}

#[test]
fn bad_device_id() {
    for id in ["", "has space", "slash/id", &"x".repeat(129)] {
        let set = DeviceCertificates {
            device_id: id.to_string(),
            ..aws_set()
        };
        let report = validate(&set, &opts());
        assert_only_failure(
            &report,
            Problem::BadDeviceId,
            CertificateValidation::InvalidContent,
        );
    }
}

#[test]
fn no_panic_on_damaged_input() {
    let set = aws_set();
    let cert = set.device_certificate.clone();
    let key = set.private_key.expose_secret().to_vec();
    let der = rsa_cert_der(&set);
    let ca = rsa_ca().cert.pem();
    let o = opts().with_ca(ca.as_bytes());
    // Every truncation of the certificate PEM and of its DER.
    for len in (0..cert.len()).step_by(7) {
        let r = validate(&with_cert(&set, cert[..len].to_vec()), &o);
        assert!(!r.is_valid());
    }
    for len in 0..der.len() {
        let r = validate(&with_cert(&set, der[..len].to_vec()), &o);
        assert!(!r.is_valid());
    }
    // Every byte of the DER certificate flipped: never a panic, and never valid with the CA.
    for i in 0..der.len() {
        let mut d = der.clone();
        d[i] ^= 0x5a;
        let r = validate(&with_cert(&set, d), &o);
        assert!(!r.is_valid(), "flip at {i} still valid");
    }
    // Truncations of the key PEM and random garbage.
    for len in (0..key.len()).step_by(11) {
        let _ = validate(&with_key(&set, &key[..len]), &o);
    }
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..200 {
        let n = rng.gen_range(0..3000);
        let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        let mut j2 = junk.clone();
        j2.insert(0, 0x30);
        let _ = validate(&with_cert(&set, junk.clone()), &o);
        let _ = validate(&with_key(&set, &j2), &o);
        let _ = validate(&with_cert(&set, j2), &o.with_ca(&junk));
    }
}

#[test]
fn private_key_never_shown() {
    let set = aws_set();
    let key_text = String::from_utf8(set.private_key.expose_secret().to_vec()).unwrap();
    let secret_line = key_text.lines().nth(5).unwrap();
    assert_eq!(
        format!("{:?}", set.private_key),
        "PrivateKey(SecretBox<[u8]>([REDACTED]))"
    );
    let debug = format!("{set:?}");
    assert!(
        !debug.contains(secret_line) && !debug.contains("PRIVATE KEY"),
        "{debug}"
    );
    assert!(debug.contains("[REDACTED]"));
    let report = validate(&set, &opts());
    let shown = format!("{report:?}{}", serde_json::to_string(&report).unwrap());
    assert!(!shown.contains(secret_line));
}

#[test]
fn openssl_style_files_are_read() {
    // `openssl ecparam -genkey` writes an `EC PARAMETERS` block first; `openssl x509 -text`
    // writes a text dump before the certificate; bundles have more certificates after it.
    use p256::pkcs8::DecodePrivateKey;
    let ca = make_ca("Acorn EC CA", p256());
    let key = p256();
    let cert = device_cert(&key, &ca).pem();
    let sec1 = p256::SecretKey::from_pkcs8_pem(&key.serialize_pem())
        .unwrap()
        .to_sec1_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    let key_file = format!(
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
        *sec1
    );
    let cert_file = format!(
        "Certificate:\n    Data:\n        Version: 3 (0x2)\n{cert}{}",
        ca.cert.pem()
    );
    let set = DeviceCertificates {
        device_certificate: cert_file.into_bytes(),
        private_key: PrivateKey::new(key_file.into_bytes()),
        ..aws_set()
    };
    assert_valid(&validate(&set, &opts()));
}

#[test]
fn damaged_rsa_key_is_inconsistent() {
    use der::Encode;
    let set = aws_set();
    let der = pem_rfc7468::decode_vec(set.private_key.expose_secret())
        .unwrap()
        .1;
    let key = pkcs1::RsaPrivateKey::try_from(der.as_slice()).unwrap();
    let mut prime = key.prime1.as_bytes().to_vec();
    let last = prime.len() - 1;
    prime[last] ^= 0x02; // still odd, no longer a factor of n
    let damaged = pkcs1::RsaPrivateKey {
        prime1: pkcs1::UintRef::new(&prime).unwrap(),
        ..key
    }
    .to_der()
    .unwrap();
    let pem = pem_rfc7468::encode_string("RSA PRIVATE KEY", pem_rfc7468::LineEnding::LF, &damaged)
        .unwrap();
    let report = validate(&with_key(&set, pem.as_bytes()), &opts());
    assert_only_failure(
        &report,
        Problem::InconsistentKey,
        CertificateValidation::Corrupted,
    );
}

/// Found by the fuzz target `certs_validate`: an RSA key with one bit flipped in its private
/// exponent or in a CRT part (a worn or half-written flash) was called valid, because only
/// `n = p * q` was checked; TLS then fails at the first signature (ring refuses such a key
/// outright). Every part must agree with the others.
#[test]
fn rsa_key_with_a_damaged_exponent_or_crt_part_is_inconsistent() {
    use der::Encode;
    let set = aws_set();
    let der = pem_rfc7468::decode_vec(set.private_key.expose_secret())
        .unwrap()
        .1;
    let key = pkcs1::RsaPrivateKey::try_from(der.as_slice()).unwrap();
    let flip = |part: pkcs1::UintRef<'_>| {
        let mut bytes = part.as_bytes().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        bytes
    };
    let (d, dp) = (flip(key.private_exponent), flip(key.exponent1));
    let (dq, qinv) = (flip(key.exponent2), flip(key.coefficient));
    let uint = |bytes| pkcs1::UintRef::new(bytes).unwrap();
    let damaged = [
        (
            "d",
            pkcs1::RsaPrivateKey {
                private_exponent: uint(&d),
                ..key.clone()
            },
        ),
        (
            "dP",
            pkcs1::RsaPrivateKey {
                exponent1: uint(&dp),
                ..key.clone()
            },
        ),
        (
            "dQ",
            pkcs1::RsaPrivateKey {
                exponent2: uint(&dq),
                ..key.clone()
            },
        ),
        (
            "qInv",
            pkcs1::RsaPrivateKey {
                coefficient: uint(&qinv),
                ..key.clone()
            },
        ),
    ];
    for (part, damaged) in damaged {
        let pem = pem_rfc7468::encode_string(
            "RSA PRIVATE KEY",
            pem_rfc7468::LineEnding::LF,
            &damaged.to_der().unwrap(),
        )
        .unwrap();
        let report = validate(&with_key(&set, pem.as_bytes()), &opts());
        assert_eq!(
            report.failures(),
            vec![Problem::InconsistentKey],
            "{part} damaged: {report:#?}"
        );
        assert_eq!(report.verdict(), CertificateValidation::Corrupted, "{part}");
    }
}

#[test]
fn der_certificate_ending_in_a_whitespace_or_nul_byte_is_read_as_is() {
    // DER is binary: a signature may end in 0x00, 0x09, 0x0a, 0x0d or 0x20. Keep signing
    // until one does (about 1 in 50; bounded).
    let ca = make_ca("Acorn EC CA", p256());
    let key = p256();
    let der = (0..5_000)
        .map(|_| device_cert(&key, &ca).der().to_vec())
        .find(|d| matches!(d.last(), Some(0x00 | 0x09 | 0x0a | 0x0d | 0x20)))
        .expect("a certificate whose DER ends in a whitespace or NUL byte");
    let set = DeviceCertificates {
        device_certificate: der,
        private_key: PrivateKey::new(key.serialize_pem().into_bytes()),
        ..aws_set()
    };
    let ca_pem = ca.cert.pem();
    assert_valid(&validate(&set, &opts().with_ca(ca_pem.as_bytes())));
}

#[test]
fn rsa_chain_with_sha384_and_sha512_signatures() {
    for alg in [&rcgen::PKCS_RSA_SHA384, &rcgen::PKCS_RSA_SHA512] {
        let ca_key =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&rsa_key(0).pkcs8_pem, alg).unwrap();
        let ca = make_ca("Acorn SHA-2 CA", ca_key);
        let key = p256();
        let set = DeviceCertificates {
            device_certificate: device_cert(&key, &ca).pem().into_bytes(),
            private_key: PrivateKey::new(key.serialize_pem().into_bytes()),
            ..aws_set()
        };
        let ca_pem = ca.cert.pem();
        assert_valid(&validate(&set, &opts().with_ca(ca_pem.as_bytes())));
        // A different CA key under the same name does not verify.
        let other =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&rsa_key(3).pkcs8_pem, alg).unwrap();
        let impostor = make_ca("Acorn SHA-2 CA", other).cert.pem();
        let report = validate(&set, &opts().with_ca(impostor.as_bytes()));
        assert_only_failure(
            &report,
            Problem::UntrustedIssuer,
            CertificateValidation::InvalidContent,
        );
    }
}

#[test]
fn rsa_3072_and_4096_keys_and_cas() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    for bits in [3072, 4096] {
        let mut rng = rand::thread_rng();
        let ca_rsa = rsa::RsaPrivateKey::new(&mut rng, bits).unwrap();
        let dev_rsa = rsa::RsaPrivateKey::new(&mut rng, bits).unwrap();
        let pem8 = |k: &rsa::RsaPrivateKey| k.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let ca = make_ca(
            "Acorn big CA",
            rcgen::KeyPair::from_pem(&pem8(&ca_rsa)).unwrap(),
        );
        let dev_key = rcgen::KeyPair::from_pem(&pem8(&dev_rsa)).unwrap();
        let pkcs1 = dev_rsa.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let set = DeviceCertificates {
            device_certificate: device_cert(&dev_key, &ca).pem().into_bytes(),
            private_key: PrivateKey::from_slice(pkcs1.as_bytes()),
            ..aws_set()
        };
        let ca_pem = ca.cert.pem();
        let report = validate(&set, &opts().with_ca(ca_pem.as_bytes()));
        assert_valid(&report);
        let kind = &report.check(CheckId::KeyType).unwrap().explanation;
        assert!(kind.contains(&format!("RSA-{bits}")), "{kind}");
    }
}
