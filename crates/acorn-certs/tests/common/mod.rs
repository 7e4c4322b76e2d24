//! Test material made at test time: CAs, device certificates and keys (rcgen + rsa).
#![allow(dead_code)]

use std::sync::OnceLock;

use acorn_certs::{DeviceCertificates, PrivateKey};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, PublicKeyData, SignatureAlgorithm,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

/// 2026-06-01T00:00:00Z: "now" for the tests.
pub const NOW: u64 = 1_780_272_000;
pub const DAY: u64 = 86_400;
pub const AWS_ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com";

/// An RSA key: PKCS#1 PEM (as AWS issues it), PKCS#8 PEM, and an rcgen key pair.
pub struct RsaKey {
    pub pkcs1_pem: String,
    pub pkcs8_pem: String,
    pub key_pair: KeyPair,
}

fn make_rsa(bits: usize) -> RsaKey {
    let mut rng = rand::thread_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, bits).expect("rsa keygen");
    let pkcs1_pem = key.to_pkcs1_pem(LineEnding::LF).expect("pkcs1").to_string();
    let pkcs8_pem = key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string();
    let key_pair = KeyPair::from_pem(&pkcs8_pem).expect("rcgen rsa key");
    RsaKey {
        pkcs1_pem,
        pkcs8_pem,
        key_pair,
    }
}

/// RSA-2048 keys, generated once per test binary (keygen is slow in debug builds).
pub fn rsa_key(index: usize) -> &'static RsaKey {
    static KEYS: [OnceLock<RsaKey>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    KEYS[index].get_or_init(|| make_rsa(2048))
}

/// A CA: certificate and key.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

pub fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acorn Pups test");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    params
}

pub fn make_ca(name: &str, key: KeyPair) -> Ca {
    let cert = ca_params(name).self_signed(&key).expect("ca");
    Ca { cert, key }
}

pub fn ec_key(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).expect("ec keygen")
}

pub fn p256() -> KeyPair {
    ec_key(&PKCS_ECDSA_P256_SHA256)
}

pub fn p384() -> KeyPair {
    ec_key(&PKCS_ECDSA_P384_SHA384)
}

/// Device certificate parameters valid from `from` to `to` (Unix seconds).
pub fn device_params(device_id: &str, from: u64, to: u64) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    // AWS device certificates carry just this subject.
    params
        .distinguished_name
        .push(DnType::CommonName, "AWS IoT Certificate");
    let _ = device_id;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from as i64).expect("time");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(to as i64).expect("time");
    params.is_ca = IsCa::ExplicitNoCa;
    params
}

/// A device certificate for `subject_key`, issued by `ca`, valid around `NOW`.
pub fn device_cert(subject_key: &impl PublicKeyData, ca: &Ca) -> rcgen::Certificate {
    device_cert_valid(subject_key, ca, NOW - 30 * DAY, NOW + 3650 * DAY)
}

pub fn device_cert_valid(
    subject_key: &impl PublicKeyData,
    ca: &Ca,
    from: u64,
    to: u64,
) -> rcgen::Certificate {
    device_params("dev", from, to)
        .signed_by(subject_key, &ca.cert, &ca.key)
        .expect("device cert")
}

/// The RSA CA used for AWS-shaped sets.
pub fn rsa_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let key = KeyPair::from_pem(&rsa_key(0).pkcs8_pem).expect("ca key");
        make_ca("Acorn Test Root CA", key)
    })
}

/// An AWS-shaped set: RSA-2048 PKCS#1 key, RSA-signed certificate, `-ats` endpoint.
pub fn aws_set() -> DeviceCertificates {
    let key = rsa_key(1);
    let cert = device_cert(&key.key_pair, rsa_ca());
    DeviceCertificates {
        device_certificate: cert.pem().into_bytes(),
        private_key: PrivateKey::new(key.pkcs1_pem.clone().into_bytes()),
        iot_endpoint: AWS_ENDPOINT.to_string(),
        device_id: "acorn-0001".to_string(),
    }
}

/// An EC P-256 set (PKCS#8 key), issued by a P-256 CA.
pub fn ec_set() -> DeviceCertificates {
    let ca = make_ca("Acorn EC CA", p256());
    let key = p256();
    let cert = device_cert(&key, &ca);
    DeviceCertificates {
        device_certificate: cert.pem().into_bytes(),
        private_key: PrivateKey::new(key.serialize_pem().into_bytes()),
        iot_endpoint: AWS_ENDPOINT.to_string(),
        device_id: "acorn-ec-01".to_string(),
    }
}

pub static RSA_SHA256: &SignatureAlgorithm = &PKCS_RSA_SHA256;
