//! Inbound MQTT messages on the settings and commands topics: `acorn_mqtt::parse_inbound`, and
//! acorn-device's `Device` applying them while connected (settings in `MemorySettings`).
//!
//! Input: a sequence of steps until the input is used up (at most 16). Each step is an op
//! byte: 0 a message on the settings topic, 1 on the commands topic, 2 on the status topic
//! (not subscribed), 3 on another device's settings topic, 4 on a topic named by a field; each
//! followed by its payload field. 5 lets time pass (a 16-bit count of 10 ms steps).
//! The driver answers every CONNECT, SUBSCRIBE and PUBLISH of the device at once.
//!
//! Properties:
//! - never a panic; `parse_inbound` is deterministic;
//! - every PUBLISH the device makes is a JSON object its wire type reads back, with this
//!   device's id, and a `requestId` of 1 to 64 bytes when it has one;
//! - each message gets exactly one reply, in order: `ok` with the settings now in effect for
//!   a valid update or command, `error` (echoing `request_id_of`) for anything else;
//! - the settings change only by a valid update, exactly as the update says, are always in
//!   range, are what the store holds; a number out of range for a setting changes nothing.
#![no_main]

use acorn_device::acorn_mqtt::{
    parse_inbound, request_id_of, CommandKind, ConnectionStatus, DeviceSettings,
    DeviceStatusMessage, Inbound, SettingsUpdate,
};
use acorn_device::{Action, Device, DeviceConfig, MemorySettings, Now, Tag, TransportEvent};
use acorn_fuzz::Fields;
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

const DEVICE: &str = "acorn-0001";
const FIRMWARE: &str = "1.0.0";
const UNIX0: u64 = 1_795_884_120_000;

/// What a message should get as its reply.
#[derive(Debug)]
enum Expect {
    Settings(SettingsUpdate, DeviceSettings),
    Command(String, CommandKind),
    Error(Option<String>),
}

struct Driver {
    device: Device<StdRng, MemorySettings>,
    mono: u64,
    replies: Vec<DeviceStatusMessage>,
    status_topic: String,
}

impl Driver {
    fn now(&self) -> Now {
        Now::new(self.mono, UNIX0 + self.mono)
    }

    /// Carries out the device's actions, answering each at once.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let Some(action) = self.device.poll_action() else {
                return;
            };
            let now = self.now();
            match action {
                Action::Connect(_) => self.device.transport(
                    now,
                    TransportEvent::ConnAck {
                        session_present: false,
                    },
                ),
                Action::Subscribe(_) => self
                    .device
                    .transport(now, TransportEvent::SubAck { granted: true }),
                Action::Publish(p) => {
                    check_publish(&p.payload);
                    if matches!(p.tag, Tag::Message(_)) && p.topic == self.status_topic {
                        let reply: DeviceStatusMessage =
                            serde_json::from_slice(&p.payload).expect("a reply reads back");
                        // A re-sent reply (after a reconnect) is the same reply.
                        if !p.retransmit {
                            self.replies.push(reply);
                        }
                    }
                    self.device.transport(now, TransportEvent::PubAck(p.tag));
                }
                _ => {}
            }
        }
        panic!("the device keeps asking for actions");
    }

    fn advance(&mut self, ms: u64) {
        let end = self.mono + ms;
        while let Some(due) = self.device.poll_timeout().filter(|&t| t <= end) {
            self.mono = self.mono.max(due);
            self.device.tick(self.now());
            self.pump();
        }
        self.mono = end;
        self.device.tick(self.now());
        self.pump();
    }

    fn connect(&mut self) {
        for _ in 0..20 {
            if *self.device.status() == ConnectionStatus::Connected {
                return;
            }
            self.advance(1_000);
        }
        panic!("the device does not reconnect: {:?}", self.device.status());
    }
}

/// A PUBLISH of the device: a JSON object, read back by its wire type, about this device.
fn check_publish(payload: &[u8]) {
    let value: Value = serde_json::from_slice(payload).expect("a PUBLISH payload is JSON");
    assert!(value.is_object());
    if value.get("status").is_some() {
        let status: DeviceStatusMessage =
            serde_json::from_slice(payload).expect("a status message reads back");
        assert_eq!(status.device_id, DEVICE);
        assert_eq!(status.firmware_version, FIRMWARE);
        if let Some(id) = &status.request_id {
            assert!(
                (1..=64).contains(&id.len()),
                "requestId of {} bytes",
                id.len()
            );
        }
    }
}

fn in_range(s: &DeviceSettings) -> bool {
    (1..=10).contains(&s.sound_volume) && s.led_brightness <= 100 && s.cooldown_ms <= 600_000
}

/// A setting the payload gives as a number outside its range (read with serde_json alone).
fn has_out_of_range_number(payload: &[u8]) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(payload) else {
        return false;
    };
    let out = |field: &str, lo: f64, hi: f64| {
        map.get(field)
            .and_then(Value::as_f64)
            .is_some_and(|v| !(lo..=hi).contains(&v))
    };
    out("soundVolume", 1.0, 10.0)
        || out("ledBrightness", 0.0, 100.0)
        || out("cooldownMs", 0.0, 600_000.0)
}

fuzz_target!(|data: &[u8]| {
    let mut f = Fields::new(data);
    let config = DeviceConfig::new(DEVICE, FIRMWARE).expect("a valid device id");
    let device = Device::new(config, MemorySettings::default(), StdRng::seed_from_u64(7))
        .expect("a valid configuration");
    let topics = device.topics().clone();
    let mut driver = Driver {
        status_topic: topics.status().to_string(),
        device,
        mono: 0,
        replies: Vec::new(),
    };
    driver.device.start(driver.now());
    driver.pump();
    driver.connect();

    let mut model = driver.device.settings();
    let mut expected = Vec::new();
    for _ in 0..16 {
        if f.is_empty() {
            break;
        }
        let op = f.byte() % 6;
        let topic = match op {
            0 => topics.settings().to_string(),
            1 => topics.commands().to_string(),
            2 => topics.status().to_string(),
            3 => "acorn-pups/settings/acorn-0002".to_string(),
            4 => f.text(),
            _ => {
                let steps = u64::from(u16::from_le_bytes([f.byte(), f.byte()]));
                driver.advance(steps * 10);
                continue;
            }
        };
        let payload = f.field();
        let parsed = parse_inbound(&topics, &topic, payload);
        assert_eq!(
            parsed,
            parse_inbound(&topics, &topic, payload),
            "not deterministic"
        );
        match parsed {
            Ok(Inbound::Settings(update)) => {
                model.apply(&update);
                expected.push(Expect::Settings(update, model));
            }
            Ok(Inbound::Command(c)) => expected.push(Expect::Command(c.request_id, c.command)),
            Err(_) => expected.push(Expect::Error(request_id_of(payload))),
        }
        let before = driver.device.settings();
        driver.connect();
        driver.device.transport(
            driver.now(),
            TransportEvent::Message {
                topic: &topic,
                payload,
            },
        );
        driver.pump();
        let after = driver.device.settings();
        assert_eq!(after, model, "settings differ from the model");
        assert!(in_range(&after), "settings out of range: {after:?}");
        assert_eq!(driver.device.store().stored.unwrap_or_default(), after);
        if has_out_of_range_number(payload) {
            assert_eq!(after, before, "a setting out of range changed the settings");
        }
    }
    // Let every reply go out (a `reconnect` command drops the connection first).
    driver.advance(10_000);
    driver.connect();

    assert_eq!(
        driver.replies.len(),
        expected.len(),
        "one reply per message"
    );
    for (reply, want) in driver.replies.iter().zip(&expected) {
        let status = serde_json::to_value(reply.status).expect("status");
        let result = reply
            .result
            .map(|r| serde_json::to_value(r).expect("result"));
        match want {
            Expect::Settings(update, settings) => {
                assert_eq!(status, "online");
                assert_eq!(result, Some(Value::from("ok")));
                assert_eq!(reply.command.as_deref(), Some("settings"));
                assert_eq!(reply.request_id, update.request_id);
                assert_eq!(reply.settings.as_ref(), Some(settings));
            }
            Expect::Command(id, kind) => {
                assert_eq!(result, Some(Value::from("ok")));
                assert_eq!(reply.command.as_deref(), Some(kind.as_str()));
                assert_eq!(reply.request_id.as_ref(), Some(id));
            }
            Expect::Error(id) => {
                assert_eq!(status, "error");
                assert_eq!(result, Some(Value::from("error")));
                assert_eq!(&reply.request_id, id);
                assert!(reply.error.is_some());
            }
        }
    }
});
