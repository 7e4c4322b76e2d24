//! acorn-devstack: the broker side of the local development stack (`acorn dev up`) and of the
//! integration tests — mosquitto 2.0 configured like an AWS IoT Core policy, with a device
//! listener (per-device rules, CRL) and a service listener (service identities only).
//!
//! See [`broker`] for the details and an example. With the feature `embedded` (on by default),
//! [`embedded`] is an MQTT 3.1.1 broker in the process with the same rules, for `acorn demo`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
#[cfg(feature = "embedded")]
pub mod embedded;

pub use broker::{free_port, Broker, BrokerConfig, BrokerError};
