//! The rustls client configuration: pinned roots, hostname verification, client certificate,
//! TLS 1.2 minimum, optional ALPN `x-amzn-mqtt-ca`, `ring` crypto provider.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SupportedProtocolVersion};

use crate::error::ConfigError;
use crate::identity::ClientIdentity;
use crate::roots::TrustRoots;

/// The ALPN protocol AWS IoT Core expects for MQTT on port 443.
pub const AWS_IOT_ALPN: &[u8] = b"x-amzn-mqtt-ca";

/// Which TLS versions to offer. TLS 1.0 and 1.1 are never offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.2 and 1.3 (default).
    #[default]
    Tls12AndUp,
    /// TLS 1.3 only.
    Tls13Only,
    /// TLS 1.2 only.
    Tls12Only,
}

impl TlsVersions {
    fn list(self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static V13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        static V12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        match self {
            Self::Tls12AndUp => &BOTH,
            Self::Tls13Only => &V13,
            Self::Tls12Only => &V12,
        }
    }
}

/// The crypto provider used everywhere in this crate (`ring`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the identity and checks locally that the private key belongs to the certificate
/// (same public key), so a mismatch is reported before any connection is made.
pub fn certified_key(identity: &ClientIdentity) -> Result<CertifiedKey, ConfigError> {
    let chain = identity.cert_chain()?;
    // The DER copy is wiped when it goes out of scope; rustls keeps only ring's key object.
    let key = zeroize::Zeroizing::new(identity.private_key()?);
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        ConfigError::UnsupportedKey {
            detail: e.to_string(),
        }
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        // The provider cannot tell (no public key for this algorithm): let the broker decide.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(ConfigError::KeyMismatch),
        Err(e) => Err(ConfigError::BadCertificate {
            detail: e.to_string(),
        }),
    }
}

/// Builds the client configuration: server verified against `roots` with hostname
/// verification (always on), client authentication with `identity`, `versions`, and ALPN
/// `x-amzn-mqtt-ca` when `alpn`.
pub fn client_config(
    identity: &ClientIdentity,
    roots: &TrustRoots,
    alpn: bool,
    versions: TlsVersions,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let certified = certified_key(identity)?;
    let store = roots.root_store()?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions.list())
        .map_err(|e| ConfigError::Tls {
            detail: e.to_string(),
        })?
        .with_root_certificates(store)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    if alpn {
        config.alpn_protocols = vec![AWS_IOT_ALPN.to_vec()];
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn identity() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["device-1".to_owned()]).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn alpn_is_offered_only_when_asked() {
        let (cert, key) = identity();
        let id = ClientIdentity::new(cert, SecretString::from(key));
        let with = client_config(&id, &TrustRoots::Amazon, true, TlsVersions::default()).unwrap();
        assert_eq!(with.alpn_protocols, vec![b"x-amzn-mqtt-ca".to_vec()]);
        let without =
            client_config(&id, &TrustRoots::Amazon, false, TlsVersions::default()).unwrap();
        assert!(without.alpn_protocols.is_empty());
    }

    #[test]
    fn a_key_from_another_pair_is_refused_locally() {
        let (cert, _) = identity();
        let (_, other_key) = identity();
        let id = ClientIdentity::new(cert, SecretString::from(other_key));
        assert!(matches!(certified_key(&id), Err(ConfigError::KeyMismatch)));
    }
}
