//! What the integration tests of the workspace share (a dev-dependency only):
//!
//! - [`mqtt`]: a PKI made at test time with rcgen, a real mosquitto started through
//!   `acorn-devstack` (device and service listeners), and rumqttc clients whose events arrive
//!   on a channel;
//! - [`backend`]: a registration backend in a temporary directory, an HTTP client, CSRs, and
//!   certificate checks with x509-parser;
//! - [`postgres`]: a real PostgreSQL cluster per test (initdb in a temporary directory, a free
//!   loopback port);
//! - [`moto`]: a local AWS IoT Core (moto's server), boto3 to read its state, and a proxy that
//!   injects AWS errors.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod moto;
pub mod mqtt;
pub mod postgres;
