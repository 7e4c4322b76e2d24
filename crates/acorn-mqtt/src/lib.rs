//! # acorn-mqtt
//!
//! The MQTT layer of the Acorn Pups device, `#![no_std]` + `alloc`: the device's topics, its
//! JSON messages (field names exactly as the seed design), AWS IoT Core limits checked before
//! anything is sent, inbound validation, and the **session policy as a sans-IO state machine**
//! (backoff with full jitter that never gives up, health checks, a bounded offline queue).
//!
//! No sockets, clocks or randomness inside: the driver (the host agent over rumqttc, or
//! firmware over ESP-MQTT) passes the time in milliseconds and a random source, feeds
//! [`Event`]s, and carries out [`Action`]s. See `docs/protocol.md` for the wire protocol.
//!
//! ## Driving a session
//!
//! ```
//! use acorn_mqtt::{Action, ButtonPressMessage, Event, PublishRequest, Session, SessionConfig, Topics};
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let topics = Topics::new("acorn-0001")?;
//! let mut session = Session::new(SessionConfig::for_device(&topics), StdRng::seed_from_u64(7))?;
//!
//! // A press made while offline is queued (QoS 1) and sent after the connect.
//! let press = ButtonPressMessage::new("acorn-0001", "rf-5a3c", 1_795_884_127_123, Some(87))?;
//! let id = session.publish(0, PublishRequest::qos1(topics.button_press(), press.to_json()?))?;
//!
//! session.handle(0, Event::Start);
//! // A real driver loops: carry out actions, then wait for the transport or for
//! // `session.poll_timeout()` and call `session.handle(now, Event::Tick)`.
//! while let Some(action) = session.poll_action() {
//!     match action {
//!         Action::Connect { .. } => { /* open TLS + send CONNECT, then report the result: */ }
//!         Action::ReportStatus(status) => println!("status: {status}"),
//!         _ => {}
//!     }
//! }
//! session.handle(40, Event::ConnAck { session_present: false });
//! let actions: Vec<Action> = session.drain_actions().collect();
//! assert!(matches!(&actions[1], Action::Subscribe(topics) if topics.len() == 2));
//! assert!(matches!(&actions[2], Action::Publish(p) if p.id == id));
//!
//! // The transport's PUBACK for that packet:
//! session.handle(55, Event::PublishAcked(id));
//! assert_eq!(session.poll_action(), Some(Action::Delivered(id)));
//!
//! // The broker kicks us: the session backs off with full jitter, at least 1 s after the
//! // previous CONNECT, and tells the driver when to wake up.
//! session.handle(5_000, Event::Disconnected {
//!     cause: acorn_mqtt::DisconnectCause::Broker,
//!     diagnosis: "connection closed by peer".into(),
//! });
//! let wake = session.poll_timeout().expect("a timer runs while started");
//! assert!(wake >= 5_000 && wake <= 6_000);
//! # Ok::<(), acorn_mqtt::Error>(())
//! ```
//!
//! ## Driving it from tokio
//!
//! ```text
//! loop {
//!     while let Some(action) = session.poll_action() { carry_out(action).await }
//!     let deadline = session.poll_timeout();
//!     tokio::select! {
//!         ev = transport_event() => session.handle(now_ms(), ev),
//!         msg = app_rx.recv() => { session.publish(now_ms(), msg)?; }
//!         _ = sleep_until(deadline) => session.handle(now_ms(), Event::Tick),
//!     }
//! }
//! ```
//!
//! The transport assigns MQTT packet ids; the driver maps each packet id to the [`PublishId`]
//! of the [`Action::Publish`] it sent and reports [`Event::PublishAcked`] with it. The session
//! re-sends unacknowledged messages after a reconnect itself, so the transport must not
//! (with rumqttc: drop the old event loop's pending state on reconnect).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod backoff;
pub mod diagnosis;
mod error;
pub mod inbound;
pub mod limits;
pub mod messages;
pub mod provisioning;
mod queue;
pub mod session;
pub mod settings;
pub mod status;
pub mod timestamp;
pub mod topics;

pub use backoff::{BackoffConfig, Delay};
pub use diagnosis::{ClientCertRejection, Diagnosis};
pub use error::Error;
pub use inbound::{parse_inbound, request_id_of, CommandKind, CommandMessage, Inbound};
pub use limits::QoS;
pub use messages::{
    ButtonPressMessage, CommandResult, DeviceStatus, DeviceStatusMessage, Diagnostics, Heartbeat,
    RotationState,
};
pub use queue::{OutgoingMessage, PublishId};
pub use session::{
    connack_meaning, Action, DisconnectCause, DropReason, Event, Publish, PublishRequest, Session,
    SessionConfig,
};
pub use settings::{
    DeviceSettings, SettingsUpdate, DEFAULT_HEARTBEAT_SECONDS, HEARTBEAT_SECONDS_RANGE,
};
pub use status::{ConnectionStatus, HealthReport, Stats};
pub use timestamp::{format_timestamp, parse_timestamp};
pub use topics::{
    check_device_id, service_client_id, Access, InboundTopic, Topics, DEVICE_POLICY,
    SERVICE_CLIENT_PREFIX, TOPIC_BUTTON_PRESS, TOPIC_COMMANDS, TOPIC_DEVICE_STATUS, TOPIC_SETTINGS,
};
