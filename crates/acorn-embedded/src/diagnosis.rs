//! Plain-language diagnosis of connection failures: the same vocabulary as the Linux
//! transport (`acorn-agent`'s `Diagnosis`), without rustls.
//!
//! TLS failures come from three places: our own server-certificate verifier
//! ([`crate::verify::ServerCertFailure`], our verdict on the *broker*), alerts the broker sends
//! (its verdict on *us*), and I/O. With TLS 1.3 the client finishes its side of the handshake
//! before the broker has checked the client certificate, so a rejected client certificate
//! arrives as an alert at the first read *after* the handshake: it is named the same way
//! wherever it surfaces.

use alloc::string::{String, ToString};

use embedded_tls::alert::AlertDescription;
use embedded_tls::TlsError;

/// A clock earlier than this cannot be right: no certificate date is checked against it, and
/// no connection is opened ([`Diagnosis::ClockNotSynced`]). The one cutoff (2024-01-01), the
/// certificate validation's, shared with the host transport.
pub const EARLIEST_PLAUSIBLE_UNIX_TIME: u64 = acorn_certs::CLOCK_SYNCED_AFTER;

pub use acorn_mqtt::diagnosis::{ClientCertRejection, Diagnosis, Step};

/// How embedded-tls's errors and alerts become a [`Diagnosis`]: import the trait to call
/// `Diagnosis::from_alert` and `Diagnosis::from_tls`.
pub trait DiagnoseEmbedded: Sized {
    /// Diagnoses a TLS alert the broker sent.
    fn from_alert(alert: AlertDescription) -> Self;
    /// Diagnoses an embedded-tls error of `step` (the server-certificate verdicts of our own
    /// verifier are read from the verifier, not from here: embedded-tls reports them all as
    /// one error).
    fn from_tls(err: &TlsError, step: Step) -> Self;
}

impl DiagnoseEmbedded for Diagnosis {
    fn from_alert(alert: AlertDescription) -> Self {
        use AlertDescription as A;
        match alert {
            A::UnknownCa => Self::ClientCertificateRejected(ClientCertRejection::UnknownCa),
            A::CertificateExpired => Self::ClientCertificateRejected(ClientCertRejection::Expired),
            A::CertificateRevoked => Self::ClientCertificateRejected(ClientCertRejection::Revoked),
            A::CertificateRequired => Self::ClientCertificateRejected(ClientCertRejection::Missing),
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateUnknown
            | A::DecryptError => Self::ClientCertificateRejected(ClientCertRejection::Bad),
            A::ProtocolVersion | A::InsufficientSecurity | A::HandshakeFailure => {
                Self::TlsVersionNotSupported
            }
            A::NoApplicationProtocol => Self::TlsFailure(
                "the broker does not accept the ALPN protocol x-amzn-mqtt-ca (use port 8883 without ALPN, or 443 with it)".to_string(),
            ),
            A::UnrecognizedName => Self::TlsFailure(
                "the broker does not know the server name we sent (SNI): check the endpoint"
                    .to_string(),
            ),
            other => Self::TlsFailure(alloc::format!(
                "the broker aborted the connection with TLS alert {other:?}"
            )),
        }
    }

    fn from_tls(err: &TlsError, step: Step) -> Self {
        match err {
            TlsError::HandshakeAborted(_, alert) | TlsError::AbortHandshake(_, alert) => {
                Self::from_alert(*alert)
            }
            TlsError::ConnectionClosed => Self::ClosedByBroker { step },
            TlsError::Io(kind) => from_io_kind(*kind, step),
            TlsError::InvalidCipherSuite | TlsError::InvalidSupportedVersions => {
                Self::TlsVersionNotSupported
            }
            TlsError::InvalidSignatureScheme => Self::ServerCertificateInvalid(
                "the broker signed the handshake with a scheme this build cannot verify \
                 (enable the `rsa` or `p384` feature for RSA or P-384 brokers)"
                    .to_string(),
            ),
            TlsError::InvalidSignature => Self::ServerCertificateInvalid(
                "its handshake signature does not verify with the certificate's key".to_string(),
            ),
            TlsError::InvalidPrivateKey => {
                Self::BadConfiguration("the device's private key is not usable for TLS".to_string())
            }
            other => Self::TlsFailure(alloc::format!("{other:?}")),
        }
    }
}

/// Diagnoses an `embedded_io::ErrorKind` of `step`.
pub fn from_io_kind(kind: embedded_io::ErrorKind, step: Step) -> Diagnosis {
    use embedded_io::ErrorKind as K;
    match kind {
        K::ConnectionRefused => Diagnosis::ConnectionRefused {
            address: String::new(),
        },
        K::TimedOut => Diagnosis::Timeout { step, after_ms: 0 },
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::NotConnected => {
            Diagnosis::ClosedByBroker { step }
        }
        other => Diagnosis::NetworkError {
            detail: alloc::format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_name_the_client_certificate() {
        let d = Diagnosis::from_alert(AlertDescription::UnknownCa);
        assert_eq!(
            d,
            Diagnosis::ClientCertificateRejected(ClientCertRejection::UnknownCa)
        );
        assert_eq!(d.step(Step::Connack), Step::Tls);
        assert!(d.to_string().contains("client certificate rejected"));
        assert!(
            Diagnosis::from_alert(AlertDescription::CertificateRevoked).is_credentials_refused()
        );
    }
}
