//! What goes into the session (events, publish requests) and what comes out (actions).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::limits::QoS;
use crate::queue::PublishId;
use crate::status::{ConnectionStatus, HealthReport};

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCause {
    /// The broker closed it (DISCONNECT, or a TCP close from its side: AWS kicks a duplicate
    /// client id and may close on a not-authorized publish).
    Broker,
    /// The network failed (reset, timeout, TLS error mid-stream).
    Network,
}

/// What happened, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Begin connecting (also after [`Event::Stop`]).
    Start,
    /// CONNACK accepted.
    ConnAck {
        /// The broker still holds this client's session (subscriptions kept).
        session_present: bool,
    },
    /// CONNACK refused with an MQTT 3.1.1 return code (1..=5).
    ConnectRefused {
        /// The CONNACK return code.
        code: u8,
    },
    /// The connect failed before a CONNACK: DNS, TCP, TLS. The diagnosis is plain language
    /// (e.g. "server certificate signed by an unknown CA") and becomes the error status.
    ConnectFailed {
        /// What failed.
        diagnosis: String,
    },
    /// The connect failed because the broker refuses this device's certificate for good
    /// (revoked): retrying soon cannot help, so the session goes straight to the slow cadence
    /// (it still retries, in case a new certificate is stored or the refusal was an error).
    CredentialsRefused {
        /// What failed, in plain language.
        diagnosis: String,
    },
    /// An established connection ended.
    Disconnected {
        /// Who ended it.
        cause: DisconnectCause,
        /// What happened, in plain language.
        diagnosis: String,
    },
    /// PINGRESP received.
    PingResponse,
    /// The transport gave up waiting for a PINGRESP.
    PingTimeout,
    /// A message arrived from the broker (counts as broker activity).
    MessageReceived,
    /// PUBACK for a message (the driver maps its packet id to the [`PublishId`]).
    PublishAcked(PublishId),
    /// SUBACK received.
    SubscribeAcked {
        /// Every subscription was granted (no 0x80 failure code).
        granted: bool,
    },
    /// Drop the connection and connect again (the `reconnect` command), still respecting
    /// the one-CONNECT-per-second floor. Not counted as a failure. While waiting to reconnect,
    /// it cuts the backoff sleep short (e.g. when Wi-Fi has just come back).
    Reconnect,
    /// Disconnect and stop reconnecting. The driver publishes `offline` first if it wants to.
    Stop,
    /// Time passed: sent when [`Session::poll_timeout`] is reached.
    Tick,
}

/// Why a queued message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The queue was full; this was the oldest message.
    QueueFull,
    /// It expired before it could be sent.
    Expired,
}

/// A publish the driver must send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The session's id, to report its PUBACK with [`Event::PublishAcked`].
    pub id: PublishId,
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 0 or 1.
    pub qos: QoS,
    /// A re-send of a message sent on an earlier connection (set MQTT DUP).
    pub retransmit: bool,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open the transport and send CONNECT (clean session off, the configured client id and
    /// keepalive, last will = `offline` on the status topic). Answer with [`Event::ConnAck`],
    /// [`Event::ConnectRefused`] or [`Event::ConnectFailed`].
    Connect {
        /// 1-based attempt number since the session was created.
        attempt: u64,
    },
    /// Subscribe to these filters at QoS 1 (sent when the broker has no stored session).
    Subscribe(Vec<String>),
    /// Send this publish.
    Publish(Publish),
    /// Close the transport (send DISCONNECT if it is up).
    Disconnect,
    /// Nothing to do until this session time (ms): a backoff sleep began. Informational; the
    /// driver's timer follows [`Session::poll_timeout`].
    WaitUntil(u64),
    /// The connection status changed.
    ReportStatus(ConnectionStatus),
    /// A QoS 1 message was acknowledged.
    Delivered(PublishId),
    /// A queued message was dropped.
    Dropped {
        /// The message.
        id: PublishId,
        /// Why.
        reason: DropReason,
    },
    /// The periodic health report (log it).
    Health(HealthReport),
}

/// A publish request for [`Session::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 0 or 1.
    pub qos: QoS,
    /// Lifetime while queued, ms; `None` = the session's default.
    pub ttl_ms: Option<u64>,
}

impl PublishRequest {
    /// A QoS 1 request with the default lifetime.
    pub fn qos1(topic: &str, payload: Vec<u8>) -> Self {
        PublishRequest {
            topic: topic.to_string(),
            payload,
            qos: QoS::AtLeastOnce,
            ttl_ms: None,
        }
    }
}
