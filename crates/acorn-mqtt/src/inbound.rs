//! Inbound messages (settings and commands): size limit, JSON shape, types and ranges.
//!
//! A bad message is an [`Error`] value, never a panic; the agent answers it with
//! [`crate::DeviceStatusMessage::rejected`], echoing [`request_id_of`] when one can be read.

use alloc::string::{String, ToString};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::limits::MAX_PAYLOAD_BYTES;
use crate::settings::{RawSettingsUpdate, SettingsUpdate};
use crate::topics::{InboundTopic, Topics};
use crate::Error;

/// Longest `requestId`, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 64;

/// A command the backend can send on `acorn-pups/commands/{device_id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandKind {
    /// Answer `ok` at once: proves the device is reachable end to end.
    Ping,
    /// Answer with settings and diagnostics.
    GetStatus,
    /// Drop the connection and reconnect (still at most one CONNECT per second).
    Reconnect,
    /// Replace the device's key and certificate (AWS IoT's `CreateCertificateFromCsr` and
    /// `RegisterThing`), trying the new one before committing to it.
    RotateCertificate,
}

impl CommandKind {
    /// The wire name (`ping`, `get-status`, `reconnect`), also the reply's `command` field.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Ping => "ping",
            CommandKind::GetStatus => "get-status",
            CommandKind::Reconnect => "reconnect",
            CommandKind::RotateCertificate => "rotate-certificate",
        }
    }
}

/// A validated command.
///
/// ```json
/// {"requestId":"req-7","command":"get-status"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandMessage {
    /// Echoed in the reply; 1..=64 bytes.
    pub request_id: String,
    /// What to do.
    pub command: CommandKind,
}

/// A validated inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A partial settings update.
    Settings(SettingsUpdate),
    /// A command.
    Command(CommandMessage),
}

pub(crate) fn check_request_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID_BYTES {
        return Err(Error::FieldLength {
            field: "requestId",
            len: id.len(),
            max: MAX_REQUEST_ID_BYTES,
        });
    }
    Ok(())
}

/// Size check, then JSON parse into `T` with the parser's message (field, type, position).
pub(crate) fn parse_json<T: DeserializeOwned>(topic: &str, payload: &[u8]) -> Result<T, Error> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::InboundTooLarge {
            topic: topic.to_string(),
            len: payload.len(),
        });
    }
    serde_json::from_slice(payload).map_err(|e| Error::InboundJson {
        topic: topic.to_string(),
        detail: e.to_string(),
    })
}

/// Validates a message that arrived on one of the device's subscribed topics.
pub fn parse_inbound(topics: &Topics, topic: &str, payload: &[u8]) -> Result<Inbound, Error> {
    match topics.classify(topic)? {
        InboundTopic::Settings => {
            let raw: RawSettingsUpdate = parse_json(topic, payload)?;
            raw.validate().map(Inbound::Settings)
        }
        InboundTopic::Commands => {
            let cmd: CommandMessage = parse_json(topic, payload)?;
            check_request_id(&cmd.request_id)?;
            Ok(Inbound::Command(cmd))
        }
    }
}

/// Reads `requestId` from a message that may have failed validation, to echo it in the error
/// reply: `Some` only for a JSON object ≤ 128 KB whose `requestId` is a string of 1..=64 bytes.
pub fn request_id_of(payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "requestId")]
        request_id: Option<serde_json::Value>,
    }
    if payload.len() > MAX_PAYLOAD_BYTES {
        return None;
    }
    let probe: Probe = serde_json::from_slice(payload).ok()?;
    match probe.request_id? {
        serde_json::Value::String(s) if check_request_id(&s).is_ok() => Some(s),
        _ => None,
    }
}
