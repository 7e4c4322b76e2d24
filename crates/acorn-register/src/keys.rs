//! The device's key pair and its certificate signing request (PKCS#10), made on the device so
//! the private key never leaves it.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use crate::RegistrationError;
use acorn_transport::SecretString;
use secrecy::ExposeSecret as _;

pub use acorn_api::KeyType;

/// A key pair made on the device and the CSR for it.
pub struct DeviceKey {
    /// The private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub private_key_pem: SecretString,
    /// The certificate request, PEM, subject `CN=<device id>`, no extensions.
    pub csr_pem: String,
}

impl core::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("private_key_pem", &self.private_key_pem)
            .field("csr_pem_len", &self.csr_pem.len())
            .finish()
    }
}

/// Makes a key pair of `key_type` and a CSR with subject `CN=<device_id>`. CPU-heavy for RSA
/// (run it on a blocking thread in async code).
pub fn make_device_key(device_id: &str, key_type: KeyType) -> Result<DeviceKey, RegistrationError> {
    let fail = |detail: String| RegistrationError::KeyGeneration {
        key_type: key_type.label(),
        detail,
    };
    let (key_pair, private_key_pem) = match key_type {
        KeyType::P256 => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| fail(e.to_string()))?;
            let pem = SecretString::from(key.serialize_pem());
            (key, pem)
        }
        KeyType::Rsa2048 => {
            let mut rng = rand::thread_rng();
            let private =
                rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| fail(e.to_string()))?;
            let pem = private
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| fail(e.to_string()))?;
            let pem = SecretString::from(pem.as_str().to_owned());
            let key =
                KeyPair::from_pkcs8_pem_and_sign_algo(pem.expose_secret(), &rcgen::PKCS_RSA_SHA256)
                    .map_err(|e| fail(e.to_string()))?;
            (key, pem)
        }
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, device_id);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key_pair)
        .map_err(|e| fail(format!("CSR: {e}")))?;
    let csr_pem = csr.pem().map_err(|e| fail(format!("CSR PEM: {e}")))?;
    Ok(DeviceKey {
        private_key_pem,
        csr_pem,
    })
}
