//! The status messages this crate publishes on its own (the last will, and `ping`'s default
//! message), built with `acorn-mqtt`'s message types so the field names and the timestamp format
//! are the seed's, in one place.

use std::time::{SystemTime, UNIX_EPOCH};

use acorn_mqtt::{DeviceStatus, DeviceStatusMessage};

/// `acorn-pups/status/{device_id}`.
pub fn status_topic(device_id: &str) -> String {
    format!("acorn-pups/status/{device_id}")
}

/// `acorn-pups/commands/{device_id}`.
pub fn commands_topic(device_id: &str) -> String {
    format!("acorn-pups/commands/{device_id}")
}

/// A `DeviceStatusMessage` JSON taken now: `deviceId`, `timestamp` (ISO 8601 UTC with
/// milliseconds), `status`, `firmwareVersion`.
pub fn status_json(device_id: &str, status: DeviceStatus, firmware_version: &str) -> Vec<u8> {
    let message = DeviceStatusMessage::new(device_id, unix_ms_now(), status, firmware_version);
    // Serializing a struct of strings cannot fail; fall back to the bare fields if it ever did.
    message.to_json().unwrap_or_else(|_| {
        format!("{{\"deviceId\":\"{device_id}\",\"status\":\"{status:?}\"}}").into_bytes()
    })
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
}
