//! Where the settings live between boots: the [`SettingsStore`] trait, the one stored format
//! ([`encode_settings`] / [`decode_settings`]: `DeviceSettings` as JSON in NVS namespace
//! `settings`, key `settings`), an in-memory store, and (feature `nvs`) the store on an
//! `acorn_nvs::Nvs` partition — the same code over esp-storage on the chip and over an image
//! file on Linux.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::convert::Infallible;
use core::fmt;

use acorn_mqtt::DeviceSettings;

/// NVS namespace of the device settings.
pub const SETTINGS_NAMESPACE: &str = "settings";
/// NVS key of the settings: one blob, written in one atomic NVS write (a power cut leaves the
/// old or the new settings).
pub const SETTINGS_KEY: &str = "settings";

/// Keeps the device settings across reboots.
///
/// [`crate::Device::new`] loads them once; every accepted settings update is saved before it
/// takes effect (an update that cannot be saved is not applied, and its reply says why).
/// Calls are synchronous: a flash write of a few dozen bytes.
pub trait SettingsStore {
    /// Why a load or save failed; its text goes into logs and into the error reply.
    type Error: fmt::Display;

    /// The stored settings; `Ok(None)` when none were ever stored.
    fn load(&mut self) -> Result<Option<DeviceSettings>, Self::Error>;

    /// Stores `settings`, replacing what was stored.
    fn save(&mut self, settings: &DeviceSettings) -> Result<(), Self::Error>;
}

impl<T: SettingsStore + ?Sized> SettingsStore for &mut T {
    type Error = T::Error;

    fn load(&mut self) -> Result<Option<DeviceSettings>, Self::Error> {
        (**self).load()
    }

    fn save(&mut self, settings: &DeviceSettings) -> Result<(), Self::Error> {
        (**self).save(settings)
    }
}

/// The stored form of the settings: `{"soundEnabled":true,"soundVolume":5,...}`.
pub fn encode_settings(settings: &DeviceSettings) -> Vec<u8> {
    // A struct of booleans and integers always serializes.
    serde_json::to_vec(settings).unwrap_or_default()
}

/// Reads the stored form back; unknown fields or out-of-type values are an error.
pub fn decode_settings(bytes: &[u8]) -> Result<DeviceSettings, UnreadableSettings> {
    serde_json::from_slice(bytes).map_err(|e| UnreadableSettings {
        detail: e.to_string(),
    })
}

/// Stored settings that do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored settings are unreadable ({detail})")]
pub struct UnreadableSettings {
    /// What the JSON parser said.
    pub detail: String,
}

/// Settings kept in RAM only (simulations, tests, a board without flash for settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemorySettings {
    /// What is stored.
    pub stored: Option<DeviceSettings>,
    /// Saves so far.
    pub saves: u64,
}

impl MemorySettings {
    /// A store holding `settings`.
    pub fn with(settings: DeviceSettings) -> Self {
        Self {
            stored: Some(settings),
            saves: 0,
        }
    }
}

impl SettingsStore for MemorySettings {
    type Error = Infallible;

    fn load(&mut self) -> Result<Option<DeviceSettings>, Infallible> {
        Ok(self.stored)
    }

    fn save(&mut self, settings: &DeviceSettings) -> Result<(), Infallible> {
        self.stored = Some(*settings);
        self.saves += 1;
        Ok(())
    }
}

#[cfg(feature = "nvs")]
mod nvs {
    use acorn_mqtt::DeviceSettings;
    use acorn_nvs::Nvs;
    use embedded_storage::nor_flash::NorFlash;

    use super::{
        decode_settings, encode_settings, SettingsStore, SETTINGS_KEY, SETTINGS_NAMESPACE,
    };

    /// Why the settings could not be read from or written to NVS.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum NvsSettingsError {
        /// The NVS engine could not read the value.
        #[error("the stored settings cannot be read ({0})")]
        Read(acorn_nvs::Error),
        /// The value is there but does not decode.
        #[error(transparent)]
        Unreadable(#[from] super::UnreadableSettings),
        /// The NVS engine could not write the value (partition full, flash fault, opened
        /// read-only).
        #[error("cannot save the settings (NVS namespace `settings`): {0}; check the partition with `acorn nvs check`")]
        Write(acorn_nvs::Error),
    }

    impl<F: NorFlash> SettingsStore for Nvs<F> {
        type Error = NvsSettingsError;

        fn load(&mut self) -> Result<Option<DeviceSettings>, NvsSettingsError> {
            let Some(ns) = self.find_namespace(SETTINGS_NAMESPACE) else {
                return Ok(None);
            };
            match self
                .get_blob(ns, SETTINGS_KEY)
                .map_err(NvsSettingsError::Read)?
            {
                None => Ok(None),
                Some(bytes) => Ok(Some(decode_settings(&bytes)?)),
            }
        }

        fn save(&mut self, settings: &DeviceSettings) -> Result<(), NvsSettingsError> {
            let ns = self
                .namespace(SETTINGS_NAMESPACE)
                .map_err(NvsSettingsError::Write)?;
            self.set_blob(ns, SETTINGS_KEY, &encode_settings(settings))
                .map_err(NvsSettingsError::Write)
        }
    }
}

#[cfg(feature = "nvs")]
pub use nvs::NvsSettingsError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_round_trips_and_is_strict() {
        let settings = DeviceSettings {
            sound_volume: 9,
            ..DeviceSettings::default()
        };
        let bytes = encode_settings(&settings);
        assert_eq!(
            bytes,
            br#"{"soundEnabled":true,"soundVolume":9,"ledBrightness":50,"cooldownMs":1000,"heartbeatSeconds":300}"#
        );
        assert_eq!(decode_settings(&bytes), Ok(settings));
        // Settings stored before the heartbeat existed read with its default.
        let old = br#"{"soundEnabled":true,"soundVolume":9,"ledBrightness":50,"cooldownMs":1000}"#;
        assert_eq!(decode_settings(old), Ok(settings));
        let err = decode_settings(b"{\"volume\":3}").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("the stored settings are unreadable ("));
    }
}
