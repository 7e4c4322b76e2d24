//! What the integration tests of the workspace share (a dev-dependency only):
//!
//! - [`mqtt`]: a PKI made at test time with rcgen, a real mosquitto started through
//!   `acorn-devstack` (device and service listeners), and rumqttc clients whose events arrive
//!   on a channel;
//! - [`backend`]: a registration backend in a temporary directory, an HTTP client, CSRs, and
//!   certificate checks with x509-parser.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod mqtt;
