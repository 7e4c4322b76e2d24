//! [`TrustRoots`]: which CAs may sign the broker's certificate.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;

use crate::error::ConfigError;

/// Amazon Root CA 1 (RSA 2048), the root of AWS IoT Core's ATS endpoints.
pub const AMAZON_ROOT_CA_1_PEM: &str = include_str!("../certs/AmazonRootCA1.pem");
/// Amazon Root CA 3 (ECDSA P-256), which AWS recommends trusting as well.
pub const AMAZON_ROOT_CA_3_PEM: &str = include_str!("../certs/AmazonRootCA3.pem");

/// The pinned roots the server certificate must chain to. Never the system store.
#[derive(Debug, Clone, Default)]
pub enum TrustRoots {
    /// Amazon Root CA 1 and 3, built in (the default, for AWS IoT Core).
    #[default]
    Amazon,
    /// CA certificates of a local broker (`--ca FILE`).
    Custom(Vec<CertificateDer<'static>>),
}

impl TrustRoots {
    /// All CERTIFICATE blocks of `pem`; at least one is required.
    pub fn from_pem(pem: &str, source_name: &str) -> Result<Self, ConfigError> {
        let certs = parse_pem(pem, source_name)?;
        Ok(Self::Custom(certs))
    }

    /// Reads a PEM file of CA certificates.
    pub fn from_pem_file(path: &Path) -> Result<Self, ConfigError> {
        let pem = std::fs::read_to_string(path).map_err(|error| ConfigError::RootsFile {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_pem(&pem, &path.display().to_string())
    }

    /// The roots as a rustls store; fails if none of them is a usable trust anchor.
    pub fn root_store(&self) -> Result<RootCertStore, ConfigError> {
        let (certs, name) = match self {
            Self::Amazon => {
                let mut certs = parse_pem(AMAZON_ROOT_CA_1_PEM, "built-in")?;
                certs.extend(parse_pem(AMAZON_ROOT_CA_3_PEM, "built-in")?);
                (certs, "built-in Amazon roots")
            }
            Self::Custom(certs) => (certs.clone(), "CA file"),
        };
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ConfigError::BadRoots {
                source_name: name.to_owned(),
                detail: format!("{ignored} certificate(s) could not be used as trust anchors"),
            });
        }
        Ok(store)
    }
}

fn parse_pem(pem: &str, source_name: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::BadRoots {
            source_name: source_name.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ConfigError::BadRoots {
            source_name: source_name.to_owned(),
            detail: "no CERTIFICATE block".to_owned(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amazon_roots_are_built_in() {
        assert_eq!(TrustRoots::Amazon.root_store().unwrap().len(), 2);
    }

    #[test]
    fn empty_custom_roots_are_refused() {
        assert!(TrustRoots::from_pem("", "x.pem").is_err());
        assert!(matches!(
            TrustRoots::Custom(vec![CertificateDer::from(vec![1, 2, 3])]).root_store(),
            Err(ConfigError::BadRoots { .. })
        ));
    }
}
