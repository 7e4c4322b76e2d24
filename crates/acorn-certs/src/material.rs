//! DER material for a TLS stack (rustls, mbedTLS): the certificate and the private key with
//! its container format, decoded from whatever PEM/DER the store holds.

use alloc::string::String;
use alloc::vec::Vec;
use secrecy::{ExposeSecret, SecretSlice};

use crate::decode::{self, KeyFormat};
use crate::secret::secret_bytes;
use crate::{DeviceCertificates, Problem};

/// Why material could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{explanation}")]
pub struct DecodeError {
    /// The problem, as a validation check would report it.
    pub problem: Problem,
    /// A plain explanation.
    pub explanation: String,
}

/// The container format of a private key (what rustls' `PrivateKeyDer` variants are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrivateKeyFormat {
    /// PKCS#1 `RSAPrivateKey`.
    Pkcs1,
    /// PKCS#8 `PrivateKeyInfo`.
    Pkcs8,
    /// SEC1 `ECPrivateKey`.
    Sec1,
}

/// A private key as DER with its format. The DER is a [`SecretSlice<u8>`] (zeroized on drop,
/// `[REDACTED]` in Debug, no `PartialEq`), read through [`ExposeSecret::expose_secret`].
#[derive(Debug)]
pub struct PrivateKeyDer {
    /// The container format.
    pub format: PrivateKeyFormat,
    der: SecretSlice<u8>,
}

impl ExposeSecret<[u8]> for PrivateKeyDer {
    /// The DER bytes. Do not log them.
    fn expose_secret(&self) -> &[u8] {
        self.der.expose_secret()
    }
}

impl DeviceCertificates {
    /// The device certificate as DER (decoding PEM if needed).
    pub fn certificate_der(&self) -> Result<Vec<u8>, DecodeError> {
        decode::certificate(&self.device_certificate, "certificate")
            .map(|(_, der)| der)
            .map_err(|(problem, explanation)| DecodeError {
                problem,
                explanation,
            })
    }

    /// The private key as DER with its format (decoding PEM if needed).
    pub fn private_key_der(&self) -> Result<PrivateKeyDer, DecodeError> {
        let (format, mut der) = decode::private_key(self.private_key.expose_secret()).map_err(
            |(problem, explanation)| DecodeError {
                problem,
                explanation,
            },
        )?;
        let format = match format {
            KeyFormat::Pkcs1 => PrivateKeyFormat::Pkcs1,
            KeyFormat::Pkcs8 => PrivateKeyFormat::Pkcs8,
            KeyFormat::Sec1 => PrivateKeyFormat::Sec1,
            KeyFormat::UnlabelledDer => {
                if pkcs8::PrivateKeyInfo::try_from(der.as_slice()).is_ok() {
                    PrivateKeyFormat::Pkcs8
                } else if pkcs1::RsaPrivateKey::try_from(der.as_slice()).is_ok() {
                    PrivateKeyFormat::Pkcs1
                } else if sec1::EcPrivateKey::try_from(der.as_slice()).is_ok() {
                    PrivateKeyFormat::Sec1
                } else {
                    return Err(DecodeError {
                        problem: Problem::BadDer,
                        explanation: String::from(
                            "the private key is DER but not a PKCS#1, PKCS#8 or SEC1 key",
                        ),
                    });
                }
            }
        };
        Ok(PrivateKeyDer {
            format,
            der: secret_bytes(core::mem::take(&mut *der)),
        })
    }
}
