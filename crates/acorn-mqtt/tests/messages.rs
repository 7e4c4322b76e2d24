//! Topics, JSON messages (exact field names), timestamps, inbound validation and AWS limits.

use acorn_mqtt::limits::{check_client_id, check_keep_alive, check_topic, check_topic_filter};
use acorn_mqtt::{
    format_timestamp, parse_inbound, parse_timestamp, request_id_of, ButtonPressMessage,
    CommandKind, CommandMessage, DeviceSettings, DeviceStatus, DeviceStatusMessage, Diagnostics,
    Error, Heartbeat, Inbound, InboundTopic, QoS, SettingsUpdate, Topics,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn topics() -> Topics {
    Topics::new("acorn-0001").expect("valid device id")
}

fn as_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

#[test]
fn topics_are_exactly_the_seeds() {
    let t = topics();
    assert_eq!(t.button_press(), "acorn-pups/button-press/acorn-0001");
    assert_eq!(t.status(), "acorn-pups/status/acorn-0001");
    assert_eq!(t.settings(), "acorn-pups/settings/acorn-0001");
    assert_eq!(t.commands(), "acorn-pups/commands/acorn-0001");
    assert_eq!(t.subscriptions(), [t.settings(), t.commands()]);
    assert_eq!(
        t.classify("acorn-pups/settings/acorn-0001"),
        Ok(InboundTopic::Settings)
    );
    assert_eq!(
        t.classify("acorn-pups/commands/acorn-0001"),
        Ok(InboundTopic::Commands)
    );
    assert!(matches!(
        t.classify("acorn-pups/commands/acorn-0002"),
        Err(Error::UnexpectedTopic { .. })
    ));
    // `.` and `:` are refused too: the registration service refuses them, and `:` marks the
    // service identities (`service:backend`) that no device may take.
    for bad in [
        "",
        "a/b",
        "a+b",
        "a#",
        "dev ice",
        "acorn.01",
        "service:backend",
        &"x".repeat(129),
    ] {
        assert!(
            matches!(Topics::new(bad), Err(Error::DeviceId { .. })),
            "{bad:?}"
        );
    }
    let longest = Topics::new(&"x".repeat(128)).expect("128-byte id");
    assert_eq!(
        acorn_mqtt::service_client_id("backend").as_deref(),
        Ok("service:backend")
    );
    for bad in ["", "Backend", "a:b", "a_b", &"x".repeat(49)] {
        assert!(acorn_mqtt::service_client_id(bad).is_err(), "{bad:?}");
    }
    assert!(longest.all().iter().all(|t| t.len() <= 256));
}

#[test]
fn button_press_json_has_the_seeds_field_names() {
    let m = ButtonPressMessage::new("acorn-0001", "rf-5a3c", 1_795_884_127_123, Some(87))
        .expect("valid");
    let bytes = m.to_json().expect("serializes");
    assert_eq!(
        String::from_utf8(bytes.clone()).expect("utf-8"),
        r#"{"deviceId":"acorn-0001","buttonRfId":"rf-5a3c","timestamp":"2026-11-28T16:42:07.123Z","batteryLevel":87}"#
    );
    let back = ButtonPressMessage::from_json("t", &bytes).expect("round trip");
    assert_eq!(back, m);
    // batteryLevel is optional: omitted when unknown, accepted as null or missing.
    let none = ButtonPressMessage::new("acorn-0001", "rf-5a3c", 0, None).expect("valid");
    assert_eq!(
        as_value(&none.to_json().expect("serializes")),
        json!({"deviceId":"acorn-0001","buttonRfId":"rf-5a3c","timestamp":"1970-01-01T00:00:00.000Z"})
    );
    let with_null = br#"{"deviceId":"d","buttonRfId":"b","timestamp":"2026-11-28T16:42:07.123Z","batteryLevel":null}"#;
    assert_eq!(
        ButtonPressMessage::from_json("t", with_null)
            .expect("null ok")
            .battery_level,
        None
    );
    // Range and format checks.
    assert_eq!(
        ButtonPressMessage::new("d", "b", 0, Some(101)),
        Err(Error::OutOfRange {
            field: "batteryLevel",
            value: 101,
            min: 0,
            max: 100
        })
    );
    assert!(matches!(
        ButtonPressMessage::new("", "b", 0, None),
        Err(Error::FieldLength {
            field: "deviceId",
            ..
        })
    ));
    let bad_time = br#"{"deviceId":"d","buttonRfId":"b","timestamp":"yesterday"}"#;
    assert!(matches!(
        ButtonPressMessage::from_json("t", bad_time),
        Err(Error::Timestamp { .. })
    ));
}

#[test]
fn status_json_keeps_the_seed_fields_and_adds_only_optional_ones() {
    let online = DeviceStatusMessage::new(
        "acorn-0001",
        1_795_884_127_123,
        DeviceStatus::Online,
        "1.0.0",
    );
    assert_eq!(
        String::from_utf8(online.to_json().expect("serializes")).expect("utf-8"),
        r#"{"deviceId":"acorn-0001","timestamp":"2026-11-28T16:42:07.123Z","status":"online","firmwareVersion":"1.0.0"}"#
    );
    for (status, text) in [
        (DeviceStatus::Offline, "offline"),
        (DeviceStatus::Error, "error"),
    ] {
        let m = DeviceStatusMessage::new("d", 0, status, "1");
        assert_eq!(as_value(&m.to_json().expect("serializes"))["status"], text);
    }
    let mut reply =
        DeviceStatusMessage::reply_ok("acorn-0001", 0, "1.0.0", Some("req-7"), "get-status");
    reply.settings = Some(DeviceSettings::default());
    reply.diagnostics = Some(Diagnostics {
        uptime_ms: Some(5000),
        queued_messages: Some(0),
        ..Diagnostics::default()
    });
    let v = as_value(&reply.to_json().expect("serializes"));
    assert_eq!(
        v,
        json!({
            "deviceId": "acorn-0001", "timestamp": "1970-01-01T00:00:00.000Z", "status": "online",
            "firmwareVersion": "1.0.0", "requestId": "req-7", "command": "get-status", "result": "ok",
            "settings": {"soundEnabled": true, "soundVolume": 5, "ledBrightness": 50, "cooldownMs": 1000, "heartbeatSeconds": 300},
            "diagnostics": {"uptimeMs": 5000, "queuedMessages": 0}
        })
    );
    let back = DeviceStatusMessage::from_json("t", &reply.to_json().expect("serializes"))
        .expect("round trip");
    assert_eq!(back, reply);

    // A heartbeat: its fields at the top level, camelCase, unknown ones omitted.
    let mut beat = DeviceStatusMessage::new("acorn-0001", 0, DeviceStatus::Online, "1.0.0");
    beat.heartbeat = Some(Heartbeat {
        uptime_ms: Some(1_000),
        wifi_rssi_dbm: Some(-60),
        queued_presses: Some(2),
        dropped_presses: Some(0),
        ..Heartbeat::default()
    });
    let v = as_value(&beat.to_json().expect("serializes"));
    assert_eq!(
        v,
        json!({
            "deviceId": "acorn-0001", "timestamp": "1970-01-01T00:00:00.000Z", "status": "online",
            "firmwareVersion": "1.0.0", "uptimeMs": 1000, "wifiRssiDbm": -60, "queuedPresses": 2,
            "droppedPresses": 0
        })
    );
    let back = DeviceStatusMessage::from_json("t", &beat.to_json().expect("serializes"))
        .expect("round trip");
    assert_eq!(back, beat);
}

#[test]
fn commands_are_validated() {
    let t = topics();
    let cmd = |p: &str| parse_inbound(&t, t.commands(), p.as_bytes());
    for (text, kind) in [
        ("ping", CommandKind::Ping),
        ("get-status", CommandKind::GetStatus),
        ("reconnect", CommandKind::Reconnect),
        ("rotate-certificate", CommandKind::RotateCertificate),
    ] {
        let payload = format!(r#"{{"requestId":"r1","command":"{text}"}}"#);
        assert_eq!(
            cmd(&payload),
            Ok(Inbound::Command(CommandMessage {
                request_id: "r1".into(),
                command: kind
            }))
        );
        assert_eq!(kind.as_str(), text);
    }
    let err = |p: &str| match cmd(p) {
        Err(e) => e,
        Ok(v) => panic!("{p} accepted as {v:?}"),
    };
    let e = err(r#"{"requestId":"r1","command":"reboot"}"#);
    assert!(e.to_string().contains("unknown variant `reboot`"), "{e}");
    assert!(
        e.to_string().contains("acorn-pups/commands/acorn-0001"),
        "{e}"
    );
    assert!(err(r#"{"command":"ping"}"#)
        .to_string()
        .contains("missing field `requestId`"));
    assert!(err(r#"{"requestId":7,"command":"ping"}"#)
        .to_string()
        .contains("invalid type"));
    assert!(err(r#"{"requestId":"r","command":"ping","extra":1}"#)
        .to_string()
        .contains("unknown field `extra`"));
    assert!(matches!(
        err(r#"{"requestId":"","command":"ping"}"#),
        Error::FieldLength {
            field: "requestId",
            ..
        }
    ));
    assert!(matches!(
        err(&format!(
            r#"{{"requestId":"{}","command":"ping"}}"#,
            "x".repeat(65)
        )),
        Error::FieldLength { .. }
    ));
    for junk in [
        "",
        "null",
        "[]",
        "\"ping\"",
        "{",
        "{\"requestId\":\"r\",\"command\":\"ping\"} trailing",
        "\u{0}",
    ] {
        assert!(matches!(err(junk), Error::InboundJson { .. }), "{junk:?}");
    }
}

#[test]
fn settings_updates_are_partial_and_range_checked() {
    let t = topics();
    let set = |p: &str| parse_inbound(&t, t.settings(), p.as_bytes());
    let update = match set(r#"{"requestId":"s1","soundVolume":7,"ledBrightness":0}"#) {
        Ok(Inbound::Settings(u)) => u,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        update,
        SettingsUpdate {
            request_id: Some("s1".into()),
            sound_volume: Some(7),
            led_brightness: Some(0),
            ..SettingsUpdate::default()
        }
    );
    let mut s = DeviceSettings::default();
    s.apply(&update);
    assert_eq!(
        s,
        DeviceSettings {
            sound_enabled: true,
            sound_volume: 7,
            led_brightness: 0,
            cooldown_ms: 1000,
            heartbeat_seconds: 300,
        }
    );
    let beat = set(r#"{"heartbeatSeconds":0}"#);
    assert!(matches!(beat, Ok(Inbound::Settings(u)) if u.heartbeat_seconds == Some(0)));
    assert!(matches!(
        set(r#"{"soundEnabled":false}"#),
        Ok(Inbound::Settings(_))
    ));
    assert!(matches!(
        set(r#"{"cooldownMs":600000}"#),
        Ok(Inbound::Settings(_))
    ));

    let range = |p: &str, field: &'static str, value: i64| {
        assert!(
            matches!(set(p), Err(Error::OutOfRange { field: f, value: v, .. }) if f == field && v == value),
            "{p}: {:?}",
            set(p)
        );
    };
    range(r#"{"soundVolume":0}"#, "soundVolume", 0);
    range(r#"{"soundVolume":11}"#, "soundVolume", 11);
    range(r#"{"soundVolume":300}"#, "soundVolume", 300);
    range(r#"{"ledBrightness":101}"#, "ledBrightness", 101);
    range(r#"{"ledBrightness":-1}"#, "ledBrightness", -1);
    range(r#"{"cooldownMs":600001}"#, "cooldownMs", 600_001);
    range(r#"{"heartbeatSeconds":86401}"#, "heartbeatSeconds", 86_401);
    range(r#"{"heartbeatSeconds":-5}"#, "heartbeatSeconds", -5);
    assert_eq!(set(r#"{"requestId":"s2"}"#), Err(Error::EmptySettings));
    assert_eq!(set("{}"), Err(Error::EmptySettings));
    for bad in [
        r#"{"soundVolume":"7"}"#,
        r#"{"soundVolume":7.5}"#,
        r#"{"soundEnabled":1}"#,
        r#"{"volume":7}"#,
    ] {
        assert!(matches!(set(bad), Err(Error::InboundJson { .. })), "{bad}");
    }
    let err = set(r#"{"volume":7}"#).expect_err("typo rejected");
    assert!(err.to_string().contains("unknown field `volume`"), "{err}");
}

#[test]
fn oversized_inbound_is_rejected_before_parsing() {
    let t = topics();
    let mut big = br#"{"requestId":"r","command":"ping","pad":""#.to_vec();
    big.resize(131_073, b' ');
    assert_eq!(
        parse_inbound(&t, t.commands(), &big),
        Err(Error::InboundTooLarge {
            topic: t.commands().into(),
            len: 131_073
        })
    );
    assert_eq!(request_id_of(&big), None);
}

#[test]
fn rejected_messages_become_error_status_replies_with_the_request_id() {
    let t = topics();
    let payload = br#"{"requestId":"req-9","command":"self-destruct"}"#;
    let err = parse_inbound(&t, t.commands(), payload).expect_err("unknown command");
    let id = request_id_of(payload);
    assert_eq!(id.as_deref(), Some("req-9"));
    let reply = DeviceStatusMessage::rejected("acorn-0001", 0, "1.0.0", id.as_deref(), &err);
    let v = as_value(&reply.to_json().expect("serializes"));
    assert_eq!(v["status"], "error");
    assert_eq!(v["result"], "error");
    assert_eq!(v["requestId"], "req-9");
    assert!(v["error"]
        .as_str()
        .is_some_and(|e| e.contains("self-destruct")));
    assert_eq!(request_id_of(b"not json"), None);
    assert_eq!(request_id_of(br#"{"requestId":5}"#), None);
    assert_eq!(
        request_id_of(br#"{"requestId":"ok","x":[1,2]}"#).as_deref(),
        Some("ok")
    );
}

#[test]
fn timestamps_format_known_instants() {
    for (ms, text) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
        (1_795_884_127_123, "2026-11-28T16:42:07.123Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (u64::MAX, "9999-12-31T23:59:59.999Z"),
    ] {
        assert_eq!(format_timestamp(ms), text);
        if ms != u64::MAX {
            assert_eq!(parse_timestamp(text), Ok(ms));
        }
    }
    assert_eq!(
        parse_timestamp("2026-11-28T16:42:07Z"),
        Ok(1_795_884_127_000)
    );
    for bad in [
        "2026-11-28T16:42:07.123",
        "2026-11-28 16:42:07.123Z",
        "2026-02-29T00:00:00.000Z",
        "2026-13-01T00:00:00.000Z",
        "2026-11-28T24:00:00.000Z",
        "1969-12-31T23:59:59.999Z",
        "2026-11-28T16:42:07.123+00:00",
        "2026-11-28T16:42:07.1Z",
        "",
        "２026-11-28T16:42:07.123Z",
    ] {
        assert!(
            matches!(parse_timestamp(bad), Err(Error::Timestamp { .. })),
            "{bad}"
        );
    }
}

#[test]
fn aws_limits() {
    assert_eq!(QoS::try_from(0), Ok(QoS::AtMostOnce));
    assert_eq!(QoS::try_from(1), Ok(QoS::AtLeastOnce));
    assert_eq!(QoS::try_from(2), Err(Error::QosUnsupported { qos: 2 }));
    assert_eq!(QoS::AtLeastOnce.level(), 1);
    assert!(check_client_id(&"c".repeat(128)).is_ok());
    assert_eq!(
        check_client_id(&"c".repeat(129)),
        Err(Error::ClientIdLength { len: 129 })
    );
    assert_eq!(
        check_client_id("a\nb"),
        Err(Error::ClientIdCharacter { at: 1 })
    );
    assert!(check_keep_alive(60).is_ok());
    assert!(check_keep_alive(0).is_err());
    assert!(check_topic(&"t".repeat(256)).is_ok());
    assert!(check_topic("").is_err());
    assert!(check_topic("a\0b").is_err());
    assert!(check_topic_filter("acorn-pups/+/acorn-0001").is_ok());
    assert!(check_topic_filter("acorn-pups/#").is_ok());
    assert!(check_topic_filter("#").is_ok());
    assert!(check_topic_filter("acorn-pups/#/x").is_err());
    assert!(check_topic_filter("acorn-pups/a+").is_err());
    assert!(check_topic_filter("a/b/c/d/e/f/g/h/+").is_err());
    // Every error explains itself.
    let e = Error::TopicTooDeep { slashes: 8 }.to_string();
    assert!(e.contains("at most 7"), "{e}");
}

proptest! {
    #[test]
    fn timestamps_round_trip(ms in 0u64..=253_402_300_799_999) {
        let text = format_timestamp(ms);
        prop_assert_eq!(text.len(), 24);
        prop_assert_eq!(parse_timestamp(&text), Ok(ms));
    }

    #[test]
    fn arbitrary_inbound_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let t = topics();
        let _ = parse_inbound(&t, t.commands(), &bytes);
        let _ = parse_inbound(&t, t.settings(), &bytes);
        let _ = request_id_of(&bytes);
        let _ = ButtonPressMessage::from_json("t", &bytes);
        let _ = DeviceStatusMessage::from_json("t", &bytes);
    }

    #[test]
    fn arbitrary_json_settings_never_panic(v in -1000i64..1000, w in any::<i64>(), b in any::<bool>()) {
        let t = topics();
        let p = format!(r#"{{"soundVolume":{v},"ledBrightness":{w},"soundEnabled":{b}}}"#);
        match parse_inbound(&t, t.settings(), p.as_bytes()) {
            Ok(Inbound::Settings(u)) => {
                prop_assert!((1..=10).contains(&v) && (0..=100).contains(&w));
                prop_assert_eq!(u.sound_volume, Some(v as u8));
            }
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(Error::OutOfRange { .. }) => prop_assert!(!(1..=10).contains(&v) || !(0..=100).contains(&w)),
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}

#[test]
fn the_device_policy_covers_each_topic_family_once_with_the_right_direction() {
    use acorn_mqtt::{Access, DEVICE_POLICY};
    let topics = Topics::new("acorn-0001").unwrap();
    let own = |prefix: &str| format!("{prefix}/acorn-0001");
    let policy: Vec<(String, Access)> = DEVICE_POLICY
        .iter()
        .map(|(prefix, access)| (own(prefix), *access))
        .collect();
    assert_eq!(
        policy,
        vec![
            (topics.button_press().to_owned(), Access::Publish),
            (topics.status().to_owned(), Access::Publish),
            (topics.settings().to_owned(), Access::Subscribe),
            (topics.commands().to_owned(), Access::Subscribe),
        ]
    );
    // What the device subscribes to is exactly what the policy lets it receive.
    let subscribable: Vec<&str> = policy
        .iter()
        .filter(|(_, a)| *a == Access::Subscribe)
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(subscribable, topics.subscriptions().to_vec());
}
