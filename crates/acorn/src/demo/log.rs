//! The demo's live log (`[  1.23s] who        what`) and its closing summary.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What one simulated device did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceTally {
    /// Registered (certificate stored in its NVS image).
    pub registered: bool,
    /// Connected over mutual TLS at least once.
    pub connected: bool,
    /// Presses handed to the runtime.
    pub presses_sent: u32,
    /// Presses the broker acknowledged (PUBACK).
    pub presses_acked: u32,
    /// Presses the cloud client received.
    pub presses_received: u32,
    /// Settings updates applied (and saved in NVS).
    pub settings_applied: u32,
    /// Commands answered.
    pub commands_answered: u32,
    /// Certificate rotations committed.
    pub rotations: u32,
    /// Errors (registration, connection, rejected messages).
    pub errors: u32,
}

impl DeviceTally {
    /// Whether the device did everything the demo expects.
    pub fn complete(&self) -> bool {
        self.registered
            && self.connected
            && self.presses_acked > 0
            && self.presses_acked == self.presses_sent
            && self.settings_applied > 0
            && self.commands_answered > 0
            && self.errors == 0
    }
}

/// The shared log: timestamps from the start, one line per event, and the tallies.
#[derive(Clone)]
pub struct DemoLog {
    start: Instant,
    tallies: Arc<Mutex<BTreeMap<String, DeviceTally>>>,
}

impl DemoLog {
    /// A log whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            tallies: Arc::default(),
        }
    }

    /// Seconds since the start.
    pub fn elapsed_secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Prints one line.
    pub fn line(&self, who: &str, what: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "[{:>6.2}s] {who:<14} {}",
            self.elapsed_secs(),
            what.as_ref()
        );
        let _ = out.flush();
    }

    /// Changes the tally of `device`.
    pub fn tally(&self, device: &str, change: impl FnOnce(&mut DeviceTally)) {
        if let Ok(mut map) = self.tallies.lock() {
            change(map.entry(device.to_owned()).or_default());
        }
    }

    /// A copy of every tally.
    pub fn tallies(&self) -> BTreeMap<String, DeviceTally> {
        self.tallies.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Prints the summary table; returns whether every device is complete.
    pub fn summary(&self, expected_devices: usize) -> bool {
        let tallies = self.tallies();
        let mut out = std::io::stdout().lock();
        let yes = |b: bool| if b { "yes" } else { "NO" };
        let _ = writeln!(out, "\nSummary ({:.1} s)", self.elapsed_secs());
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>9} {:>6} {:>6} {:>8} {:>8} {:>8} {:>9} {:>6}",
            "device",
            "registered",
            "connected",
            "sent",
            "acked",
            "received",
            "settings",
            "commands",
            "rotations",
            "errors"
        );
        let mut all = tallies.len() == expected_devices;
        for (id, t) in &tallies {
            all &= t.complete();
            let _ = writeln!(
                out,
                "{id:<14} {:>10} {:>9} {:>6} {:>6} {:>8} {:>8} {:>8} {:>9} {:>6}",
                yes(t.registered),
                yes(t.connected),
                t.presses_sent,
                t.presses_acked,
                t.presses_received,
                t.settings_applied,
                t.commands_answered,
                t.rotations,
                t.errors
            );
        }
        let total = |f: fn(&DeviceTally) -> u32| tallies.values().map(f).sum::<u32>();
        let count = |f: fn(&DeviceTally) -> bool| tallies.values().filter(|t| f(t)).count();
        let _ = writeln!(
            out,
            "\nregistered {}/{expected_devices}, connected {}/{expected_devices}, presses sent {}, \
             acknowledged {}, received by the cloud {}, settings applied {}, commands answered {}, \
             certificates rotated {}, errors {}",
            count(|t| t.registered),
            count(|t| t.connected),
            total(|t| t.presses_sent),
            total(|t| t.presses_acked),
            total(|t| t.presses_received),
            total(|t| t.settings_applied),
            total(|t| t.commands_answered),
            total(|t| t.rotations),
            total(|t| t.errors),
        );
        let _ = writeln!(
            out,
            "result: {}",
            if all {
                "OK: every device registered, connected, and had its presses acknowledged"
            } else {
                "INCOMPLETE: see the table and the log above"
            }
        );
        let _ = out.flush();
        all
    }
}
