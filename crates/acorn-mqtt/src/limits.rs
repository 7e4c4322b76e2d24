//! AWS IoT Core protocol limits, checked before anything is sent.
//!
//! Source: AWS IoT Core "Message broker and protocol limits and quotas". Everything here is a
//! pure check; the [`crate::Session`] runs them on every publish request, and the agent runs
//! [`check_client_id`] and [`check_keep_alive`] on its configuration.

use alloc::string::ToString;

use crate::Error;

/// Longest client id AWS IoT Core accepts, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Longest topic (name or filter) AWS IoT Core accepts, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most '/' separators a topic may have on AWS IoT Core.
pub const MAX_TOPIC_SLASHES: usize = 7;
/// Largest payload AWS IoT Core accepts, in bytes (128 KB). Also the inbound limit.
pub const MAX_PAYLOAD_BYTES: usize = 131_072;
/// Shortest keepalive AWS IoT Core accepts, in seconds.
pub const MIN_KEEP_ALIVE_SECS: u16 = 30;
/// Longest keepalive AWS IoT Core accepts, in seconds.
pub const MAX_KEEP_ALIVE_SECS: u16 = 1200;
/// AWS IoT Core accepts at most 100 publishes per second per connection.
pub const MAX_PUBLISHES_PER_SEC: u32 = 100;
/// AWS IoT Core accepts one CONNECT per second per client id; the session never connects faster.
pub const MIN_CONNECT_INTERVAL_MS: u64 = 1000;

/// MQTT quality of service. There is no QoS 2: AWS IoT Core does not support it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QoS {
    /// QoS 0: fire and forget. Never queued while disconnected.
    AtMostOnce,
    /// QoS 1: acknowledged by PUBACK; queued while disconnected and re-sent until acknowledged.
    AtLeastOnce,
}

impl QoS {
    /// The numeric MQTT level (0 or 1).
    pub fn level(self) -> u8 {
        match self {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => 1,
        }
    }
}

impl TryFrom<u8> for QoS {
    type Error = Error;

    /// Accepts 0 and 1; QoS 2 and anything else is [`Error::QosUnsupported`].
    fn try_from(level: u8) -> Result<Self, Error> {
        match level {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            qos => Err(Error::QosUnsupported { qos }),
        }
    }
}

/// Checks a client id: 1..=128 bytes and no control characters.
pub fn check_client_id(client_id: &str) -> Result<(), Error> {
    let len = client_id.len();
    if len == 0 || len > MAX_CLIENT_ID_BYTES {
        return Err(Error::ClientIdLength { len });
    }
    if let Some((at, _)) = client_id.char_indices().find(|(_, c)| c.is_control()) {
        return Err(Error::ClientIdCharacter { at });
    }
    Ok(())
}

/// Checks a keepalive interval: 30..=1200 seconds.
pub fn check_keep_alive(secs: u16) -> Result<(), Error> {
    if (MIN_KEEP_ALIVE_SECS..=MAX_KEEP_ALIVE_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(Error::KeepAlive { secs })
    }
}

/// Checks a payload size: at most 131072 bytes.
pub fn check_payload(payload: &[u8]) -> Result<(), Error> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        Err(Error::PayloadTooLarge { len: payload.len() })
    } else {
        Ok(())
    }
}

fn check_topic_shape(topic: &str) -> Result<(), Error> {
    if topic.is_empty() {
        return Err(Error::TopicEmpty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(Error::TopicTooLong { len: topic.len() });
    }
    let slashes = topic.bytes().filter(|&b| b == b'/').count();
    if slashes > MAX_TOPIC_SLASHES {
        return Err(Error::TopicTooDeep { slashes });
    }
    if let Some(at) = topic.bytes().position(|b| b == 0) {
        return Err(Error::TopicCharacter {
            topic: topic.to_string(),
            at,
        });
    }
    Ok(())
}

/// Checks a topic name to publish to: 1..=256 bytes, at most 7 '/', no wildcard, no NUL.
pub fn check_topic(topic: &str) -> Result<(), Error> {
    check_topic_shape(topic)?;
    if let Some(at) = topic.bytes().position(|b| b == b'+' || b == b'#') {
        return Err(Error::TopicCharacter {
            topic: topic.to_string(),
            at,
        });
    }
    Ok(())
}

/// Checks a topic filter to subscribe to: like [`check_topic`], but `+` may fill a whole level
/// and `#` may be the whole last level.
pub fn check_topic_filter(filter: &str) -> Result<(), Error> {
    check_topic_shape(filter)?;
    let mut offset = 0;
    let levels: alloc::vec::Vec<&str> = filter.split('/').collect();
    let last = levels.len().saturating_sub(1);
    for (i, level) in levels.iter().enumerate() {
        let bad = level
            .bytes()
            .position(|b| b == b'+' || b == b'#')
            .filter(|_| !(*level == "+" || (*level == "#" && i == last)));
        if let Some(at) = bad {
            return Err(Error::TopicCharacter {
                topic: filter.to_string(),
                at: offset + at,
            });
        }
        offset += level.len() + 1;
    }
    Ok(())
}
