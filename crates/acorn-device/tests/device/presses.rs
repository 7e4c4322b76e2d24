//! Press intake: the seed's JSON, QoS 1 in order, the cooldown and its bounded table.

use acorn_device::{Action, Error, Notice, PressOutcome, Tag};

use crate::support::{config, json, notices, publishes, Sim, PRESSES, SETTINGS};

#[test]
fn a_press_is_published_at_once_with_the_seed_json() {
    let mut sim = Sim::online();
    sim.mono = 7_123;
    let (outcome, actions) = sim.press("rf-5a3c", Some(87));
    let Ok(PressOutcome::Queued(id)) = outcome else {
        panic!("{outcome:?}")
    };
    let p = publishes(&actions);
    assert_eq!(p.len(), 1);
    assert!(matches!(p[0].tag, Tag::Message(_)));
    assert_eq!(p[0].topic, PRESSES);
    assert_eq!(p[0].qos, acorn_device::acorn_mqtt::QoS::AtLeastOnce);
    assert!(!p[0].retransmit);
    // The seed's fields, then the press's stable id.
    assert_eq!(
        String::from_utf8_lossy(&p[0].payload),
        format!(
            r#"{{"deviceId":"acorn-0001","buttonRfId":"rf-5a3c","timestamp":"2026-11-28T16:42:07.123Z","batteryLevel":87,"pressId":"{id}"}}"#
        )
    );
    // The notice comes before the publish, as a log line would.
    assert!(matches!(
        &actions[0],
        Action::Notice(Notice::PressQueued { button, battery: Some(87), press_id }) if button == "rf-5a3c" && *press_id == id
    ));

    // Without a battery level the field is omitted.
    let (_, actions) = sim.press("rf-77", None);
    let value = json(publishes(&actions)[0]);
    assert_eq!(value.as_object().unwrap().len(), 4);
    assert!(value.get("batteryLevel").is_none());
    assert_eq!(value["buttonRfId"], "rf-77");

    // The PUBACK is reported with the tag.
    let acked = sim.ack(&actions);
    assert!(notices(&acked)
        .iter()
        .any(|n| matches!(n, Notice::PressDelivered { .. })));
    assert_eq!(sim.device.stats().delivered, 1);
}

#[test]
fn the_same_button_within_the_cooldown_is_reported_once() {
    let mut sim = Sim::online();
    assert!(matches!(
        sim.press("rf-1", None).0,
        Ok(PressOutcome::Queued(_))
    ));
    sim.mono += 999;
    let (outcome, actions) = sim.press("rf-1", None);
    assert_eq!(outcome.unwrap(), PressOutcome::CooledDown);
    assert!(publishes(&actions).is_empty());
    assert!(matches!(
        notices(&actions)[..],
        [Notice::PressCooledDown {
            cooldown_ms: 1000,
            ..
        }]
    ));
    // Another button is not held back.
    assert!(matches!(
        sim.press("rf-2", None).0,
        Ok(PressOutcome::Queued(_))
    ));
    // Once the cooldown has passed (from the last *reported* press), it is reported again.
    sim.mono += 1;
    assert!(matches!(
        sim.press("rf-1", None).0,
        Ok(PressOutcome::Queued(_))
    ));
}

#[test]
fn the_cooldown_follows_the_setting() {
    let mut sim = Sim::online();
    sim.message(SETTINGS, br#"{"cooldownMs":0}"#);
    for _ in 0..3 {
        assert!(matches!(
            sim.press("rf-9", None).0,
            Ok(PressOutcome::Queued(_))
        ));
    }
    sim.message(SETTINGS, br#"{"cooldownMs":600000}"#);
    sim.mono += 599_999;
    assert_eq!(sim.press("rf-9", None).0.unwrap(), PressOutcome::CooledDown);
}

#[test]
fn the_cooldown_table_is_bounded() {
    let mut c = config();
    c.cooldown_entries = 4;
    let mut sim = Sim::with(c, acorn_device::MemorySettings::default());
    sim.connect(true);
    for i in 0..50 {
        let (outcome, _) = sim.press(&format!("rf-{i}"), None);
        assert!(matches!(outcome, Ok(PressOutcome::Queued(_))), "{i}");
        assert!(sim.device.remembered_buttons() <= 4);
        sim.mono += 10;
    }
    // Entries whose cooldown has passed are pruned first: recent ones stay remembered.
    sim.mono += 2_000;
    for button in ["old-a", "old-b"] {
        assert!(matches!(
            sim.press(button, None).0,
            Ok(PressOutcome::Queued(_))
        ));
    }
    sim.mono += 1_500;
    for button in ["new-a", "new-b", "new-c"] {
        assert!(matches!(
            sim.press(button, None).0,
            Ok(PressOutcome::Queued(_))
        ));
    }
    assert!(sim.device.remembered_buttons() <= 4);
    assert_eq!(
        sim.press("new-a", None).0.unwrap(),
        PressOutcome::CooledDown
    );
}

#[test]
fn presses_while_offline_are_queued_and_sent_in_order_before_online() {
    let mut sim = Sim::new();
    sim.start();
    let mut ids = Vec::new();
    for i in 0..12 {
        let (outcome, actions) = sim.press(&format!("rf-{i:02}"), Some(50));
        assert!(publishes(&actions).is_empty(), "not connected yet");
        let Ok(PressOutcome::Queued(id)) = outcome else {
            panic!()
        };
        ids.push(id);
    }
    // Eight are handed to the session (the press window); the rest wait in the store.
    assert_eq!(sim.device.stats().queued, 8);
    assert_eq!(sim.device.queued_presses().count(), 12);
    sim.mono += 30;
    let actions = sim.event(acorn_device::TransportEvent::ConnAck {
        session_present: true,
    });
    let sent = publishes(&actions);
    // The window in flight, in order, then `online`.
    let press_id = |p: &&acorn_device::Publish| json(p)["pressId"].as_str().map(str::to_owned);
    let sent_ids: Vec<_> = sent.iter().filter_map(press_id).collect();
    let want: Vec<_> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(sent_ids, want[..8]);
    assert_eq!(sent.last().unwrap().tag, Tag::Online);
    // The rest follow, in order, as PUBACKs free the window.
    let more = sim.ack(&actions);
    let rest: Vec<_> = publishes(&more).iter().filter_map(press_id).collect();
    assert_eq!(rest, want[8..]);
    let last = sim.ack(&more);
    assert!(publishes(&last).is_empty());
    assert_eq!(sim.device.queued_presses().count(), 0);
}

#[test]
fn bad_presses_are_errors_that_say_what_to_fix() {
    let mut sim = Sim::online();
    let err = sim.press("", None).0.unwrap_err();
    assert!(err.to_string().contains("buttonRfId"), "{err}");
    let err = sim.press(&"x".repeat(129), None).0.unwrap_err();
    assert!(err.to_string().contains("1..=128"), "{err}");
    let err = sim.press("rf-1", Some(101)).0.unwrap_err();
    assert!(err.to_string().contains("batteryLevel"), "{err}");
    // A refused press does not start a cooldown.
    assert!(matches!(
        sim.press("rf-1", Some(100)).0,
        Ok(PressOutcome::Queued(_))
    ));
    sim.shutdown();
    assert_eq!(sim.press("rf-2", None).0, Err(Error::Stopped));
}
