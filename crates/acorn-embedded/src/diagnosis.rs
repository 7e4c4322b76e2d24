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
use alloc::vec::Vec;
use core::fmt;

use embedded_tls::alert::AlertDescription;
use embedded_tls::TlsError;

/// A clock earlier than this cannot be right: no certificate date is checked against it, and
/// no connection is opened ([`Diagnosis::ClockNotSynced`]). The one cutoff (2024-01-01), the
/// certificate validation's, shared with the host transport.
pub const EARLIEST_PLAUSIBLE_UNIX_TIME: u64 = acorn_certs::CLOCK_SYNCED_AFTER;

/// The steps of a connection (and of `ping`), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Checking identity and settings locally.
    Config,
    /// Resolving the broker's host name.
    Dns,
    /// Opening the TCP connection.
    Tcp,
    /// TLS handshake (including the broker's verdict on the client certificate).
    Tls,
    /// MQTT CONNECT → CONNACK.
    Connack,
    /// MQTT SUBSCRIBE → SUBACK.
    Suback,
    /// MQTT PUBLISH (QoS 1) → PUBACK.
    Puback,
    /// MQTT DISCONNECT and TLS close.
    Disconnect,
}

impl Step {
    /// Short name used in reports (`dns`, `tcp`, `tls`, `connack`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Dns => "dns",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Connack => "connack",
            Self::Suback => "suback",
            Self::Puback => "puback",
            Self::Disconnect => "disconnect",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the broker rejected the client certificate (from the TLS alert it sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertRejection {
    /// `unknown_ca`: the certificate is not signed by a CA the broker trusts.
    UnknownCa,
    /// `certificate_expired`: expired or not yet valid.
    Expired,
    /// `certificate_revoked`.
    Revoked,
    /// `certificate_required` / `handshake_failure` without a certificate.
    Missing,
    /// `bad_certificate`, `unsupported_certificate`, `certificate_unknown`, `decrypt_error`.
    Bad,
    /// The broker closed the connection while the device sent its certificate, so its alert
    /// (which says why) could not be read: embedded-tls sends the client's Certificate,
    /// CertificateVerify and Finished as separate writes, and a broker that rejects the
    /// certificate closes before the last of them arrives.
    Unspecified,
}

/// What went wrong, in words a support engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// The identity, roots or address are unusable (found locally, nothing was sent).
    BadConfiguration(String),
    /// The host name could not be resolved.
    DnsFailure {
        /// The host.
        host: String,
        /// The resolver's message.
        detail: String,
    },
    /// Nothing listens on the port (TCP RST).
    ConnectionRefused {
        /// `host:port`.
        address: String,
    },
    /// The network could not reach the broker (unreachable, reset, ...).
    NetworkError {
        /// What the network stack said.
        detail: String,
    },
    /// A step took longer than the network timeout.
    Timeout {
        /// The step.
        step: Step,
        /// The timeout, in milliseconds (0 when unknown).
        after_ms: u64,
    },
    /// The server certificate does not chain to a trusted root.
    UnknownServerCa,
    /// The server certificate is not for the name we connected to.
    HostnameMismatch {
        /// The name we expected.
        expected: String,
        /// The names in the certificate.
        presented: Vec<String>,
    },
    /// The server certificate has expired.
    ServerCertificateExpired,
    /// The server certificate is not valid yet.
    ServerCertificateNotYetValid,
    /// The clock is not synced, so certificate dates cannot be checked: nothing was sent.
    ClockNotSynced {
        /// The clock's time, seconds since 1970 (`None`: no time at all yet).
        now_unix: Option<u64>,
    },
    /// Some other problem with the server certificate.
    ServerCertificateInvalid(String),
    /// The broker rejected the client certificate.
    ClientCertificateRejected(ClientCertRejection),
    /// The broker and we share no TLS version or cipher suite (this transport speaks TLS 1.3
    /// with TLS_AES_128_GCM_SHA256 and P-256 key exchange).
    TlsVersionNotSupported,
    /// The TLS handshake failed for another reason.
    TlsFailure(String),
    /// The broker answered CONNECT with a refusal.
    BrokerRefused {
        /// The CONNACK return code (1..=5).
        code: u8,
    },
    /// The broker refused a subscription (SUBACK 0x80).
    SubscriptionRefused {
        /// The topic filter.
        topic: String,
    },
    /// The broker closed the connection without a reason (AWS IoT does this when the policy
    /// forbids the client id, topic or action).
    ClosedByBroker {
        /// The step during which it closed.
        step: Step,
    },
    /// The broker sent something that is not valid MQTT 3.1.1 at this point.
    ProtocolError(String),
}

impl Diagnosis {
    /// The step to which this diagnosis belongs, given the step that was running when it
    /// surfaced (TLS-level verdicts belong to [`Step::Tls`] even when they arrive later).
    pub fn step(&self, running: Step) -> Step {
        match self {
            Self::BadConfiguration(_) => Step::Config,
            Self::UnknownServerCa
            | Self::HostnameMismatch { .. }
            | Self::ServerCertificateExpired
            | Self::ServerCertificateNotYetValid
            | Self::ClockNotSynced { .. }
            | Self::ServerCertificateInvalid(_)
            | Self::ClientCertificateRejected(_)
            | Self::TlsVersionNotSupported
            | Self::TlsFailure(_) => Step::Tls,
            _ => running,
        }
    }

    /// Whether retrying unchanged can help (network trouble, broker busy) or a person must
    /// fix something first (certificates, keys, policy).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::DnsFailure { .. }
                | Self::ConnectionRefused { .. }
                | Self::NetworkError { .. }
                | Self::Timeout { .. }
                | Self::ClosedByBroker { .. }
                | Self::ClockNotSynced { .. }
                | Self::BrokerRefused { code: 3 }
        )
    }

    /// Whether the broker refuses this certificate for good (revoked): the session then goes
    /// straight to its slow retry cadence (`Event::CredentialsRefused`).
    pub fn is_credentials_refused(&self) -> bool {
        matches!(
            self,
            Self::ClientCertificateRejected(ClientCertRejection::Revoked)
        )
    }

    /// Diagnoses a TLS alert the broker sent.
    pub fn from_alert(alert: AlertDescription) -> Self {
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

    /// Diagnoses an embedded-tls error of `step` (the server-certificate verdicts of our own
    /// verifier are read from the verifier, not from here: embedded-tls reports them all as
    /// one error).
    pub fn from_tls(err: &TlsError, step: Step) -> Self {
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

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadConfiguration(detail) => write!(f, "cannot connect: {detail}"),
            Self::DnsFailure { host, detail } => write!(
                f,
                "DNS failure: the broker name '{host}' could not be resolved ({detail}). \
                 Check the endpoint spelling and the network's DNS"
            ),
            Self::ConnectionRefused { address } => write!(
                f,
                "connection refused by {address}: nothing is listening there. \
                 Check the port (8883, or 443 with ALPN) and that the broker is running"
            ),
            Self::NetworkError { detail } => {
                write!(f, "network error: {detail}. Check the network connection and firewall")
            }
            Self::Timeout { step, after_ms } => {
                if *after_ms == 0 {
                    write!(f, "timed out during {step}: the broker did not answer. Check the network, firewall and endpoint")
                } else {
                    write!(f, "timed out after {after_ms} ms during {step}: the broker did not answer. Check the network, firewall and endpoint")
                }
            }
            Self::UnknownServerCa => f.write_str(
                "unknown server CA: the broker's certificate is not signed by a trusted root \
                 (Amazon Root CA 1/3 by default). Check the endpoint is an AWS IoT ATS endpoint \
                 (`-ats.iot.`), or pass the local broker's CA with --ca",
            ),
            Self::HostnameMismatch {
                expected,
                presented,
            } => {
                write!(f, "hostname mismatch: the broker's certificate is not valid for '{expected}'")?;
                if !presented.is_empty() {
                    write!(f, " (it is for {})", presented.join(", "))?;
                }
                f.write_str(". Connect using the name in the certificate (the full endpoint name)")
            }
            Self::ServerCertificateExpired => f.write_str(
                "the broker's certificate has expired (or this device's clock is ahead). \
                 Check the clock; if it is right, the broker must renew its certificate",
            ),
            Self::ServerCertificateNotYetValid => f.write_str(
                "the broker's certificate is not valid yet (or this device's clock is behind). \
                 Check the clock (SNTP)",
            ),
            Self::ClockNotSynced { now_unix } => {
                match now_unix {
                    Some(t) => write!(f, "clock not synced: this device's time ({t} s since 1970) is before 2024")?,
                    None => f.write_str("clock not synced: this device has no time of day yet")?,
                }
                f.write_str(", so no certificate can be validated. Synchronise the clock (SNTP) before connecting")
            }
            Self::ServerCertificateInvalid(detail) => {
                write!(f, "the broker's certificate is invalid: {detail}")
            }
            Self::ClientCertificateRejected(why) => {
                f.write_str("client certificate rejected by the broker: ")?;
                f.write_str(match why {
                    ClientCertRejection::UnknownCa => "it is not signed by a CA the broker trusts. \
                        Register the device's CA (or certificate) with the broker / AWS IoT account, \
                        or check you use the right account and region",
                    ClientCertRejection::Expired => "it has expired or is not valid yet. \
                        Issue a new device certificate (and check the clock)",
                    ClientCertRejection::Revoked => "it has been revoked. Issue a new device certificate",
                    ClientCertRejection::Missing => "no certificate was sent. Provision the device certificate and key",
                    ClientCertRejection::Bad => "the broker could not accept it (inactive, unsupported \
                        or not proven by the key). Check the certificate is ACTIVE in AWS IoT and matches the key",
                    ClientCertRejection::Unspecified => "the broker closed the connection as soon as it \
                        received the device certificate. It is not signed by a CA the broker trusts, \
                        has expired, was revoked, or is not registered (ACTIVE) in this AWS IoT account \
                        and region",
                })
            }
            Self::TlsVersionNotSupported => f.write_str(
                "TLS version not supported: the broker offers nothing this transport speaks \
                 (TLS 1.3, TLS_AES_128_GCM_SHA256, P-256 key exchange). The broker must enable TLS 1.3",
            ),
            Self::TlsFailure(detail) => write!(f, "TLS handshake failed: {detail}"),
            Self::BrokerRefused { code } => {
                let why = match code {
                    1 => "unacceptable protocol version (the broker does not speak MQTT 3.1.1)",
                    2 => "client id rejected (check its length ≤ 128 and characters)",
                    3 => "server unavailable (retry later)",
                    4 => "bad user name or password",
                    5 => "not authorized (check the IoT policy attached to the certificate allows iot:Connect for this client id)",
                    _ => "unknown reason",
                };
                write!(f, "the broker refused the connection: CONNACK code {code}, {why}")
            }
            Self::SubscriptionRefused { topic } => write!(
                f,
                "the broker refused the subscription to '{topic}' (SUBACK 0x80): the policy does not allow it"
            ),
            Self::ClosedByBroker { step: Step::Tls } => f.write_str(
                "the broker closed the connection during the TLS handshake without a TLS alert: \
                 it may accept no TLS version or cipher suite we offer (TLS 1.3), or the \
                 port is not a TLS port. Check the port and the broker's TLS settings",
            ),
            Self::ClosedByBroker { step } => write!(
                f,
                "the broker closed the connection during {step} without saying why. On AWS IoT this \
                 means the policy forbids this client id, topic or action, or another connection \
                 took over the same client id"
            ),
            Self::ProtocolError(detail) => write!(f, "MQTT protocol error: {detail}"),
        }
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
