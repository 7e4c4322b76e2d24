//! The presses between the press store and the session: which are waiting, which the session
//! holds (at most a small window, so a long queue never fills the session's RAM queue), and
//! what happens on a PUBACK, a full queue or a store that fails.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use acorn_mqtt::{ButtonPressMessage, DropReason, PublishId, PublishRequest, QoS};
use rand_core::RngCore;

use super::{Device, Phase};
use crate::config::DeviceConfig;
use crate::io::Action;
use crate::notice::Notice;
use crate::presses::{first_boot, next_boot, PressId, PressStore, QueuedPress};
use crate::store::SettingsStore;

/// How many times a press is retried when the store is full (each time after dropping the
/// oldest press).
const FULL_RETRIES: usize = 3;

/// The RAM view of the durable queue.
#[derive(Debug)]
pub(super) struct Ledger {
    /// Every press not yet acknowledged, oldest first (the store holds the same).
    pending: VecDeque<QueuedPress>,
    /// The presses handed to the session, in order: always the first `handed.len()` of
    /// `pending`.
    handed: Vec<(PublishId, PressId)>,
    capacity: usize,
    window: usize,
    dropped: u32,
    boot: u32,
    next_seq: u32,
    recovered: usize,
    warnings: Vec<String>,
}

impl Ledger {
    /// Loads the store and stores this start's boot number (`random` seeds a fresh queue's
    /// first boot number). A store that cannot be read starts empty, with a warning.
    pub(super) fn open<Q: PressStore>(store: &mut Q, config: &DeviceConfig, random: u32) -> Self {
        let mut warnings = Vec::new();
        let stored = match store.load() {
            Ok(stored) => stored,
            Err(e) => {
                warnings.push(format!(
                    "{e}; presses from before this start are not delivered"
                ));
                Default::default()
            }
        };
        warnings.extend(stored.discarded.iter().map(ToString::to_string));
        let boot = stored.boot.map_or_else(|| first_boot(random), next_boot);
        if let Err(e) = store.save_boot(boot) {
            warnings.push(format!("cannot store the boot number: {e}"));
        }
        let recovered = stored.presses.len();
        Self {
            pending: stored.presses.into(),
            handed: Vec::new(),
            capacity: config.press_queue_capacity,
            window: config.press_window,
            dropped: stored.dropped,
            boot,
            next_seq: 0,
            recovered,
            warnings,
        }
    }

    pub(super) fn pending(&self) -> impl Iterator<Item = &QueuedPress> + '_ {
        self.pending.iter()
    }

    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn recovered(&self) -> usize {
        self.recovered
    }

    pub(super) fn dropped(&self) -> u32 {
        self.dropped
    }

    pub(super) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub(super) fn is_handed(&self, id: PublishId) -> bool {
        self.handed_index(id).is_some()
    }

    /// Where the press the session knows as `id` is (in `handed`, and so in `pending`).
    fn handed_index(&self, id: PublishId) -> Option<usize> {
        self.handed.iter().position(|(p, _)| *p == id)
    }

    fn next_id(&mut self) -> PressId {
        if self.next_seq == u32::MAX {
            // 4 billion presses in one boot: go on as the next boot (never stored, so the
            // next start still counts from the stored one plus one; ids stay unique within
            // this run and in order).
            self.boot = next_boot(self.boot);
            self.next_seq = 0;
        }
        let id = PressId::new(self.boot, self.next_seq);
        self.next_seq += 1;
        id
    }
}

impl<R: RngCore, S: SettingsStore, Q: PressStore> Device<R, S, Q> {
    /// Gives a checked press its id, makes room, stores it and queues it. Never refuses: a
    /// store that cannot take it leaves it in RAM only, with a warning.
    pub(super) fn enqueue_press(&mut self, button: &str, battery: Option<u8>) -> PressId {
        let press = QueuedPress {
            id: self.ledger.next_id(),
            unix_ms: self.unix_ms,
            button: button.to_string(),
            battery,
        };
        while self.ledger.len() >= self.ledger.capacity.max(1) {
            if !self.drop_oldest_press() {
                break;
            }
        }
        let mut result = self.presses.append(&press);
        for _ in 0..FULL_RETRIES {
            match &result {
                Err(e) if Q::is_full(e) && self.drop_oldest_press() => {
                    result = self.presses.append(&press);
                }
                _ => break,
            }
        }
        // The notice goes before the session's publish action, as a log line would.
        self.emit(Action::Notice(Notice::PressQueued {
            button: button.into(),
            battery,
            press_id: press.id,
        }));
        if let Err(e) = result {
            self.notice(Notice::PressNotStored {
                press_id: press.id,
                reason: e.to_string(),
            });
        }
        let id = press.id;
        self.ledger.pending.push_back(press);
        self.feed_presses();
        id
    }

    /// Hands waiting presses to the session, oldest first, up to the window.
    pub(super) fn feed_presses(&mut self) {
        if self.phase != Phase::Running || self.started_at.is_none() {
            return;
        }
        while self.ledger.handed.len() < self.ledger.window {
            let Some(press) = self.ledger.pending.get(self.ledger.handed.len()) else {
                return;
            };
            let id = press.id;
            let payload = ButtonPressMessage::new(
                self.topics.device_id(),
                &press.button,
                press.unix_ms,
                press.battery,
            )
            .and_then(|m| m.with_press_id(&id.to_string()))
            .and_then(|m| m.to_json());
            let request = payload.map(|payload| PublishRequest {
                topic: self.topics.button_press().to_string(),
                payload,
                qos: QoS::AtLeastOnce,
                // A durable press never expires: it waits for as many connections as it takes.
                ttl_ms: Some(u64::MAX),
            });
            match request.and_then(|r| self.session.publish(self.mono_ms, r)) {
                Ok(publish_id) => self.ledger.handed.push((publish_id, id)),
                Err(e) => {
                    // Only a press that cannot become a message ends up here (the session
                    // takes every valid QoS 1 message while running): it can never be sent.
                    let index = self.ledger.handed.len();
                    self.ledger.pending.remove(index);
                    self.forget_press(id);
                    self.notice(Notice::PressNotStored {
                        press_id: id,
                        reason: format!("dropped: it cannot be sent ({e})"),
                    });
                }
            }
        }
    }

    /// The PUBACK of a press: it leaves the store; the next one is handed over.
    pub(super) fn press_delivered(&mut self, publish_id: PublishId) {
        let Some(index) = self.ledger.handed_index(publish_id) else {
            return;
        };
        let (_, press_id) = self.ledger.handed.remove(index);
        self.ledger.pending.remove(index);
        self.forget_press(press_id);
        self.actions
            .push_back(Action::Notice(Notice::PressDelivered { press_id }));
        self.feed_presses();
    }

    /// The session gave a press up (its queue overflowed with replies): hand it over again
    /// at once, so it is never lost (it may then go after a later press).
    pub(super) fn press_withdrawn(&mut self, publish_id: PublishId, reason: DropReason) {
        let Some(index) = self.ledger.handed_index(publish_id) else {
            return;
        };
        self.ledger.handed.remove(index);
        if let Some(press) = self.ledger.pending.remove(index) {
            let at = self.ledger.handed.len();
            self.ledger.pending.insert(at, press);
        }
        self.actions.push_back(Action::Notice(Notice::Dropped {
            id: publish_id,
            reason,
        }));
        self.feed_presses();
    }

    /// Drops the oldest press that can still be dropped (one the session has not sent on
    /// the current connection), counts it and stores the count. `false` when none can be.
    fn drop_oldest_press(&mut self) -> bool {
        let handed = self.ledger.handed.len();
        let cancelled = (0..handed).find(|&i| self.session.cancel(self.ledger.handed[i].0));
        let index = match cancelled {
            Some(i) => {
                self.ledger.handed.remove(i);
                i
            }
            None if self.ledger.pending.len() > handed => handed,
            None => return false,
        };
        let Some(press) = self.ledger.pending.remove(index) else {
            return false;
        };
        self.forget_press(press.id);
        self.ledger.dropped = self.ledger.dropped.saturating_add(1);
        if let Err(e) = self.presses.save_dropped(self.ledger.dropped) {
            self.notice(Notice::PressNotStored {
                press_id: press.id,
                reason: format!("the dropped-press counter was not stored: {e}"),
            });
        }
        self.notice(Notice::PressDropped {
            press_id: press.id,
            button: press.button,
        });
        true
    }

    /// Erases a press from the store; a failure only means it may be sent again after a
    /// restart, under the same `pressId`.
    fn forget_press(&mut self, id: PressId) {
        if let Err(e) = self.presses.remove(id) {
            self.actions
                .push_back(Action::Notice(Notice::PressNotRemoved {
                    press_id: id,
                    reason: e.to_string(),
                }));
        }
    }
}
