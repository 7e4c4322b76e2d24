//! Host transport of the Acorn Pups device: MQTT 3.1.1 over mutual TLS (rustls with the
//! `ring` provider, rumqttc 0.25 on tokio), with a plain-language [`Diagnosis`] of every
//! failure and a step-timed [`ping()`].
//!
//! - [`ClientIdentity`] (certificate + secret key, PKCS#1/PKCS#8/SEC1) and [`BrokerTarget`]
//!   (host, port, TLS server name, ALPN) say who connects where;
//! - [`TrustRoots`] pins the broker's roots: Amazon Root CA 1 and 3 built in, or a CA file;
//! - [`tls::client_config`] builds the rustls config (TLS 1.2+, hostname verification always
//!   on, client auth, optional ALPN `x-amzn-mqtt-ca`) and refuses a key that does not match
//!   its certificate before anything is sent;
//! - [`ping::ping()`] times DNS, TCP, TLS, CONNACK, SUBACK, PUBACK and DISCONNECT;
//! - [`SessionOptions`] makes the rumqttc client and event loop for a long-running session
//!   (the device runtime in `acorn-agent`, the dev stack's service clients).
//!
//! This crate has no HTTP client and no key generation: `ping` alone builds from it.
//!
//! ```no_run
//! use acorn_transport::{ping, BrokerTarget, ClientIdentity, PingOptions, SecretString, TrustRoots};
//! # async fn run(cert_pem: String, key_pem: String) {
//! let identity = ClientIdentity::new(cert_pem, SecretString::from(key_pem));
//! let target = BrokerTarget::aws("abc123-ats.iot.eu-west-1.amazonaws.com", false);
//! let options = PingOptions::new(target, identity, TrustRoots::Amazon, "device-1", "1.0.0");
//! match ping(&options).await {
//!     Ok(report) => println!("ok in {:?}: {:?}", report.total, report.steps),
//!     Err(failure) => eprintln!("{failure}"),
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connection;
pub mod diagnosis;
pub mod error;
pub mod identity;
pub mod ping;
pub mod presence;
pub mod roots;
pub mod tls;

pub use connection::SessionOptions;
pub use diagnosis::{ClientCertRejection, DiagnoseHost, Diagnosis, Step};
pub use error::ConfigError;
pub use identity::{BrokerTarget, ClientIdentity, DerKeyFormat};
pub use ping::{ping, PingFailure, PingOptions, PingReport};
pub use roots::TrustRoots;
/// The one secret type of the workspace (private keys as PEM text or DER bytes, tokens, admin
/// keys): `secrecy`'s, zeroized on drop, `[REDACTED]` in Debug, no Display and no `PartialEq`;
/// read it with [`ExposeSecret::expose_secret`] only where it must leave the process.
pub use secrecy::{ExposeSecret, SecretSlice, SecretString};
pub use tls::TlsVersions;

/// Re-export of rumqttc, so callers use the same version.
pub use rumqttc;
