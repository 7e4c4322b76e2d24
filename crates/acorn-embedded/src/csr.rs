//! A device key and its certificate request, made on the device (features `register` and
//! `rotation`): a P-256 key from the platform's cryptographic RNG (the hardware RNG on the
//! chip) and a PEM PKCS#10 request for `CN=<device id>` signed with it. The key never leaves
//! the device; it is stored as SEC1 PEM (`EC PRIVATE KEY`), which the certificate store reads
//! back and which is smaller to make than PKCS#8.

use alloc::string::{String, ToString};
use alloc::vec;

use acorn_certs::PrivateKey;
use const_oid::ObjectIdentifier;
use der::asn1::{BitString, SetOfVec, Utf8StringRef};
use der::{Any, Encode};
use rand_core::{CryptoRng, RngCore};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, CertReqInfo, Version};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP_256_R_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

/// Why a key or request could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The device id is not `[A-Za-z0-9_-]{1,128}`.
    #[error("device id `{0}` must be 1 to 128 letters, digits, `_` or `-`")]
    BadDeviceId(String),
    /// DER or PEM encoding failed (should not happen).
    #[error("the certificate request could not be encoded: {0}")]
    Encoding(String),
}

/// A new P-256 key from `rng` and a PEM PKCS#10 request for `CN=<device_id>` signed with it.
pub fn key_and_csr<R: RngCore + CryptoRng>(
    rng: &mut R,
    device_id: &str,
) -> Result<(p256::SecretKey, String), CsrError> {
    if !acorn_certs::is_valid_device_id(device_id) {
        return Err(CsrError::BadDeviceId(device_id.to_string()));
    }
    let csr_err = |e: der::Error| CsrError::Encoding(e.to_string());
    let key = p256::SecretKey::random(rng);
    let point = key.public_key().to_sec1_bytes();
    let cn = AttributeTypeAndValue {
        oid: COMMON_NAME,
        value: Any::encode_from(&Utf8StringRef::new(device_id).map_err(csr_err)?)
            .map_err(csr_err)?,
    };
    let rdn = RelativeDistinguishedName(SetOfVec::try_from(vec![cn]).map_err(csr_err)?);
    let info = CertReqInfo {
        version: Version::V1,
        subject: RdnSequence(vec![rdn]),
        public_key: SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: ID_EC_PUBLIC_KEY,
                parameters: Some(Any::encode_from(&SECP_256_R_1).map_err(csr_err)?),
            },
            subject_public_key: BitString::from_bytes(&point).map_err(csr_err)?,
        },
        attributes: SetOfVec::new(),
    };
    let signed = info.to_der().map_err(csr_err)?;
    let signature: p256::ecdsa::DerSignature =
        signature::Signer::sign(&p256::ecdsa::SigningKey::from(&key), &signed);
    let request = CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA256,
            parameters: None,
        },
        signature: BitString::from_bytes(signature.as_bytes()).map_err(csr_err)?,
    };
    let der = request.to_der().map_err(csr_err)?;
    let pem = der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &der)
        .map_err(|e| CsrError::Encoding(e.to_string()))?;
    Ok((key, pem))
}

/// `key` as SEC1 PEM (`EC PRIVATE KEY`), in a [`PrivateKey`] (wiped when dropped).
pub fn sec1_pem(key: &p256::SecretKey) -> Result<PrivateKey, CsrError> {
    let der = key
        .to_sec1_der()
        .map_err(|e| CsrError::Encoding(e.to_string()))?;
    der::pem::encode_string("EC PRIVATE KEY", der::pem::LineEnding::LF, &der)
        .map(|pem| PrivateKey::new(pem.into_bytes()))
        .map_err(|e| CsrError::Encoding(e.to_string()))
}
