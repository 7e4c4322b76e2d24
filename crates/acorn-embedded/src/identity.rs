//! The device's TLS client identity as this transport needs it: the certificate as DER and a
//! P-256 private key. RSA (and P-384) identities are refused up front, before any connection,
//! with a message naming the key type this transport needs.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use acorn_certs::{DeviceCertificates, PrivateKeyFormat};
use const_oid::ObjectIdentifier;
use der::Decode;
use p256::pkcs8::DecodePrivateKey;
use secrecy::ExposeSecret;

use crate::error::IdentityError;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP_256_R_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP_384_R_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The key type this transport signs with (embedded-tls client authentication).
pub const REQUIRED_KEY_TYPE: &str = "EC P-256 (secp256r1)";

/// A client identity for [`crate::tls`]: the device certificate (DER) and its P-256 key.
///
/// The key is zeroized on drop (`p256::SecretKey`), and `Debug` never shows it.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_der: Vec<u8>,
    key: p256::SecretKey,
    device_id: String,
    endpoint: String,
}

impl TlsIdentity {
    /// From a loaded certificate set (`acorn_certs::CertStore::load` on the device, or an NVS
    /// image on a host). Checks that the key is P-256 and that it belongs to the certificate.
    pub fn from_certificates(certs: &DeviceCertificates) -> Result<Self, IdentityError> {
        let cert_der = certs
            .certificate_der()
            .map_err(|e| IdentityError::Certificate {
                detail: e.explanation,
            })?;
        let key_der = certs.private_key_der().map_err(|e| IdentityError::Key {
            detail: e.explanation,
        })?;
        let key = p256_key(key_der.format, key_der.expose_secret())?;
        let identity = TlsIdentity {
            cert_der,
            key,
            device_id: certs.device_id.clone(),
            endpoint: certs.iot_endpoint.clone(),
        };
        identity.check_key_matches()?;
        Ok(identity)
    }

    /// From a DER certificate and a DER private key (PKCS#8 or SEC1), for callers that hold
    /// them already. `device_id` and `endpoint` are informational.
    pub fn from_der(
        cert_der: Vec<u8>,
        key_der: &[u8],
        device_id: &str,
        endpoint: &str,
    ) -> Result<Self, IdentityError> {
        let format = if pkcs8_like(key_der) {
            PrivateKeyFormat::Pkcs8
        } else {
            PrivateKeyFormat::Sec1
        };
        let key = p256_key(format, key_der)?;
        let identity = TlsIdentity {
            cert_der,
            key,
            device_id: device_id.into(),
            endpoint: endpoint.into(),
        };
        identity.check_key_matches()?;
        Ok(identity)
    }

    /// The device certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The device id the identity was stored with.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The IoT endpoint stored with the identity.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn signing_key(&self) -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from(&self.key)
    }

    fn check_key_matches(&self) -> Result<(), IdentityError> {
        let cert = x509_cert::Certificate::from_der(&self.cert_der).map_err(|e| {
            IdentityError::Certificate {
                detail: alloc::format!("not an X.509 certificate ({e})"),
            }
        })?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(IdentityError::UnsupportedKeyType {
                found: key_name(spki.algorithm.oid, None),
            });
        }
        let public = p256::PublicKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
            .map_err(|_| IdentityError::UnsupportedKeyType {
                found: "an EC key that is not P-256 (in the certificate)",
            })?;
        if public != self.key.public_key() {
            return Err(IdentityError::KeyMismatch);
        }
        Ok(())
    }
}

fn pkcs8_like(der: &[u8]) -> bool {
    p256::pkcs8::PrivateKeyInfo::try_from(der).is_ok()
}

fn key_name(oid: ObjectIdentifier, curve: Option<ObjectIdentifier>) -> &'static str {
    if oid == RSA_ENCRYPTION {
        "RSA"
    } else if curve == Some(SECP_384_R_1) {
        "EC P-384"
    } else if oid == ID_EC_PUBLIC_KEY {
        "an EC key on a curve other than P-256"
    } else {
        "an unsupported key algorithm"
    }
}

fn p256_key(format: PrivateKeyFormat, der: &[u8]) -> Result<p256::SecretKey, IdentityError> {
    match format {
        PrivateKeyFormat::Pkcs1 => Err(IdentityError::UnsupportedKeyType { found: "RSA" }),
        PrivateKeyFormat::Pkcs8 => {
            let info =
                p256::pkcs8::PrivateKeyInfo::try_from(der).map_err(|e| IdentityError::Key {
                    detail: alloc::format!("not a PKCS#8 key ({e})"),
                })?;
            let curve = info.algorithm.parameters_oid().ok();
            if info.algorithm.oid != ID_EC_PUBLIC_KEY || curve != Some(SECP_256_R_1) {
                return Err(IdentityError::UnsupportedKeyType {
                    found: key_name(info.algorithm.oid, curve),
                });
            }
            p256::SecretKey::from_pkcs8_der(der).map_err(|e| IdentityError::Key {
                detail: alloc::format!("the P-256 key is malformed ({e})"),
            })
        }
        PrivateKeyFormat::Sec1 => {
            let key = sec1::EcPrivateKey::try_from(der).map_err(|e| IdentityError::Key {
                detail: alloc::format!("not a SEC1 EC key ({e})"),
            })?;
            let curve = key.parameters.and_then(|p| p.named_curve());
            let is_p256 = curve.map_or(key.private_key.len() == 32, |c| c == SECP_256_R_1);
            if !is_p256 {
                return Err(IdentityError::UnsupportedKeyType {
                    found: key_name(ID_EC_PUBLIC_KEY, curve),
                });
            }
            p256::SecretKey::from_sec1_der(der).map_err(|e| IdentityError::Key {
                detail: alloc::format!("the P-256 key is malformed ({e})"),
            })
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_der_len", &self.cert_der.len())
            .field("key", &"<redacted>")
            .field("device_id", &self.device_id)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}
