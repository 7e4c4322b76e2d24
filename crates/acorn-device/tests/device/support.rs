//! A simulated driver: a clock, a device, and every action it asked for.

use core::fmt;

use acorn_device::acorn_mqtt::DeviceSettings;
use acorn_device::{
    Action, Device, DeviceConfig, MemoryPresses, MemorySettings, Notice, Now, PressOutcome,
    PressStore, Publish, SettingsStore, Tag, TransportEvent,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

/// The device under test.
pub const DEVICE: &str = "acorn-0001";
/// Its firmware version.
pub const FIRMWARE: &str = "1.0.0";
/// Wall clock at monotonic 0: 2026-11-28T16:42:00.000Z.
pub const UNIX0: u64 = 1_795_884_120_000;

pub const STATUS: &str = "acorn-pups/status/acorn-0001";
pub const PRESSES: &str = "acorn-pups/button-press/acorn-0001";
pub const SETTINGS: &str = "acorn-pups/settings/acorn-0001";
pub const COMMANDS: &str = "acorn-pups/commands/acorn-0001";

/// The defaults for [`DEVICE`].
pub fn config() -> DeviceConfig {
    DeviceConfig::new(DEVICE, FIRMWARE).expect("a valid device id")
}

/// A device and its clock.
pub struct Sim<S: SettingsStore = MemorySettings, Q: PressStore = MemoryPresses> {
    pub device: Device<StdRng, S, Q>,
    pub mono: u64,
}

impl Sim {
    /// [`DEVICE`] with the default configuration and empty in-memory settings.
    pub fn new() -> Self {
        Self::with(config(), MemorySettings::default())
    }

    /// Started and connected, the subscriptions acknowledged; the actions so far are dropped.
    pub fn online() -> Self {
        let mut sim = Self::new();
        sim.connect(false);
        sim
    }
}

impl<S: SettingsStore> Sim<S> {
    pub fn with(config: DeviceConfig, store: S) -> Self {
        Self {
            device: Device::new(config, store, StdRng::seed_from_u64(7)).expect("valid config"),
            mono: 0,
        }
    }
}

impl<Q: PressStore> Sim<MemorySettings, Q> {
    /// [`DEVICE`] with `config` and presses kept in `presses`, its clock at `mono`.
    pub fn with_presses(config: DeviceConfig, presses: Q, mono: u64) -> Self {
        let device = Device::with_press_store(
            config,
            MemorySettings::default(),
            presses,
            StdRng::seed_from_u64(mono),
        )
        .expect("valid config");
        Self { device, mono }
    }
}

impl<S: SettingsStore, Q: PressStore> Sim<S, Q> {
    pub fn now(&self) -> Now {
        Now::new(self.mono, UNIX0 + self.mono)
    }

    pub fn take(&mut self) -> Vec<Action> {
        self.device.drain_actions().collect()
    }

    pub fn start(&mut self) -> Vec<Action> {
        self.device.start(self.now());
        self.take()
    }

    /// Starts (if needed) and answers the CONNECT (and a SUBSCRIBE) 20 ms later each; every
    /// action from the CONNACK on.
    pub fn connect(&mut self, session_present: bool) -> Vec<Action> {
        let mut actions = self.start();
        assert!(
            actions.iter().any(|a| matches!(a, Action::Connect(_))),
            "{actions:?}"
        );
        self.mono += 20;
        actions = self.event(TransportEvent::ConnAck { session_present });
        if actions.iter().any(|a| matches!(a, Action::Subscribe(_))) {
            self.mono += 20;
            actions.extend(self.event(TransportEvent::SubAck { granted: true }));
        }
        actions
    }

    /// Starts (if needed), walks the timers to the next CONNECT unless one is under way, and
    /// accepts it (and a SUBSCRIBE) 20 ms later; every action on the way.
    pub fn connect_next(&mut self, session_present: bool) -> Vec<Action> {
        let mut actions = self.start();
        let mut connecting = actions.iter().any(|a| matches!(a, Action::Connect(_)))
            || *self.device.status() == acorn_device::acorn_mqtt::ConnectionStatus::Connecting;
        for _ in 0..100 {
            if connecting {
                break;
            }
            let due = self.device.poll_timeout().expect("a timer runs");
            let step = self.advance(due.saturating_sub(self.mono));
            connecting = step.iter().any(|a| matches!(a, Action::Connect(_)));
            actions.extend(step);
        }
        assert!(connecting, "a CONNECT within 100 timers: {actions:?}");
        self.mono += 20;
        actions.extend(self.event(TransportEvent::ConnAck { session_present }));
        if actions.iter().any(|a| matches!(a, Action::Subscribe(_))) {
            self.mono += 20;
            actions.extend(self.event(TransportEvent::SubAck { granted: true }));
        }
        actions
    }

    pub fn event(&mut self, event: TransportEvent<'_>) -> Vec<Action> {
        self.device.transport(self.now(), event);
        self.take()
    }

    pub fn message(&mut self, topic: &str, payload: &[u8]) -> Vec<Action> {
        self.event(TransportEvent::Message { topic, payload })
    }

    pub fn press(
        &mut self,
        button: &str,
        battery: Option<u8>,
    ) -> (Result<PressOutcome, acorn_device::Error>, Vec<Action>) {
        let outcome = self.device.press(self.now(), button, battery);
        (outcome, self.take())
    }

    /// Moves the clock `ms` on, ticking at every timer that falls due on the way.
    pub fn advance(&mut self, ms: u64) -> Vec<Action> {
        let end = self.mono + ms;
        let mut actions = Vec::new();
        while let Some(due) = self.device.poll_timeout().filter(|&t| t <= end) {
            self.mono = self.mono.max(due);
            self.device.tick(self.now());
            actions.extend(self.take());
        }
        self.mono = end;
        actions
    }

    pub fn shutdown(&mut self) -> Vec<Action> {
        self.device.shutdown(self.now());
        self.take()
    }

    /// Acknowledges every publish of `actions`; the actions that follow.
    pub fn ack(&mut self, actions: &[Action]) -> Vec<Action> {
        let mut out = Vec::new();
        for p in publishes(actions) {
            out.extend(self.event(TransportEvent::PubAck(p.tag)));
        }
        out
    }

    pub fn settings(&self) -> DeviceSettings {
        self.device.settings()
    }
}

pub fn publishes(actions: &[Action]) -> Vec<&Publish> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

pub fn notices(actions: &[Action]) -> Vec<&Notice> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notice(n) => Some(n),
            _ => None,
        })
        .collect()
}

pub fn json(publish: &Publish) -> Value {
    serde_json::from_slice(&publish.payload).expect("every payload is JSON")
}

/// The one reply (a publish of the session queue on the status topic) among `actions`.
pub fn reply(actions: &[Action]) -> Value {
    let replies: Vec<&Publish> = publishes(actions)
        .into_iter()
        .filter(|p| p.topic == STATUS && matches!(p.tag, Tag::Message(_)))
        .collect();
    assert_eq!(replies.len(), 1, "one reply expected: {actions:?}");
    json(replies[0])
}

/// The presence statuses (`online`, `offline`) among `actions`.
pub fn presence(actions: &[Action]) -> Vec<(Tag, String)> {
    publishes(actions)
        .into_iter()
        .filter(|p| matches!(p.tag, Tag::Online | Tag::Offline))
        .map(|p| (p.tag, json(p)["status"].as_str().unwrap().to_owned()))
        .collect()
}

/// A store whose flash fails.
#[derive(Debug, Default)]
pub struct BrokenStore {
    pub load_fails: bool,
    pub save_fails: bool,
    pub saved: Vec<DeviceSettings>,
}

#[derive(Debug)]
pub struct FlashFault(&'static str);

impl fmt::Display for FlashFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl SettingsStore for BrokenStore {
    type Error = FlashFault;

    fn load(&mut self) -> Result<Option<DeviceSettings>, FlashFault> {
        if self.load_fails {
            Err(FlashFault(
                "the stored settings cannot be read (flash read failed)",
            ))
        } else {
            Ok(None)
        }
    }

    fn save(&mut self, settings: &DeviceSettings) -> Result<(), FlashFault> {
        if self.save_fails {
            return Err(FlashFault("flash write failed at 0x3000"));
        }
        self.saved.push(*settings);
        Ok(())
    }
}
