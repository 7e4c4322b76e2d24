//! The crate's error type: every variant says what went wrong and how to fix it.

use alloc::string::String;

/// Why a device cannot be built or a press was refused. Messages never hold key material
/// (the core never sees any).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A device id, message or session parameter breaks an MQTT or AWS IoT Core rule (the
    /// text names the field and the limit).
    #[error(transparent)]
    Mqtt(#[from] acorn_mqtt::Error),
    /// The session's client id is not the device id.
    #[error("the session's client id {client_id:?} is not the device id {device_id:?}: AWS IoT Core ties the client id to the thing name; build the session with SessionConfig::for_device(&Topics::new(device_id)?) or DeviceConfig::new")]
    ClientIdMismatch {
        /// The session's client id.
        client_id: String,
        /// The device id.
        device_id: String,
    },
    /// The session does not subscribe to the device's settings and commands topics.
    #[error("the session must subscribe to exactly {expected:?} (the device's settings and commands topics) so that it receives settings and commands; keep the subscriptions of SessionConfig::for_device")]
    Subscriptions {
        /// The two filters the device needs.
        expected: [String; 2],
    },
    /// The firmware version is empty or too long.
    #[error("firmware version is {len} bytes; give 1..=64 bytes, such as \"1.0.0\" (it is sent as firmwareVersion in every status message)")]
    FirmwareVersion {
        /// Its length in bytes.
        len: usize,
    },
    /// A device parameter is unusable.
    #[error("device configuration: {what}")]
    Config {
        /// What is wrong and how to fix it.
        what: &'static str,
    },
    /// The device is shutting down or stopped.
    #[error("the device is shutting down or stopped and takes no more presses; create a new Device to run again")]
    Stopped,
}
