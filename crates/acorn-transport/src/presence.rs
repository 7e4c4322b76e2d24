//! The status messages this crate publishes on its own (the last will, and `ping`'s default
//! message), built with `acorn-mqtt`'s topics and message types so the topic names, field
//! names and the timestamp format are the seed's, in one place.

use std::time::{SystemTime, UNIX_EPOCH};

use acorn_mqtt::{DeviceStatus, DeviceStatusMessage, TOPIC_COMMANDS, TOPIC_DEVICE_STATUS};

/// `acorn-pups/status/{client_id}` (any client id: a service identity's last will too).
pub fn status_topic(client_id: &str) -> String {
    format!("{TOPIC_DEVICE_STATUS}/{client_id}")
}

/// `acorn-pups/commands/{client_id}`.
pub fn commands_topic(client_id: &str) -> String {
    format!("{TOPIC_COMMANDS}/{client_id}")
}

/// A `DeviceStatusMessage` JSON taken now: `deviceId`, `timestamp` (ISO 8601 UTC with
/// milliseconds), `status`, `firmwareVersion`.
pub fn status_json(device_id: &str, status: DeviceStatus, firmware_version: &str) -> Vec<u8> {
    let message = DeviceStatusMessage::new(device_id, unix_ms_now(), status, firmware_version);
    // Serializing a struct of strings cannot fail; should it ever, the fallback still speaks
    // the wire's names (`offline`, not `Offline`), with the id as a JSON string.
    message
        .to_json()
        .unwrap_or_else(|_| fallback_json(device_id, status))
}

fn fallback_json(device_id: &str, status: DeviceStatus) -> Vec<u8> {
    serde_json::json!({ "deviceId": device_id, "status": status.as_str() })
        .to_string()
        .into_bytes()
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_seed_field_names() {
        let v: serde_json::Value =
            serde_json::from_slice(&status_json("dev-1", DeviceStatus::Offline, "1.0.0")).unwrap();
        assert_eq!(v["deviceId"], "dev-1");
        assert_eq!(v["status"], "offline");
        assert_eq!(v["firmwareVersion"], "1.0.0");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn the_fallback_speaks_the_wire_names_too() {
        for status in [
            DeviceStatus::Online,
            DeviceStatus::Offline,
            DeviceStatus::Error,
        ] {
            let v: serde_json::Value =
                serde_json::from_slice(&fallback_json("dev \"1\"", status)).unwrap();
            assert_eq!(v["deviceId"], "dev \"1\"");
            assert_eq!(v["status"], serde_json::to_value(status).unwrap());
        }
    }
}
