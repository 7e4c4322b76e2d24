//! The heartbeat: cadence from the setting, live changes, the driver's override, the fields,
//! and silence while disconnected.

use acorn_device::acorn_mqtt::DEFAULT_HEARTBEAT_SECONDS;
use acorn_device::{Action, CertificateFacts, HostFacts, Tag, TransportEvent};
use serde_json::Value;

use crate::support::{config, json, publishes, reply, Sim, SETTINGS, STATUS, UNIX0};

/// The heartbeats among `actions`, as JSON.
fn beats(actions: &[Action]) -> Vec<Value> {
    publishes(actions)
        .into_iter()
        .filter(|p| p.tag == Tag::Heartbeat)
        .inspect(|p| assert_eq!(p.topic, STATUS))
        .map(json)
        .collect()
}

/// Moves on `ms`, answering pings so the connection stays healthy; the heartbeats on the way
/// with the monotonic time each was sent.
fn run(sim: &mut Sim, ms: u64) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    let end = sim.mono + ms;
    while sim.mono < end {
        let step = (end - sim.mono).min(1_000);
        for beat in beats(&sim.advance(step)) {
            let at = beat["uptimeMs"].as_u64().unwrap();
            out.push((at, beat));
        }
        sim.event(TransportEvent::PingResponse);
    }
    out
}

#[test]
fn a_heartbeat_goes_out_every_heartbeat_seconds_while_connected() {
    assert_eq!(DEFAULT_HEARTBEAT_SECONDS, 300);
    let mut sim = Sim::online();
    let beats = run(&mut sim, 3 * 300_000 + 1_000);
    let times: Vec<u64> = beats.iter().map(|(t, _)| *t).collect();
    // `online` went out at 40 ms (after the SUBACK): every 300 s from there.
    assert_eq!(times, [300_040, 600_040, 900_040]);
    let beat = &beats[0].1;
    assert_eq!(beat["status"], "online");
    assert_eq!(beat["deviceId"], "acorn-0001");
    assert_eq!(beat["firmwareVersion"], "1.0.0");
    assert_eq!(beat["queuedPresses"], 0);
    assert_eq!(beat["droppedPresses"], 0);
    assert_eq!(beat["reconnects"], 0);
    assert_eq!(beat["connectMs"], 20);
    // Unknown on this driver: omitted, not null.
    for absent in [
        "freeHeapBytes",
        "wifiRssiDbm",
        "resetReason",
        "certificateDaysLeft",
    ] {
        assert!(beat.get(absent).is_none(), "{absent}");
    }
}

#[test]
fn the_fields_come_from_the_driver_the_certificate_and_the_session() {
    let mut c = config();
    let now_s = UNIX0 / 1000;
    c.certificate = CertificateFacts::new(now_s - 86_400, now_s + 90 * 86_400 + 3_600);
    c.heartbeat_override_ms = Some(1_000);
    let mut sim = Sim::with(c, acorn_device::MemorySettings::default());
    sim.connect(false);
    let mut facts = HostFacts::default();
    facts.free_heap_bytes = Some(123_456);
    facts.wifi_rssi_dbm = Some(-61);
    facts.reset_reason = Some("power-on".into());
    sim.device.set_host_facts(facts);
    // Two presses wait for their PUBACK: the queue depth says so.
    for button in ["rf-1", "rf-2"] {
        sim.press(button, None).0.expect("queued");
    }
    let beat = beats(&sim.advance(1_000))
        .pop()
        .expect("a heartbeat after 1 s");
    assert_eq!(beat["freeHeapBytes"], 123_456);
    assert_eq!(beat["wifiRssiDbm"], -61);
    assert_eq!(beat["resetReason"], "power-on");
    assert_eq!(beat["certificateDaysLeft"], 90);
    assert_eq!(beat["queuedPresses"], 2);
    // A lost connection: counted as a reconnect, its reason reported.
    sim.event(TransportEvent::Disconnected {
        cause: acorn_device::acorn_mqtt::DisconnectCause::Network,
        diagnosis: "TCP: connection reset by peer".into(),
    });
    // Step to the backoff's CONNECT (no heartbeat while offline), then answer it 35 ms later.
    for step in 0.. {
        assert!(step < 100, "a CONNECT within a few timers");
        let due = sim.device.poll_timeout().expect("a timer runs");
        let actions = sim.advance(due.saturating_sub(sim.mono));
        assert!(beats(&actions).is_empty(), "silent while offline");
        if actions.iter().any(|a| matches!(a, Action::Connect(_))) {
            break;
        }
    }
    sim.mono += 35;
    let actions = sim.event(TransportEvent::ConnAck {
        session_present: true,
    });
    assert!(beats(&actions).is_empty());
    let beat = beats(&sim.advance(1_000)).pop().expect("heartbeats resume");
    assert_eq!(beat["reconnects"], 1);
    assert_eq!(beat["connectMs"], 35);
    assert!(beat["lastDisconnectReason"]
        .as_str()
        .unwrap()
        .contains("connection reset"));
}

#[test]
fn a_settings_update_changes_the_cadence_live_and_replaces_the_override() {
    let mut c = config();
    c.heartbeat_override_ms = Some(2_000);
    let mut sim = Sim::with(c, acorn_device::MemorySettings::default());
    sim.connect(false);
    let times: Vec<u64> = run(&mut sim, 6_500).iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [2_040, 4_040, 6_040]);
    let answer = reply(&sim.message(SETTINGS, br#"{"heartbeatSeconds":5}"#));
    assert_eq!(answer["settings"]["heartbeatSeconds"], 5);
    let from = sim.mono;
    let times: Vec<u64> = run(&mut sim, 12_000).iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [from + 5_000, from + 10_000]);
    // 0 turns it off; out of range is refused.
    sim.message(SETTINGS, br#"{"heartbeatSeconds":0}"#);
    assert!(run(&mut sim, 600_000).is_empty());
    let answer = reply(&sim.message(SETTINGS, br#"{"heartbeatSeconds":86401}"#));
    assert_eq!(answer["result"], "error");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("heartbeatSeconds"));
}
