//! [`BasicDevice`]: a minimal [`Application`] — presses published at QoS 1, `online` announced
//! once the device can receive (after the SUBACK, or at once when the broker kept the
//! session), inbound messages kept for the caller.
//!
//! This is the seam for the device core (`acorn-device`: cooldown, settings, commands and
//! replies): until the firmware drives it, the firmware and the tests use this.

use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::future::Future;

use acorn_mqtt::{
    Action, ButtonPressMessage, ConnectionStatus, DeviceStatus, DeviceStatusMessage,
    PublishRequest, Session, Topics,
};
use rand_core::RngCore;

use crate::transport::{Application, Notice, Request};

/// Inbound messages kept at most (the oldest is dropped beyond).
pub const INBOX_CAPACITY: usize = 16;

/// Where requests come from (a channel, a button task). `next` must be cancel-safe.
pub trait RequestSource {
    /// The next request.
    fn next(&mut self) -> impl Future<Output = Request>;
}

/// The minimal device application.
pub struct BasicDevice<S> {
    topics: Topics,
    firmware_version: String,
    unix_ms: fn() -> u64,
    source: S,
    status: ConnectionStatus,
    announced: bool,
    inbox: VecDeque<(String, Vec<u8>)>,
    failures: VecDeque<String>,
}

impl<S: RequestSource> BasicDevice<S> {
    /// A device with these topics; `unix_ms` reads the synced wall clock in milliseconds.
    pub fn new(topics: Topics, firmware_version: &str, unix_ms: fn() -> u64, source: S) -> Self {
        BasicDevice {
            topics,
            firmware_version: firmware_version.to_string(),
            unix_ms,
            source,
            status: ConnectionStatus::Disconnected,
            announced: false,
            inbox: VecDeque::new(),
            failures: VecDeque::new(),
        }
    }

    /// The last connection status the session reported.
    pub fn status(&self) -> &ConnectionStatus {
        &self.status
    }

    /// Takes the inbound messages received so far (topic, payload), oldest first.
    pub fn take_inbox(&mut self) -> Vec<(String, Vec<u8>)> {
        self.inbox.drain(..).collect()
    }

    /// Takes the failure diagnoses reported so far, oldest first.
    pub fn take_failures(&mut self) -> Vec<String> {
        self.failures.drain(..).collect()
    }

    /// The topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The last will for [`crate::TransportConfig::will`]: `offline` on the status topic.
    pub fn last_will(&self) -> Option<(String, Vec<u8>)> {
        let msg = DeviceStatusMessage::new(
            self.topics.device_id(),
            (self.unix_ms)(),
            DeviceStatus::Offline,
            &self.firmware_version,
        );
        msg.to_json()
            .ok()
            .map(|json| (self.topics.status().to_string(), json))
    }

    /// A press as a request (QoS 1 on the button-press topic, the seed's JSON).
    pub fn press(
        topics: &Topics,
        button_rf_id: &str,
        unix_ms: u64,
        battery_level: Option<u8>,
    ) -> Result<Request, acorn_mqtt::Error> {
        let msg =
            ButtonPressMessage::new(topics.device_id(), button_rf_id, unix_ms, battery_level)?;
        Ok(Request::Publish(PublishRequest::qos1(
            topics.button_press(),
            msg.to_json()?,
        )))
    }

    fn announce<R: RngCore>(&mut self, now_ms: u64, session: &mut Session<R>) {
        if self.announced {
            return;
        }
        self.announced = true;
        let msg = DeviceStatusMessage::new(
            self.topics.device_id(),
            (self.unix_ms)(),
            DeviceStatus::Online,
            &self.firmware_version,
        );
        if let Ok(json) = msg.to_json() {
            let _ = session.publish(now_ms, PublishRequest::qos1(self.topics.status(), json));
        }
    }
}

impl<S: RequestSource, R: RngCore> Application<R> for BasicDevice<S> {
    fn next_request(&mut self) -> impl Future<Output = Request> {
        self.source.next()
    }

    fn notice(&mut self, now_ms: u64, notice: Notice<'_>, session: &mut Session<R>) {
        match notice {
            Notice::Connected {
                session_present: true,
            } => self.announce(now_ms, session),
            Notice::Connected { .. } => self.announced = false,
            Notice::Subscribed { .. } => self.announce(now_ms, session),
            Notice::Message { topic, payload } => {
                if self.inbox.len() == INBOX_CAPACITY {
                    self.inbox.pop_front();
                }
                self.inbox.push_back((topic.to_string(), payload.to_vec()));
            }
            Notice::Action(Action::ReportStatus(status)) => {
                if *status != ConnectionStatus::Connected {
                    self.announced = false;
                }
                self.status = status.clone();
            }
            Notice::Failure(d) => {
                if self.failures.len() == INBOX_CAPACITY {
                    self.failures.pop_front();
                }
                self.failures.push_back(d.to_string());
            }
            _ => {}
        }
    }
}
