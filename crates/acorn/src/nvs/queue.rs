//! The press queue in `acorn nvs dump`: when an image has the device core's namespace
//! `press_queue` (a queue image), how many presses wait, the oldest and the newest (pressId,
//! time, button, battery), the dropped-press counter and the boot number.

use acorn_device::presses::{BOOT_KEY, DROPPED_KEY};
use acorn_device::{PressId, QueuedPress, PRESS_NAMESPACE};
use acorn_nvs::{EntryInfo, IntValue};
use serde_json::{json, Value as Json};

use super::render::Shown;

/// What the namespace `press_queue` holds.
pub struct QueueSummary {
    /// The presses, oldest first.
    presses: Vec<QueuedPress>,
    /// The dropped-press counter (absent: none was ever dropped).
    dropped: u32,
    /// The boot number of the last start.
    boot: Option<u32>,
    /// Records that do not decode (the device erases them at its next start).
    unreadable: Vec<String>,
}

/// The queue in `listed`, if the image has a `press_queue` namespace with anything in it.
pub fn summarize(listed: &[(EntryInfo, Shown)]) -> Option<QueueSummary> {
    let mut summary = QueueSummary {
        presses: Vec::new(),
        dropped: 0,
        boot: None,
        unreadable: Vec::new(),
    };
    let mut any = false;
    for (entry, value) in listed
        .iter()
        .filter(|(e, _)| e.namespace == PRESS_NAMESPACE)
    {
        any = true;
        match (entry.key.as_str(), value) {
            (BOOT_KEY, Shown::Int(IntValue::U32(boot))) => summary.boot = Some(*boot),
            (DROPPED_KEY, Shown::Int(IntValue::U32(n))) => summary.dropped = *n,
            (key, Shown::Bytes(bytes)) if PressId::parse(key).is_some() => {
                let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
                let decoded = std::str::from_utf8(bytes)
                    .map_err(|_| format!("press queue record {key:?} is not text"))
                    .and_then(|text| QueuedPress::decode(key, text).map_err(|e| e.to_string()));
                match decoded {
                    Ok(press) => summary.presses.push(press),
                    Err(why) => summary.unreadable.push(why),
                }
            }
            (key, _) => summary
                .unreadable
                .push(format!("{key:?} is not a press queue key of this type")),
        }
    }
    summary.presses.sort_by_key(|p| p.id);
    any.then_some(summary)
}

fn battery_text(press: &QueuedPress) -> String {
    press.battery.map_or_else(
        || "battery unknown".to_owned(),
        |b| format!("battery {b} %"),
    )
}

fn press_line(label: &str, press: &QueuedPress) -> String {
    format!(
        "  {label:<7} pressId {}  {}  button {}  {}",
        press.id,
        acorn_mqtt::format_timestamp(press.unix_ms),
        press.button,
        battery_text(press)
    )
}

fn press_json(press: &QueuedPress) -> Json {
    json!({
        "pressId": press.id.to_string(),
        "timestamp": acorn_mqtt::format_timestamp(press.unix_ms),
        "buttonRfId": press.button,
        "batteryLevel": press.battery,
    })
}

impl QueueSummary {
    /// The lines printed under the table.
    pub fn text(&self) -> Vec<String> {
        let boot = self
            .boot
            .map_or_else(|| "none stored".to_owned(), |b| b.to_string());
        let mut lines = vec![format!(
            "press queue (namespace {PRESS_NAMESPACE}): {} presses waiting for delivery, {} dropped (queue full), boot number {boot}",
            self.presses.len(),
            self.dropped
        )];
        match self.presses.as_slice() {
            [] => {}
            [only] => lines.push(press_line("only", only)),
            [oldest, .., newest] => {
                lines.push(press_line("oldest", oldest));
                lines.push(press_line("newest", newest));
            }
        }
        lines.extend(
            self.unreadable
                .iter()
                .map(|why| format!("  unreadable: {why} (erased at the device's next start)")),
        );
        lines
    }

    /// The `pressQueue` object of `--json`.
    pub fn json(&self) -> Json {
        json!({
            "count": self.presses.len(),
            "dropped": self.dropped,
            "boot": self.boot,
            "oldest": self.presses.first().map(press_json),
            "newest": self.presses.last().map(press_json),
            "unreadable": self.unreadable,
        })
    }
}
