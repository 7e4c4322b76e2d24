//! A build without certificate rotation (feature `rotation` off, e.g. the ESP32-C3 firmware,
//! where the state machine's ~22 KB do not fit the 1 MB application slot yet): the same
//! hooks, doing nothing; `rotate-certificate` is answered with an error.

use alloc::string::String;
use alloc::vec::Vec;

use acorn_mqtt::{CommandResult, DeviceStatusMessage, RotationState};
use rand_core::RngCore;

use super::Device;
use crate::presses::PressStore;
use crate::rotation::{RotateError, RotationConfig, RotationInput};
use crate::store::SettingsStore;

/// No rotation state: nothing ever rotates.
#[derive(Debug, Clone)]
pub(super) struct Rotator;

impl Rotator {
    pub(super) fn new(_config: Option<RotationConfig>) -> Self {
        Self
    }

    pub(super) fn takes_suback(&self) -> bool {
        false
    }

    pub(super) fn connection_lost(&mut self) {}

    pub(super) fn next_timer(&self) -> Option<u64> {
        None
    }
}

impl<R: RngCore, S: SettingsStore, Q: PressStore> Device<R, S, Q> {
    /// Always [`RotateError::NotConfigured`]: this build has no certificate rotation.
    pub fn rotate(&mut self, _now: crate::Now) -> Result<(), RotateError> {
        Err(RotateError::NotConfigured)
    }

    /// Ignored: this build has no certificate rotation.
    pub fn rotation(&mut self, _now: crate::Now, _input: RotationInput) {}

    pub(super) fn rotate_command(&mut self, request_id: &str) {
        let mut reply = DeviceStatusMessage::reply_ok(
            self.topics.device_id(),
            self.unix_ms,
            &self.firmware_version,
            Some(request_id),
            "rotate-certificate",
        );
        reply.result = Some(CommandResult::Error);
        reply.rotation = Some(RotationState::Failed);
        reply.error = Some(alloc::string::ToString::to_string(
            &RotateError::NotConfigured,
        ));
        self.queue_reply(&reply);
    }

    pub(super) fn rotation_tick(&mut self) {}

    pub(super) fn rotation_suback(&mut self, _granted: bool) {}

    pub(super) fn rotation_message(&mut self, _topic: &str, _payload: &[u8]) -> bool {
        false
    }

    pub(super) fn rotation_online(&mut self) {}

    pub(super) fn rotation_connection_failed(&mut self, _why: &str) {}

    /// Always `false`.
    pub fn is_rotating(&self) -> bool {
        false
    }

    /// None: this build has no certificate rotation.
    pub fn rotation_filters(&self) -> Vec<String> {
        Vec::new()
    }
}
