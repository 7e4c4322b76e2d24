//! Plain-language diagnosis of connection failures: one vocabulary for both transports (the
//! Linux one over rustls + rumqttc in `acorn-transport`, the firmware's over embedded-tls in
//! `acorn-embedded`), so that a support engineer reads the same words whichever side failed.
//! Each transport maps its own errors onto [`Diagnosis`]; the words live here.
//!
//! With TLS 1.3 the client finishes its side of the handshake before the broker has checked
//! the client certificate, so a rejected client certificate arrives as an alert at the first
//! read *after* the handshake: it is named the same way wherever it surfaces, and
//! [`Diagnosis::step`] puts it in the TLS step.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::session::connack_meaning;

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
    /// (which says why) could not be read (embedded-tls sends the client's Certificate,
    /// CertificateVerify and Finished as separate writes, and a broker that rejects the
    /// certificate closes before the last of them arrives).
    Unspecified,
}

/// What went wrong, in words a support engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    /// The private key does not belong to the client certificate (found locally).
    KeyMismatch,
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
        /// `host:port` (empty when the network stack does not say).
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
        /// The names in the certificate, if known.
        presented: Vec<String>,
    },
    /// The server certificate has expired.
    ServerCertificateExpired,
    /// The server certificate is not valid yet.
    ServerCertificateNotYetValid,
    /// Certificate dates cannot be checked because the clock is not synced: nothing was sent.
    ClockNotSynced {
        /// The clock's time, seconds since 1970 (`None`: no time of day at all yet).
        now_unix: Option<u64>,
    },
    /// Some other problem with the server certificate.
    ServerCertificateInvalid(String),
    /// The broker rejected the client certificate.
    ClientCertificateRejected(ClientCertRejection),
    /// The broker and we share no TLS version or cipher suite.
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

    /// Whether retrying unchanged can help (network trouble, a broker that is busy, a clock
    /// that is still syncing) or a person must fix something first (certificates, keys,
    /// policy).
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
    /// straight to its slow retry cadence ([`crate::Event::CredentialsRefused`]).
    pub fn is_credentials_refused(&self) -> bool {
        matches!(
            self,
            Self::ClientCertificateRejected(ClientCertRejection::Revoked)
        )
    }
}

fn rejection_text(why: ClientCertRejection) -> &'static str {
    match why {
        ClientCertRejection::UnknownCa => {
            "it is not signed by a CA the broker trusts. Register the device's CA (or \
             certificate) with the broker / AWS IoT account, or check you use the right account \
             and region"
        }
        ClientCertRejection::Expired => {
            "it has expired or is not valid yet. Issue a new device certificate (and check the \
             clock)"
        }
        ClientCertRejection::Revoked => "it has been revoked. Issue a new device certificate",
        ClientCertRejection::Missing => {
            "no certificate was sent. Provision the device certificate and key"
        }
        ClientCertRejection::Bad => {
            "the broker could not accept it (inactive, unsupported or not proven by the key). \
             Check the certificate is ACTIVE in AWS IoT and matches the key"
        }
        ClientCertRejection::Unspecified => {
            "the broker closed the connection as soon as it received the device certificate. It \
             is not signed by a CA the broker trusts, has expired, was revoked, or is not \
             registered (ACTIVE) in this AWS IoT account and region"
        }
    }
}

/// What both transports offer, for the texts about TLS versions and cipher suites.
const TLS_OFFERED: &str = "TLS 1.2 or 1.3 from the Linux transport; TLS 1.3 with \
     TLS_AES_128_GCM_SHA256 and P-256 key exchange from the firmware";

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyMismatch => f.write_str(
                "the private key does not match the device certificate: they come from different \
                 key pairs. Re-provision the device, or load the key that was created with this \
                 certificate",
            ),
            Self::BadConfiguration(detail) => write!(f, "cannot connect: {detail}"),
            Self::DnsFailure { host, detail } => write!(
                f,
                "DNS failure: the broker name '{host}' could not be resolved ({detail}). Check \
                 the endpoint spelling and the network's DNS"
            ),
            Self::ConnectionRefused { address } => {
                f.write_str("connection refused")?;
                if !address.is_empty() {
                    write!(f, " by {address}")?;
                }
                f.write_str(
                    ": nothing is listening there. Check the port (8883, or 443 with ALPN) and \
                     that the broker is running",
                )
            }
            Self::NetworkError { detail } => write!(
                f,
                "network error: {detail}. Check the network connection and firewall"
            ),
            Self::Timeout { step, after_ms } => {
                f.write_str("timed out")?;
                if *after_ms > 0 {
                    write!(f, " after {after_ms} ms")?;
                }
                write!(
                    f,
                    " during {step}: the broker did not answer. Check the network, firewall and \
                     endpoint"
                )
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
                write!(
                    f,
                    "hostname mismatch: the broker's certificate is not valid for '{expected}'"
                )?;
                if !presented.is_empty() {
                    write!(f, " (it is for {})", presented.join(", "))?;
                }
                f.write_str(". Connect using the name in the certificate (the full endpoint name)")
            }
            Self::ServerCertificateExpired => f.write_str(
                "the broker's certificate has expired (or this device's clock is ahead). Check \
                 the clock; if it is right, the broker must renew its certificate",
            ),
            Self::ServerCertificateNotYetValid => f.write_str(
                "the broker's certificate is not valid yet (or this device's clock is behind). \
                 Check the clock (NTP/SNTP)",
            ),
            Self::ClockNotSynced { now_unix } => {
                match now_unix {
                    Some(t) => write!(
                        f,
                        "clock not synced: this device's time ({t} s since 1970) is before 2024"
                    )?,
                    None => f.write_str("clock not synced: this device has no time of day yet")?,
                }
                f.write_str(
                    ", so no certificate can be validated. Synchronise the clock (NTP/SNTP) \
                     before connecting",
                )
            }
            Self::ServerCertificateInvalid(detail) => {
                write!(f, "the broker's certificate is invalid: {detail}")
            }
            Self::ClientCertificateRejected(why) => write!(
                f,
                "client certificate rejected by the broker: {}",
                rejection_text(*why)
            ),
            Self::TlsVersionNotSupported => write!(
                f,
                "TLS version not supported: the broker offers no version or cipher suite we \
                 accept ({TLS_OFFERED}). The broker must enable TLS 1.2+ (1.3 for the firmware)"
            ),
            Self::TlsFailure(detail) => write!(f, "TLS handshake failed: {detail}"),
            Self::BrokerRefused { code } => write!(
                f,
                "the broker refused the connection: CONNACK code {code}, {}",
                connack_meaning(*code)
            ),
            Self::SubscriptionRefused { topic } => write!(
                f,
                "the broker refused the subscription to '{topic}' (SUBACK 0x80): the policy does \
                 not allow it"
            ),
            Self::ClosedByBroker { step: Step::Tls } => write!(
                f,
                "the broker closed the connection during the TLS handshake without a TLS alert: \
                 it may accept no TLS version or cipher suite we offer ({TLS_OFFERED}), or the \
                 port is not a TLS port. Check the port and the broker's TLS settings"
            ),
            Self::ClosedByBroker { step } => write!(
                f,
                "the broker closed the connection during {step} without saying why. On AWS IoT \
                 this means the policy forbids this client id, topic or action, or another \
                 connection took over the same client id"
            ),
            Self::ProtocolError(detail) => write!(f, "MQTT protocol error: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn tls_verdicts_belong_to_the_tls_step_wherever_they_surface() {
        let d = Diagnosis::ClientCertificateRejected(ClientCertRejection::UnknownCa);
        assert_eq!(d.step(Step::Connack), Step::Tls);
        assert!(d.to_string().contains("client certificate rejected"));
        assert_eq!(Diagnosis::KeyMismatch.step(Step::Tls), Step::Config);
        assert_eq!(
            Diagnosis::ClosedByBroker { step: Step::Suback }.step(Step::Suback),
            Step::Suback
        );
    }

    #[test]
    fn only_revocation_is_refused_for_good() {
        let revoked = Diagnosis::ClientCertificateRejected(ClientCertRejection::Revoked);
        assert!(revoked.is_credentials_refused() && !revoked.is_transient());
        assert!(Diagnosis::ClockNotSynced { now_unix: None }.is_transient());
        assert!(Diagnosis::BrokerRefused { code: 3 }.is_transient());
        assert!(!Diagnosis::BrokerRefused { code: 5 }.is_transient());
    }

    #[test]
    fn texts_say_what_and_how_to_fix() {
        let cases = [
            (
                Diagnosis::BrokerRefused { code: 5 },
                "code 5, not authorized",
            ),
            (
                Diagnosis::Timeout {
                    step: Step::Connack,
                    after_ms: 30_000,
                },
                "timed out after 30000 ms during connack",
            ),
            (
                Diagnosis::Timeout {
                    step: Step::Tcp,
                    after_ms: 0,
                },
                "timed out during tcp",
            ),
            (
                Diagnosis::ClockNotSynced {
                    now_unix: Some(86_400),
                },
                "(86400 s since 1970) is before 2024",
            ),
            (
                Diagnosis::ClockNotSynced { now_unix: None },
                "no time of day yet",
            ),
            (
                Diagnosis::ConnectionRefused {
                    address: String::new(),
                },
                "connection refused: nothing",
            ),
            (
                Diagnosis::HostnameMismatch {
                    expected: "a.example".into(),
                    presented: vec!["b.example".into()],
                },
                "'a.example' (it is for b.example)",
            ),
            (
                Diagnosis::ClientCertificateRejected(ClientCertRejection::Unspecified),
                "as soon as it received the device certificate",
            ),
            (Diagnosis::TlsVersionNotSupported, "TLS 1.2 or 1.3"),
        ];
        for (d, text) in cases {
            assert!(d.to_string().contains(text), "{d}");
        }
    }
}
