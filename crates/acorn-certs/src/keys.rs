//! Private and public key parsing: RSA (PKCS#1, PKCS#8) and EC P-256/P-384 (PKCS#8, SEC1).
//!
//! Without the `rsa` feature RSA keys are still read (to name them), but not allowed; without
//! `p384` a P-384 key is an unsupported key type.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1, SECP_384_R_1};
use const_oid::ObjectIdentifier;
use p256::pkcs8::DecodePrivateKey;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use crate::decode::{Failure, KeyFormat};
use crate::Problem;

/// Smallest and largest RSA modulus accepted, in bits.
pub const RSA_BITS: core::ops::RangeInclusive<usize> = 2048..=4096;

/// A key's algorithm and size, as shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum KeyKind {
    /// RSA with a modulus of this many bits.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// EC on NIST P-256 (secp256r1).
    P256,
    /// EC on NIST P-384 (secp384r1).
    P384,
}

impl KeyKind {
    /// True for RSA 2048–4096 and EC P-256/P-384 (RSA only with the `rsa` feature, P-384 only
    /// with `p384`).
    pub fn is_allowed(self) -> bool {
        match self {
            KeyKind::Rsa { bits } => cfg!(feature = "rsa") && RSA_BITS.contains(&bits),
            KeyKind::P256 => true,
            KeyKind::P384 => cfg!(feature = "p384"),
        }
    }
}

/// The key types this build accepts, as shown in messages.
pub(crate) const ALLOWED_KEYS: &str = if cfg!(all(feature = "rsa", feature = "p384")) {
    "RSA 2048–4096 bits and EC P-256/P-384"
} else if cfg!(feature = "rsa") {
    "RSA 2048–4096 bits and EC P-256 (this build has no P-384: feature `p384`)"
} else if cfg!(feature = "p384") {
    "EC P-256/P-384 (this build has no RSA: feature `rsa`)"
} else {
    "EC P-256 (this build, as on the ESP32-C3, has no RSA or P-384: features `rsa`, `p384`)"
};

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::P256 => f.write_str("EC P-256"),
            KeyKind::P384 => f.write_str("EC P-384"),
        }
    }
}

/// A public key, from a certificate or derived from a private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKey {
    /// RSA modulus and exponent, big-endian, without leading zero bytes.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// A P-256 point.
    P256(p256::PublicKey),
    /// A P-384 point.
    #[cfg(feature = "p384")]
    P384(p384::PublicKey),
}

impl PublicKey {
    /// Algorithm and size.
    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa { n, .. } => KeyKind::Rsa { bits: bit_len(n) },
            PublicKey::P256(_) => KeyKind::P256,
            #[cfg(feature = "p384")]
            PublicKey::P384(_) => KeyKind::P384,
        }
    }
}

/// Big-endian bytes without leading zeros.
pub(crate) fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or(&[]).to_vec()
}

/// Bit length of a big-endian unsigned integer.
pub(crate) fn bit_len(bytes: &[u8]) -> usize {
    let stripped = bytes.iter().skip_while(|b| **b == 0).count();
    match bytes.iter().find(|b| **b != 0) {
        Some(first) => (stripped - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

fn bad_der(what: &str, err: impl fmt::Display) -> Failure {
    (
        Problem::BadDer,
        format!(
            "the {what} is not a valid DER structure ({err}): the file is truncated or corrupted"
        ),
    )
}

fn unsupported(what: &str, oid: ObjectIdentifier) -> Failure {
    (
        Problem::UnsupportedKeyType,
        format!("the {what} uses algorithm {oid}, which is not supported: use {ALLOWED_KEYS}"),
    )
}

/// A P-384 key in a build without the `p384` feature.
#[cfg(not(feature = "p384"))]
fn no_p384(what: &str) -> Failure {
    (
        Problem::UnsupportedKeyType,
        format!(
            "the {what} is an EC P-384 key, which this build does not support: use {ALLOWED_KEYS}"
        ),
    )
}

fn rsa_public(n: &[u8], e: &[u8]) -> PublicKey {
    PublicKey::Rsa {
        n: strip_zeros(n),
        e: strip_zeros(e),
    }
}

fn from_pkcs1(der: &[u8]) -> Result<PublicKey, Failure> {
    let key = pkcs1::RsaPrivateKey::try_from(der).map_err(|e| bad_der("private key", e))?;
    // Without big integers (no `rsa` feature) RSA keys are refused by the key type check.
    #[cfg(feature = "rsa")]
    if crate::bigint::product_equals(
        key.prime1.as_bytes(),
        key.prime2.as_bytes(),
        key.modulus.as_bytes(),
    ) == Some(false)
    {
        return Err((
            Problem::InconsistentKey,
            String::from(
                "the RSA private key is damaged: its modulus is not the product of its primes; \
                 restore the key file from the original",
            ),
        ));
    }
    #[cfg(feature = "rsa")]
    if crate::bigint::rsa_parts_agree(&crate::bigint::RsaParts {
        e: key.public_exponent.as_bytes(),
        d: key.private_exponent.as_bytes(),
        p: key.prime1.as_bytes(),
        q: key.prime2.as_bytes(),
        dp: key.exponent1.as_bytes(),
        dq: key.exponent2.as_bytes(),
        qinv: key.coefficient.as_bytes(),
    }) == Some(false)
    {
        return Err((
            Problem::InconsistentKey,
            String::from(
                "the RSA private key is damaged: its exponents or CRT coefficients do not agree \
                 with its primes, so it cannot sign; restore the key file from the original",
            ),
        ));
    }
    Ok(rsa_public(
        key.modulus.as_bytes(),
        key.public_exponent.as_bytes(),
    ))
}

fn from_pkcs8(der: &[u8]) -> Result<PublicKey, Failure> {
    let info = pkcs8::PrivateKeyInfo::try_from(der).map_err(|e| bad_der("private key", e))?;
    let oid = info.algorithm.oid;
    if oid == RSA_ENCRYPTION {
        return from_pkcs1(info.private_key);
    }
    if oid != ID_EC_PUBLIC_KEY {
        return Err(unsupported("private key", oid));
    }
    let curve = info
        .algorithm
        .parameters_oid()
        .map_err(|e| bad_der("private key's curve parameter", e))?;
    if curve == SECP_256_R_1 {
        let key = p256::SecretKey::from_pkcs8_der(der).map_err(|e| bad_der("private key", e))?;
        Ok(PublicKey::P256(key.public_key()))
    } else if curve == SECP_384_R_1 {
        p384_from_pkcs8(der)
    } else {
        Err(unsupported("private key's curve", curve))
    }
}

fn from_sec1(der: &[u8]) -> Result<PublicKey, Failure> {
    let key = sec1::EcPrivateKey::try_from(der).map_err(|e| bad_der("private key", e))?;
    let curve = key.parameters.and_then(|p| p.named_curve());
    let len = key.private_key.len();
    let is_p256 = curve.map_or(len == 32, |c| c == SECP_256_R_1);
    let is_p384 = curve.map_or(len == 48, |c| c == SECP_384_R_1);
    if is_p256 {
        let key = p256::SecretKey::from_sec1_der(der).map_err(|e| bad_der("private key", e))?;
        Ok(PublicKey::P256(key.public_key()))
    } else if is_p384 {
        p384_from_sec1(der)
    } else {
        match curve {
            Some(c) => Err(unsupported("private key's curve", c)),
            None => Err((
                Problem::UnsupportedKeyType,
                String::from("the EC private key names no curve and is not P-256 or P-384"),
            )),
        }
    }
}

#[cfg(feature = "p384")]
fn p384_from_pkcs8(der: &[u8]) -> Result<PublicKey, Failure> {
    let key = p384::SecretKey::from_pkcs8_der(der).map_err(|e| bad_der("private key", e))?;
    Ok(PublicKey::P384(key.public_key()))
}

#[cfg(not(feature = "p384"))]
fn p384_from_pkcs8(_der: &[u8]) -> Result<PublicKey, Failure> {
    Err(no_p384("private key"))
}

#[cfg(feature = "p384")]
fn p384_from_sec1(der: &[u8]) -> Result<PublicKey, Failure> {
    let key = p384::SecretKey::from_sec1_der(der).map_err(|e| bad_der("private key", e))?;
    Ok(PublicKey::P384(key.public_key()))
}

#[cfg(not(feature = "p384"))]
fn p384_from_sec1(_der: &[u8]) -> Result<PublicKey, Failure> {
    Err(no_p384("private key"))
}

/// Parses a decoded private key and returns the public key it belongs to.
///
/// For EC keys the public point is derived from the secret scalar (a stored public point in
/// the key file is ignored); for RSA the modulus and exponent are read from the key.
pub(crate) fn private_key_public(format: KeyFormat, der: &[u8]) -> Result<PublicKey, Failure> {
    match format {
        KeyFormat::Pkcs1 => from_pkcs1(der),
        KeyFormat::Pkcs8 => from_pkcs8(der),
        KeyFormat::Sec1 => from_sec1(der),
        KeyFormat::UnlabelledDer => {
            if pkcs8::PrivateKeyInfo::try_from(der).is_ok() {
                from_pkcs8(der)
            } else if pkcs1::RsaPrivateKey::try_from(der).is_ok() {
                from_pkcs1(der)
            } else if sec1::EcPrivateKey::try_from(der).is_ok() {
                from_sec1(der)
            } else {
                Err((
                    Problem::BadDer,
                    String::from(
                        "the private key is DER but not a PKCS#1, PKCS#8 or SEC1 key \
                         (truncated, corrupted, or encrypted)",
                    ),
                ))
            }
        }
    }
}

/// Reads the public key of a certificate (or CA certificate).
pub(crate) fn spki_public(
    spki: &SubjectPublicKeyInfoOwned,
    what: &str,
) -> Result<PublicKey, Failure> {
    let oid = spki.algorithm.oid;
    let bits = spki.subject_public_key.raw_bytes();
    if oid == RSA_ENCRYPTION {
        let key = pkcs1::RsaPublicKey::try_from(bits).map_err(|e| bad_der(what, e))?;
        return Ok(rsa_public(
            key.modulus.as_bytes(),
            key.public_exponent.as_bytes(),
        ));
    }
    if oid != ID_EC_PUBLIC_KEY {
        return Err(unsupported(what, oid));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    match curve {
        Some(c) if c == SECP_256_R_1 => p256::PublicKey::from_sec1_bytes(bits)
            .map(PublicKey::P256)
            .map_err(|e| bad_der(what, e)),
        #[cfg(feature = "p384")]
        Some(c) if c == SECP_384_R_1 => p384::PublicKey::from_sec1_bytes(bits)
            .map(PublicKey::P384)
            .map_err(|e| bad_der(what, e)),
        #[cfg(not(feature = "p384"))]
        Some(c) if c == SECP_384_R_1 => Err(no_p384(what)),
        Some(c) => Err(unsupported(what, c)),
        None => Err((
            Problem::UnsupportedKeyType,
            format!("the {what}'s EC public key names no supported curve"),
        )),
    }
}
