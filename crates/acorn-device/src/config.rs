//! What a device is told at construction: who it is, its firmware version, what it knows of
//! its certificate, and the timing rules of its application.

use alloc::string::{String, ToString};

use acorn_mqtt::{SessionConfig, Topics};

use crate::Error;

/// How long shutdown waits for the PUBACK of the `offline` status, by default (3 s).
pub const OFFLINE_ACK_TIMEOUT_MS: u64 = 3_000;
/// How long a `reconnect` command waits for the PUBACK of its reply before it reconnects
/// anyway, by default (5 s).
pub const RECONNECT_REPLY_TIMEOUT_MS: u64 = 5_000;
/// Buttons remembered for the cooldown, by default (1024).
pub const COOLDOWN_ENTRIES: usize = 1024;
/// Presses handed to the session at once, by default (8).
pub const PRESS_WINDOW: usize = 8;
/// Longest firmware version, in bytes.
pub const MAX_FIRMWARE_VERSION_BYTES: usize = 64;

/// Facts about the device certificate that the driver read when it loaded the identity
/// (with `acorn-certs`); the core itself never parses a certificate or sees a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateFacts {
    /// Start of validity, Unix seconds.
    pub not_before_unix_s: Option<u64>,
    /// End of validity, Unix seconds.
    pub not_after_unix_s: Option<u64>,
    /// SHA-256 of the DER certificate, lowercase hex (the AWS IoT certificate id).
    pub fingerprint: Option<String>,
}

impl CertificateFacts {
    /// A certificate valid from `not_before_unix_s` to `not_after_unix_s`.
    pub fn new(not_before_unix_s: u64, not_after_unix_s: u64) -> Self {
        Self {
            not_before_unix_s: Some(not_before_unix_s),
            not_after_unix_s: Some(not_after_unix_s),
            fingerprint: None,
        }
    }

    /// Whole days until the certificate expires at wall-clock time `unix_ms` (negative once
    /// expired). `None` when the end of validity is unknown or the clock reads before the
    /// certificate's start (such a clock is not synced).
    pub fn days_left(&self, unix_ms: u64) -> Option<i64> {
        let not_after = self.not_after_unix_s?;
        let now = unix_ms / 1000;
        if self.not_before_unix_s.is_some_and(|start| now < start) {
            return None;
        }
        let diff = i128::from(not_after) - i128::from(now);
        Some(i64::try_from(diff.div_euclid(86_400)).unwrap_or(i64::MIN))
    }
}

/// What the driver knows of its host, sent in heartbeats ([`crate::Device::set_host_facts`]):
/// each field is omitted from the heartbeat when `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostFacts {
    /// Free heap, bytes (firmware).
    pub free_heap_bytes: Option<u64>,
    /// Resident memory, bytes (Linux).
    pub rss_bytes: Option<u64>,
    /// Wi-Fi signal, dBm (firmware).
    pub wifi_rssi_dbm: Option<i8>,
    /// Why the chip last reset (firmware), e.g. `power-on`.
    pub reset_reason: Option<String>,
}

/// How to run a device. [`DeviceConfig::new`] gives today's defaults; change fields after.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceConfig {
    /// The device id (MQTT client id, thing name); its topics are built from it.
    pub device_id: String,
    /// Reported as `firmwareVersion` in every status message, 1..=64 bytes.
    pub firmware_version: String,
    /// The session policy (backoff, health, queue, keepalive). Its client id must be the
    /// device id and its subscriptions the device's settings and commands topics.
    pub session: SessionConfig,
    /// What the driver knows of the certificate.
    pub certificate: CertificateFacts,
    /// How long shutdown waits for the `offline` status's PUBACK, ms.
    pub offline_ack_timeout_ms: u64,
    /// How long a `reconnect` command waits for its reply's PUBACK before reconnecting, ms.
    pub reconnect_reply_timeout_ms: u64,
    /// Buttons remembered for the cooldown. When the table is full, buttons whose cooldown
    /// has passed are forgotten; if all are recent the table is cleared (at worst a press is
    /// then reported twice). Each entry holds a button id (≤ 128 bytes): keep it small on a
    /// chip (e.g. 32).
    pub cooldown_entries: usize,
    /// Presses kept at most in the press store (default 256); when full, the oldest is
    /// dropped and counted as `droppedPresses`.
    pub press_queue_capacity: usize,
    /// Presses handed to the session at once (default 8): the rest wait in the press store,
    /// so a long queue never fills the session's RAM queue.
    pub press_window: usize,
    /// A heartbeat interval (ms) that replaces the `heartbeatSeconds` setting until a
    /// settings update names one (`acorn device run --heartbeat`); `None` = the setting.
    pub heartbeat_override_ms: Option<u64>,
    /// Certificate rotation (AWS IoT's provisioning API); `None` = this device does not
    /// rotate (the `rotate-certificate` command is answered with an error).
    pub rotation: Option<crate::rotation::RotationConfig>,
}

impl DeviceConfig {
    /// The defaults for `device_id`: the session of [`SessionConfig::for_device`] (keepalive
    /// 60 s, health every 30 s, 100 queued messages), `offline` awaited 3 s, a `reconnect`
    /// reply awaited 5 s, 1024 buttons in the cooldown table.
    pub fn new(device_id: &str, firmware_version: &str) -> Result<Self, Error> {
        let topics = Topics::new(device_id)?;
        Ok(Self {
            device_id: device_id.to_string(),
            firmware_version: firmware_version.to_string(),
            session: SessionConfig::for_device(&topics),
            certificate: CertificateFacts::default(),
            offline_ack_timeout_ms: OFFLINE_ACK_TIMEOUT_MS,
            reconnect_reply_timeout_ms: RECONNECT_REPLY_TIMEOUT_MS,
            cooldown_entries: COOLDOWN_ENTRIES,
            press_queue_capacity: crate::presses::PRESS_QUEUE_CAPACITY,
            press_window: PRESS_WINDOW,
            heartbeat_override_ms: None,
            rotation: None,
        })
    }

    /// Sets the press queue's bound and keeps the press window below it (a small queue hands
    /// the session fewer presses at once), as [`DeviceConfig::validate`] requires.
    pub fn set_press_queue_capacity(&mut self, capacity: usize) {
        self.press_queue_capacity = capacity;
        self.press_window = self.press_window.min(capacity.saturating_sub(1)).max(1);
    }

    /// Checks every field; the device's topics on success.
    pub fn validate(&self) -> Result<Topics, Error> {
        let topics = Topics::new(&self.device_id)?;
        if self.session.client_id != self.device_id {
            return Err(Error::ClientIdMismatch {
                client_id: self.session.client_id.clone(),
                device_id: self.device_id.clone(),
            });
        }
        let [settings, commands] = topics.subscriptions();
        if self.session.subscriptions.len() != 2
            || self.session.subscriptions[0] != settings
            || self.session.subscriptions[1] != commands
        {
            return Err(Error::Subscriptions {
                expected: [settings.to_string(), commands.to_string()],
            });
        }
        self.session.validate()?;
        if let Some(rotation) = &self.rotation {
            acorn_mqtt::provisioning::ProvisioningTopics::new(
                &rotation.topic_prefix,
                &rotation.template,
            )?;
        }
        let len = self.firmware_version.len();
        if len == 0
            || len > MAX_FIRMWARE_VERSION_BYTES
            || self.firmware_version.chars().any(char::is_control)
        {
            return Err(Error::FirmwareVersion { len });
        }
        let what = if self.offline_ack_timeout_ms == 0 {
            "offline_ack_timeout_ms must be > 0 (default 3000): shutdown waits that long for the offline status's PUBACK"
        } else if self.reconnect_reply_timeout_ms == 0 {
            "reconnect_reply_timeout_ms must be > 0 (default 5000): a reconnect command waits that long for its reply's PUBACK"
        } else if self.cooldown_entries == 0 {
            "cooldown_entries must be >= 1 (default 1024; e.g. 32 on a chip)"
        } else if self.press_queue_capacity == 0 {
            "press_queue_capacity must be >= 1 (default 256)"
        } else if self.press_window == 0
            || self.press_window >= self.session.queue_capacity
            || self.press_window >= self.press_queue_capacity
        {
            // Below the capacity, a full queue always holds a press the session has not sent,
            // so the oldest droppable press exists and the bound holds.
            "press_window must be >= 1 and below both press_queue_capacity and the session's queue_capacity (default 8, of 256 and 100)"
        } else if self.heartbeat_override_ms == Some(0) {
            "heartbeat_override_ms must be > 0 (use None for the heartbeatSeconds setting)"
        } else if cfg!(not(feature = "rotation")) && self.rotation.is_some() {
            "rotation is set, but acorn-device was built without its `rotation` feature"
        } else {
            return Ok(topics);
        };
        Err(Error::Config { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_rounds_down_and_needs_a_synced_clock() {
        let day = 86_400;
        let facts = CertificateFacts::new(1_000 * day, 1_010 * day);
        assert_eq!(facts.days_left(1_000 * day * 1000), Some(10));
        assert_eq!(facts.days_left((1_009 * day + 1) * 1000), Some(0));
        assert_eq!(facts.days_left((1_010 * day + 1) * 1000), Some(-1));
        assert_eq!(facts.days_left(5_000), None, "clock before the start");
        assert_eq!(CertificateFacts::default().days_left(0), None);
    }

    #[test]
    fn config_checks_say_how_to_fix() {
        let mut config = DeviceConfig::new("acorn-0001", "1.0.0").unwrap();
        assert!(config.validate().is_ok());
        config.firmware_version.clear();
        assert_eq!(config.validate(), Err(Error::FirmwareVersion { len: 0 }));
        let mut config = DeviceConfig::new("acorn-0001", "1.0.0").unwrap();
        config.session.client_id = "other".into();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("for_device"));
        let mut config = DeviceConfig::new("acorn-0001", "1.0.0").unwrap();
        config.session.subscriptions.pop();
        assert!(matches!(
            config.validate(),
            Err(Error::Subscriptions { .. })
        ));
        let mut config = DeviceConfig::new("acorn-0001", "1.0.0").unwrap();
        config.cooldown_entries = 0;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cooldown_entries"));
        assert!(DeviceConfig::new("bad/id", "1").is_err());
    }
}
