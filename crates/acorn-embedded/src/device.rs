//! [`DeviceDriver`] (feature `device`): the device core, `acorn_device::Device`, driving the
//! embedded transport — the same application as on Linux (presses with cooldown, `online`
//! once the device can receive, settings validated, saved through its `SettingsStore` and
//! answered, commands answered, `offline` at shutdown and as the last will), on the chip and
//! in the Linux tests.
//!
//! The device owns its `acorn_mqtt::Session`, so it plugs in as a [`Driver`] (its actions
//! become [`Order`]s, the transport's [`LinkEvent`]s become its `TransportEvent`s) rather
//! than as an [`Application`](crate::Application), whose session belongs to the transport.
//! What the device reports ([`Notice`]) goes to the platform through [`DeviceIo`], which also
//! hands over presses and the shutdown request, and tells the device about its host (free
//! heap, Wi-Fi signal: [`DeviceIo::host_facts`]) before each timer tick, for the heartbeat.
//! The presses wait in the device's press store (`Q`: an NVS partition of their own on the
//! chip, [`MemoryPresses`] by default) until their PUBACK.
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn demo(identity: acorn_embedded::TlsIdentity, anchors: acorn_embedded::TrustAnchors) -> Result<(), acorn_device::Error> {
//! use acorn_device::{Device, DeviceConfig, MemorySettings};
//! use acorn_embedded::device::{DeviceDriver, DeviceIo, Input, Report};
//! use acorn_embedded::{host, Buffers, Target, Time, Transport, TransportConfig};
//!
//! struct Io(tokio::sync::mpsc::Receiver<Input>);
//! impl DeviceIo for Io {
//!     async fn next_input(&mut self) -> Input {
//!         self.0.recv().await.unwrap_or(Input::Shutdown)
//!     }
//!     fn report(&mut self, _now: Time, report: Report<'_>) {
//!         println!("{report}");
//!     }
//! }
//!
//! let config = DeviceConfig::new(identity.device_id(), "1.0.0")?;
//! let device = Device::new(config, MemorySettings::default(), rand::rngs::OsRng)?;
//! let (tx, rx) = tokio::sync::mpsc::channel(8);
//! let mut driver = DeviceDriver::new(device, Io(rx));
//! let mut buffers = Buffers::new();
//! let mut transport = Transport::new(
//!     host::TokioConnector, host::SystemClock::new(), host::OsRng, &identity, &anchors,
//!     TransportConfig::new(Target::new(identity.endpoint(), 8883)), &mut buffers,
//! );
//! tx.send(Input::Press { button: "rf-5a3c".into(), battery: Some(87) }).await.ok();
//! tx.send(Input::Shutdown).await.ok();
//! transport.drive(&mut driver).await; // returns once `offline` is acknowledged (or 3 s)
//! # Ok(()) }
//! ```

use alloc::string::{String, ToString};
use core::fmt;
use core::future::Future;

use acorn_device::{
    Action, Device, HostFacts, MemoryPresses, Notice, Now, PressStore, SettingsStore, Tag,
    TransportEvent,
};
use rand_core::RngCore;

use crate::diagnosis::Diagnosis;
use crate::identity::TlsIdentity;
use crate::rotation::{NoRotation, Rotator};
use crate::transport::{ConnectOrder, Driver, LinkEvent, Order, OutPublish, Time};

/// What the platform hands to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A button press: its RF id and battery level (percent), when known.
    Press {
        /// The button's RF id.
        button: String,
        /// Its battery level, percent.
        battery: Option<u8>,
    },
    /// Shut down cleanly: `offline` (its PUBACK awaited, at most 3 s), then DISCONNECT;
    /// [`Transport::drive`](crate::Transport::drive) returns.
    Shutdown,
}

/// What the device reports, for the serial log, an LED or a test.
#[derive(Debug)]
#[non_exhaustive]
pub enum Report<'a> {
    /// What the device core says (status changes, deliveries, answered and rejected
    /// requests, health); [`Notice::level`] says how loud.
    Notice(&'a Notice),
    /// A press the device refused (a bad button id, or the device is shutting down).
    PressRefused {
        /// The button's RF id.
        button: &'a str,
        /// Why.
        error: &'a acorn_device::Error,
    },
    /// An inbound message larger than the transport's receive buffer was acknowledged and
    /// skipped (never applied).
    Skipped {
        /// Its topic, when readable.
        topic: Option<&'a str>,
        /// Its size in bytes.
        len: usize,
    },
    /// A publish could not be encoded and was skipped.
    Failure(&'a Diagnosis),
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Notice(notice) => write!(f, "{notice}"),
            Report::PressRefused { button, error } => {
                write!(f, "press of {button} refused: {error}")
            }
            Report::Skipped { topic, len } => write!(
                f,
                "skipped a {len}-byte message on {} (larger than the {}-byte receive buffer)",
                topic.unwrap_or("an unreadable topic"),
                crate::codec::MQTT_RX_BUFFER
            ),
            Report::Failure(diagnosis) => write!(f, "{diagnosis}"),
        }
    }
}

/// The platform side of a [`DeviceDriver`]: presses and the shutdown request in, reports out.
pub trait DeviceIo {
    /// The next input. Must be cancel-safe (a channel receive is): it is raced against the
    /// network and timers and dropped when they win.
    fn next_input(&mut self) -> impl Future<Output = Input>;
    /// Something to log or show.
    fn report(&mut self, now: Time, report: Report<'_>);
    /// What the platform knows of its host now (free heap, Wi-Fi signal, reset reason,
    /// resident memory), asked before each timer tick and sent in heartbeats; `None` (the
    /// default) keeps what was last given.
    fn host_facts(&mut self) -> Option<HostFacts> {
        None
    }
}

/// The device core as the transport's [`Driver`]: see the module docs. `Z` carries out
/// certificate rotations ([`crate::rotation`]).
#[derive(Debug)]
pub struct DeviceDriver<R, S, I, Q = MemoryPresses, Z = NoRotation> {
    device: Device<R, S, Q>,
    io: I,
    rotation: Z,
    finished: bool,
}

impl<R: RngCore, S: SettingsStore, I: DeviceIo, Q: PressStore> DeviceDriver<R, S, I, Q> {
    /// Drives `device` (made, not started: [`Transport::drive`](crate::Transport::drive)
    /// starts it), with `io` for inputs and reports; no certificate rotation.
    pub fn new(device: Device<R, S, Q>, io: I) -> Self {
        Self::with_rotation(device, io, NoRotation)
    }
}

impl<R: RngCore, S: SettingsStore, I: DeviceIo, Q: PressStore, Z: Rotator<S>>
    DeviceDriver<R, S, I, Q, Z>
{
    /// As [`DeviceDriver::new`], with `rotation` carrying out the device's certificate
    /// rotations (`acorn_device::DeviceConfig::rotation` says when and how).
    pub fn with_rotation(device: Device<R, S, Q>, io: I, rotation: Z) -> Self {
        DeviceDriver {
            device,
            io,
            rotation,
            finished: false,
        }
    }

    /// The device (its settings, status, counters).
    pub fn device(&self) -> &Device<R, S, Q> {
        &self.device
    }

    /// The platform side.
    pub fn io(&self) -> &I {
        &self.io
    }

    /// The platform side, mutably.
    pub fn io_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// The rotation side (e.g. to read its identity slots after a run).
    pub fn rotation_mut(&mut self) -> &mut Z {
        &mut self.rotation
    }

    /// Gives the device and the platform side back.
    pub fn into_parts(self) -> (Device<R, S, Q>, I) {
        (self.device, self.io)
    }

    fn now(time: Time) -> Now {
        Now::new(time.mono_ms, time.unix_ms)
    }
}

impl<R: RngCore, S: SettingsStore, I: DeviceIo, Q: PressStore, Z: Rotator<S>> Driver
    for DeviceDriver<R, S, I, Q, Z>
{
    type Tag = Tag;
    type Input = Input;

    fn start(&mut self, now: Time) {
        self.device.start(Self::now(now));
    }

    fn poll_order(&mut self, now: Time) -> Option<Order<Tag>> {
        while let Some(action) = self.device.poll_action() {
            match action {
                Action::Connect(c) => {
                    return Some(Order::Connect(ConnectOrder {
                        client_id: c.client_id,
                        keep_alive_secs: c.keep_alive_secs,
                        clean_session: c.clean_session,
                        will: Some((c.will.topic, c.will.payload)),
                    }))
                }
                Action::Subscribe(filters) => return Some(Order::Subscribe(filters)),
                Action::Publish(p) => {
                    return Some(Order::Publish(OutPublish {
                        tag: p.tag,
                        topic: p.topic,
                        payload: p.payload,
                        qos: p.qos,
                        retransmit: p.retransmit,
                    }))
                }
                Action::Disconnect => return Some(Order::Disconnect),
                Action::Notice(notice) => self.io.report(now, Report::Notice(&notice)),
                Action::ShutdownComplete => self.finished = true,
                Action::Rotation(request) => {
                    let device_id = self.device.device_id().to_string();
                    let store = self.device.store_mut();
                    if let Some(input) = self.rotation.step(store, &device_id, now, request) {
                        self.device.rotation(Self::now(now), input);
                    }
                }
                // A later kind of action this driver does not know: nothing for the network.
                _ => {}
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.device.poll_timeout()
    }

    fn identity(&self) -> Option<&TlsIdentity> {
        self.rotation.identity()
    }

    fn tick(&mut self, now: Time) {
        if let Some(facts) = self.io.host_facts() {
            self.device.set_host_facts(facts);
        }
        self.device.tick(Self::now(now));
    }

    fn event(&mut self, now: Time, event: LinkEvent<'_, Tag>) {
        let event = match event {
            LinkEvent::ConnAck { session_present } => TransportEvent::ConnAck { session_present },
            LinkEvent::ConnectRefused { code, .. } => TransportEvent::ConnectRefused { code },
            LinkEvent::ConnectFailed(d) if d.is_credentials_refused() => {
                TransportEvent::CredentialsRefused {
                    diagnosis: d.to_string(),
                }
            }
            LinkEvent::ConnectFailed(d) => TransportEvent::ConnectFailed {
                diagnosis: d.to_string(),
            },
            LinkEvent::Disconnected { cause, diagnosis } => TransportEvent::Disconnected {
                cause,
                diagnosis: diagnosis.to_string(),
            },
            LinkEvent::PingResponse => TransportEvent::PingResponse,
            LinkEvent::PingTimeout => TransportEvent::PingTimeout,
            LinkEvent::PubAck(tag) => TransportEvent::PubAck(tag),
            LinkEvent::Activity => TransportEvent::Activity,
            LinkEvent::SubAck { granted } => TransportEvent::SubAck { granted },
            LinkEvent::Message { topic, payload } => TransportEvent::Message { topic, payload },
            LinkEvent::Oversized { topic, len } => {
                self.io.report(now, Report::Skipped { topic, len });
                TransportEvent::Activity
            }
            LinkEvent::Failure(d) => {
                self.io.report(now, Report::Failure(d));
                return;
            }
        };
        self.device.transport(Self::now(now), event);
    }

    fn next_input(&mut self) -> impl Future<Output = Input> {
        self.io.next_input()
    }

    fn input(&mut self, now: Time, input: Input) {
        match input {
            Input::Press { button, battery } => {
                // Queued or cooled down: the device's own notice says which.
                if let Err(error) = self.device.press(Self::now(now), &button, battery) {
                    self.io.report(
                        now,
                        Report::PressRefused {
                            button: &button,
                            error: &error,
                        },
                    );
                }
            }
            Input::Shutdown => self.device.shutdown(Self::now(now)),
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}
