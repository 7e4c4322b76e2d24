//! The heartbeat: a status message every `heartbeatSeconds` while connected, with how the
//! device is doing (uptime, memory, signal, certificate days left, queue, reconnects, the last
//! failure, connect time).

use alloc::string::ToString;

use acorn_mqtt::{ConnectionStatus, DeviceStatus, Heartbeat, QoS};
use rand_core::RngCore;

use super::{Device, Phase};
use crate::io::{Action, Publish, Tag};
use crate::notice::Notice;
use crate::presses::PressStore;
use crate::store::SettingsStore;

/// When the next heartbeat is due, and the connect timing it reports.
#[derive(Debug, Clone)]
pub(super) struct HeartbeatClock {
    /// `--heartbeat` on Linux: the interval until a settings update names `heartbeatSeconds`.
    override_ms: Option<u64>,
    due_at: Option<u64>,
    connect_started: Option<u64>,
    connect_ms: Option<u64>,
}

impl HeartbeatClock {
    pub(super) fn new(override_ms: Option<u64>) -> Self {
        Self {
            override_ms,
            due_at: None,
            connect_started: None,
            connect_ms: None,
        }
    }

    pub(super) fn due_at(&self) -> Option<u64> {
        self.due_at
    }

    /// A CONNECT went out at `now`.
    pub(super) fn connecting(&mut self, now: u64) {
        self.connect_started = Some(now);
    }

    /// Its CONNACK came at `now`.
    pub(super) fn connected(&mut self, now: u64) {
        self.connect_ms = self.connect_started.map(|t| now.saturating_sub(t));
    }

    /// The connection is gone: no heartbeat until the next `online`.
    pub(super) fn disconnected(&mut self) {
        self.due_at = None;
    }

    /// The next heartbeat `interval_ms` after `now` (none when 0).
    pub(super) fn schedule(&mut self, now: u64, interval_ms: u64) {
        self.due_at = (interval_ms > 0).then(|| now.saturating_add(interval_ms));
    }
}

impl<R: RngCore, S: SettingsStore, Q: PressStore> Device<R, S, Q> {
    /// The interval in effect: the driver's override until the settings name one.
    pub(super) fn heartbeat_interval_ms(&self) -> u64 {
        self.heartbeat
            .override_ms
            .unwrap_or(u64::from(self.settings.heartbeat_seconds) * 1000)
    }

    /// A settings update changed `heartbeatSeconds`: it replaces any override, and the next
    /// heartbeat is counted from now.
    pub(super) fn heartbeat_setting_changed(&mut self) {
        self.heartbeat.override_ms = None;
        if *self.session.status() == ConnectionStatus::Connected && !self.online_pending {
            let interval = self.heartbeat_interval_ms();
            self.heartbeat.schedule(self.mono_ms, interval);
        }
    }

    /// The heartbeat fields at this moment.
    pub fn heartbeat_fields(&self) -> Heartbeat {
        let stats = self.session.stats();
        Heartbeat {
            uptime_ms: Some(self.uptime_ms()),
            free_heap_bytes: self.host.free_heap_bytes,
            rss_bytes: self.host.rss_bytes,
            wifi_rssi_dbm: self.host.wifi_rssi_dbm,
            reset_reason: self.host.reset_reason.clone(),
            certificate_days_left: self.certificate.days_left(self.unix_ms),
            queued_presses: Some(self.ledger.len() as u64),
            dropped_presses: Some(u64::from(self.ledger.dropped())),
            reconnects: Some(stats.connects.saturating_sub(1)),
            last_disconnect_reason: stats.last_error,
            connect_ms: self.heartbeat.connect_ms,
        }
    }

    /// Sends the heartbeat when it is due (connected, `online` sent), and schedules the next.
    pub(super) fn beat_if_due(&mut self) {
        let Some(due) = self.heartbeat.due_at else {
            return;
        };
        if self.mono_ms < due || self.phase != Phase::Running {
            return;
        }
        let interval = self.heartbeat_interval_ms();
        self.heartbeat.schedule(self.mono_ms, interval);
        if *self.session.status() != ConnectionStatus::Connected || self.online_pending {
            return;
        }
        let mut message = self.status_message(DeviceStatus::Online);
        message.heartbeat = Some(self.heartbeat_fields());
        message.certificate_id = self.certificate.fingerprint.clone();
        match message.to_json() {
            Ok(payload) => {
                self.emit(Action::Publish(Publish {
                    tag: Tag::Heartbeat,
                    topic: self.topics.status().to_string(),
                    payload,
                    qos: QoS::AtLeastOnce,
                    retransmit: false,
                }));
                self.notice(Notice::HeartbeatSent {
                    queued_presses: self.ledger.len(),
                });
            }
            Err(e) => self.notice(Notice::ReplyNotSent {
                reason: e.to_string(),
            }),
        }
    }
}
