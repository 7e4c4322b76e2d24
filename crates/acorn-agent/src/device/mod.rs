//! The device runtime: what an Acorn Pups device does, on a host.
//!
//! [`Device::open`] mounts the device's NVS image, loads and validates its identity (the
//! metadata update is written back, as on a device) and its settings, and mounts the press
//! queue image beside it ([`crate::queue_image`]; made on first use); [`Device::spawn`] runs
//! it on tokio and returns a [`DeviceHandle`] to press buttons, read the status and shut down.
//!
//! What the device does is decided by the sans-IO device core, [`acorn_device::Device`], the
//! same state machine the ESP32-C3 firmware drives: press cooldown, the durable press queue
//! (each press stored with its `pressId` before it is answered, erased on its PUBACK,
//! delivered oldest first after a restart), `online` once the device can receive, settings
//! and commands validated, applied, saved and answered, a heartbeat status every
//! `heartbeatSeconds`, health every 30 s, `offline` (its PUBACK awaited, bounded) and a clean
//! DISCONNECT on shutdown, the session policy (backoff with full jitter) underneath. This runtime only
//! carries out the core's actions over rumqttc + rustls (one rumqttc event loop per connection,
//! so rumqttc never reconnects on its own), feeds it connection events with plain-language
//! diagnoses, requests and timer ticks, logs its notices and forwards them as
//! [`DeviceEvent`]s. The image is the core's settings store (namespace `settings`), the queue
//! image its press store (namespace `press_queue`); before each timer tick the runtime tells
//! the core its resident memory (`rssBytes` in heartbeats).
//!
//! ```no_run
//! use acorn_agent::device::{Device, DeviceOptions};
//! # async fn run() -> Result<(), acorn_agent::device::DeviceError> {
//! let options = DeviceOptions::new("device-nvs.bin");
//! let device = Device::open(options)?;
//! let handle = device.spawn();
//! handle.press("rf-5a3c", Some(87)).await?;
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```

mod link;
mod rotate;
mod runtime;

use std::path::{Path, PathBuf};
use std::time::Duration;

use acorn_device::{DeviceConfig, PressId, QueuedPress};
use acorn_mqtt::{
    ConnectionStatus, DeviceSettings, DropReason, HealthReport, PublishId, SessionConfig,
};
use acorn_nvs::{FileFlash, NvsKeys};
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::device_image::{unix_now, DeviceImage, ImageError};
use crate::queue_image::{default_queue_path, QueueImage};
use acorn_transport::BrokerTarget;
use acorn_transport::ConfigError;
use acorn_transport::SessionOptions;
use acorn_transport::TrustRoots;

pub use runtime::host_facts;

/// Why a rotation did not start.
pub use acorn_device::rotation::{RotateError, RotationConfig};
/// What a press became (the device core's answer).
pub use acorn_device::PressOutcome;
/// A snapshot of the running device: status, counters, settings, uptime.
pub use acorn_device::Snapshot;

/// The device core as this runtime drives it: jitter from `StdRng`, settings in the image,
/// presses in the queue image.
pub(crate) type Core = acorn_device::Device<StdRng, DeviceImage<FileFlash>, QueueImage>;

/// Presses kept at most in the queue image, by default (when full, the oldest is dropped and
/// counted as `droppedPresses`).
pub const DEFAULT_QUEUE_CAPACITY: usize = acorn_device::presses::PRESS_QUEUE_CAPACITY;

/// The firmware version the host agent reports.
pub const AGENT_VERSION: &str = concat!("acorn-agent-", env!("CARGO_PKG_VERSION"));

/// Why the device cannot start or a request failed. Messages never hold key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The image or the identity in it is unusable.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The TLS or MQTT settings are unusable (e.g. the key does not match the certificate).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The device core refused its configuration or a press: the device id, a button id or
    /// a battery level breaks an MQTT or AWS IoT rule, or the device is shutting down.
    #[error(transparent)]
    Device(#[from] acorn_device::Error),
    /// The runtime has stopped; no more requests are taken.
    #[error("the device runtime has stopped")]
    Stopped,
}

/// How to run a device. [`DeviceOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// The NVS partition image (the device's flash).
    pub image: PathBuf,
    /// NVS encryption keys, if the image is encrypted (the queue image is then encrypted
    /// with them too).
    pub nvs_keys: Option<NvsKeys>,
    /// The press queue image; `None` = beside the image, named after it
    /// (`device-nvs.bin` → `device-nvs.queue.bin`). Made on first use.
    pub queue_image: Option<PathBuf>,
    /// Presses kept at most in the queue (default 256, at least 2); when full, the oldest is
    /// dropped and counted as `droppedPresses`.
    pub queue_capacity: usize,
    /// The heartbeat interval until a settings update names `heartbeatSeconds`; `None` = the
    /// stored setting (default 300 s). At least 1 ms.
    pub heartbeat: Option<Duration>,
    /// Where to connect; `None` = the endpoint stored in the image, port 8883 (443 with ALPN).
    pub broker: Option<BrokerTarget>,
    /// Offer ALPN `x-amzn-mqtt-ca` (port 443 on AWS IoT Core).
    pub alpn: bool,
    /// Roots the broker must chain to (default: Amazon Root CA 1 and 3).
    pub roots: TrustRoots,
    /// Reported as `firmwareVersion`.
    pub firmware_version: String,
    /// Adjusts the session policy (backoff, queue, keepalive) before it starts.
    pub tune: Option<fn(&mut SessionConfig)>,
    /// The time (Unix seconds) the identity is validated at; `None` = the system clock. A
    /// time before 2024 is taken as a clock that is not synced: certificate dates are then
    /// not checked, and [`Device::warnings`] says so.
    pub now_unix: Option<u64>,
    /// Certificate rotation over AWS IoT's provisioning API (`rotate-certificate`, expiry,
    /// [`DeviceHandle::rotate`]); `None` = no rotation.
    pub rotation: Option<acorn_device::rotation::RotationConfig>,
    /// The CA (PEM or DER) a rotated certificate must chain to; `None` = it must have the
    /// same issuer as the certificate it replaces.
    pub rotation_ca: Option<Vec<u8>>,
    /// Talk to the local stack's provisioning API (`acorn dev up`): every topic under
    /// `acorn-local/<device id>/`, so that answers reach this device only.
    pub rotation_local: bool,
}

impl DeviceOptions {
    /// The image at `image`, the stored endpoint, Amazon roots, the agent's version.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        Self {
            image: image.into(),
            nvs_keys: None,
            queue_image: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            heartbeat: None,
            broker: None,
            alpn: false,
            roots: TrustRoots::Amazon,
            firmware_version: AGENT_VERSION.to_owned(),
            tune: None,
            now_unix: None,
            rotation: None,
            rotation_ca: None,
            rotation_local: false,
        }
    }
}

/// What happened, as broadcast to [`DeviceHandle::events`] subscribers: the device core's
/// notices of these kinds, one to one (every notice is also logged at its level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The connection status changed.
    Status(ConnectionStatus),
    /// A QoS 1 reply was acknowledged by the broker (presses: [`DeviceEvent::PressDelivered`]).
    Delivered(PublishId),
    /// A press was acknowledged by the broker and left the queue image.
    PressDelivered(PressId),
    /// The press queue was full: its oldest press was dropped (and counted as
    /// `droppedPresses`).
    PressDropped(PressId),
    /// The queue image could not take a press: it is kept in RAM only (a restart loses it).
    PressNotStored {
        /// The press.
        press_id: PressId,
        /// What the store said.
        reason: String,
    },
    /// A heartbeat status went out.
    HeartbeatSent {
        /// Presses waiting in the queue.
        queued_presses: usize,
    },
    /// A certificate rotation ended.
    RotationEnded {
        /// Whether the new certificate is in use.
        committed: bool,
        /// The new certificate's id, or why the rotation failed or was rolled back.
        detail: String,
    },
    /// A queued message was dropped.
    Dropped {
        /// The message.
        id: PublishId,
        /// Why.
        reason: DropReason,
    },
    /// A settings update was applied and saved.
    SettingsApplied(DeviceSettings),
    /// A command was answered (`ping`, `get-status`, `reconnect`).
    Answered {
        /// The command.
        command: String,
        /// Its request id.
        request_id: String,
    },
    /// An inbound message was rejected (and answered with an error status).
    Rejected {
        /// Why, in plain language.
        reason: String,
    },
    /// The periodic health report.
    Health(HealthReport),
}

/// A request to the runtime task.
enum Request {
    Press {
        button: String,
        battery: Option<u8>,
        reply: oneshot::Sender<Result<PressOutcome, DeviceError>>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
    PressQueue {
        reply: oneshot::Sender<PressQueue>,
    },
    Rotate {
        reply: oneshot::Sender<Result<(), RotateError>>,
    },
    Shutdown,
}

/// The press queue at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PressQueue {
    /// Presses waiting for their PUBACK, oldest first.
    pub presses: Vec<QueuedPress>,
    /// Presses dropped because the queue was full, over the device's life.
    pub dropped: u32,
}

/// A device whose identity is loaded and checked, ready to run.
pub struct Device {
    core: Core,
    session_options: SessionOptions,
    mqtt_options: rumqttc::MqttOptions,
    notes: Vec<String>,
    rotation: rotate::RotationDriver,
}

impl Device {
    /// Mounts the image, loads and validates the identity (writing the metadata update back)
    /// and the settings, mounts (or makes) the press queue image, and checks the TLS setup
    /// locally (a key that does not match its certificate is refused here, before anything
    /// is sent).
    pub fn open(options: DeviceOptions) -> Result<Self, DeviceError> {
        let mut image = DeviceImage::open(&options.image, options.nvs_keys.as_ref())?;
        // A rotation a crash or power cut interrupted: finish its commit, or drop a candidate
        // whose trial never ended (the rotation starts again when it is triggered again).
        let rotation_note = image.recover_rotation()?;
        let loaded = image.load_identity(options.now_unix.unwrap_or_else(unix_now))?;
        let queue_path = options
            .queue_image
            .clone()
            .unwrap_or_else(|| default_queue_path(&options.image));
        let queue = QueueImage::open_or_create(&queue_path, options.nvs_keys.as_ref())?;
        let target = match options.broker {
            Some(target) => target,
            None => BrokerTarget::aws(loaded.endpoint.clone(), options.alpn),
        };
        let mut config = DeviceConfig::new(&loaded.device_id, &options.firmware_version)?;
        let session_options = SessionOptions::new(
            target,
            loaded.identity.clone(),
            options.roots,
            loaded.device_id.clone(),
            &options.firmware_version,
        );
        let mqtt_options = session_options.mqtt_options()?;
        config.session.keep_alive_secs =
            u16::try_from(session_options.keep_alive.as_secs()).unwrap_or(u16::MAX);
        if let Some(tune) = options.tune {
            tune(&mut config.session);
        }
        config.certificate = loaded.certificate;
        config.set_press_queue_capacity(options.queue_capacity);
        config.heartbeat_override_ms = options
            .heartbeat
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        config.rotation = options.rotation.clone();
        if let (Some(rotation), true) = (config.rotation.as_mut(), options.rotation_local) {
            rotation.topic_prefix = acorn_mqtt::provisioning::local_prefix(&loaded.device_id);
        }
        let rotation = rotate::RotationDriver::new(
            loaded.endpoint.clone(),
            loaded.issuer.clone(),
            options.rotation_ca.clone(),
        );
        let core = Core::with_press_store(config, image, queue, StdRng::from_entropy())?;
        let mut notes = loaded.warnings;
        notes.extend(rotation_note);
        notes.extend(core.settings_warning().map(str::to_owned));
        notes.extend(core.press_queue_warnings().iter().cloned());
        Ok(Self {
            core,
            session_options,
            mqtt_options,
            notes,
            rotation,
        })
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        self.core.device_id()
    }

    /// The broker address (`host:port`).
    pub fn address(&self) -> String {
        self.session_options.address()
    }

    /// The settings loaded from the image.
    pub fn settings(&self) -> DeviceSettings {
        self.core.settings()
    }

    /// Warnings found while loading (`clock not synced`, certificate expiring soon, unreadable
    /// settings, an unreadable press queue or records in it).
    pub fn warnings(&self) -> &[String] {
        &self.notes
    }

    /// The image's path.
    pub fn image_path(&self) -> &Path {
        self.core.store().path()
    }

    /// The press queue image's path.
    pub fn queue_image_path(&self) -> &Path {
        self.core.press_store().path()
    }

    /// How many presses from before this start the queue image holds: they are delivered
    /// first, oldest first.
    pub fn recovered_presses(&self) -> usize {
        self.core.recovered_presses()
    }

    /// The press queue now (before [`Device::spawn`]: what the queue image holds).
    pub fn press_queue(&self) -> PressQueue {
        press_queue(&self.core)
    }

    /// Starts the runtime on the current tokio runtime.
    pub fn spawn(self) -> DeviceHandle {
        let (requests_tx, requests_rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(4096);
        let runtime = runtime::Runtime::new(self, events.clone());
        let task = tokio::spawn(runtime.run(requests_rx));
        DeviceHandle {
            requests: requests_tx,
            events,
            task: Some(task),
        }
    }
}

/// Controls a running device.
pub struct DeviceHandle {
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<DeviceEvent>,
    task: Option<JoinHandle<()>>,
}

impl DeviceHandle {
    /// Reports a press of button `button` (battery level in percent, if known).
    pub async fn press(
        &self,
        button: &str,
        battery: Option<u8>,
    ) -> Result<PressOutcome, DeviceError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Press {
                button: button.to_owned(),
                battery,
                reply,
            })
            .await
            .map_err(|_| DeviceError::Stopped)?;
        rx.await.map_err(|_| DeviceError::Stopped)?
    }

    /// The current status, counters and settings.
    pub async fn snapshot(&self) -> Result<Snapshot, DeviceError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Snapshot { reply })
            .await
            .map_err(|_| DeviceError::Stopped)?;
        rx.await.map_err(|_| DeviceError::Stopped)
    }

    /// The presses waiting for their PUBACK and the dropped-press counter.
    pub async fn press_queue(&self) -> Result<PressQueue, DeviceError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::PressQueue { reply })
            .await
            .map_err(|_| DeviceError::Stopped)?;
        rx.await.map_err(|_| DeviceError::Stopped)
    }

    /// Starts a certificate rotation (it waits for the connection when offline); the outcome
    /// is answered on the status topic and logged.
    pub async fn rotate(&self) -> Result<Result<(), RotateError>, DeviceError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Rotate { reply })
            .await
            .map_err(|_| DeviceError::Stopped)?;
        rx.await.map_err(|_| DeviceError::Stopped)
    }

    /// Subscribes to the runtime's events (from now on).
    pub fn events(&self) -> broadcast::Receiver<DeviceEvent> {
        self.events.subscribe()
    }

    /// Whether the runtime task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Publishes `offline` (when connected), disconnects cleanly and waits for the runtime to
    /// end (bounded: a few seconds at most).
    pub async fn shutdown(mut self) -> Result<(), DeviceError> {
        // A runtime that already ended has nothing to shut down.
        let _ = self.requests.send(Request::Shutdown).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn press_queue(core: &Core) -> PressQueue {
    PressQueue {
        presses: core.queued_presses().cloned().collect(),
        dropped: core.dropped_presses(),
    }
}
