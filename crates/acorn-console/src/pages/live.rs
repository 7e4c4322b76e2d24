//! The Live page (presses and status changes across the fleet as they arrive, pausable), and
//! the one-line description of an event that every page and the event stream share.

use acorn_mqtt::{ButtonPressMessage, CommandResult, DeviceStatusMessage};
use maud::{html, Markup};

use super::{page, time_ms, Nav};
use crate::auth::Session;
use crate::fleet::LiveEvent;

/// A press in words: button, battery, press id.
pub fn describe_press(p: &ButtonPressMessage) -> String {
    let mut text = format!("button {}", p.button_rf_id);
    if let Some(level) = p.battery_level {
        text.push_str(&format!(", battery {level} %"));
    }
    if let Some(id) = &p.press_id {
        text.push_str(&format!(", press {id}"));
    }
    text
}

/// A status message in words: presence, heartbeat, or an answer with its outcome.
pub fn describe_status(s: &DeviceStatusMessage) -> String {
    let mut text = s.status.as_str().to_owned();
    if let Some(command) = &s.command {
        let result = match s.result {
            Some(CommandResult::Ok) => "ok",
            Some(CommandResult::Error) => "error",
            None => "no result",
        };
        text = format!("answer to {command}: {result}");
    } else if s.result == Some(CommandResult::Error) {
        text = "request rejected".to_owned();
    } else if s.heartbeat.is_some() {
        text.push_str(" (heartbeat)");
    }
    if let Some(id) = &s.request_id {
        text.push_str(&format!(" [{id}]"));
    }
    if let Some(rotation) = s.rotation {
        text.push_str(&format!(", rotation {}", super::rotation_name(rotation)));
    }
    if let Some(settings) = &s.settings {
        text.push_str(&format!(
            ", settings: soundEnabled {}, soundVolume {}, ledBrightness {}, cooldownMs {}, heartbeatSeconds {}",
            settings.sound_enabled,
            settings.sound_volume,
            settings.led_brightness,
            settings.cooldown_ms,
            settings.heartbeat_seconds
        ));
    }
    if let Some(error) = &s.error {
        text.push_str(&format!(": {error}"));
    }
    text
}

/// An event in words.
pub fn describe(event: &LiveEvent) -> String {
    match event {
        LiveEvent::Press { message, .. } => describe_press(message),
        LiveEvent::Status { message, .. } => describe_status(message),
    }
}

/// The JSON an event is streamed as: the wire message unchanged (`message`), with the
/// console's description and times beside it.
pub fn event_json(event: &LiveEvent) -> String {
    serde_json::json!({
        "kind": event.kind(),
        "deviceId": event.device_id(),
        "received": time_ms(event.received_ms()),
        "summary": describe(event),
        "state": match event {
            LiveEvent::Status { message, .. } => Some(message.status.as_str()),
            LiveEvent::Press { .. } => None,
        },
        "event": event,
    })
    .to_string()
}

/// One row of an event table (the same cells `console.js` makes for a streamed event).
pub fn event_row(event: &LiveEvent) -> Markup {
    html! {
        tr data-kind=(event.kind()) {
            td { (time_ms(event.received_ms())) }
            td { a href={ "/devices/" (event.device_id()) } { (event.device_id()) } }
            td { (event.kind()) }
            td.summary { (describe(event)) }
        }
    }
}

/// The page.
pub fn render(session: &Session, recent: &[LiveEvent]) -> Markup {
    let main = html! {
        h1 { "Live" }
        p.controls {
            button type="button" #pause aria-pressed="false" { "Pause" }
            " " span #paused-count {}
        }
        table #events {
            thead { tr { th { "Received" } th { "Device" } th { "Kind" } th { "What" } } }
            tbody {
                @for event in recent { (event_row(event)) }
            }
        }
    };
    page("Live", Nav::Live, Some(session), Some("live"), main)
}
