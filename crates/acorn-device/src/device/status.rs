//! What the device publishes on its status topic: presence (`online`, `offline`, the last
//! will) and the answers to inbound settings updates and commands.

use alloc::format;
use alloc::string::{String, ToString};

use acorn_mqtt::{
    parse_inbound, request_id_of, CommandKind, CommandResult, DeviceStatus, DeviceStatusMessage,
    Inbound, PublishId, PublishRequest, QoS, SettingsUpdate,
};
use rand_core::RngCore;

use super::{Device, Phase};
use crate::io::{Action, LastWill, Publish, Tag};
use crate::notice::Notice;
use crate::presses::PressStore;
use crate::store::SettingsStore;

impl<R: RngCore, S: SettingsStore, Q: PressStore> Device<R, S, Q> {
    pub(super) fn status_message(&self, status: DeviceStatus) -> DeviceStatusMessage {
        DeviceStatusMessage::new(
            self.topics.device_id(),
            self.unix_ms,
            status,
            &self.firmware_version,
        )
    }

    /// The last will, stamped at wall-clock time `unix_ms`: the `offline` status the broker
    /// publishes for the device when it vanishes. [`Action::Connect`] carries it too.
    pub fn last_will(&self, unix_ms: u64) -> LastWill {
        let message = DeviceStatusMessage::new(
            self.topics.device_id(),
            unix_ms,
            DeviceStatus::Offline,
            &self.firmware_version,
        );
        LastWill {
            topic: self.topics.status().to_string(),
            // A struct of strings always serializes.
            payload: message.to_json().unwrap_or_default(),
            qos: QoS::AtLeastOnce,
            retain: false,
        }
    }

    /// Sends a presence status directly, outside the session queue: a stale presence is never
    /// re-sent on a later connection.
    pub(super) fn publish_presence(&mut self, status: DeviceStatus, tag: Tag) {
        match self.status_message(status).to_json() {
            Ok(payload) => self.emit(Action::Publish(Publish {
                tag,
                topic: self.topics.status().to_string(),
                payload,
                qos: QoS::AtLeastOnce,
                retransmit: false,
            })),
            Err(e) => self.notice(Notice::ReplyNotSent {
                reason: e.to_string(),
            }),
        }
    }

    /// Validates and answers a settings update or command; a bad one is answered with an
    /// error status and reported, never more.
    pub(super) fn on_inbound(&mut self, topic: &str, payload: &[u8]) {
        if !matches!(self.phase, Phase::Running) {
            self.notice(Notice::IgnoredWhileStopping {
                topic: topic.to_string(),
            });
            return;
        }
        let reply = match parse_inbound(&self.topics, topic, payload) {
            Ok(Inbound::Settings(update)) => self.apply_settings(&update),
            Ok(Inbound::Command(command)) => {
                let name = command.command.as_str();
                let mut reply = DeviceStatusMessage::reply_ok(
                    self.topics.device_id(),
                    self.unix_ms,
                    &self.firmware_version,
                    Some(&command.request_id),
                    name,
                );
                if command.command == CommandKind::GetStatus {
                    let mut diagnostics = self.session.stats().to_diagnostics();
                    diagnostics.uptime_ms = Some(self.uptime_ms());
                    diagnostics.connected_for_ms = self.session.connected_for_ms(self.mono_ms);
                    reply.settings = Some(self.settings);
                    reply.diagnostics = Some(diagnostics);
                }
                self.notice(Notice::Answered {
                    command: name,
                    request_id: command.request_id.clone(),
                });
                if command.command == CommandKind::RotateCertificate {
                    // Answered by the rotation (started, already rotating, or why not).
                    self.rotate_command(&command.request_id);
                    return;
                }
                if command.command == CommandKind::Reconnect {
                    // Reply first; reconnect once its PUBACK arrives (or the wait runs out).
                    if let Some(id) = self.send_reply(&reply) {
                        let deadline = self.mono_ms.saturating_add(self.reconnect_reply_timeout_ms);
                        self.reconnect_after = Some((id, deadline));
                    }
                    return;
                }
                reply
            }
            Err(error) => {
                let reason = error.to_string();
                self.notice(Notice::Rejected {
                    topic: topic.to_string(),
                    bytes: payload.len(),
                    reason,
                });
                DeviceStatusMessage::rejected(
                    self.topics.device_id(),
                    self.unix_ms,
                    &self.firmware_version,
                    request_id_of(payload).as_deref(),
                    &error,
                )
            }
        };
        self.send_reply(&reply);
    }

    /// Saves, then applies, a validated update; the reply carries the settings in effect.
    fn apply_settings(&mut self, update: &SettingsUpdate) -> DeviceStatusMessage {
        let mut new = self.settings;
        new.apply(update);
        match self.store.save(&new) {
            Ok(()) => {
                self.settings = new;
                if update.heartbeat_seconds.is_some() {
                    self.heartbeat_setting_changed();
                }
                self.notice(Notice::SettingsApplied {
                    settings: new,
                    request_id: update.request_id.clone(),
                });
                let mut reply = DeviceStatusMessage::reply_ok(
                    self.topics.device_id(),
                    self.unix_ms,
                    &self.firmware_version,
                    update.request_id.as_deref(),
                    "settings",
                );
                reply.settings = Some(new);
                reply
            }
            Err(e) => {
                let reason = e.to_string();
                let mut reply = self.status_message(DeviceStatus::Error);
                reply.request_id = update.request_id.clone();
                reply.command = Some("settings".to_string());
                reply.result = Some(CommandResult::Error);
                reply.error = Some(format!("settings not applied: {reason}"));
                reply.settings = Some(self.settings);
                self.notice(Notice::SettingsNotSaved { reason });
                reply
            }
        }
    }

    /// Queues a reply, dropping its id (the caller waits for no PUBACK).
    pub(super) fn queue_reply(&mut self, reply: &DeviceStatusMessage) {
        let _ = self.send_reply(reply);
    }

    /// Queues a reply on the status topic (QoS 1, through the session's ordered queue).
    fn send_reply(&mut self, reply: &DeviceStatusMessage) -> Option<PublishId> {
        let payload = match reply.to_json() {
            Ok(p) => p,
            Err(e) => {
                self.notice(Notice::ReplyNotSent {
                    reason: e.to_string(),
                });
                return None;
            }
        };
        let request = PublishRequest::qos1(self.topics.status(), payload);
        match self.session.publish(self.mono_ms, request) {
            Ok(id) => Some(id),
            Err(e) => {
                let reason: String = e.to_string();
                self.notice(Notice::ReplyNotSent { reason });
                None
            }
        }
    }
}
