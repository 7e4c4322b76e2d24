//! Checks that a certificate's signature verifies with a CA certificate's public key.
//!
//! RSA PKCS#1 v1.5 verification is done here with `crypto-bigint` (the `rsa` crate pulls in
//! `spin`, which does not build for targets without atomic compare-and-swap such as
//! `riscv32imc`). Verification re-encodes the expected block and compares it whole, the
//! method RFC 8017 §8.2.2 recommends, so no padding is parsed. ECDSA uses `p256`/`p384`.
//! RSA signatures need the `rsa` feature and P-384 keys the `p384` feature; a build without
//! them reports such a chain as an unsupported signature, in so many words.

use alloc::format;
use alloc::string::String;
#[cfg(feature = "rsa")]
use alloc::vec;
use alloc::vec::Vec;

use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, SHA_256_WITH_RSA_ENCRYPTION,
    SHA_384_WITH_RSA_ENCRYPTION, SHA_512_WITH_RSA_ENCRYPTION,
};
#[cfg(feature = "rsa")]
use crypto_bigint::{U2048, U3072, U4096};
use der::Encode;
#[cfg(feature = "rsa")]
use sha2::Sha512;
use sha2::{Digest, Sha256, Sha384};
use signature::hazmat::PrehashVerifier;
use x509_cert::Certificate;

#[cfg(feature = "rsa")]
use crate::bigint::modpow;
use crate::decode::Failure;
#[cfg(feature = "rsa")]
use crate::keys::bit_len;
use crate::keys::{spki_public, PublicKey};
use crate::{names, Problem};

/// DigestInfo prefixes (RFC 8017 §9.2 note 1).
#[cfg(feature = "rsa")]
const SHA256_PREFIX: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
#[cfg(feature = "rsa")]
const SHA384_PREFIX: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
#[cfg(feature = "rsa")]
const SHA512_PREFIX: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

enum Scheme {
    #[cfg(feature = "rsa")]
    Rsa(&'static [u8]),
    Ecdsa,
}

fn untrusted(explanation: String) -> Failure {
    (Problem::UntrustedIssuer, explanation)
}

/// Verifies `cert`'s signature with `ca`'s public key; the names must match too.
pub(crate) fn verify(cert: &Certificate, ca: &Certificate) -> Result<(), Failure> {
    let issuer = &cert.tbs_certificate.issuer;
    let ca_subject = &ca.tbs_certificate.subject;
    if issuer != ca_subject {
        return Err(untrusted(format!(
            "the certificate was issued by `{}`, but the CA given is `{}`: use the CA that \
             issued this certificate",
            names::display(issuer),
            names::display(ca_subject)
        )));
    }
    let alg = cert.signature_algorithm.oid;
    let tbs = cert.tbs_certificate.to_der().map_err(|e| {
        (
            Problem::BadDer,
            format!("the certificate could not be re-encoded for signature checking ({e})"),
        )
    })?;
    let is_rsa = alg == SHA_256_WITH_RSA_ENCRYPTION
        || alg == SHA_384_WITH_RSA_ENCRYPTION
        || alg == SHA_512_WITH_RSA_ENCRYPTION;
    let (scheme, digest): (Scheme, Vec<u8>) = if is_rsa {
        rsa_scheme(alg, &tbs)?
    } else if alg == ECDSA_WITH_SHA_256 {
        (Scheme::Ecdsa, Sha256::digest(&tbs).to_vec())
    } else if alg == ECDSA_WITH_SHA_384 {
        (Scheme::Ecdsa, Sha384::digest(&tbs).to_vec())
    } else {
        return Err((
            Problem::UnsupportedSignature,
            format!(
                "the certificate is signed with algorithm {alg}; chain checks support RSA \
                 PKCS#1 v1.5 with SHA-256/384/512 and ECDSA with SHA-256/384"
            ),
        ));
    };
    let signature = cert.signature.raw_bytes();
    let ca_key = spki_public(
        &ca.tbs_certificate.subject_public_key_info,
        "CA certificate",
    )
    .map_err(|(_, why)| (Problem::UnreadableCa, why))?;
    let ok = match (scheme, &ca_key) {
        #[cfg(feature = "rsa")]
        (Scheme::Rsa(prefix), PublicKey::Rsa { n, e }) => {
            rsa_verify(n, e, prefix, &digest, signature)
        }
        (Scheme::Ecdsa, PublicKey::P256(key)) => p256::ecdsa::Signature::from_der(signature)
            .ok()
            .is_some_and(|sig| {
                p256::ecdsa::VerifyingKey::from(key)
                    .verify_prehash(&digest, &sig)
                    .is_ok()
            }),
        #[cfg(feature = "p384")]
        (Scheme::Ecdsa, PublicKey::P384(key)) => p384::ecdsa::Signature::from_der(signature)
            .ok()
            .is_some_and(|sig| {
                p384::ecdsa::VerifyingKey::from(key)
                    .verify_prehash(&digest, &sig)
                    .is_ok()
            }),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(untrusted(format!(
            "the certificate names `{}` as issuer, but its signature does not verify with the \
             given CA's {} key: it was not issued by this CA",
            names::display(issuer),
            ca_key.kind()
        )))
    }
}

/// The RSA PKCS#1 v1.5 scheme and digest of `alg` over `tbs`.
#[cfg(feature = "rsa")]
fn rsa_scheme(alg: const_oid::ObjectIdentifier, tbs: &[u8]) -> Result<(Scheme, Vec<u8>), Failure> {
    Ok(if alg == SHA_256_WITH_RSA_ENCRYPTION {
        (Scheme::Rsa(SHA256_PREFIX), Sha256::digest(tbs).to_vec())
    } else if alg == SHA_384_WITH_RSA_ENCRYPTION {
        (Scheme::Rsa(SHA384_PREFIX), Sha384::digest(tbs).to_vec())
    } else {
        (Scheme::Rsa(SHA512_PREFIX), Sha512::digest(tbs).to_vec())
    })
}

/// A build without the `rsa` feature cannot check RSA signatures.
#[cfg(not(feature = "rsa"))]
fn rsa_scheme(alg: const_oid::ObjectIdentifier, _tbs: &[u8]) -> Result<(Scheme, Vec<u8>), Failure> {
    Err((
        Problem::UnsupportedSignature,
        format!(
            "the certificate is signed with RSA (algorithm {alg}), which this build cannot \
             check: it verifies ECDSA only (build acorn-certs with the `rsa` feature)"
        ),
    ))
}

/// RSASSA-PKCS1-v1_5 verification (RFC 8017 §8.2.2) for moduli up to 4096 bits.
#[cfg(feature = "rsa")]
fn rsa_verify(n: &[u8], e: &[u8], prefix: &[u8], digest: &[u8], signature: &[u8]) -> bool {
    let bits = bit_len(n);
    let k = n.len();
    if signature.len() != k || bits < 1024 {
        return false;
    }
    let m = if bits <= 2048 {
        modpow::<{ U2048::LIMBS }>(signature, e, n)
    } else if bits <= 3072 {
        modpow::<{ U3072::LIMBS }>(signature, e, n)
    } else if bits <= 4096 {
        modpow::<{ U4096::LIMBS }>(signature, e, n)
    } else {
        None
    };
    let Some(m) = m else { return false };
    // EM = 0x00 || 0x01 || PS (0xff..., at least 8) || 0x00 || DigestInfo
    let t_len = prefix.len() + digest.len();
    if k < t_len + 11 {
        return false;
    }
    let mut expected = vec![0xffu8; k];
    if let Some(b) = expected.get_mut(0) {
        *b = 0x00;
    }
    if let Some(b) = expected.get_mut(1) {
        *b = 0x01;
    }
    let t_start = k - t_len;
    if let Some(b) = expected.get_mut(t_start - 1) {
        *b = 0x00;
    }
    if let Some(t) = expected.get_mut(t_start..) {
        let (p, d) = t.split_at_mut(prefix.len());
        p.copy_from_slice(prefix);
        d.copy_from_slice(digest);
    }
    m.get(m.len().saturating_sub(k)..) == Some(expected.as_slice())
}
