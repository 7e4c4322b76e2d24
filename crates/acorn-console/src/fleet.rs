//! What the console knows of each device from the broker (status, presses, answers), kept in
//! memory, and the stream of live events the pages subscribe to.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use acorn_mqtt::{ButtonPressMessage, DeviceStatus, DeviceStatusMessage};
use serde::Serialize;
use tokio::sync::broadcast;

/// Status messages and presses kept per device, and live events kept for the Live page. Small
/// on purpose: the dev stack also carries simulated fleets of thousands (`acorn sim`), and
/// this is kept in memory for each device.
const KEEP_PER_DEVICE: usize = 20;
const KEEP_RECENT: usize = 100;
/// Minutes of the presses-per-minute chart.
pub const CHART_MINUTES: usize = 30;

/// Something a device said, as it arrived: the wire types of `acorn-mqtt`, unchanged.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LiveEvent {
    /// A button press.
    Press {
        /// When the console received it, Unix ms.
        #[serde(rename = "receivedMs")]
        received_ms: i64,
        /// The message.
        message: ButtonPressMessage,
    },
    /// A status message: presence, heartbeat, or an answer to a request.
    Status {
        /// When the console received it, Unix ms.
        #[serde(rename = "receivedMs")]
        received_ms: i64,
        /// The message (boxed: it is the larger of the two).
        message: Box<DeviceStatusMessage>,
    },
}

impl LiveEvent {
    /// The device it is about.
    pub fn device_id(&self) -> &str {
        match self {
            Self::Press { message, .. } => &message.device_id,
            Self::Status { message, .. } => &message.device_id,
        }
    }

    /// `press` or `status` (the SSE event name).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Press { .. } => "press",
            Self::Status { .. } => "status",
        }
    }

    /// When the console received it, Unix ms.
    pub fn received_ms(&self) -> i64 {
        match self {
            Self::Press { received_ms, .. } | Self::Status { received_ms, .. } => *received_ms,
        }
    }
}

/// The live view of one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceLive {
    /// The last status message (presence, heartbeat or answer).
    pub last_status: Option<DeviceStatusMessage>,
    /// When anything was last heard from it, Unix ms.
    pub last_seen_ms: Option<i64>,
    /// The last press.
    pub last_press: Option<ButtonPressMessage>,
    /// The last answer about certificate rotation.
    pub rotation: Option<acorn_mqtt::RotationState>,
    /// Status messages, newest first, with their arrival times.
    pub statuses: VecDeque<(i64, DeviceStatusMessage)>,
    /// Presses, newest first, with their arrival times.
    pub presses: VecDeque<(i64, ButtonPressMessage)>,
}

impl DeviceLive {
    /// `online`, `offline`, `error`, or `unknown` when nothing was heard yet.
    pub fn state(&self) -> &'static str {
        self.last_status
            .as_ref()
            .map_or("unknown", |s| s.status.as_str())
    }

    /// Whether it is connected, as far as the broker has told.
    pub fn is_online(&self) -> bool {
        self.last_status
            .as_ref()
            .is_some_and(|s| s.status != DeviceStatus::Offline)
    }
}

/// Every device's live view, the recent events and the press counts per minute.
pub struct Fleet {
    inner: Mutex<FleetInner>,
    events: broadcast::Sender<LiveEvent>,
}

#[derive(Default)]
struct FleetInner {
    devices: HashMap<String, DeviceLive>,
    recent: VecDeque<LiveEvent>,
    /// Unix minute → presses received in it (only the last [`CHART_MINUTES`]).
    per_minute: BTreeMap<i64, u32>,
    /// Whether the broker link is up.
    linked: bool,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            events: broadcast::channel(256).0,
        }
    }
}

fn push_front<T>(ring: &mut VecDeque<T>, item: T, keep: usize) {
    ring.push_front(item);
    ring.truncate(keep);
}

impl Fleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, FleetInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a press (a re-delivery of a press already seen, same `pressId`, is dropped).
    pub fn press(&self, message: ButtonPressMessage, now_ms: i64) {
        let event = {
            let mut inner = self.lock();
            let device = inner.devices.entry(message.device_id.clone()).or_default();
            let repeat = message.press_id.is_some()
                && device
                    .presses
                    .iter()
                    .any(|(_, p)| p.press_id == message.press_id);
            if repeat {
                return;
            }
            device.last_seen_ms = Some(now_ms);
            device.last_press = Some(message.clone());
            push_front(
                &mut device.presses,
                (now_ms, message.clone()),
                KEEP_PER_DEVICE,
            );
            let minute = now_ms.div_euclid(60_000);
            *inner.per_minute.entry(minute).or_default() += 1;
            let oldest = minute - CHART_MINUTES as i64;
            inner.per_minute.retain(|m, _| *m > oldest);
            let event = LiveEvent::Press {
                received_ms: now_ms,
                message,
            };
            push_front(&mut inner.recent, event.clone(), KEEP_RECENT);
            event
        };
        let _ = self.events.send(event);
    }

    /// Records a status message.
    pub fn status(&self, message: DeviceStatusMessage, now_ms: i64) {
        let event = {
            let mut inner = self.lock();
            let device = inner.devices.entry(message.device_id.clone()).or_default();
            device.last_seen_ms = Some(now_ms);
            if let Some(rotation) = message.rotation {
                device.rotation = Some(rotation);
            }
            device.last_status = Some(message.clone());
            push_front(
                &mut device.statuses,
                (now_ms, message.clone()),
                KEEP_PER_DEVICE,
            );
            let event = LiveEvent::Status {
                received_ms: now_ms,
                message: Box::new(message),
            };
            push_front(&mut inner.recent, event.clone(), KEEP_RECENT);
            event
        };
        let _ = self.events.send(event);
    }

    /// A copy of one device's live view (empty when nothing was heard).
    pub fn device(&self, id: &str) -> DeviceLive {
        self.lock().devices.get(id).cloned().unwrap_or_default()
    }

    /// Copies of every device's live view.
    pub fn devices(&self) -> HashMap<String, DeviceLive> {
        self.lock().devices.clone()
    }

    /// Recent events, newest first.
    pub fn recent(&self) -> Vec<LiveEvent> {
        self.lock().recent.iter().cloned().collect()
    }

    /// Presses per minute over the last [`CHART_MINUTES`] minutes, oldest first.
    pub fn presses_per_minute(&self, now_ms: i64) -> Vec<u32> {
        let inner = self.lock();
        let now = now_ms.div_euclid(60_000);
        (0..CHART_MINUTES as i64)
            .rev()
            .map(|ago| inner.per_minute.get(&(now - ago)).copied().unwrap_or(0))
            .collect()
    }

    /// Whether the broker link is up.
    pub fn linked(&self) -> bool {
        self.lock().linked
    }

    /// Marks the broker link up or down.
    pub fn set_linked(&self, up: bool) {
        self.lock().linked = up;
    }

    /// New live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }
}

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(id: &str, press_id: &str) -> ButtonPressMessage {
        ButtonPressMessage {
            device_id: id.into(),
            button_rf_id: "rf-1".into(),
            timestamp: "2026-11-28T16:42:07.123Z".into(),
            battery_level: None,
            press_id: Some(press_id.into()),
        }
    }

    #[test]
    fn presses_are_counted_once_per_press_id_and_per_minute() {
        let fleet = Fleet::default();
        let t = 1_800_000_000_000;
        fleet.press(press("a", "1"), t);
        fleet.press(press("a", "1"), t + 10);
        fleet.press(press("a", "2"), t + 20);
        fleet.press(press("b", "1"), t + 60_000);
        let chart = fleet.presses_per_minute(t + 60_000);
        assert_eq!(chart.len(), CHART_MINUTES);
        assert_eq!(&chart[CHART_MINUTES - 2..], &[2, 1]);
        assert_eq!(fleet.device("a").presses.len(), 2);
        assert_eq!(fleet.recent().len(), 3);
        assert_eq!(fleet.device("nobody").state(), "unknown");
    }
}
