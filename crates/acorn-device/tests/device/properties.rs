//! Random event sequences (any order, any payload, time jumps, shutdown at any point) never
//! panic the device; everything it publishes is a valid JSON message of this device on one of
//! its two publish topics; nothing new goes out once shutdown began, and nothing at all after
//! it completed; CONNECTs are never less than a second apart.

use acorn_device::acorn_mqtt::{parse_timestamp, DisconnectCause, QoS};
use acorn_device::{
    Action, Device, MemorySettings, Notice, Now, PressOutcome, Tag, TransportEvent,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

use crate::support::{config, COMMANDS, DEVICE, FIRMWARE, PRESSES, SETTINGS, STATUS, UNIX0};

#[derive(Debug, Clone)]
enum Op {
    Press { button: u8, battery: Option<u8> },
    ConnAck(bool),
    ConnectFailed,
    ConnectRefused(u8),
    CredentialsRefused,
    Disconnected(bool),
    PingResponse,
    PingTimeout,
    Activity,
    PubAck(usize),
    SubAck(bool),
    Message { topic: usize, payload: Vec<u8> },
    Advance(u64),
    Shutdown,
}

const TOPICS: [&str; 4] = [SETTINGS, COMMANDS, "acorn-pups/settings/acorn-0002", STATUS];

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            proptest::option::of("[a-z0-9-]{0,70}"),
            proptest::option::of(any::<bool>()),
            proptest::option::of(-5i64..20),
            proptest::option::of(-5i64..120),
            proptest::option::of(-5i64..700_000),
        )
            .prop_map(|(id, sound, volume, led, cooldown)| {
                let mut v = serde_json::Map::new();
                if let Some(id) = id {
                    v.insert("requestId".into(), id.into());
                }
                if let Some(x) = sound {
                    v.insert("soundEnabled".into(), x.into());
                }
                if let Some(x) = volume {
                    v.insert("soundVolume".into(), x.into());
                }
                if let Some(x) = led {
                    v.insert("ledBrightness".into(), x.into());
                }
                if let Some(x) = cooldown {
                    v.insert("cooldownMs".into(), x.into());
                }
                serde_json::to_vec(&v).unwrap()
            }),
        (
            "[a-z0-9]{0,66}",
            prop_oneof![
                Just("ping"),
                Just("get-status"),
                Just("reconnect"),
                Just("self-destruct")
            ]
        )
            .prop_map(|(id, command)| {
                serde_json::to_vec(&serde_json::json!({"requestId": id, "command": command}))
                    .unwrap()
            }),
        proptest::collection::vec(any::<u8>(), 0..64),
        "[{}\\[\\]\":,a-zA-Z0-9 ]{0,40}".prop_map(String::into_bytes),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, proptest::option::of(0u8..=120))
            .prop_map(|(button, battery)| Op::Press { button, battery }),
        2 => any::<bool>().prop_map(Op::ConnAck),
        1 => Just(Op::ConnectFailed),
        1 => (0u8..8).prop_map(Op::ConnectRefused),
        1 => Just(Op::CredentialsRefused),
        1 => any::<bool>().prop_map(Op::Disconnected),
        1 => Just(Op::PingResponse),
        1 => Just(Op::PingTimeout),
        1 => Just(Op::Activity),
        3 => any::<usize>().prop_map(Op::PubAck),
        2 => any::<bool>().prop_map(Op::SubAck),
        3 => (0..TOPICS.len(), payload()).prop_map(|(topic, payload)| Op::Message { topic, payload }),
        3 => prop_oneof![0u64..2_000, 0u64..200_000].prop_map(Op::Advance),
        1 => Just(Op::Shutdown),
    ]
}

/// What must hold of every action, given what came before.
struct Checker {
    stopping: bool,
    complete: bool,
    offline_sent: bool,
    last_connect: Option<u64>,
    outstanding: Vec<Tag>,
    delivered: u64,
}

impl Checker {
    fn check(&mut self, mono: u64, action: &Action) -> Result<(), TestCaseError> {
        prop_assert!(
            !self.complete,
            "an action after ShutdownComplete: {action:?}"
        );
        match action {
            Action::Publish(p) => {
                prop_assert_eq!(p.qos, QoS::AtLeastOnce);
                prop_assert!(p.topic == PRESSES || p.topic == STATUS, "{}", p.topic);
                let value: Value = serde_json::from_slice(&p.payload)
                    .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
                prop_assert_eq!(&value["deviceId"], DEVICE);
                let timestamp = value["timestamp"].as_str().unwrap_or_default();
                prop_assert!(parse_timestamp(timestamp).is_ok(), "{timestamp}");
                if p.topic == PRESSES {
                    prop_assert!(value["buttonRfId"].is_string());
                    prop_assert!(matches!(p.tag, Tag::Message(_)));
                } else {
                    prop_assert_eq!(&value["firmwareVersion"], FIRMWARE);
                    let status = value["status"].as_str().unwrap_or_default();
                    prop_assert!(["online", "offline", "error"].contains(&status));
                }
                if self.stopping {
                    prop_assert_eq!(p.tag, Tag::Offline, "only offline while stopping");
                    prop_assert!(!self.offline_sent, "offline sent twice");
                    self.offline_sent = true;
                    prop_assert_eq!(&value["status"], "offline");
                } else {
                    prop_assert!(p.tag != Tag::Offline);
                }
                self.outstanding.push(p.tag);
            }
            Action::Connect(c) => {
                prop_assert!(!self.stopping, "no CONNECT while stopping");
                prop_assert_eq!(&c.client_id, DEVICE);
                if let Some(previous) = self.last_connect {
                    prop_assert!(mono >= previous + 1_000, "CONNECTs {previous} and {mono}");
                }
                self.last_connect = Some(mono);
            }
            Action::Subscribe(filters) => {
                prop_assert!(!self.stopping, "no SUBSCRIBE while stopping");
                prop_assert_eq!(filters, &vec![SETTINGS.to_owned(), COMMANDS.to_owned()]);
            }
            Action::Notice(Notice::ShuttingDown) => self.stopping = true,
            Action::Notice(Notice::Delivered(_) | Notice::PressDelivered { .. }) => {
                self.delivered += 1;
            }
            Action::Notice(n) => {
                // Every notice has a text.
                prop_assert!(!n.to_string().is_empty());
            }
            Action::ShutdownComplete => self.complete = true,
            _ => {}
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_event_sequences_never_panic_and_publish_only_valid_messages(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let mut device =
            Device::new(config(), MemorySettings::default(), StdRng::seed_from_u64(seed)).unwrap();
        let mut mono = 0u64;
        let now = |mono: u64| Now::new(mono, UNIX0 + mono);
        let mut checker = Checker {
            stopping: false,
            complete: false,
            offline_sent: false,
            last_connect: None,
            outstanding: Vec::new(),
            delivered: 0,
        };
        device.start(now(mono));
        for op in ops {
            while let Some(action) = device.poll_action() {
                checker.check(mono, &action)?;
            }
            match op {
                Op::Press { button, battery } => {
                    let result = device.press(now(mono), &format!("rf-{button}"), battery);
                    if battery.is_some_and(|b| b > 100) {
                        // Refused, or cooled down first (the cooldown is checked first).
                        prop_assert!(!matches!(result, Ok(PressOutcome::Queued(_))));
                    } else if checker.stopping {
                        prop_assert_eq!(result, Err(acorn_device::Error::Stopped));
                    } else {
                        prop_assert!(result.is_ok(), "{:?}", result);
                    }
                }
                Op::ConnAck(session_present) => {
                    device.transport(now(mono), TransportEvent::ConnAck { session_present });
                }
                Op::ConnectFailed => device.transport(
                    now(mono),
                    TransportEvent::ConnectFailed { diagnosis: "TCP: connection refused".into() },
                ),
                Op::ConnectRefused(code) => {
                    device.transport(now(mono), TransportEvent::ConnectRefused { code });
                }
                Op::CredentialsRefused => device.transport(
                    now(mono),
                    TransportEvent::CredentialsRefused { diagnosis: "certificate revoked".into() },
                ),
                Op::Disconnected(broker) => {
                    let cause = if broker { DisconnectCause::Broker } else { DisconnectCause::Network };
                    device.transport(
                        now(mono),
                        TransportEvent::Disconnected { cause, diagnosis: "gone".into() },
                    );
                }
                Op::PingResponse => device.transport(now(mono), TransportEvent::PingResponse),
                Op::PingTimeout => device.transport(now(mono), TransportEvent::PingTimeout),
                Op::Activity => device.transport(now(mono), TransportEvent::Activity),
                Op::PubAck(i) => {
                    if !checker.outstanding.is_empty() {
                        let tag = checker.outstanding.remove(i % checker.outstanding.len());
                        device.transport(now(mono), TransportEvent::PubAck(tag));
                    }
                }
                Op::SubAck(granted) => {
                    device.transport(now(mono), TransportEvent::SubAck { granted });
                }
                Op::Message { topic, payload } => device.transport(
                    now(mono),
                    TransportEvent::Message { topic: TOPICS[topic], payload: &payload },
                ),
                Op::Advance(ms) => {
                    let end = mono + ms;
                    loop {
                        while let Some(action) = device.poll_action() {
                            checker.check(mono, &action)?;
                        }
                        match device.poll_timeout() {
                            Some(due) if due <= end => {
                                mono = mono.max(due);
                                device.tick(now(mono));
                            }
                            _ => break,
                        }
                    }
                    mono = end;
                }
                Op::Shutdown => device.shutdown(now(mono)),
            }
        }
        while let Some(action) = device.poll_action() {
            checker.check(mono, &action)?;
        }
        // Shutdown always completes within its bound.
        device.shutdown(now(mono));
        let deadline = mono + 3_000;
        loop {
            while let Some(action) = device.poll_action() {
                checker.check(mono, &action)?;
            }
            match device.poll_timeout() {
                Some(due) => {
                    prop_assert!(due <= deadline, "shutdown waits past its bound");
                    mono = mono.max(due);
                    device.tick(now(mono));
                }
                None => break,
            }
        }
        prop_assert!(checker.complete);
        prop_assert!(device.is_stopped());
        prop_assert_eq!(device.stats().delivered, checker.delivered);
    }
}
