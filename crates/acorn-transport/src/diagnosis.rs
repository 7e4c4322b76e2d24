//! Plain-language diagnosis of connection failures, for logs, `ConnectionStatus::Error` and
//! `acorn device ping`.
//!
//! TLS failures arrive from rustls as certificate errors (our verdict on the *server*) or as
//! alerts (the *broker's* verdict on us). With TLS 1.3 the client finishes its side of the
//! handshake before the broker has checked the client certificate, so a rejected client
//! certificate surfaces as an alert at the first read *after* the handshake; [`Diagnosis`]
//! names it the same way wherever it surfaces, and [`Diagnosis::step`] puts it in the TLS step.

use core::fmt;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::{AlertDescription, CertificateError, PeerIncompatible};

use crate::error::ConfigError;

/// A clock earlier than this cannot be right: certificate time errors under such a clock are
/// reported as [`Diagnosis::ClockNotSynced`]. The one cutoff, `acorn-certs`'s (2024-01-01),
/// which the certificate validation uses too.
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
}

/// What went wrong, in words a support engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// The private key does not belong to the client certificate (found locally).
    KeyMismatch,
    /// The identity, roots or address are unusable (found locally).
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
        /// What the OS said.
        detail: String,
    },
    /// A step took longer than the network timeout.
    Timeout {
        /// The step.
        step: Step,
        /// The timeout.
        after: Duration,
    },
    /// The server certificate does not chain to a trusted root.
    UnknownServerCa,
    /// The server certificate is not for the name we connected to.
    HostnameMismatch {
        /// The name we expected.
        expected: String,
        /// The names in the certificate, if known.
        presented: Vec<String>,
    },
    /// The server certificate has expired.
    ServerCertificateExpired,
    /// The server certificate is not valid yet.
    ServerCertificateNotYetValid,
    /// Certificate times failed because this machine's clock is wrong.
    ClockNotSynced {
        /// The clock's time, seconds since 1970.
        now_unix: u64,
    },
    /// Some other problem with the server certificate.
    ServerCertificateInvalid(String),
    /// The broker rejected the client certificate.
    ClientCertificateRejected(ClientCertRejection),
    /// The broker and we share no TLS version (we offer only TLS 1.2/1.3).
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
            Self::KeyMismatch | Self::BadConfiguration(_) => Step::Config,
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
                | Self::BrokerRefused { code: 3 }
        )
    }

    /// Diagnoses a rustls error of a connection to `address` (`host:port`: the name a
    /// hostname mismatch names when rustls does not say it).
    pub fn from_rustls(err: &rustls::Error, address: &str) -> Self {
        use rustls::Error as E;
        match err {
            E::InvalidCertificate(cert) => from_certificate_error(cert, address),
            E::AlertReceived(alert) => from_alert(*alert),
            E::InconsistentKeys(_) => Self::KeyMismatch,
            E::PeerIncompatible(
                PeerIncompatible::ServerDoesNotSupportTls12Or13
                | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                | PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::SupportedVersionsExtensionRequired,
            ) => Self::TlsVersionNotSupported,
            E::NoCertificatesPresented => {
                Self::ServerCertificateInvalid("the broker presented no certificate".to_owned())
            }
            other => Self::TlsFailure(other.to_string()),
        }
    }

    /// Diagnoses an I/O error of `step` against `address` (`host:port`); looks inside for a
    /// rustls error (as tokio-rustls wraps it).
    pub fn from_io(err: &io::Error, step: Step, address: &str) -> Self {
        if let Some(tls) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return Self::from_rustls(tls, address);
        }
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Self::ConnectionRefused {
                address: address.to_owned(),
            },
            io::ErrorKind::TimedOut => Self::Timeout {
                step,
                after: Duration::ZERO,
            },
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::ClosedByBroker { step },
            _ => Self::NetworkError {
                detail: err.to_string(),
            },
        }
    }

    /// Diagnoses an error of rumqttc's event loop (the long-running session).
    pub fn from_connection_error(err: &rumqttc::ConnectionError, address: &str) -> Self {
        use rumqttc::{ConnectionError as C, StateError as S, TlsError as T};
        match err {
            C::Tls(T::TLS(tls)) => Self::from_rustls(tls, address),
            C::Tls(T::Io(io)) => Self::from_io(io, Step::Tls, address),
            C::Tls(T::DNSName(_)) => {
                Self::BadConfiguration(format!("'{address}' is not a valid TLS server name"))
            }
            C::Tls(other) => Self::BadConfiguration(other.to_string()),
            C::Io(io) => {
                let text = io.to_string();
                if text.contains("failed to lookup address") {
                    Self::DnsFailure {
                        host: address.to_owned(),
                        detail: text,
                    }
                } else {
                    Self::from_io(io, Step::Connack, address)
                }
            }
            C::MqttState(S::Io(io)) => Self::from_io(io, Step::Connack, address),
            C::MqttState(S::Deserialization(rumqttc::mqttbytes::Error::Io(io))) => {
                Self::from_io(io, Step::Connack, address)
            }
            C::MqttState(S::ConnectionAborted) => Self::ClosedByBroker {
                step: Step::Connack,
            },
            C::MqttState(S::AwaitPingResp) => Self::Timeout {
                step: Step::Connack,
                after: Duration::ZERO,
            },
            C::MqttState(other) => Self::ProtocolError(other.to_string()),
            C::NetworkTimeout | C::FlushTimeout => Self::Timeout {
                step: Step::Connack,
                after: Duration::ZERO,
            },
            C::ConnectionRefused(code) => Self::BrokerRefused {
                code: connack_code(*code),
            },
            C::NotConnAck(packet) => {
                Self::ProtocolError(format!("expected CONNACK, got {packet:?}"))
            }
            C::RequestsDone => Self::ProtocolError("the client was dropped".to_owned()),
        }
    }
}

/// The numeric CONNACK return code of rumqttc's enum.
pub fn connack_code(code: rumqttc::ConnectReturnCode) -> u8 {
    use rumqttc::ConnectReturnCode as R;
    match code {
        R::Success => 0,
        R::RefusedProtocolVersion => 1,
        R::BadClientId => 2,
        R::ServiceUnavailable => 3,
        R::BadUserNamePassword => 4,
        R::NotAuthorized => 5,
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn clock_check(time_unix: u64) -> Option<Diagnosis> {
    (time_unix < EARLIEST_PLAUSIBLE_UNIX_TIME).then_some(Diagnosis::ClockNotSynced {
        now_unix: time_unix,
    })
}

/// The host part of `host:port` (or `[v6]:port`), as the certificate must name it.
fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

fn from_certificate_error(err: &CertificateError, address: &str) -> Diagnosis {
    use CertificateError as C;
    match err {
        C::UnknownIssuer => Diagnosis::UnknownServerCa,
        C::ExpiredContext { time, .. } => {
            clock_check(time.as_secs()).unwrap_or(Diagnosis::ServerCertificateExpired)
        }
        C::Expired => clock_check(now_unix()).unwrap_or(Diagnosis::ServerCertificateExpired),
        C::NotValidYetContext { time, .. } => {
            clock_check(time.as_secs()).unwrap_or(Diagnosis::ServerCertificateNotYetValid)
        }
        C::NotValidYet => {
            clock_check(now_unix()).unwrap_or(Diagnosis::ServerCertificateNotYetValid)
        }
        C::NotValidForNameContext {
            expected,
            presented,
        } => Diagnosis::HostnameMismatch {
            expected: expected.to_str().into_owned(),
            presented: presented.clone(),
        },
        C::NotValidForName => Diagnosis::HostnameMismatch {
            expected: host_of(address).to_owned(),
            presented: Vec::new(),
        },
        C::BadSignature => Diagnosis::ServerCertificateInvalid(
            "its signature does not verify (forged or corrupted certificate)".to_owned(),
        ),
        C::Revoked => Diagnosis::ServerCertificateInvalid("it has been revoked".to_owned()),
        other => Diagnosis::ServerCertificateInvalid(format!("{other:?}")),
    }
}

fn from_alert(alert: AlertDescription) -> Diagnosis {
    use AlertDescription as A;
    match alert {
        A::UnknownCA => Diagnosis::ClientCertificateRejected(ClientCertRejection::UnknownCa),
        A::CertificateExpired => Diagnosis::ClientCertificateRejected(ClientCertRejection::Expired),
        A::CertificateRevoked => Diagnosis::ClientCertificateRejected(ClientCertRejection::Revoked),
        A::CertificateRequired | A::NoCertificate => {
            Diagnosis::ClientCertificateRejected(ClientCertRejection::Missing)
        }
        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown | A::DecryptError => {
            Diagnosis::ClientCertificateRejected(ClientCertRejection::Bad)
        }
        A::ProtocolVersion | A::InsufficientSecurity => Diagnosis::TlsVersionNotSupported,
        A::NoApplicationProtocol => Diagnosis::TlsFailure(
            "the broker does not accept the ALPN protocol x-amzn-mqtt-ca (use port 8883 without --alpn, or 443 with it)".to_owned(),
        ),
        A::UnrecognisedName => Diagnosis::TlsFailure(
            "the broker does not know the server name we sent (SNI): check the endpoint".to_owned(),
        ),
        other => Diagnosis::TlsFailure(format!("the broker aborted the handshake with alert {other:?}")),
    }
}

impl From<&ConfigError> for Diagnosis {
    fn from(err: &ConfigError) -> Self {
        match err {
            ConfigError::KeyMismatch => Self::KeyMismatch,
            other => Self::BadConfiguration(other.to_string()),
        }
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyMismatch => f.write_str(
                "the private key does not match the device certificate: they come from different key pairs. \
                 Re-provision the device, or load the key that was created with this certificate",
            ),
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
            Self::Timeout { step, after } => {
                if after.is_zero() {
                    write!(f, "timed out during {step}: the broker did not answer. Check the network, firewall and endpoint")
                } else {
                    write!(f, "timed out after {after:?} during {step}: the broker did not answer. Check the network, firewall and endpoint")
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
                "the broker's certificate has expired (or this machine's clock is ahead). \
                 Check the clock; if it is right, the broker must renew its certificate",
            ),
            Self::ServerCertificateNotYetValid => f.write_str(
                "the broker's certificate is not valid yet (or this machine's clock is behind). \
                 Check the clock (NTP)",
            ),
            Self::ClockNotSynced { now_unix } => write!(
                f,
                "clock not synced: this machine's time ({now_unix} s since 1970) is before 2024, \
                 so no certificate can be validated. Synchronise the clock (NTP/SNTP) before connecting"
            ),
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
                })
            }
            Self::TlsVersionNotSupported => f.write_str(
                "TLS version not supported: the broker offers no version we accept (we require TLS 1.2 or 1.3). \
                 The broker must enable TLS 1.2+",
            ),
            Self::TlsFailure(detail) => write!(f, "TLS handshake failed: {detail}"),
            Self::BrokerRefused { code } => write!(
                f,
                "the broker refused the connection: CONNACK code {code}, {}",
                acorn_mqtt::connack_meaning(*code)
            ),
            Self::SubscriptionRefused { topic } => write!(
                f,
                "the broker refused the subscription to '{topic}' (SUBACK 0x80): the policy does not allow it"
            ),
            Self::ClosedByBroker { step: Step::Tls } => f.write_str(
                "the broker closed the connection during the TLS handshake without a TLS alert: \
                 it may accept no TLS version or cipher suite we offer (TLS 1.2/1.3), or the \
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
    use rustls_pki_types::UnixTime;

    #[test]
    fn alerts_name_the_client_certificate() {
        let d = Diagnosis::from_rustls(
            &rustls::Error::AlertReceived(AlertDescription::UnknownCA),
            "broker:8883",
        );
        assert_eq!(
            d,
            Diagnosis::ClientCertificateRejected(ClientCertRejection::UnknownCa)
        );
        assert_eq!(d.step(Step::Connack), Step::Tls);
        assert!(d.to_string().contains("client certificate rejected"));
    }

    #[test]
    fn an_early_clock_is_called_out() {
        let err = CertificateError::NotValidYetContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(86_400)),
            not_before: UnixTime::since_unix_epoch(Duration::from_secs(
                EARLIEST_PLAUSIBLE_UNIX_TIME,
            )),
        };
        let d = Diagnosis::from_rustls(&rustls::Error::InvalidCertificate(err), "broker:8883");
        assert_eq!(d, Diagnosis::ClockNotSynced { now_unix: 86_400 });
        assert!(d.to_string().contains("clock not synced"));
    }

    #[test]
    fn io_errors_wrapping_rustls_are_unwrapped() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
        );
        assert_eq!(
            Diagnosis::from_io(&io, Step::Tls, "h:1"),
            Diagnosis::TlsVersionNotSupported
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            Diagnosis::from_io(&refused, Step::Tcp, "h:1"),
            Diagnosis::ConnectionRefused { .. }
        ));
    }

    #[test]
    fn connack_codes_are_explained() {
        let d = Diagnosis::BrokerRefused { code: 5 };
        assert!(d.to_string().contains("code 5"));
        assert!(d.to_string().contains("not authorized"));
    }

    #[test]
    fn a_hostname_mismatch_without_context_names_the_host_we_connected_to() {
        for (address, host) in [
            ("broker.example:8883", "broker.example"),
            ("[::1]:8883", "::1"),
            ("localhost", "localhost"),
        ] {
            let d = Diagnosis::from_rustls(
                &rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                address,
            );
            assert!(
                matches!(&d, Diagnosis::HostnameMismatch { expected, .. } if expected == host),
                "{d:?}"
            );
            assert!(d.to_string().contains(&format!("'{host}'")), "{d}");
        }
    }
}
