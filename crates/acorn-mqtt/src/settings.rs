//! Device settings and partial settings updates (`acorn-pups/settings/{device_id}`).

use alloc::string::String;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Allowed `soundVolume` range.
pub const SOUND_VOLUME_RANGE: (u8, u8) = (1, 10);
/// Allowed `ledBrightness` range (percent).
pub const LED_BRIGHTNESS_RANGE: (u8, u8) = (0, 100);
/// Allowed `cooldownMs` range: up to 10 minutes between two reported presses of one button.
pub const COOLDOWN_MS_RANGE: (u32, u32) = (0, 600_000);
/// Allowed `heartbeatSeconds` range: 0 turns the heartbeat off, at most one a day.
pub const HEARTBEAT_SECONDS_RANGE: (u32, u32) = (0, 86_400);
/// The default `heartbeatSeconds`: a heartbeat status every 5 minutes.
pub const DEFAULT_HEARTBEAT_SECONDS: u32 = 300;

fn default_heartbeat_seconds() -> u32 {
    DEFAULT_HEARTBEAT_SECONDS
}

/// The settings in effect on a device. Sent whole in replies; stored by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceSettings {
    /// Whether the device beeps on a press.
    pub sound_enabled: bool,
    /// Beep volume, 1..=10.
    pub sound_volume: u8,
    /// Status LED brightness in percent, 0..=100 (0 = off).
    pub led_brightness: u8,
    /// Presses of one button closer together than this (milliseconds) are reported once.
    pub cooldown_ms: u32,
    /// Seconds between two heartbeat status messages while connected (0 = none). Settings
    /// stored before this field existed read as the default (300).
    #[serde(default = "default_heartbeat_seconds")]
    pub heartbeat_seconds: u32,
}

impl Default for DeviceSettings {
    /// Sound on at volume 5, LED at 50 %, 1 s cooldown, a heartbeat every 300 s.
    fn default() -> Self {
        DeviceSettings {
            sound_enabled: true,
            sound_volume: 5,
            led_brightness: 50,
            cooldown_ms: 1000,
            heartbeat_seconds: DEFAULT_HEARTBEAT_SECONDS,
        }
    }
}

/// The settings in their JSON names, for logs: `soundEnabled true, soundVolume 5, ...`.
impl core::fmt::Display for DeviceSettings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "soundEnabled {}, soundVolume {}, ledBrightness {}, cooldownMs {}, heartbeatSeconds {}",
            self.sound_enabled,
            self.sound_volume,
            self.led_brightness,
            self.cooldown_ms,
            self.heartbeat_seconds
        )
    }
}

impl DeviceSettings {
    /// Applies a validated partial update: fields it names change, the others stay.
    pub fn apply(&mut self, update: &SettingsUpdate) {
        if let Some(v) = update.sound_enabled {
            self.sound_enabled = v;
        }
        if let Some(v) = update.sound_volume {
            self.sound_volume = v;
        }
        if let Some(v) = update.led_brightness {
            self.led_brightness = v;
        }
        if let Some(v) = update.cooldown_ms {
            self.cooldown_ms = v;
        }
        if let Some(v) = update.heartbeat_seconds {
            self.heartbeat_seconds = v;
        }
    }
}

/// A validated partial settings update. Every field is optional, but at least one is present.
///
/// ```json
/// {"requestId":"req-42","soundVolume":7,"ledBrightness":20}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsUpdate {
    /// Echoed in the reply, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// New `soundEnabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound_enabled: Option<bool>,
    /// New `soundVolume` (1..=10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound_volume: Option<u8>,
    /// New `ledBrightness` (0..=100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub led_brightness: Option<u8>,
    /// New `cooldownMs` (0..=600000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<u32>,
    /// New `heartbeatSeconds` (0..=86400; 0 = no heartbeat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_seconds: Option<u32>,
}

/// The update as it arrives: numbers wide, so out-of-range values get a range error rather
/// than a type error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawSettingsUpdate {
    request_id: Option<String>,
    sound_enabled: Option<bool>,
    sound_volume: Option<i64>,
    led_brightness: Option<i64>,
    cooldown_ms: Option<i64>,
    heartbeat_seconds: Option<i64>,
}

fn ranged<T: TryFrom<i64> + Into<i64> + Copy>(
    field: &'static str,
    value: Option<i64>,
    (min, max): (T, T),
) -> Result<Option<T>, Error> {
    let Some(value) = value else {
        return Ok(None);
    };
    let (lo, hi) = (min.into(), max.into());
    match T::try_from(value) {
        Ok(v) if (lo..=hi).contains(&value) => Ok(Some(v)),
        _ => Err(Error::OutOfRange {
            field,
            value,
            min: lo,
            max: hi,
        }),
    }
}

impl RawSettingsUpdate {
    pub(crate) fn validate(self) -> Result<SettingsUpdate, Error> {
        if let Some(id) = &self.request_id {
            crate::inbound::check_request_id(id)?;
        }
        let update = SettingsUpdate {
            request_id: self.request_id,
            sound_enabled: self.sound_enabled,
            sound_volume: ranged("soundVolume", self.sound_volume, SOUND_VOLUME_RANGE)?,
            led_brightness: ranged("ledBrightness", self.led_brightness, LED_BRIGHTNESS_RANGE)?,
            cooldown_ms: ranged("cooldownMs", self.cooldown_ms, COOLDOWN_MS_RANGE)?,
            heartbeat_seconds: ranged(
                "heartbeatSeconds",
                self.heartbeat_seconds,
                HEARTBEAT_SECONDS_RANGE,
            )?,
        };
        if update.sound_enabled.is_none()
            && update.sound_volume.is_none()
            && update.led_brightness.is_none()
            && update.cooldown_ms.is_none()
            && update.heartbeat_seconds.is_none()
        {
            return Err(Error::EmptySettings);
        }
        Ok(update)
    }
}
