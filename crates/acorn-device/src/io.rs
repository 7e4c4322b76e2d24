//! What goes into the device core (the time, transport events) and what comes out (actions).

use alloc::string::String;
use alloc::vec::Vec;

use acorn_mqtt::{DisconnectCause, PublishId, QoS};

use crate::notice::Notice;
use crate::presses::PressId;

/// The time of an input, read by the driver from its clocks.
///
/// `mono_ms` drives every timer (backoff, health, cooldown, shutdown bound): milliseconds of a
/// monotonic clock, any origin (a value earlier than a previous one counts as the previous
/// one). `unix_ms` is the wall clock (SNTP on the chip, the system clock on Linux) and only
/// stamps messages (`timestamp`, ISO 8601 UTC); a clock that is not synced yet gives 1970
/// timestamps, never a wrong timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Now {
    /// Monotonic milliseconds.
    pub mono_ms: u64,
    /// Unix milliseconds (wall clock).
    pub unix_ms: u64,
}

impl Now {
    /// A time from the monotonic and the wall clock.
    pub const fn new(mono_ms: u64, unix_ms: u64) -> Self {
        Self { mono_ms, unix_ms }
    }
}

/// What a publish is for, so that its PUBACK can be reported with
/// [`TransportEvent::PubAck`]. The driver keeps it beside the MQTT packet id the transport
/// assigned and hands it back when the PUBACK for that packet id arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Tag {
    /// A message of the session's ordered QoS 1 queue (a press or a reply).
    Message(PublishId),
    /// The `online` status sent once the device can receive (never re-sent: the next
    /// connection sends a new one).
    Online,
    /// The `offline` status sent at shutdown.
    Offline,
    /// A heartbeat status (never re-sent: the next one is due soon enough).
    Heartbeat,
    /// A request of AWS IoT's provisioning API (certificate rotation): never re-sent on
    /// another connection (AWS answers the requesting connection only; the core asks again).
    Rotation,
}

impl Tag {
    /// The session id, for a message of the session queue.
    pub fn message_id(self) -> Option<PublishId> {
        match self {
            Tag::Message(id) => Some(id),
            _ => None,
        }
    }
}

/// What the transport reports. Diagnoses are plain language (the Linux transport maps its
/// errors with its diagnosis module; the firmware with the same vocabulary).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent<'a> {
    /// CONNACK accepted.
    ConnAck {
        /// The broker kept this client's session (its subscriptions hold).
        session_present: bool,
    },
    /// CONNACK refused with an MQTT 3.1.1 return code (1..=5).
    ConnectRefused {
        /// The return code.
        code: u8,
    },
    /// The connect failed before a CONNACK (DNS, TCP, TLS, timeout).
    ConnectFailed {
        /// What failed, in plain language.
        diagnosis: String,
    },
    /// The broker refuses this certificate for good (revoked): retry only slowly.
    CredentialsRefused {
        /// What failed, in plain language.
        diagnosis: String,
    },
    /// An established connection ended (also: the transport could not take a request).
    /// The core treats the connection as gone; the driver drops it.
    Disconnected {
        /// Who ended it.
        cause: DisconnectCause,
        /// What happened, in plain language.
        diagnosis: String,
    },
    /// PINGRESP received.
    PingResponse,
    /// No PINGRESP in time: the core drops the connection ([`Action::Disconnect`]) and backs
    /// off.
    PingTimeout,
    /// The PUBACK of a publish this core asked for.
    PubAck(Tag),
    /// Some other packet from the broker (e.g. a PUBACK whose packet id is not known): counts
    /// as broker activity for the health check.
    Activity,
    /// SUBACK received.
    SubAck {
        /// Every filter was granted (no 0x80 failure code).
        granted: bool,
    },
    /// A PUBLISH from the broker (the transport acknowledges it itself at QoS 1).
    Message {
        /// Its topic.
        topic: &'a str,
        /// Its payload, as received (validated here, size first).
        payload: &'a [u8],
    },
}

/// The last will the broker publishes when the device vanishes: `offline` on the status topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// `acorn-pups/status/{deviceId}`.
    pub topic: String,
    /// A status message with `"status":"offline"`.
    pub payload: Vec<u8>,
    /// QoS 1.
    pub qos: QoS,
    /// Never retained.
    pub retain: bool,
}

/// Open the transport and send CONNECT with these parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// 1-based attempt number.
    pub attempt: u64,
    /// The MQTT client id (= device id = thing name).
    pub client_id: String,
    /// Keepalive, seconds.
    pub keep_alive_secs: u16,
    /// Always `false`: the broker keeps the session (subscriptions, QoS 1 messages) across
    /// connections.
    pub clean_session: bool,
    /// The last will, stamped at this attempt.
    pub will: LastWill,
}

/// Send this PUBLISH (never retained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Report its PUBACK with this tag.
    pub tag: Tag,
    /// Topic name (one of this device's two publish topics).
    pub topic: String,
    /// JSON payload.
    pub payload: Vec<u8>,
    /// QoS (always 1 today).
    pub qos: QoS,
    /// A re-send of a message sent on an earlier connection: set the MQTT DUP flag.
    pub retransmit: bool,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Close any connection still open, open the transport and send CONNECT. Answer with
    /// [`TransportEvent::ConnAck`], [`TransportEvent::ConnectRefused`],
    /// [`TransportEvent::ConnectFailed`] or [`TransportEvent::CredentialsRefused`].
    Connect(Connect),
    /// SUBSCRIBE to these filters at QoS 1; answer with [`TransportEvent::SubAck`]. If the
    /// transport cannot take it, report [`TransportEvent::Disconnected`].
    Subscribe(Vec<String>),
    /// Send a PUBLISH. With no connection (it dropped meanwhile), drop it: the session sends
    /// its messages again after the next connect.
    Publish(Publish),
    /// Close the connection (DISCONNECT when it is up), bounded by the driver.
    Disconnect,
    /// Something to log or show: [`Notice::level`] and its `Display` text.
    Notice(Notice),
    /// Shutdown is over: the `offline` status was sent (and acknowledged, or the bound ran
    /// out), the connection closed. Stop driving.
    ShutdownComplete,
    /// A certificate rotation step for the driver (key, candidate identity); answer with
    /// [`crate::Device::rotation`]. Drivers without rotation support never see it (the core
    /// only rotates with [`crate::DeviceConfig::rotation`] set).
    Rotation(crate::rotation::RotationRequest),
}

/// What a press became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressOutcome {
    /// Stored and queued for delivery at QoS 1 under this `pressId` (watch for
    /// [`Notice::PressDelivered`]).
    Queued(PressId),
    /// Ignored: the same button was pressed within the `cooldownMs` setting.
    CooledDown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_message_id() {
        assert_eq!(Tag::Message(PublishId(3)).message_id(), Some(PublishId(3)));
        assert_eq!(Tag::Online.message_id(), None);
    }
}
