//! Plain-language diagnosis of connection failures, for logs, `ConnectionStatus::Error` and
//! `acorn device ping`.
//!
//! TLS failures arrive from rustls as certificate errors (our verdict on the *server*) or as
//! alerts (the *broker's* verdict on us). With TLS 1.3 the client finishes its side of the
//! handshake before the broker has checked the client certificate, so a rejected client
//! certificate surfaces as an alert at the first read *after* the handshake; [`Diagnosis`]
//! names it the same way wherever it surfaces, and [`Diagnosis::step`] puts it in the TLS step.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::{AlertDescription, CertificateError, PeerIncompatible};

use crate::error::ConfigError;

/// A clock earlier than this cannot be right: certificate time errors under such a clock are
/// reported as [`Diagnosis::ClockNotSynced`]. The one cutoff, `acorn-certs`'s (2024-01-01),
/// which the certificate validation uses too.
pub const EARLIEST_PLAUSIBLE_UNIX_TIME: u64 = acorn_certs::CLOCK_SYNCED_AFTER;

pub use acorn_mqtt::diagnosis::{ClientCertRejection, Diagnosis, Step};

/// How this transport's errors (rustls, I/O, rumqttc) become a [`Diagnosis`]: import the
/// trait to call `Diagnosis::from_rustls`, `Diagnosis::from_io` and
/// `Diagnosis::from_connection_error`.
pub trait DiagnoseHost: Sized {
    /// Diagnoses a rustls error of a connection to `address` (`host:port`: the name a
    /// hostname mismatch names when rustls does not say it).
    fn from_rustls(err: &rustls::Error, address: &str) -> Self;
    /// Diagnoses an I/O error of `step` against `address` (`host:port`); looks inside for a
    /// rustls error (as tokio-rustls wraps it).
    fn from_io(err: &io::Error, step: Step, address: &str) -> Self;
    /// Diagnoses an error of rumqttc's event loop (the long-running session).
    fn from_connection_error(err: &rumqttc::ConnectionError, address: &str) -> Self;
}

/// A timeout of `step` whose length the error does not say.
fn timeout(step: Step) -> Diagnosis {
    Diagnosis::Timeout { step, after_ms: 0 }
}

impl DiagnoseHost for Diagnosis {
    fn from_rustls(err: &rustls::Error, address: &str) -> Self {
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

    fn from_io(err: &io::Error, step: Step, address: &str) -> Self {
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
            io::ErrorKind::TimedOut => timeout(step),
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::ClosedByBroker { step },
            _ => Self::NetworkError {
                detail: err.to_string(),
            },
        }
    }

    fn from_connection_error(err: &rumqttc::ConnectionError, address: &str) -> Self {
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
            C::MqttState(S::AwaitPingResp) => timeout(Step::Connack),
            C::MqttState(other) => Self::ProtocolError(other.to_string()),
            C::NetworkTimeout | C::FlushTimeout => timeout(Step::Connack),
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
        now_unix: Some(time_unix),
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::UnixTime;
    use std::time::Duration;

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
        assert_eq!(
            d,
            Diagnosis::ClockNotSynced {
                now_unix: Some(86_400)
            }
        );
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
