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
//! hands over presses, status and rotation requests and the shutdown request, and tells the
//! device about its host (free heap, Wi-Fi signal: [`DeviceIo::host_facts`]) before each timer
//! tick, for the heartbeat. Each request is answered with a [`Report`] of its own (a press
//! queued under its `pressId` or cooled down, the status, the rotation started or not), so a
//! console on the platform can answer its user.
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

use acorn_device::rotation::RotateError;
use acorn_device::{
    Action, Device, HostFacts, Level, MemoryPresses, Notice, Now, PressId, PressOutcome,
    PressStore, SettingsStore, Snapshot, Tag, TransportEvent,
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
    /// Ask for the device's status, counters, settings and press queue: answered with
    /// [`Report::Status`].
    Status,
    /// Start a certificate rotation now (it waits for the connection when offline): answered
    /// with [`Report::Rotate`]; its progress follows as [`Notice`]s.
    Rotate,
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
    /// The answer to a press the device took ([`Input::Press`]): queued under its `pressId`,
    /// or not reported because the same button was pressed within the cooldown.
    Press {
        /// The button's RF id.
        button: &'a str,
        /// Queued (with its `pressId`) or cooled down.
        outcome: PressOutcome,
    },
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
    /// The answer to [`Input::Status`].
    Status(&'a StatusAnswer),
    /// The answer to [`Input::Rotate`]: `Ok` when a rotation started, else why none did
    /// (none configured, one under way already, shutting down, a commit pending).
    Rotate(Result<(), RotateError>),
}

impl Report<'_> {
    /// How loud it is, for a log: a notice's own level; an answer whose news a notice also
    /// carries (a press queued or cooled down, a rotation started) is [`Level::Debug`], so a
    /// log at `info` says it once; a status asked for is [`Level::Info`]; a refusal or a
    /// skipped message is [`Level::Warn`].
    pub fn level(&self) -> Level {
        match self {
            Report::Notice(notice) => notice.level(),
            Report::Press { .. } | Report::Rotate(Ok(())) => Level::Debug,
            Report::Status(_) => Level::Info,
            Report::PressRefused { .. }
            | Report::Skipped { .. }
            | Report::Failure(_)
            | Report::Rotate(Err(_)) => Level::Warn,
        }
    }
}

/// The device's state as [`Input::Status`] asks for it: the core's snapshot and its press
/// queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusAnswer {
    /// Status, counters and settings.
    pub snapshot: Snapshot,
    /// Presses waiting for their PUBACK (in the press store).
    pub queued_presses: usize,
    /// The `pressId` of the oldest of them, if any.
    pub oldest_queued_press: Option<PressId>,
    /// Presses dropped because the queue was full, over the device's life.
    pub dropped_presses: u32,
}

impl StatusAnswer {
    /// The state of `device` at `now`.
    pub fn of<R: RngCore, S: SettingsStore, Q: PressStore>(
        device: &Device<R, S, Q>,
        now: Now,
    ) -> Self {
        StatusAnswer {
            snapshot: device.snapshot(now),
            queued_presses: device.queued_presses().count(),
            oldest_queued_press: device.queued_presses().next().map(|press| press.id),
            dropped_presses: device.dropped_presses(),
        }
    }
}

/// One line for a serial log: the status first, then what a reader looks for next (the
/// settings, the press queue, the counters, the last error).
impl fmt::Display for StatusAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = &self.snapshot;
        let settings = &snapshot.settings;
        let stats = &snapshot.stats;
        write!(f, "status: {}", snapshot.status)?;
        if let Some(ms) = snapshot.connected_for_ms {
            write!(f, " for {}.{:03} s", ms / 1000, ms % 1000)?;
        }
        write!(f, "; settings: {settings}")?;
        write!(f, "; presses: {} queued", self.queued_presses)?;
        if let Some(id) = self.oldest_queued_press {
            write!(f, " (oldest {id})")?;
        }
        write!(
            f,
            ", {} dropped; messages: {} delivered, {} queued, {} in flight, {} dropped, {} expired; connects: {} of {} attempts, {} failures",
            self.dropped_presses,
            stats.delivered,
            stats.queued,
            stats.in_flight,
            stats.dropped_full,
            stats.expired,
            stats.connects,
            stats.connect_attempts,
            stats.failures
        )?;
        if let Some(error) = &stats.last_error {
            write!(f, "; last error: {error}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Notice(notice) => write!(f, "{notice}"),
            Report::Press {
                button,
                outcome: PressOutcome::Queued(id),
            } => write!(f, "press of {button} queued: pressId {id}"),
            Report::Press {
                button,
                outcome: PressOutcome::CooledDown,
            } => write!(f, "press of {button} not queued: within the cooldown"),
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
            Report::Status(answer) => write!(f, "{answer}"),
            Report::Rotate(Ok(())) => f.write_str("rotate: certificate rotation started"),
            Report::Rotate(Err(error)) => write!(f, "rotate: {error}"),
        }
    }
}

/// The platform side of a [`DeviceDriver`]: presses, requests and the shutdown request in,
/// reports (the answers among them) out.
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
                let pressed = self.device.press(Self::now(now), &button, battery);
                let report = match &pressed {
                    Ok(outcome) => Report::Press {
                        button: &button,
                        outcome: *outcome,
                    },
                    Err(error) => Report::PressRefused {
                        button: &button,
                        error,
                    },
                };
                self.io.report(now, report);
            }
            Input::Status => {
                let answer = StatusAnswer::of(&self.device, Self::now(now));
                self.io.report(now, Report::Status(&answer));
            }
            Input::Rotate => {
                let started = self.device.rotate(Self::now(now));
                self.io.report(now, Report::Rotate(started));
            }
            Input::Shutdown => self.device.shutdown(Self::now(now)),
        }
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}
