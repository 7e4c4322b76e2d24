//! Every inbound message kind: its reply (exact fields), what changed, what was reported.

use acorn_device::{Action, Notice, Tag};
use serde_json::{json, Value};

use crate::support::{notices, publishes, reply, Sim, COMMANDS, DEVICE, FIRMWARE, SETTINGS};

#[test]
fn a_valid_settings_update_is_saved_applied_and_answered() {
    let mut sim = Sim::online();
    let actions = sim.message(
        SETTINGS,
        br#"{"requestId":"req-42","soundVolume":7,"ledBrightness":20}"#,
    );
    let reply = reply(&actions);
    assert_eq!(
        reply,
        json!({
            "deviceId": DEVICE,
            "timestamp": reply["timestamp"],
            "status": "online",
            "firmwareVersion": FIRMWARE,
            "requestId": "req-42",
            "command": "settings",
            "result": "ok",
            "settings": {"soundEnabled": true, "soundVolume": 7, "ledBrightness": 20, "cooldownMs": 1000, "heartbeatSeconds": 300},
        })
    );
    assert_eq!(reply["timestamp"].as_str().unwrap().len(), 24);
    assert_eq!(sim.settings().sound_volume, 7);
    assert_eq!(sim.device.store().stored, Some(sim.settings()));
    assert_eq!(sim.device.store().saves, 1);
    assert!(notices(&actions).iter().any(|n| matches!(
        n,
        Notice::SettingsApplied { settings, request_id: Some(id) } if settings.led_brightness == 20 && id == "req-42"
    )));
    // The reply is a QoS 1 message of the session queue on the status topic.
    let p = publishes(&actions)[0];
    assert!(matches!(p.tag, Tag::Message(_)));
    assert_eq!(p.qos, acorn_device::acorn_mqtt::QoS::AtLeastOnce);
}

/// (topic, payload, a text the error must hold, the requestId echoed).
const REJECTED: &[(&str, &[u8], &str, Option<&str>)] = &[
    // Out of range.
    (
        SETTINGS,
        br#"{"requestId":"req-4","soundVolume":99}"#,
        "soundVolume",
        Some("req-4"),
    ),
    (
        SETTINGS,
        br#"{"requestId":"r","ledBrightness":101}"#,
        "ledBrightness",
        Some("r"),
    ),
    (SETTINGS, br#"{"cooldownMs":600001}"#, "cooldownMs", None),
    // Malformed.
    (SETTINGS, b"{not json", "not valid", None),
    (SETTINGS, b"[1,2]", "not valid", None),
    (
        SETTINGS,
        br#"{"requestId":"typo","volume":3}"#,
        "volume",
        Some("typo"),
    ),
    (
        SETTINGS,
        br#"{"requestId":"empty"}"#,
        "changes nothing",
        Some("empty"),
    ),
    (SETTINGS, br#"{"soundEnabled":"yes"}"#, "not valid", None),
    // Commands.
    (
        COMMANDS,
        br#"{"requestId":"req-3","command":"self-destruct"}"#,
        "self-destruct",
        Some("req-3"),
    ),
    (COMMANDS, br#"{"command":"ping"}"#, "requestId", None),
    (
        COMMANDS,
        br#"{"requestId":"","command":"ping"}"#,
        "requestId",
        None,
    ),
    (COMMANDS, b"", "not valid", None),
    // A topic the device does not handle.
    (
        "acorn-pups/commands/acorn-0002",
        br#"{"requestId":"x","command":"ping"}"#,
        "unexpected topic",
        Some("x"),
    ),
];

#[test]
fn bad_messages_get_an_error_reply_and_change_nothing() {
    for &(topic, payload, needle, request_id) in REJECTED {
        let mut sim = Sim::online();
        let before = sim.settings();
        let actions = sim.message(topic, payload);
        let reply = reply(&actions);
        let case = String::from_utf8_lossy(payload);
        assert_eq!(reply["status"], "error", "{case}");
        assert_eq!(reply["result"], "error", "{case}");
        assert_eq!(reply["deviceId"], DEVICE);
        assert_eq!(reply["firmwareVersion"], FIRMWARE);
        assert!(reply.get("command").is_none(), "{case}: {reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.contains(needle), "{case}: {error}");
        assert_eq!(
            reply.get("requestId").and_then(Value::as_str),
            request_id,
            "{case}"
        );
        assert_eq!(sim.settings(), before, "{case}");
        assert_eq!(sim.device.store().saves, 0, "{case}");
        assert!(
            notices(&actions).iter().any(
                |n| matches!(n, Notice::Rejected { reason, bytes, .. } if reason == error && *bytes == payload.len())
            ),
            "{case}"
        );
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Disconnect)),
            "{case}"
        );
    }
}

#[test]
fn ping_is_answered_with_its_request_id() {
    let mut sim = Sim::online();
    let actions = sim.message(COMMANDS, br#"{"requestId":"req-1","command":"ping"}"#);
    let p = publishes(&actions)[0];
    let text = String::from_utf8(p.payload.clone()).unwrap();
    let timestamp = json_timestamp(&text);
    assert_eq!(
        text,
        format!(
            r#"{{"deviceId":"acorn-0001","timestamp":"{timestamp}","status":"online","firmwareVersion":"1.0.0","requestId":"req-1","command":"ping","result":"ok"}}"#
        )
    );
    assert!(notices(&actions).iter().any(|n| matches!(
        n,
        Notice::Answered { command: "ping", request_id } if request_id == "req-1"
    )));
}

fn json_timestamp(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap();
    v["timestamp"].as_str().unwrap().to_owned()
}

#[test]
fn get_status_is_answered_with_settings_and_diagnostics() {
    let mut sim = Sim::online();
    sim.advance(5_000);
    let actions = sim.message(COMMANDS, br#"{"requestId":"req-7","command":"get-status"}"#);
    let reply = reply(&actions);
    assert_eq!(reply["command"], "get-status");
    assert_eq!(reply["result"], "ok");
    assert_eq!(reply["status"], "online");
    assert_eq!(
        reply["settings"],
        json!({"soundEnabled": true, "soundVolume": 5, "ledBrightness": 50, "cooldownMs": 1000, "heartbeatSeconds": 300})
    );
    let d = &reply["diagnostics"];
    assert_eq!(d["uptimeMs"], 5_040, "since start: {d}");
    assert_eq!(d["connectedForMs"], 5_020, "since the CONNACK: {d}");
    assert_eq!(d["connects"], 1);
    assert_eq!(d["connectAttempts"], 1);
    assert_eq!(d["queuedMessages"], 0);
    assert_eq!(d["droppedMessages"], 0);
    assert_eq!(d["expiredMessages"], 0);
    assert!(d.get("lastError").is_none());
}

#[test]
fn oversized_messages_are_refused_before_parsing() {
    let mut sim = Sim::online();
    let mut huge = br#"{"requestId":"huge","command":"ping""#.to_vec();
    huge.extend(std::iter::repeat_n(b' ', 150 * 1024));
    huge.push(b'}');
    let actions = sim.message(COMMANDS, &huge);
    let reply = reply(&actions);
    assert_eq!(reply["result"], "error");
    assert!(
        reply["error"].as_str().unwrap().contains("131072"),
        "{reply}"
    );
    // No requestId can be trusted past the limit.
    assert!(reply.get("requestId").is_none());
    assert!(!actions.iter().any(|a| matches!(a, Action::Disconnect)));

    // 100 KB is within AWS's 128 KB: valid.
    let mut big = br#"{"requestId":"big","ledBrightness":3"#.to_vec();
    big.extend(std::iter::repeat_n(b' ', 100 * 1024));
    big.push(b'}');
    let answer = crate::support::reply(&sim.message(SETTINGS, &big));
    assert_eq!(answer["result"], "ok");
    assert_eq!(answer["settings"]["ledBrightness"], 3);
}

#[test]
fn a_settings_update_that_cannot_be_saved_is_not_applied() {
    let store = crate::support::BrokenStore {
        save_fails: true,
        ..Default::default()
    };
    let mut sim = Sim::with(crate::support::config(), store);
    sim.connect(true);
    let actions = sim.message(SETTINGS, br#"{"requestId":"s9","soundVolume":2}"#);
    let reply = reply(&actions);
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["result"], "error");
    assert_eq!(reply["command"], "settings");
    assert_eq!(reply["requestId"], "s9");
    assert_eq!(
        reply["error"],
        "settings not applied: flash write failed at 0x3000"
    );
    // The settings still in effect.
    assert_eq!(reply["settings"]["soundVolume"], 5);
    assert_eq!(sim.settings().sound_volume, 5);
    assert!(notices(&actions)
        .iter()
        .any(|n| matches!(n, Notice::SettingsNotSaved { .. })));
}

#[test]
fn messages_arriving_while_offline_are_answered_after_the_reconnect() {
    // A message read just before the connection dropped: its reply waits in the queue.
    let mut sim = Sim::online();
    sim.event(acorn_device::TransportEvent::Disconnected {
        cause: acorn_device::acorn_mqtt::DisconnectCause::Network,
        diagnosis: "connection reset".into(),
    });
    let actions = sim.message(COMMANDS, br#"{"requestId":"late","command":"ping"}"#);
    assert!(publishes(&actions).is_empty(), "{actions:?}");
    assert_eq!(sim.device.stats().queued, 1);
    let actions = sim.advance(61_000);
    assert!(actions.iter().any(|a| matches!(a, Action::Connect(_))));
    let actions = sim.event(acorn_device::TransportEvent::ConnAck {
        session_present: true,
    });
    assert_eq!(reply(&actions)["requestId"], "late");
}
