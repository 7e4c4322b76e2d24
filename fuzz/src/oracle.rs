//! Oracles: each decides a property with other code than the code under test.
//!
//! A certificate and a private key are a *pair* when the RustCrypto key crates (`p256`,
//! `p384`, `rsa`) read the key, find it consistent (an RSA key's exponents invert each other
//! modulo its primes), and derive from it the public key the certificate holds. acorn-certs
//! decides the same with its own parsing and checks; the targets assert that it never calls a
//! set valid that these crates do not take for a pair.

use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

/// A certificate's public key, as the key crates read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Public {
    /// EC P-256.
    P256(p256::PublicKey),
    /// EC P-384.
    P384(p384::PublicKey),
    /// RSA.
    Rsa(rsa::RsaPublicKey),
}

/// The first PEM block of `text` (from its `-----BEGIN ` through the `-----` closing its END
/// line), or `None` when there is no BEGIN line.
fn first_block(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(text, b"-----BEGIN ")?;
    let text = &text[start..];
    let end = find(text, b"-----END ")? + 9;
    let close = end + find(&text[end..], b"-----")? + 5;
    Some((&text[..close], &text[close..]))
}

/// DER and label of a PEM block.
fn pem(block: &[u8]) -> Option<(String, Vec<u8>)> {
    let (label, der) = pem_rfc7468::decode_vec(block).ok()?;
    Some((label.to_string(), der))
}

/// The DER of a certificate given as DER (first byte 0x30) or as PEM whose first block is a
/// `CERTIFICATE`.
pub fn certificate_der(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.first() == Some(&0x30) {
        return Some(bytes.to_vec());
    }
    let (block, _) = first_block(bytes)?;
    match pem(block)? {
        (label, der) if label == "CERTIFICATE" => Some(der),
        _ => None,
    }
}

/// The certificate's public key, read by the key crates from its SubjectPublicKeyInfo.
pub fn certificate_public(der: &[u8]) -> Result<Public, String> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| format!("certificate: {e}"))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("spki: {e}"))?;
    if let Ok(k) = p256::PublicKey::from_public_key_der(&spki) {
        return Ok(Public::P256(k));
    }
    if let Ok(k) = p384::PublicKey::from_public_key_der(&spki) {
        return Ok(Public::P384(k));
    }
    rsa::RsaPublicKey::from_public_key_der(&spki)
        .map(Public::Rsa)
        .map_err(|e| {
            format!("the key crates read no P-256, P-384 or RSA key in the certificate ({e})")
        })
}

/// The DER candidates of a private key file: the DER itself, or the first PEM block that is
/// not `EC PARAMETERS`.
fn key_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    let (mut block, rest) = first_block(bytes).ok_or("no PEM block")?;
    // Skipped by its BEGIN line alone, as tools that write it expect (its content is not used).
    if block.starts_with(b"-----BEGIN EC PARAMETERS-----") {
        block = first_block(rest).ok_or("nothing after EC PARAMETERS")?.0;
    }
    let (label, der) = pem(block).ok_or("undecodable PEM")?;
    match label.as_str() {
        "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => Ok(der),
        other => Err(format!("PEM label {other}")),
    }
}

/// Reads an RSA private key (PKCS#8 or PKCS#1 DER) and checks that all its parts agree: the
/// modulus is the product of the primes, the private exponent inverts the public one modulo
/// each prime less one (what `rsa` checks), and the CRT parts signers use (ring among them) are
/// those of the key: `dP = d mod (p-1)`, `dQ = d mod (q-1)`, `qInv * q = 1 mod p`.
fn rsa_key(der: &[u8]) -> Result<rsa::RsaPublicKey, String> {
    const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
    let pkcs1 = match rsa::pkcs8::PrivateKeyInfo::try_from(der) {
        Ok(info) if info.algorithm.oid.to_string() == RSA_ENCRYPTION => info.private_key,
        Ok(info) => return Err(format!("PKCS#8 key of algorithm {}", info.algorithm.oid)),
        Err(_) => der,
    };
    let k = rsa::pkcs1::RsaPrivateKey::try_from(pkcs1)
        .map_err(|e| format!("not an RSA private key ({e})"))?;
    let big = |u: rsa::pkcs1::UintRef<'_>| rsa::BigUint::from_bytes_be(u.as_bytes());
    let (n, e, d) = (
        big(k.modulus),
        big(k.public_exponent),
        big(k.private_exponent),
    );
    let (p, q) = (big(k.prime1), big(k.prime2));
    let (dp, dq, qinv) = (big(k.exponent1), big(k.exponent2), big(k.coefficient));
    let key = rsa::RsaPrivateKey::from_components(
        n.clone(),
        e.clone(),
        d.clone(),
        vec![p.clone(), q.clone()],
    )
    .map_err(|e| format!("the rsa crate refuses the key ({e})"))?;
    key.validate()
        .map_err(|e| format!("the RSA private key is inconsistent ({e})"))?;
    let one = rsa::BigUint::from(1u8);
    if p <= one || q <= one {
        return Err("a prime is 0 or 1".into());
    }
    if dp != &d % (&p - &one) || dq != &d % (&q - &one) || (&qinv * &q) % &p != one {
        return Err("the RSA key's CRT parts (dP, dQ, qInv) do not agree with the key".into());
    }
    Ok(rsa::RsaPublicKey::new_unchecked(n, e))
}

/// Checks that `key` (PEM or DER) is a consistent private key whose public half is `public`.
pub fn key_is_for(key: &[u8], public: &Public) -> Result<(), String> {
    let der = key_der(key)?;
    let derived = match public {
        Public::P256(_) => p256::SecretKey::from_pkcs8_der(&der)
            .or_else(|_| p256::SecretKey::from_sec1_der(&der))
            .map(|k| Public::P256(k.public_key()))
            .map_err(|e| format!("not a P-256 private key ({e})"))?,
        Public::P384(_) => p384::SecretKey::from_pkcs8_der(&der)
            .or_else(|_| p384::SecretKey::from_sec1_der(&der))
            .map(|k| Public::P384(k.public_key()))
            .map_err(|e| format!("not a P-384 private key ({e})"))?,
        Public::Rsa(_) => Public::Rsa(rsa_key(&der)?),
    };
    if &derived == public {
        Ok(())
    } else {
        Err("the private key's public half is not the certificate's key".into())
    }
}

/// Panics unless `cert` and `key` are a pair (see the module documentation).
pub fn assert_pair(cert: &[u8], key: &[u8], context: &str) {
    let der = certificate_der(cert)
        .unwrap_or_else(|| panic!("{context}: the oracle cannot decode the certificate"));
    let public = certificate_public(&der).unwrap_or_else(|e| panic!("{context}: {e}"));
    if let Err(e) = key_is_for(key, &public) {
        panic!("{context}: not a certificate and its key: {e}");
    }
}

/// SHA-256 of `der`, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Host name syntax: at most 253 characters, dot-separated labels of 1 to 63 letters, digits
/// and `-`, not starting or ending with `-`.
pub fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What an AWS IoT ATS data endpoint must at least look like:
/// `<prefix>-ats.iot.<region>.amazonaws.com` (or `.com.cn`).
pub fn looks_like_aws_ats(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_suffix(".amazonaws.com")
        .or_else(|| lower.strip_suffix(".amazonaws.com.cn"))
    else {
        return false;
    };
    let labels: Vec<&str> = rest.split('.').collect();
    labels.len() == 3 && labels[0].ends_with("-ats") && labels[0].len() > 4 && labels[1] == "iot"
}

/// A device id: 1 to 128 of `A-Z a-z 0-9 _ -`.
pub fn is_device_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `notBefore` and `notAfter` of a certificate, Unix seconds.
pub fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let v = &cert.tbs_certificate.validity;
    Some((
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    ))
}

/// Whether the certificate says it is a CA (basicConstraints cA = true), read by x509-parser.
pub fn is_ca(der: &[u8]) -> Option<bool> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(
        cert.basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca),
    )
}

/// Whether `cert`'s signature verifies with `ca`'s public key, checked by x509-parser (ring).
pub fn signed_by(cert_der: &[u8], ca_der: &[u8]) -> Result<bool, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| format!("certificate: {e}"))?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der).map_err(|e| format!("CA: {e}"))?;
    Ok(cert.verify_signature(Some(ca.public_key())).is_ok())
}
