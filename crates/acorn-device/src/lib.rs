//! # acorn-device
//!
//! The Acorn Pups device application, `#![no_std]` + `alloc`, as a **sans-IO state machine**:
//! what the device does with a button press, a settings update or a command, when it says
//! `online` and `offline`, and how it answers — the same code in the ESP32-C3 firmware and in
//! the Linux runtime (`acorn device run`).
//!
//! - **Presses** get a stable `pressId` and are written to a [`PressStore`] (an NVS partition
//!   of their own on a device) before the press is answered; they are sent at QoS 1 in order,
//!   now, after the next connect or after the next start (oldest first, before new ones), and
//!   leave the store on their PUBACK. The queue is bounded (256 by default): when full, the
//!   oldest is dropped and counted (`droppedPresses`). Presses of one button within the
//!   `cooldownMs` setting are reported once (a bounded table).
//! - **Heartbeat**: every `heartbeatSeconds` (setting, default 300) while connected, a status
//!   with uptime, memory, signal, certificate days left, queue depth, dropped presses,
//!   reconnects, the last failure and the connect time ([`acorn_mqtt::Heartbeat`]).
//! - **`online`** is announced on every connection once the device can receive: after the
//!   SUBACK of its resubscription, or at once when the broker kept the session.
//! - **Settings** updates are validated ([`acorn_mqtt::parse_inbound`]), saved through a
//!   [`SettingsStore`], applied, and answered with the settings in effect.
//! - **Commands**: `ping` and `get-status` (settings and diagnostics) are answered;
//!   `reconnect` is answered, and once the reply's PUBACK arrives (or 5 s pass) the
//!   connection is dropped and made again.
//! - **Bad messages** (wrong topic, over 128 KB, bad JSON, out of range) get an error status
//!   reply that echoes a readable `requestId`, and a [`Notice`]; nothing is half-applied.
//! - **Shutdown** sends `offline` and waits (at most 3 s) for its PUBACK, then disconnects
//!   cleanly. The same `offline` status is the last will of every CONNECT.
//! - **Health**: the session's report every 30 s comes out as [`Notice::Health`].
//!
//! The connection policy (backoff with full jitter, the one-CONNECT-per-second floor, the
//! offline queue, health checks) is [`acorn_mqtt::Session`]'s; this crate drives one and adds
//! the application. There are no sockets, clocks, threads or random sources here: every input
//! carries the time ([`Now`]: monotonic ms for timers, Unix ms for message timestamps), the
//! random source for the jitter is the caller's, and every output is an [`Action`].
//!
//! ## One press, from CONNECT to PUBACK
//!
//! ```
//! use acorn_device::{Action, Device, DeviceConfig, MemorySettings, Now, PressOutcome, Tag, TransportEvent};
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let config = DeviceConfig::new("acorn-0001", "1.0.0")?;
//! let mut device = Device::new(config, MemorySettings::default(), StdRng::seed_from_u64(7))?;
//!
//! // Start: the driver is asked to connect (the last will is `offline`).
//! device.start(Now::new(0, 1_795_884_120_000));
//! let connect = device.drain_actions().find_map(|a| match a {
//!     Action::Connect(c) => Some(c),
//!     _ => None,
//! });
//! assert_eq!(connect.map(|c| c.client_id), Some("acorn-0001".to_owned()));
//!
//! // The broker kept our session: no SUBSCRIBE needed, so `online` goes out at once.
//! device.transport(Now::new(40, 1_795_884_120_040), TransportEvent::ConnAck { session_present: true });
//! let online = device.drain_actions().find_map(|a| match a {
//!     Action::Publish(p) => Some(p),
//!     _ => None,
//! });
//! assert_eq!(online.map(|p| p.tag), Some(Tag::Online));
//!
//! // A press becomes a QoS 1 PUBLISH with the seed's JSON and the press's stable id.
//! let outcome = device.press(Now::new(7_163, 1_795_884_127_123), "rf-5a3c", Some(87))?;
//! let PressOutcome::Queued(press_id) = outcome else { unreachable!() };
//! let publish = device
//!     .drain_actions()
//!     .find_map(|a| match a {
//!         Action::Publish(p) => Some(p),
//!         _ => None,
//!     })
//!     .expect("the press is sent at once while connected");
//! assert_eq!(publish.topic, "acorn-pups/button-press/acorn-0001");
//! assert_eq!(
//!     String::from_utf8(publish.payload.clone()).unwrap(),
//!     format!(r#"{{"deviceId":"acorn-0001","buttonRfId":"rf-5a3c","timestamp":"2026-11-28T16:42:07.123Z","batteryLevel":87,"pressId":"{press_id}"}}"#)
//! );
//!
//! // The transport reports the PUBACK with the publish's tag.
//! device.transport(Now::new(7_180, 1_795_884_127_140), TransportEvent::PubAck(publish.tag));
//! assert!(device
//!     .drain_actions()
//!     .any(|a| matches!(a, Action::Notice(acorn_device::Notice::PressDelivered { .. }))));
//!
//! // The same button again within the 1 s default cooldown is reported once.
//! let again = device.press(Now::new(7_500, 1_795_884_127_500), "rf-5a3c", None)?;
//! assert_eq!(again, PressOutcome::CooledDown);
//! # Ok::<(), acorn_device::Error>(())
//! ```
//!
//! ## The driver loop
//!
//! A runtime (tokio + rumqttc on Linux, embassy + the embedded transport on the chip) runs:
//!
//! ```text
//! let mut device = Device::new(config, store, rng)?;   // identity loaded by the driver
//! device.start(now());
//! 'run: loop {
//!     while let Some(action) = device.poll_action() {
//!         match action {
//!             Action::Connect(c)     => transport.open(c),          // client id, keepalive, will
//!             Action::Subscribe(f)   => transport.subscribe(f),     // QoS 1; on failure report
//!                                                                   // TransportEvent::Disconnected
//!             Action::Publish(p)     => transport.publish(p),       // remember p.tag by packet id
//!             Action::Disconnect     => transport.close(),          // DISCONNECT, bounded
//!             Action::Notice(n)      => log(n.level(), &n),         // or show it
//!             Action::ShutdownComplete => break 'run,
//!             _ => {}
//!         }
//!     }
//!     select! {
//!         ev  = transport.next()   => device.transport(now(), ev),  // CONNACK, PUBACK(tag), ...
//!         req = presses.next()     => { device.press(now(), &req.button, req.battery)?; }
//!         _   = stop_signal()      => device.shutdown(now()),
//!         _   = sleep_until(device.poll_timeout()) => device.tick(now()),
//!     }
//! }
//! ```
//!
//! The transport must not reconnect or re-send on its own: the session decides when to
//! connect and re-sends unacknowledged messages after a reconnect.
//!
//! ## Stores
//!
//! Settings ([`SettingsStore`]) and presses ([`PressStore`]) are kept by the driver's stores:
//! with the `nvs` feature both are implemented for an `acorn_nvs::Nvs` partition (on the chip
//! through esp-storage, on Linux an image file; see [`presses`] for the layout);
//! [`MemorySettings`] and [`MemoryPresses`] keep them in RAM.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod config;
mod cooldown;
mod device;
mod error;
pub mod io;
pub mod notice;
pub mod presses;
pub mod rotation;
pub mod store;

pub use config::{CertificateFacts, DeviceConfig, HostFacts};
pub use device::{Device, Snapshot};
pub use error::Error;
pub use io::{Action, Connect, LastWill, Now, PressOutcome, Publish, Tag, TransportEvent};
pub use notice::{Level, Notice};
#[cfg(feature = "nvs")]
pub use presses::NvsPressError;
pub use presses::{MemoryPresses, PressId, PressStore, QueuedPress, StoredQueue, PRESS_NAMESPACE};
#[cfg(feature = "nvs")]
pub use store::NvsSettingsError;
pub use store::{
    decode_settings, encode_settings, MemorySettings, SettingsStore, UnreadableSettings,
    SETTINGS_KEY, SETTINGS_NAMESPACE,
};

/// Re-export of `acorn-mqtt`, whose types (settings, status, session configuration) appear in
/// this crate's API.
pub use acorn_mqtt;
