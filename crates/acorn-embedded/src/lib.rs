//! # acorn-embedded
//!
//! The embedded transport of the Acorn Pups device, `#![no_std]` + `alloc`: TLS 1.3 with
//! [embedded-tls](https://crates.io/crates/embedded-tls) (client certificate and P-256 key from
//! the identity store, the broker's chain verified by our own verifier against pinned Amazon
//! Root CA 1 and 3 or a given CA, host name and dates checked against the synced clock), MQTT
//! 3.1.1 with the [mqttrs](https://crates.io/crates/mqttrs) codec behind a guard that makes
//! decoding total, and `acorn_mqtt::Session` as the only connection policy (this crate has no
//! reconnect logic of its own). It runs over `embedded-io-async`: embassy-net on the ESP32-C3,
//! tokio TCP (through `embedded-io-adapters`, feature `tokio`) on Linux, the same code.
//!
//! Modules, one job each: [`identity`] (P-256 identity; RSA refused up front), [`verify`]
//! (chain, host name, dates, handshake signature), [`tls`] (embedded-tls provider and
//! handshake), [`codec`] (MQTT packets), [`duplex`] (a splittable stream), [`transport`]
//! (the session-driven connection driver), [`ping`] (one timed pass through every step),
//! [`diagnosis`] (plain-language failures), [`boot`] (the firmware's boot state machine),
//! [`app`] (a minimal application: presses and `online`), `device` (feature `device`: the
//! device core, `acorn_device::Device`, driving the transport — what the firmware runs),
//! `register` (feature `register`: registration on the chip), `host` (feature `tokio`).
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `rsa` | yes | RSA server chains (Amazon Root CA 1) and RSA-PSS handshake signatures (~40 KB of flash) |
//! | `p384` | yes | P-384 server keys and signatures |
//! | `certs-full` | yes | acorn-certs' default features: RSA and P-384 identities, full DN names (~224 KB) |
//! | `device` | no | `device::DeviceDriver` |
//! | `register` | no | `register`: P-256 key, CSR, HTTP registration with acorn-api's types |
//! | `tokio` | no | `host`: the transport over tokio TCP on Linux |
//!
//! The ESP32-C3 firmware uses `default-features = false, features = ["device"]` (+ `rsa`).
//!
//! ## Fixed buffer sizes
//!
//! | buffer | bytes | why |
//! |---|---|---|
//! | TLS record read ([`tls::TLS_READ_BUFFER`]) | 16,640 | one whole TLS record (16 KiB + 256) |
//! | TLS record write ([`tls::TLS_WRITE_BUFFER`]) | 4,096 | the client's handshake flight |
//! | MQTT receive ([`codec::MQTT_RX_BUFFER`]) | 4,096 | larger inbound messages are acknowledged and skipped |
//!
//! They are allocated once ([`Buffers`]) and reused by every connection. Outbound packets are
//! encoded into buffers of exactly their size.
//!
//! ## Ping and run on Linux
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn demo(certs: acorn_certs::DeviceCertificates, ca_pem: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use acorn_embedded::{host, ping::PingOptions, Target, TlsIdentity, TrustAnchors};
//!
//! // An RSA identity is refused here, before any connection, naming the key type needed.
//! let identity = TlsIdentity::from_certificates(&certs)?;
//! let anchors = TrustAnchors::from_pem(ca_pem)?; // or TrustAnchors::amazon()
//! let target = Target::new("localhost", 8883);
//! let options = PingOptions::new(target.clone(), identity.device_id(), b"{}".to_vec());
//! match host::ping(&identity, &anchors, &options).await {
//!     Ok(report) => println!("ok in {} ms: {:?}", report.total_ms, report.steps),
//!     Err(failure) => eprintln!("{failure}"), // e.g. "tls failed: unknown server CA: ..."
//! }
//!
//! // The long-running device: the session decides, the transport carries out.
//! use acorn_embedded::{app::{BasicDevice, RequestSource}, Buffers, Request, Transport, TransportConfig};
//! use acorn_mqtt::{Session, SessionConfig, Topics};
//! struct Channel(tokio::sync::mpsc::Receiver<Request>);
//! impl RequestSource for Channel {
//!     async fn next(&mut self) -> Request { self.0.recv().await.unwrap_or(Request::Stop) }
//! }
//! let topics = Topics::new(identity.device_id())?;
//! let (tx, rx) = tokio::sync::mpsc::channel(16);
//! let mut device = BasicDevice::new(topics.clone(), "1.0.0", || 1_800_000_000_000, Channel(rx));
//! let mut config = TransportConfig::new(target);
//! config.will = device.last_will();
//! let mut buffers = Buffers::new();
//! let mut transport = Transport::new(
//!     host::TokioConnector, host::SystemClock::new(), host::OsRng,
//!     &identity, &anchors, config, &mut buffers,
//! );
//! let mut session = Session::new(SessionConfig::for_device(&topics), rand::rngs::OsRng)?;
//! tx.send(BasicDevice::<Channel>::press(&topics, "rf-5a3c", 1_800_000_000_000, Some(87))?).await?;
//! tx.send(Request::Stop).await?;
//! transport.run(&mut session, &mut device).await; // returns after Stop
//! # Ok(()) }
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod app;
pub mod boot;
#[cfg(feature = "claim")]
pub mod claim;
pub mod codec;
#[cfg(any(feature = "register", feature = "rotation", feature = "claim"))]
pub mod csr;
#[cfg(feature = "device")]
pub mod device;
pub mod diagnosis;
pub mod duplex;
pub mod error;
#[cfg(feature = "tokio")]
pub mod host;
pub mod identity;
pub mod ping;
#[cfg(feature = "register")]
pub mod register;
#[cfg(feature = "device")]
pub mod rotation;
pub mod sntp;
pub mod tls;
pub mod transport;
pub mod verify;

pub use diagnosis::{ClientCertRejection, DiagnoseEmbedded, Diagnosis, Step};
pub use error::{IdentityError, RootsError};
pub use identity::TlsIdentity;
pub use ping::{PingFailure, PingOptions, PingReport};
pub use transport::{
    Application, Buffers, Clock, ConnectOrder, Connector, Driver, LinkEvent, Notice, Order,
    OutPublish, Request, Target, Time, Transport, TransportConfig,
};
pub use verify::{ServerCertFailure, TrustAnchors};
