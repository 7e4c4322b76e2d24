//! Outbound JSON messages: button presses and device status (which also carries command
//! replies). Field names are exactly the seed's; extra fields are optional and omitted when
//! unset, so a seed-shaped consumer keeps working.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::settings::DeviceSettings;
use crate::timestamp::{format_timestamp, parse_timestamp};
use crate::Error;

/// Largest `batteryLevel` (percent).
pub const MAX_BATTERY_LEVEL: u8 = 100;
/// Longest `deviceId` / `buttonRfId` / `requestId` accepted in a message, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Serializes any message to JSON bytes.
pub(crate) fn to_json<T: Serialize>(msg: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(msg).map_err(|e| Error::Serialize {
        detail: e.to_string(),
    })
}

fn check_id(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.len() > MAX_ID_BYTES {
        return Err(Error::FieldLength {
            field,
            len: value.len(),
            max: MAX_ID_BYTES,
        });
    }
    Ok(())
}

/// A button press, published at QoS 1 on `acorn-pups/button-press/{device_id}`.
///
/// ```json
/// {"deviceId":"acorn-0001","buttonRfId":"rf-5a3c","timestamp":"2026-11-28T16:42:07.123Z","batteryLevel":87}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonPressMessage {
    /// The device (thing name) that heard the press.
    #[serde(rename = "deviceId")]
    pub device_id: String,
    /// The RF id of the button that was pressed.
    #[serde(rename = "buttonRfId")]
    pub button_rf_id: String,
    /// When the press happened: ISO 8601 UTC with milliseconds.
    pub timestamp: String,
    /// The button's battery level in percent (0..=100), when known. Omitted when unknown.
    #[serde(
        rename = "batteryLevel",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub battery_level: Option<u8>,
    /// A stable id for this press (the device's durable queue gives every press one, and a
    /// re-delivery after a reconnect or a reboot carries the same id), so that the cloud can
    /// drop the duplicates QoS 1 allows. Omitted by devices without a durable queue.
    #[serde(rename = "pressId", default, skip_serializing_if = "Option::is_none")]
    pub press_id: Option<String>,
}

impl ButtonPressMessage {
    /// Builds a press message from Unix milliseconds, checking ids and battery range.
    pub fn new(
        device_id: &str,
        button_rf_id: &str,
        unix_ms: u64,
        battery_level: Option<u8>,
    ) -> Result<Self, Error> {
        let msg = ButtonPressMessage {
            device_id: device_id.to_string(),
            button_rf_id: button_rf_id.to_string(),
            timestamp: format_timestamp(unix_ms),
            battery_level,
            press_id: None,
        };
        msg.validate()?;
        Ok(msg)
    }

    /// The same message with a `pressId`.
    pub fn with_press_id(mut self, press_id: &str) -> Result<Self, Error> {
        check_id("pressId", press_id)?;
        self.press_id = Some(press_id.to_string());
        Ok(self)
    }

    /// Checks ids (1..=128 bytes), timestamp format and battery range.
    pub fn validate(&self) -> Result<(), Error> {
        check_id("deviceId", &self.device_id)?;
        check_id("buttonRfId", &self.button_rf_id)?;
        if let Some(id) = &self.press_id {
            check_id("pressId", id)?;
        }
        parse_timestamp(&self.timestamp)?;
        if let Some(level) = self.battery_level {
            if level > MAX_BATTERY_LEVEL {
                return Err(Error::OutOfRange {
                    field: "batteryLevel",
                    value: i64::from(level),
                    min: 0,
                    max: i64::from(MAX_BATTERY_LEVEL),
                });
            }
        }
        Ok(())
    }

    /// Parses and validates a press message (the backend side), with the 128 KB limit.
    pub fn from_json(topic: &str, payload: &[u8]) -> Result<Self, Error> {
        let msg: ButtonPressMessage = crate::inbound::parse_json(topic, payload)?;
        msg.validate()?;
        Ok(msg)
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        to_json(self)
    }
}

/// The device status, as the seed's `status` field: `online`, `offline` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Connected and working. Published on every connect.
    Online,
    /// Gone: the last will, and the clean shutdown message.
    Offline,
    /// Up, but something failed: a rejected inbound message, or a device fault (see `error`).
    Error,
}

impl DeviceStatus {
    /// The wire name: `online`, `offline` or `error` (what serde writes).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
            DeviceStatus::Error => "error",
        }
    }
}

/// Outcome of a command or settings update, in its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandResult {
    /// The request was carried out.
    Ok,
    /// The request was rejected; `error` says why.
    Error,
}

/// Where a certificate rotation stands, in the answers to `rotate-certificate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RotationState {
    /// A new key is made and its certificate requested.
    Started,
    /// The new certificate is in use (`certificateId`).
    Committed,
    /// The new certificate was refused or failed its trial; the old one is in use (`error`).
    RolledBack,
    /// A rotation is under way already.
    AlreadyRotating,
    /// The rotation could not start or was abandoned (`error`); it is retried later.
    Failed,
}

/// Optional diagnostic counters, sent in reply to `get-status` and on request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    /// Milliseconds since the device agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Milliseconds the current connection has been up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_for_ms: Option<u64>,
    /// Successful connects since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connects: Option<u64>,
    /// Connect attempts since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_attempts: Option<u64>,
    /// QoS 1 messages waiting to be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_messages: Option<u64>,
    /// QoS 1 messages dropped because the offline queue was full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_messages: Option<u64>,
    /// QoS 1 messages dropped because they expired before they could be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_messages: Option<u64>,
    /// The last connection error, in plain language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The optional fields of a heartbeat: a status message the device sends every
/// `heartbeatSeconds` while connected, so that the fleet sees how each device is doing.
/// Each field is omitted when the device does not know it (e.g. `wifiRssiDbm` on Linux).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Milliseconds since the device started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// Free heap, bytes (firmware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_heap_bytes: Option<u64>,
    /// Resident memory of the process, bytes (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Wi-Fi signal strength, dBm (firmware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi_rssi_dbm: Option<i8>,
    /// Why the chip last reset, e.g. `power-on`, `software`, `watchdog` (firmware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_reason: Option<String>,
    /// Whole days until the device certificate expires (negative once expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_days_left: Option<i64>,
    /// Presses waiting in the durable queue (sent or not, not yet acknowledged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_presses: Option<u64>,
    /// Presses dropped because the durable queue was full, over the device's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_presses: Option<u64>,
    /// Connections made again after the first since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnects: Option<u64>,
    /// Why the last connection or connect attempt failed, in plain language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_disconnect_reason: Option<String>,
    /// Milliseconds from CONNECT to CONNACK of the current connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
}

/// A device status message on `acorn-pups/status/{device_id}`: presence (online/offline, also
/// the last will) and replies to commands and settings updates.
///
/// ```json
/// {"deviceId":"acorn-0001","timestamp":"2026-11-28T16:42:07.123Z","status":"online","firmwareVersion":"1.0.0"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatusMessage {
    /// The device (thing name).
    #[serde(rename = "deviceId")]
    pub device_id: String,
    /// When the status was taken: ISO 8601 UTC with milliseconds.
    pub timestamp: String,
    /// `online`, `offline` or `error`.
    pub status: DeviceStatus,
    /// The firmware (or agent) version.
    #[serde(rename = "firmwareVersion")]
    pub firmware_version: String,
    /// In a reply: the `requestId` of the command or settings update, echoed.
    #[serde(rename = "requestId", default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// In a reply: what was answered (`ping`, `get-status`, `reconnect`, `settings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// In a reply: `ok` or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CommandResult>,
    /// Why a request was rejected or what fault the device has, in plain language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The settings now in effect (reply to `settings` and `get-status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<DeviceSettings>,
    /// Diagnostic counters (reply to `get-status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Diagnostics>,
    /// The device certificate's id (SHA-256 of its DER, hex): in heartbeats and rotation
    /// answers.
    #[serde(
        rename = "certificateId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_id: Option<String>,
    /// In an answer to `rotate-certificate`: where the rotation stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationState>,
    /// In a heartbeat: how the device is doing (fields at the top level of the message).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
}

impl DeviceStatusMessage {
    /// A plain status message (presence): the four seed fields only.
    pub fn new(
        device_id: &str,
        unix_ms: u64,
        status: DeviceStatus,
        firmware_version: &str,
    ) -> Self {
        DeviceStatusMessage {
            device_id: device_id.to_string(),
            timestamp: format_timestamp(unix_ms),
            status,
            firmware_version: firmware_version.to_string(),
            request_id: None,
            command: None,
            result: None,
            error: None,
            settings: None,
            diagnostics: None,
            certificate_id: None,
            rotation: None,
            heartbeat: None,
        }
    }

    /// A successful reply to `command` (`ping`, `get-status`, `reconnect` or `settings`).
    pub fn reply_ok(
        device_id: &str,
        unix_ms: u64,
        firmware_version: &str,
        request_id: Option<&str>,
        command: &str,
    ) -> Self {
        let mut msg = Self::new(device_id, unix_ms, DeviceStatus::Online, firmware_version);
        msg.request_id = request_id.map(ToString::to_string);
        msg.command = Some(command.to_string());
        msg.result = Some(CommandResult::Ok);
        msg
    }

    /// The error status reply to a rejected inbound message: status `error`, result `error`,
    /// the rejection in plain language, and the `requestId` when one could be read
    /// (see [`crate::request_id_of`]).
    pub fn rejected(
        device_id: &str,
        unix_ms: u64,
        firmware_version: &str,
        request_id: Option<&str>,
        error: &Error,
    ) -> Self {
        let mut msg = Self::new(device_id, unix_ms, DeviceStatus::Error, firmware_version);
        msg.request_id = request_id.map(ToString::to_string);
        msg.result = Some(CommandResult::Error);
        msg.error = Some(error.to_string());
        msg
    }

    /// Parses and validates a status message (the backend side), with the 128 KB limit.
    pub fn from_json(topic: &str, payload: &[u8]) -> Result<Self, Error> {
        let mut msg: DeviceStatusMessage = crate::inbound::parse_json(topic, payload)?;
        // A flattened optional struct reads as present-but-empty when none of its fields is.
        if msg.heartbeat.as_ref() == Some(&Heartbeat::default()) {
            msg.heartbeat = None;
        }
        check_id("deviceId", &msg.device_id)?;
        parse_timestamp(&msg.timestamp)?;
        Ok(msg)
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        to_json(self)
    }
}
