//! The minimal status JSON this crate publishes on its own (the last will, and `ping`'s
//! default message), with the seed's field names. The full message types live in
//! `acorn-mqtt`; callers can pass their own payloads instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// `acorn-pups/status/{device_id}`.
pub fn status_topic(device_id: &str) -> String {
    format!("acorn-pups/status/{device_id}")
}

/// `acorn-pups/commands/{device_id}`.
pub fn commands_topic(device_id: &str) -> String {
    format!("acorn-pups/commands/{device_id}")
}

/// A `DeviceStatusMessage` JSON: `deviceId`, `timestamp` (now, ISO 8601 UTC with
/// milliseconds), `status`, `firmwareVersion`.
pub fn status_json(device_id: &str, status: &str, firmware_version: &str) -> Vec<u8> {
    serde_json::json!({
        "deviceId": device_id,
        "timestamp": iso8601_now(),
        "status": status,
        "firmwareVersion": firmware_version,
    })
    .to_string()
    .into_bytes()
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso8601_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    iso8601(since.as_secs(), since.subsec_millis())
}

/// Formats seconds since 1970 (UTC) and milliseconds as ISO 8601.
pub fn iso8601(secs: u64, millis: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for all u64 days we can meet.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_known_dates() {
        assert_eq!(iso8601(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(iso8601(1_764_349_199, 999), "2025-11-28T16:59:59.999Z");
    }

    #[test]
    fn status_has_seed_field_names() {
        let v: serde_json::Value =
            serde_json::from_slice(&status_json("dev-1", "offline", "1.0.0")).unwrap();
        assert_eq!(v["deviceId"], "dev-1");
        assert_eq!(v["status"], "offline");
        assert_eq!(v["firmwareVersion"], "1.0.0");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
