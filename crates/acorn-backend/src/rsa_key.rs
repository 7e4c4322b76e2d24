//! RSA-2048 key generation for the server-keygen flow (ring, rcgen's backend, cannot make RSA
//! keys). The private key is returned as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), the form AWS IoT
//! `CreateKeysAndCertificate` returns.

use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::EncodePublicKey;

use crate::error::BackendError;
use crate::secret::Secret;

/// Generates an RSA-2048 key: its SubjectPublicKeyInfo for rcgen and its PKCS#1 PEM.
pub(crate) fn generate_rsa_2048() -> Result<(rcgen::SubjectPublicKeyInfo, Secret), BackendError> {
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
    Ok((public, Secret::new(pem.as_str())))
}
