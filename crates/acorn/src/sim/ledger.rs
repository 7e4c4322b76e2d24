//! Delivery accounting: every press by its device and `pressId`, from the press to the
//! broker's PUBACK (on the device) to its arrival at the cloud-side observer, and the run's
//! counters and latency histograms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use acorn_device::PressId;
use hdrhistogram::Histogram;

/// What became of one press.
#[derive(Debug, Clone, Copy)]
struct Press {
    /// When the device was pressed, µs since the start of the run.
    pressed_us: u64,
    /// The broker acknowledged it (PUBACK on the device).
    acked: bool,
    /// Copies the observer received.
    received: u32,
}

/// A press the report names: its device and `pressId`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedPress {
    /// The device id.
    pub device_id: String,
    /// The `pressId`.
    pub press_id: String,
    /// Copies received by the observer.
    pub copies: u32,
}

/// The final tally of the presses.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Presses made on the devices.
    pub sent: u64,
    /// Acknowledged by the broker (PUBACK).
    pub acked: u64,
    /// Received by the observer (distinct presses).
    pub received: u64,
    /// Acknowledged but never received.
    pub lost: Vec<NamedPress>,
    /// Received more than once (same device, same `pressId`).
    pub duplicated: Vec<NamedPress>,
    /// Sent but not acknowledged when the run ended (still queued on the device).
    pub unacked: u64,
    /// Received without being acknowledged (the PUBACK was lost on the way back).
    pub received_unacked: u64,
}

/// A latency histogram in microseconds, 1 µs .. 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are valid constants.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    })
}

/// Everything the devices and the observer count, shared by all tasks.
pub struct Ledger {
    start: Instant,
    presses: Mutex<HashMap<(u32, PressId), Press>>,
    /// Press → cloud latency (first copy), µs.
    pub press_latency: Mutex<Histogram<u64>>,
    /// CONNECT (TCP start) → CONNACK, µs.
    pub connect_latency: Mutex<Histogram<u64>>,
    /// Presses made.
    pub sent: AtomicU64,
    /// Presses acknowledged.
    pub acked: AtomicU64,
    /// Press copies received by the observer (duplicates included).
    pub received_copies: AtomicU64,
    /// Presses received for no known press (another run's device, or a mangled payload).
    pub unexpected: AtomicU64,
    /// Devices connected now.
    pub connected: AtomicU64,
    /// CONNACKs accepted.
    pub connects: AtomicU64,
    /// CONNECT attempts.
    pub attempts: AtomicU64,
    /// Failed connects (TCP, TLS, refused CONNACK).
    pub connect_failures: AtomicU64,
    /// Established connections that ended.
    pub disconnects: AtomicU64,
    /// Other problems (rejected messages, dropped replies, write timeouts).
    pub errors: AtomicU64,
    /// Commands and settings updates the observer sent.
    pub commands_sent: AtomicU64,
    /// Replies to them the observer received.
    pub commands_answered: AtomicU64,
}

impl Ledger {
    /// An empty ledger; times are measured from now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            presses: Mutex::new(HashMap::new()),
            press_latency: Mutex::new(histogram()),
            connect_latency: Mutex::new(histogram()),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            received_copies: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            commands_sent: AtomicU64::new(0),
            commands_answered: AtomicU64::new(0),
        }
    }

    /// The instant the ledger's times count from.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn presses(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, PressId), Press>> {
        // Only counters live behind the lock; a panicking holder cannot leave it torn.
        self.presses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Device `device` made press `id` now.
    pub fn pressed(&self, device: u32, id: PressId) {
        let pressed_us = self.now_us();
        self.presses().insert(
            (device, id),
            Press {
                pressed_us,
                acked: false,
                received: 0,
            },
        );
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// The broker acknowledged press `id` of `device`.
    pub fn acked(&self, device: u32, id: PressId) {
        if let Some(p) = self.presses().get_mut(&(device, id)) {
            if !p.acked {
                p.acked = true;
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The observer received press `id` of `device`.
    pub fn received(&self, device: u32, id: PressId) {
        let now = self.now_us();
        self.received_copies.fetch_add(1, Ordering::Relaxed);
        let latency = {
            let mut presses = self.presses();
            match presses.get_mut(&(device, id)) {
                Some(p) => {
                    p.received += 1;
                    (p.received == 1).then(|| now.saturating_sub(p.pressed_us).max(1))
                }
                None => {
                    self.unexpected.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        };
        if let Some(us) = latency {
            let mut h = self.press_latency.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h.record(us);
        }
    }

    /// A connect took `us` microseconds from CONNECT to CONNACK.
    pub fn connect_took(&self, us: u64) {
        let mut h = self
            .connect_latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let _ = h.record(us.max(1));
    }

    /// Presses not yet both acknowledged and received (what the end of a run waits for).
    pub fn outstanding(&self) -> u64 {
        self.presses()
            .values()
            .filter(|p| !p.acked || p.received == 0)
            .count() as u64
    }

    /// Presses acknowledged but not (yet) received.
    pub fn acked_not_received(&self) -> u64 {
        self.presses()
            .values()
            .filter(|p| p.acked && p.received == 0)
            .count() as u64
    }

    /// The tally, naming lost and duplicated presses (`names` maps device index to id).
    pub fn tally(&self, names: &[String]) -> Tally {
        let presses = self.presses();
        let mut t = Tally::default();
        let name = |device: u32, id: PressId, copies: u32| NamedPress {
            device_id: names
                .get(device as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{device}")),
            press_id: id.to_string(),
            copies,
        };
        for (&(device, id), p) in presses.iter() {
            t.sent += 1;
            if p.acked {
                t.acked += 1;
            } else {
                t.unacked += 1;
            }
            if p.received > 0 {
                t.received += 1;
                if !p.acked {
                    t.received_unacked += 1;
                }
            }
            if p.acked && p.received == 0 {
                t.lost.push(name(device, id, 0));
            }
            if p.received > 1 {
                t.duplicated.push(name(device, id, p.received));
            }
        }
        t.lost.sort();
        t.duplicated.sort();
        t
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram in µs.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_and_duplicated_presses_are_named() {
        let ledger = Ledger::new();
        let names = vec!["a".to_owned(), "b".to_owned()];
        let (p1, p2, p3, p4) = (
            PressId::new(1, 1),
            PressId::new(1, 2),
            PressId::new(1, 3),
            PressId::new(2, 1),
        );
        for (d, p) in [(0, p1), (0, p2), (0, p3), (1, p4)] {
            ledger.pressed(d, p);
        }
        ledger.acked(0, p1);
        ledger.acked(0, p2);
        ledger.acked(1, p4);
        ledger.received(0, p1);
        ledger.received(0, p1);
        ledger.received(1, p4);
        ledger.received(1, PressId::new(9, 9));
        let t = ledger.tally(&names);
        assert_eq!((t.sent, t.acked, t.received, t.unacked), (4, 3, 2, 1));
        assert_eq!(
            t.lost,
            vec![NamedPress {
                device_id: "a".into(),
                press_id: p2.to_string(),
                copies: 0
            }]
        );
        assert_eq!(t.duplicated.len(), 1);
        assert_eq!(t.duplicated[0].copies, 2);
        assert_eq!(ledger.unexpected.load(Ordering::Relaxed), 1);
        assert_eq!(ledger.outstanding(), 2);
        assert_eq!(
            Percentiles::of(&ledger.press_latency.lock().unwrap()).count,
            2
        );
    }
}
