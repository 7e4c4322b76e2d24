//! The JSON Schemas of `docs/schemas` against `docs/protocol.md` and the message types: every
//! JSON example of the protocol validates against the schema of its message, every message
//! `acorn-mqtt` builds (press with `pressId`, presence, replies, a heartbeat with every field)
//! does too, and what a device never sends or accepts does not. The end-to-end tests
//! (`press_queue.rs`) check every message they see on a real broker against the same schemas.

mod schema_check;

use acorn_mqtt::{
    ButtonPressMessage, CommandResult, DeviceSettings, DeviceStatus, DeviceStatusMessage,
    Diagnostics, Heartbeat,
};
use schema_check::{Kind, Schemas};
use serde_json::{json, Value};

const UNIX_MS: u64 = 1_795_884_127_123;

/// Which message an example of the protocol is, by its fields (`None`: not a message).
fn kind_of_example(example: &Value) -> Option<Kind> {
    let has = |field: &str| example.get(field).is_some();
    if has("buttonRfId") {
        Some(Kind::ButtonPress)
    } else if has("deviceId") && has("status") {
        Some(Kind::Status)
    } else if has("command") && !has("deviceId") {
        Some(Kind::Command)
    } else if example.is_object() && !has("Version") && !has("deviceId") {
        Some(Kind::SettingsUpdate)
    } else {
        None
    }
}

#[test]
fn every_json_example_of_the_protocol_validates_against_its_schema() {
    let schemas = Schemas::load();
    let path = schema_check::dir().join("../protocol.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for block in text.split("```json\n").skip(1) {
        let body = block.split("```").next().unwrap();
        let example: Value = serde_json::from_str(body).unwrap_or_else(|e| {
            panic!("a JSON example of docs/protocol.md does not parse: {e}\n{body}")
        });
        let Some(kind) = kind_of_example(&example) else {
            continue;
        };
        schemas.check(kind, &example);
        *seen.entry(kind.file()).or_insert(0) += 1;
    }
    // Every schema has examples; the status ones cover presence, replies and a heartbeat.
    for kind in Kind::ALL {
        assert!(
            seen.contains_key(kind.file()),
            "no example of {kind:?}: {seen:?}"
        );
    }
    assert!(seen["status.json"] >= 4, "{seen:?}");
    assert!(
        text.contains("\"rssBytes\"") && text.contains("\"pressId\""),
        "the protocol shows a heartbeat and a pressId"
    );
}

#[test]
fn the_messages_acorn_mqtt_builds_validate() {
    let schemas = Schemas::load();
    let json = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap();

    let press = ButtonPressMessage::new("acorn-0001", "rf-5a3c", UNIX_MS, Some(87)).unwrap();
    schemas.check(Kind::ButtonPress, &json(press.to_json().unwrap()));
    let press = ButtonPressMessage::new("acorn-0001", "rf-5a3c", UNIX_MS, None)
        .unwrap()
        .with_press_id("07a3f1c00000002")
        .unwrap();
    schemas.check(Kind::ButtonPress, &json(press.to_json().unwrap()));

    for status in [DeviceStatus::Online, DeviceStatus::Offline] {
        let presence = DeviceStatusMessage::new("acorn-0001", UNIX_MS, status, "1.0.0");
        schemas.check(Kind::Status, &json(presence.to_json().unwrap()));
    }
    let mut reply =
        DeviceStatusMessage::reply_ok("acorn-0001", UNIX_MS, "1.0.0", Some("r1"), "get-status");
    reply.settings = Some(DeviceSettings::default());
    reply.diagnostics = Some(Diagnostics {
        uptime_ms: Some(5000),
        connected_for_ms: Some(4200),
        connects: Some(1),
        connect_attempts: Some(1),
        queued_messages: Some(0),
        dropped_messages: Some(0),
        expired_messages: Some(0),
        last_error: Some("connection refused".into()),
    });
    schemas.check(Kind::Status, &json(reply.to_json().unwrap()));
    let rejected = DeviceStatusMessage::rejected(
        "acorn-0001",
        UNIX_MS,
        "1.0.0",
        None,
        &acorn_mqtt::Error::EmptySettings,
    );
    schemas.check(Kind::Status, &json(rejected.to_json().unwrap()));
    // A settings update that could not be saved: an error reply naming the command.
    let mut not_saved =
        DeviceStatusMessage::reply_ok("acorn-0001", UNIX_MS, "1.0.0", Some("r2"), "settings");
    not_saved.result = Some(CommandResult::Error);
    not_saved.error = Some("settings not applied: flash full".into());
    not_saved.settings = Some(DeviceSettings::default());
    schemas.check(Kind::Status, &json(not_saved.to_json().unwrap()));

    // A heartbeat with every field, the firmware's and Linux's (a device sends one set).
    let mut heartbeat =
        DeviceStatusMessage::new("acorn-0001", UNIX_MS, DeviceStatus::Online, "1.0.0");
    heartbeat.heartbeat = Some(Heartbeat {
        uptime_ms: Some(3_600_000),
        free_heap_bytes: Some(180_000),
        rss_bytes: Some(9_000_000),
        wifi_rssi_dbm: Some(-61),
        reset_reason: Some("power-on".into()),
        certificate_days_left: Some(-2),
        queued_presses: Some(3),
        dropped_presses: Some(1),
        reconnects: Some(4),
        last_disconnect_reason: Some("the broker closed the connection".into()),
        connect_ms: Some(240),
    });
    schemas.check(Kind::Status, &json(heartbeat.to_json().unwrap()));
}

#[test]
fn what_a_device_never_sends_or_accepts_does_not_validate() {
    let schemas = Schemas::load();
    let press =
        json!({"deviceId":"acorn-0001","buttonRfId":"rf-1","timestamp":"2026-11-28T16:42:07.123Z"});
    schemas.check(Kind::ButtonPress, &press);
    let with = |base: &Value, field: &str, value: Value| {
        let mut v = base.clone();
        v[field] = value;
        v
    };
    let without = |base: &Value, field: &str| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove(field);
        v
    };
    for bad in [
        with(&press, "batteryLevel", json!(101)),
        with(&press, "batteryLevel", json!("87")),
        with(&press, "pressId", json!("not-hex")),
        with(&press, "pressId", json!(17)),
        with(&press, "timestamp", json!("2026-11-28 16:42:07")),
        with(&press, "deviceId", json!("a/b")),
        with(&press, "buttonRfId", json!("")),
        with(&press, "extra", json!(1)),
        without(&press, "buttonRfId"),
    ] {
        assert!(!schemas.errors(Kind::ButtonPress, &bad).is_empty(), "{bad}");
    }

    let online = json!({"deviceId":"acorn-0001","timestamp":"2026-11-28T16:42:07.123Z","status":"online","firmwareVersion":"1.0.0"});
    schemas.check(Kind::Status, &online);
    let heartbeat = with(&online, "uptimeMs", json!(1000));
    schemas.check(Kind::Status, &heartbeat);
    let reply = with(
        &with(&online, "result", json!("ok")),
        "command",
        json!("ping"),
    );
    schemas.check(Kind::Status, &reply);
    for bad in [
        with(&online, "status", json!("sleeping")),
        without(&online, "firmwareVersion"),
        with(&online, "uptimeMs", json!(-1)),
        with(&online, "wifiRssiDbm", json!(-200)),
        with(&online, "queuedPresses", json!(1.5)),
        with(&online, "heartbeatSeconds", json!(60)),
        // A reply and a heartbeat at once, a heartbeat that is not online, an ok reply
        // without its command, an error reply without its reason.
        with(&reply, "uptimeMs", json!(1000)),
        with(&heartbeat, "status", json!("offline")),
        with(&online, "result", json!("ok")),
        with(&online, "result", json!("error")),
        with(
            &reply,
            "settings",
            json!({"soundEnabled":true,"soundVolume":5,"ledBrightness":50,"cooldownMs":1000}),
        ),
    ] {
        assert!(!schemas.errors(Kind::Status, &bad).is_empty(), "{bad}");
    }

    schemas.check(Kind::SettingsUpdate, &json!({"heartbeatSeconds": 0}));
    schemas.check(
        Kind::SettingsUpdate,
        &json!({"requestId":"s1","heartbeatSeconds": 86400}),
    );
    for bad in [
        json!({}),
        json!({"requestId":"s1"}),
        json!({"volume": 3}),
        json!({"heartbeatSeconds": 86401}),
        json!({"heartbeatSeconds": -1}),
        json!({"soundVolume": 0}),
        json!({"cooldownMs": 600001}),
        json!({"requestId":"", "soundEnabled": true}),
    ] {
        assert!(
            !schemas.errors(Kind::SettingsUpdate, &bad).is_empty(),
            "{bad}"
        );
    }

    schemas.check(
        Kind::Command,
        &json!({"requestId":"c1","command":"reconnect"}),
    );
    for bad in [
        json!({"requestId":"c1","command":"self-destruct"}),
        json!({"command":"ping"}),
        json!({"requestId":"c1","command":"ping","force":true}),
        json!({"requestId": "x".repeat(65),"command":"ping"}),
    ] {
        assert!(!schemas.errors(Kind::Command, &bad).is_empty(), "{bad}");
    }
}

#[test]
fn the_schemas_accept_what_the_device_accepts_at_the_edges() {
    // The device's own parser and the schema agree on the edges of every setting.
    let schemas = Schemas::load();
    let topics = acorn_mqtt::Topics::new("acorn-0001").unwrap();
    for (field, low, high) in [
        ("soundVolume", 1, 10),
        ("ledBrightness", 0, 100),
        ("cooldownMs", 0, 600_000),
        ("heartbeatSeconds", 0, 86_400),
    ] {
        for (value, valid) in [
            (low - 1, false),
            (low, true),
            (high, true),
            (high + 1, false),
        ] {
            let update = json!({ field: value });
            let parsed = acorn_mqtt::parse_inbound(
                &topics,
                "acorn-pups/settings/acorn-0001",
                update.to_string().as_bytes(),
            );
            assert_eq!(parsed.is_ok(), valid, "device: {update}");
            assert_eq!(
                schemas.errors(Kind::SettingsUpdate, &update).is_empty(),
                valid,
                "schema: {update}"
            );
        }
    }
}
