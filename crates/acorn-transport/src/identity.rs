//! What the transport needs to know: who the device is ([`ClientIdentity`]) and where the
//! broker is ([`BrokerTarget`]).

use core::fmt;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName,
};

use crate::error::ConfigError;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

/// Port of MQTT over TLS.
pub const MQTTS_PORT: u16 = 8883;
/// Port of MQTT over TLS with ALPN `x-amzn-mqtt-ca` (AWS IoT Core).
pub const ALPN_PORT: u16 = 443;

/// The device's TLS client identity: its certificate (chain) and private key, both PEM.
///
/// The key may be PKCS#1 (`BEGIN RSA PRIVATE KEY`, as AWS `CreateKeysAndCertificate` returns
/// it), PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`).
#[derive(Clone)]
pub struct ClientIdentity {
    cert_pem: String,
    key_pem: SecretString,
    der: Option<DerMaterial>,
}

/// The container format of a DER private key given to [`ClientIdentity::from_der`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerKeyFormat {
    /// PKCS#1 `RSAPrivateKey`.
    Pkcs1,
    /// PKCS#8 `PrivateKeyInfo`.
    Pkcs8,
    /// SEC1 `ECPrivateKey`.
    Sec1,
}

/// A certificate and key held as DER (e.g. stored that way in NVS).
#[derive(Clone)]
struct DerMaterial {
    cert: Vec<u8>,
    key: SecretSlice<u8>,
    format: DerKeyFormat,
}

impl ClientIdentity {
    /// An identity from a certificate PEM (device certificate first, then any intermediates)
    /// and a private key PEM. Nothing is checked until it is used (see
    /// [`crate::tls::client_config`], which also checks that the key matches).
    pub fn new(cert_pem: impl Into<String>, key_pem: SecretString) -> Self {
        Self {
            cert_pem: cert_pem.into(),
            key_pem,
            der: None,
        }
    }

    /// An identity from a DER device certificate and a DER private key of `format` (a secret:
    /// zeroized on drop). [`Self::cert_pem`] and [`Self::key_pem`] are then empty.
    pub fn from_der(cert_der: Vec<u8>, key_der: SecretSlice<u8>, format: DerKeyFormat) -> Self {
        Self {
            cert_pem: String::new(),
            key_pem: SecretString::default(),
            der: Some(DerMaterial {
                cert: cert_der,
                key: key_der,
                format,
            }),
        }
    }

    /// The certificate PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key PEM (secret).
    pub fn key_pem(&self) -> &SecretString {
        &self.key_pem
    }

    /// The certificate chain as DER, device certificate first.
    pub fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        if let Some(der) = &self.der {
            return Ok(vec![CertificateDer::from(der.cert.clone())]);
        }
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::BadCertificatePem {
                detail: pem_error_text(&e),
            })?;
        if chain.is_empty() {
            return Err(ConfigError::BadCertificatePem {
                detail: "no CERTIFICATE block".to_owned(),
            });
        }
        Ok(chain)
    }

    /// The private key as DER (PKCS#1, PKCS#8 or SEC1, whichever the PEM holds).
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, ConfigError> {
        if let Some(der) = &self.der {
            let bytes = der.key.expose_secret().to_vec();
            return Ok(match der.format {
                DerKeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(bytes)),
                DerKeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes)),
                DerKeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(bytes)),
            });
        }
        PrivateKeyDer::from_pem_slice(self.key_pem.expose_secret().as_bytes()).map_err(|e| {
            ConfigError::BadKeyPem {
                detail: pem_error_text(&e),
            }
        })
    }
}

/// Describes a PEM error without echoing any input bytes (which may be key material).
fn pem_error_text(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a PEM block has no END line".to_owned(),
        E::IllegalSectionStart { .. } => "malformed BEGIN line".to_owned(),
        E::Base64Decode(_) => "invalid base64 inside the PEM block".to_owned(),
        E::NoItemsFound => "no matching PEM block".to_owned(),
        E::SectionTooLarge => "PEM block too large".to_owned(),
        _ => "unreadable PEM".to_owned(),
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem_len", &self.cert_pem.len())
            .field("cert_der_len", &self.der.as_ref().map(|d| d.cert.len()))
            .field("key_pem", &self.key_pem)
            .field("key_der", &self.der.as_ref().map(|d| &d.key))
            .finish()
    }
}

/// Where to connect: host and port, the name the server certificate must carry, and
/// whether to offer ALPN `x-amzn-mqtt-ca` (needed by AWS IoT Core on port 443).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTarget {
    /// DNS name or IP address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Name to send as SNI and to verify the server certificate against; `None` = `host`.
    /// Only [`crate::ping()`] can use a name different from `host`.
    pub server_name: Option<String>,
    /// Offer ALPN `x-amzn-mqtt-ca`.
    pub alpn: bool,
}

impl BrokerTarget {
    /// `host:port`, no ALPN, server name = host.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            server_name: None,
            alpn: false,
        }
    }

    /// An AWS IoT Core endpoint: port 8883, or 443 with ALPN `x-amzn-mqtt-ca` when `alpn`.
    pub fn aws(endpoint: impl Into<String>, alpn: bool) -> Self {
        Self {
            host: endpoint.into(),
            port: if alpn { ALPN_PORT } else { MQTTS_PORT },
            server_name: None,
            alpn,
        }
    }

    /// Parses `HOST` or `HOST:PORT` (IPv6 as `[::1]:8883`). Without a port: 443 if `alpn`,
    /// else 8883.
    pub fn parse(input: &str, alpn: bool) -> Result<Self, ConfigError> {
        let bad = |detail| ConfigError::BadBrokerAddress {
            input: input.to_owned(),
            detail,
        };
        let default_port = if alpn { ALPN_PORT } else { MQTTS_PORT };
        let (host, port) = if let Some(rest) = input.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or(bad("missing ']'"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse().map_err(|_| bad("port is not 1-65535"))?),
                None if after.is_empty() => (host, default_port),
                None => return Err(bad("unexpected text after ']'")),
            }
        } else {
            match input.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => {
                    (h, p.parse().map_err(|_| bad("port is not 1-65535"))?)
                }
                _ => (input, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if port == 0 {
            return Err(bad("port is not 1-65535"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            server_name: None,
            alpn,
        })
    }

    /// The name verified in the server certificate (and sent as SNI if it is a DNS name).
    pub fn tls_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.host)
    }

    /// [`Self::tls_name`] as a rustls server name.
    pub fn server_name(&self) -> Result<ServerName<'static>, ConfigError> {
        ServerName::try_from(self.tls_name().to_owned()).map_err(|_| ConfigError::BadServerName {
            name: self.tls_name().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_addresses() {
        assert_eq!(
            BrokerTarget::parse("a-ats.iot.eu-west-1.amazonaws.com", false).unwrap(),
            BrokerTarget::aws("a-ats.iot.eu-west-1.amazonaws.com", false)
        );
        assert_eq!(BrokerTarget::parse("h", true).unwrap().port, 443);
        assert_eq!(
            BrokerTarget::parse("127.0.0.1:1883", false).unwrap().port,
            1883
        );
        let v6 = BrokerTarget::parse("[::1]:9000", false).unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9000));
        assert!(BrokerTarget::parse(":80", false).is_err());
        assert!(BrokerTarget::parse("h:0", false).is_err());
        assert!(BrokerTarget::parse("h:x", false).is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let id = ClientIdentity::new("cert", SecretString::from("TOPSECRETKEY"));
        let text = format!("{id:?}");
        assert!(!text.contains("TOPSECRETKEY"));
        assert!(text.contains("[REDACTED]"));
        let der = ClientIdentity::from_der(
            vec![0x30],
            SecretSlice::from(b"TOPSECRETDER".to_vec()),
            DerKeyFormat::Pkcs8,
        );
        let text = format!("{der:?}");
        assert!(
            !text.contains("TOPSECRETDER") && !text.contains("84, 79, 80"),
            "{text}"
        );
        assert!(text.contains("[REDACTED]"));
    }

    #[test]
    fn garbage_pem_is_an_error_without_echo() {
        let id = ClientIdentity::new(
            "nonsense",
            SecretString::from(
                "-----BEGIN PRIVATE KEY-----\nTOPSECRET!!\n-----END PRIVATE KEY-----\n",
            ),
        );
        assert!(matches!(
            id.cert_chain(),
            Err(ConfigError::BadCertificatePem { .. })
        ));
        let err = id.private_key().unwrap_err();
        assert!(!err.to_string().contains("TOPSECRET"));
    }
}
