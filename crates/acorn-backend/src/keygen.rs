//! Key generation for the server-keygen flow, service identities and the server certificate.
//!
//! Keys are made with RustCrypto (`p256`, `rsa`), whose secret types zeroize on drop, and only
//! the public half goes to rcgen for signing: rcgen's `KeyPair` (and ring's key inside it)
//! cannot be wiped, so no transient private key is held in one. RSA keys are returned as
//! PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`, the form AWS IoT `CreateKeysAndCertificate` returns),
//! P-256 keys as PKCS#8 PEM.

use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::EncodePublicKey;

use crate::error::BackendError;
use secrecy::SecretString;

/// Generates a P-256 key: its SubjectPublicKeyInfo for rcgen and its PKCS#8 PEM.
pub(crate) fn generate_p256() -> Result<(rcgen::SubjectPublicKeyInfo, SecretString), BackendError> {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let fail = |detail: String| BackendError::KeyGeneration {
        key_type: "P-256",
        detail,
    };
    let private = p256::SecretKey::random(&mut rand::thread_rng());
    let pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| fail(e.to_string()))?;
    let spki = private
        .public_key()
        .to_public_key_der()
        .map_err(|e| fail(e.to_string()))?;
    let public =
        rcgen::SubjectPublicKeyInfo::from_der(spki.as_bytes()).map_err(|e| fail(e.to_string()))?;
    Ok((public, SecretString::from(pem.as_str())))
}

/// Generates an RSA-2048 key: its SubjectPublicKeyInfo for rcgen and its PKCS#1 PEM.
pub(crate) fn generate_rsa_2048(
) -> Result<(rcgen::SubjectPublicKeyInfo, SecretString), BackendError> {
    let fail = |detail: String| BackendError::KeyGeneration {
        key_type: "RSA-2048",
        detail,
    };
    let mut rng = rand::thread_rng();
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| fail(e.to_string()))?;
    let pem = private
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| fail(e.to_string()))?;
    let spki = private
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| fail(e.to_string()))?;
    let public =
        rcgen::SubjectPublicKeyInfo::from_der(spki.as_bytes()).map_err(|e| fail(e.to_string()))?;
    Ok((public, SecretString::from(pem.as_str())))
}
