//! The crate's error type: every variant says what went wrong, where, and how to fix it.

use alloc::string::String;

/// Everything that can go wrong in `acorn-mqtt`: AWS IoT Core limit violations caught before
/// sending, bad configuration, and rejected inbound messages.
///
/// Inbound variants are meant to be turned into an error status reply by the agent
/// (see [`crate::DeviceStatusMessage::rejected`]); their `Display` text is that reply's
/// `error` field, so it never contains secrets, only the offending field and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The MQTT client id is empty or longer than AWS IoT Core accepts.
    #[error("client id is {len} bytes; AWS IoT Core accepts 1..=128 bytes: use the device id (thing name)")]
    ClientIdLength {
        /// Length of the rejected client id, in bytes.
        len: usize,
    },
    /// The client id contains a NUL or control character.
    #[error("client id contains a control character at byte {at}; use letters, digits, ':', '_' and '-'")]
    ClientIdCharacter {
        /// Byte offset of the first offending character.
        at: usize,
    },
    /// The keepalive interval is outside what AWS IoT Core accepts.
    #[error("keepalive of {secs} s is outside AWS IoT Core's 30..=1200 s; the seed uses 60 s")]
    KeepAlive {
        /// The rejected keepalive, in seconds.
        secs: u16,
    },
    /// A topic is empty.
    #[error("topic is empty; topics look like acorn-pups/status/<device id>")]
    TopicEmpty,
    /// A topic is longer than AWS IoT Core accepts.
    #[error("topic is {len} bytes; AWS IoT Core accepts at most 256 bytes: shorten the device id")]
    TopicTooLong {
        /// Length of the rejected topic, in bytes.
        len: usize,
    },
    /// A topic has more levels than AWS IoT Core accepts.
    #[error("topic has {slashes} '/' separators; AWS IoT Core accepts at most 7")]
    TopicTooDeep {
        /// Number of '/' in the rejected topic.
        slashes: usize,
    },
    /// A topic name (for publishing) contains a wildcard, NUL, or a misplaced wildcard in a filter.
    #[error("topic {topic:?} has an invalid character at byte {at}: publish topics may not contain '+', '#' or NUL, and filter wildcards must fill a whole level")]
    TopicCharacter {
        /// The rejected topic.
        topic: String,
        /// Byte offset of the first offending character.
        at: usize,
    },
    /// A device id cannot be used as a topic level.
    #[error("device id {id:?} is not a valid device id: use 1..=128 of the characters A-Z a-z 0-9 '_' '-'")]
    DeviceId {
        /// The rejected device id.
        id: String,
    },
    /// A service identity name is not usable.
    #[error("service name {name:?} is not usable: use 1..=48 of the characters a-z 0-9 '-'")]
    ServiceName {
        /// The rejected name.
        name: String,
    },
    /// A payload is larger than AWS IoT Core accepts.
    #[error("payload is {len} bytes; AWS IoT Core accepts at most 131072 bytes (128 KB)")]
    PayloadTooLarge {
        /// Length of the rejected payload, in bytes.
        len: usize,
    },
    /// QoS 2 was requested; AWS IoT Core does not support it.
    #[error(
        "QoS {qos} is not supported by AWS IoT Core; use 0 (at most once) or 1 (at least once)"
    )]
    QosUnsupported {
        /// The requested QoS level.
        qos: u8,
    },
    /// A QoS 0 message was published while disconnected; QoS 0 messages are never queued.
    #[error("QoS 0 message to {topic:?} dropped: not connected; publish with QoS 1 to have it queued until reconnect")]
    NotConnected {
        /// Topic of the dropped message.
        topic: String,
    },
    /// A QoS 0 message would exceed the publish rate limit; it was not sent.
    #[error("QoS 0 message dropped: more than {per_sec} publishes in one second (AWS IoT Core allows 100 per connection); use QoS 1 to have it queued")]
    RateLimited {
        /// The configured limit.
        per_sec: u32,
    },
    /// The session was stopped; it accepts no more messages.
    #[error("session is stopped; create a new session (or send Event::Start) to publish again")]
    Stopped,
    /// A session configuration value is inconsistent.
    #[error("session configuration: {what}")]
    Config {
        /// What is wrong and how to fix it.
        what: &'static str,
    },
    /// An inbound message is larger than the 128 KB limit.
    #[error("inbound message on {topic:?} is {len} bytes; the limit is 131072 bytes")]
    InboundTooLarge {
        /// Topic the message arrived on.
        topic: String,
        /// Length of the message, in bytes.
        len: usize,
    },
    /// An inbound message is not a JSON object of the expected shape or types.
    #[error("inbound message on {topic:?} is not valid: {detail}")]
    InboundJson {
        /// Topic the message arrived on.
        topic: String,
        /// What the JSON parser or shape check reported (field, expected type, position).
        detail: String,
    },
    /// An inbound field is outside its allowed range.
    #[error("field {field:?} is {value}; allowed range is {min}..={max}")]
    OutOfRange {
        /// The JSON field name.
        field: &'static str,
        /// The rejected value.
        value: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// An inbound string field is empty or too long.
    #[error("field {field:?} is {len} bytes; it must be 1..={max} bytes")]
    FieldLength {
        /// The JSON field name.
        field: &'static str,
        /// Length of the rejected value, in bytes.
        len: usize,
        /// Largest allowed length, in bytes.
        max: usize,
    },
    /// A provisioning API topic, template name or answer is not as AWS documents it.
    #[error("device provisioning API: {detail}")]
    Provisioning {
        /// What is wrong and where.
        detail: String,
    },
    /// A settings update names no setting at all.
    #[error("settings update changes nothing; give at least one of soundEnabled, soundVolume, ledBrightness, cooldownMs, heartbeatSeconds")]
    EmptySettings,
    /// An inbound message arrived on a topic the device does not handle.
    #[error("message on unexpected topic {topic:?}; the device handles acorn-pups/settings/<id> and acorn-pups/commands/<id>")]
    UnexpectedTopic {
        /// The topic.
        topic: String,
    },
    /// A message could not be serialized to JSON (a bug: report it).
    #[error("message could not be serialized to JSON: {detail}")]
    Serialize {
        /// What serde_json reported.
        detail: String,
    },
    /// A timestamp is not ISO 8601 UTC as `YYYY-MM-DDTHH:MM:SS.sssZ`.
    #[error("timestamp {value:?} is not ISO 8601 UTC like 2026-11-28T16:42:07.123Z")]
    Timestamp {
        /// The rejected timestamp text.
        value: String,
    },
}
