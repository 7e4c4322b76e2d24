//! What the device reports to its driver for logs, a serial console or an application:
//! status changes, deliveries, answered and rejected requests, health.
//!
//! Each [`Notice`] has a [`Level`] and a one-line `Display` text in plain language; the
//! driver logs it (tracing on Linux, esp-println on the chip) and may react to the typed
//! variant (the Linux runtime forwards most of them as its `DeviceEvent`s).

use alloc::string::String;
use core::fmt;

use acorn_mqtt::{ConnectionStatus, DeviceSettings, DropReason, HealthReport, PublishId};

use crate::presses::PressId;

/// How loud a notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something failed or was refused; the device carries on.
    Warn,
}

/// Something that happened, for the driver to log or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The connection status changed (an `Error` carries the diagnosis and the next attempt).
    Status(ConnectionStatus),
    /// A backoff sleep began: the next CONNECT is due in `in_ms`.
    NextAttempt {
        /// Milliseconds until the next attempt.
        in_ms: u64,
    },
    /// The broker refused a subscription (SUBACK failure).
    SubscribeRefused,
    /// A press was queued for delivery.
    PressQueued {
        /// The button's RF id.
        button: String,
        /// Its battery level, when known.
        battery: Option<u8>,
        /// Its `pressId`.
        press_id: PressId,
    },
    /// A press was acknowledged by the broker and left the press store.
    PressDelivered {
        /// Its `pressId`.
        press_id: PressId,
    },
    /// The press queue was full: its oldest press was dropped (and counted).
    PressDropped {
        /// The dropped press.
        press_id: PressId,
        /// Its button.
        button: String,
    },
    /// The press store could not take a press (it is kept in RAM only) or a counter.
    PressNotStored {
        /// The press.
        press_id: PressId,
        /// What the store said.
        reason: String,
    },
    /// A delivered press could not be erased from the store: after a restart it is sent
    /// again, under the same `pressId`.
    PressNotRemoved {
        /// The press.
        press_id: PressId,
        /// What the store said.
        reason: String,
    },
    /// Presses from before this start are in the store: they go first, oldest first.
    PressesRecovered {
        /// How many.
        count: usize,
    },
    /// A certificate rotation began.
    RotationStarted {
        /// What started it.
        trigger: crate::rotation::RotationTrigger,
    },
    /// The new certificate was accepted by `RegisterThing`: the trial connection begins.
    RotationTrial,
    /// The new certificate is the active one.
    RotationCommitted {
        /// Its id.
        certificate_id: String,
    },
    /// The new certificate was dropped; the old one is in use.
    RotationRolledBack {
        /// Why.
        reason: String,
    },
    /// A rotation failed before a new certificate was stored; it is retried later.
    RotationFailed {
        /// Why.
        reason: String,
    },
    /// An answer or input the rotation did not wait for (ignored).
    RotationIgnored {
        /// What it was.
        what: String,
    },
    /// A heartbeat status went out.
    HeartbeatSent {
        /// Presses waiting in the queue.
        queued_presses: usize,
    },
    /// A press of the same button within the cooldown was not reported.
    PressCooledDown {
        /// The button's RF id.
        button: String,
        /// The `cooldownMs` setting in effect.
        cooldown_ms: u32,
    },
    /// A QoS 1 message (press or reply) was acknowledged by the broker.
    Delivered(PublishId),
    /// A queued message was dropped.
    Dropped {
        /// The message.
        id: PublishId,
        /// Why.
        reason: DropReason,
    },
    /// A settings update was applied and saved.
    SettingsApplied {
        /// The settings now in effect.
        settings: DeviceSettings,
        /// The update's `requestId`, if it had one.
        request_id: Option<String>,
    },
    /// A valid settings update could not be saved, so it was not applied (and answered with
    /// an error).
    SettingsNotSaved {
        /// What the settings store said.
        reason: String,
    },
    /// A command was answered (`ping`, `get-status`, `reconnect`).
    Answered {
        /// The command.
        command: &'static str,
        /// Its request id.
        request_id: String,
    },
    /// An inbound message was rejected (and answered with an error status).
    Rejected {
        /// The topic it came on.
        topic: String,
        /// Its size in bytes.
        bytes: usize,
        /// Why, in plain language (also the reply's `error`).
        reason: String,
    },
    /// A reply could not be queued (it is not sent).
    ReplyNotSent {
        /// Why.
        reason: String,
    },
    /// An inbound message arrived while shutting down: not processed.
    IgnoredWhileStopping {
        /// The topic it came on.
        topic: String,
    },
    /// The periodic health report (every 30 s by default).
    Health(HealthReport),
    /// The `reconnect` command's reply is delivered (or its wait ran out): reconnecting now.
    Reconnecting,
    /// Shutdown began.
    ShuttingDown,
    /// The `offline` status was acknowledged by the broker.
    OfflineDelivered,
    /// The `offline` status was not acknowledged in time (or the connection dropped first).
    OfflineNotAcknowledged,
}

impl Notice {
    /// How loud it is.
    pub fn level(&self) -> Level {
        match self {
            Notice::Status(ConnectionStatus::Error(_))
            | Notice::SubscribeRefused
            | Notice::Dropped { .. }
            | Notice::SettingsNotSaved { .. }
            | Notice::Rejected { .. }
            | Notice::ReplyNotSent { .. }
            | Notice::PressDropped { .. }
            | Notice::PressNotStored { .. }
            | Notice::PressNotRemoved { .. }
            | Notice::RotationRolledBack { .. }
            | Notice::RotationFailed { .. }
            | Notice::RotationIgnored { .. }
            | Notice::OfflineNotAcknowledged => Level::Warn,
            Notice::Status(ConnectionStatus::Connecting)
            | Notice::NextAttempt { .. }
            | Notice::PressCooledDown { .. }
            | Notice::Delivered(_)
            | Notice::PressDelivered { .. }
            | Notice::HeartbeatSent { .. }
            | Notice::IgnoredWhileStopping { .. } => Level::Debug,
            Notice::Status(_)
            | Notice::PressQueued { .. }
            | Notice::PressesRecovered { .. }
            | Notice::RotationStarted { .. }
            | Notice::RotationTrial
            | Notice::RotationCommitted { .. }
            | Notice::SettingsApplied { .. }
            | Notice::Answered { .. }
            | Notice::Health(_)
            | Notice::Reconnecting
            | Notice::ShuttingDown
            | Notice::OfflineDelivered => Level::Info,
        }
    }
}

fn drop_reason(reason: DropReason) -> &'static str {
    match reason {
        DropReason::QueueFull => "the offline queue was full and it was the oldest",
        DropReason::Expired => "it expired before it could be sent",
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Status(ConnectionStatus::Error(reason)) => f.write_str(reason),
            Notice::Status(status) => write!(f, "{status}"),
            Notice::NextAttempt { in_ms } => write!(
                f,
                "next connect attempt in {}.{:03} s",
                in_ms / 1000,
                in_ms % 1000
            ),
            Notice::SubscribeRefused => f.write_str(
                "the broker refused a subscription: the device policy must allow its settings and commands topics",
            ),
            Notice::PressQueued {
                button,
                battery,
                press_id,
            } => {
                write!(f, "button press queued: {button}")?;
                if let Some(level) = battery {
                    write!(f, " (battery {level} %)")?;
                }
                write!(f, ", pressId {press_id}")
            }
            Notice::PressDelivered { press_id } => {
                write!(f, "press delivered (PUBACK): pressId {press_id}")
            }
            Notice::PressDropped { press_id, button } => write!(
                f,
                "press queue full: the oldest press (pressId {press_id}, button {button}) was dropped and counted in droppedPresses"
            ),
            Notice::PressNotStored { press_id, reason } => write!(
                f,
                "press {press_id} is kept in RAM only (a restart loses it): {reason}"
            ),
            Notice::PressNotRemoved { press_id, reason } => write!(
                f,
                "delivered press {press_id} stays in the press store and is sent again after a restart (same pressId): {reason}"
            ),
            Notice::PressesRecovered { count } => write!(
                f,
                "{count} queued presses from before the restart are delivered first"
            ),
            Notice::RotationStarted { trigger } => {
                f.write_str("certificate rotation started (")?;
                match trigger {
                    crate::rotation::RotationTrigger::Command { request_id } => {
                        write!(f, "rotate-certificate command, requestId {request_id}")?
                    }
                    crate::rotation::RotationTrigger::Expiry { days_left } => {
                        write!(f, "the certificate has {days_left} days left")?
                    }
                    crate::rotation::RotationTrigger::Local => f.write_str("asked locally")?,
                }
                f.write_str("): making a new key")
            }
            Notice::RotationTrial => f.write_str(
                "certificate rotation: the new certificate is registered; trying a connection with it",
            ),
            Notice::RotationCommitted { certificate_id } => write!(
                f,
                "certificate rotation committed: certificate {certificate_id} is in use"
            ),
            Notice::RotationRolledBack { reason } => write!(
                f,
                "certificate rotation rolled back, the old certificate is in use: {reason}"
            ),
            Notice::RotationFailed { reason } => {
                write!(f, "certificate rotation failed (retried later): {reason}")
            }
            Notice::RotationIgnored { what } => {
                write!(f, "certificate rotation: ignored {what}")
            }
            Notice::HeartbeatSent { queued_presses } => {
                write!(f, "heartbeat sent ({queued_presses} presses queued)")
            }
            Notice::PressCooledDown {
                button,
                cooldown_ms,
            } => write!(
                f,
                "press of {button} within the cooldown ({cooldown_ms} ms): not reported"
            ),
            Notice::Delivered(id) => write!(f, "delivered (PUBACK): message {}", id.0),
            Notice::Dropped { id, reason } => write!(
                f,
                "queued message {} dropped: {}",
                id.0,
                drop_reason(*reason)
            ),
            Notice::SettingsApplied {
                settings,
                request_id,
            } => {
                write!(f, "settings applied and saved: {settings}")?;
                if let Some(id) = request_id {
                    write!(f, " (requestId {id})")?;
                }
                Ok(())
            }
            Notice::SettingsNotSaved { reason } => write!(f, "settings not applied: {reason}"),
            Notice::Answered {
                command,
                request_id,
            } => write!(f, "command {command} answered (requestId {request_id})"),
            Notice::Rejected {
                topic,
                bytes,
                reason,
            } => write!(
                f,
                "rejected inbound message on {topic} ({bytes} bytes): {reason}"
            ),
            Notice::ReplyNotSent { reason } => write!(f, "could not queue a reply: {reason}"),
            Notice::IgnoredWhileStopping { topic } => {
                write!(f, "message on {topic} not processed: shutting down")
            }
            Notice::Health(report) => {
                let stats = &report.stats;
                write!(
                    f,
                    "health: {}, healthy {}, queued {}, in flight {}, delivered {}, dropped {}, connects {}, failures {}",
                    report.status,
                    report.healthy,
                    stats.queued,
                    stats.in_flight,
                    stats.delivered,
                    stats.dropped_full + stats.expired,
                    stats.connects,
                    stats.failures
                )?;
                if let Some(ms) = report.connected_for_ms {
                    write!(f, ", connected for {} s", ms / 1000)?;
                }
                if let Some(ms) = report.broker_silent_ms {
                    write!(f, ", broker silent for {} s", ms / 1000)?;
                }
                if stats.slow_mode {
                    f.write_str(", slow retry")?;
                }
                Ok(())
            }
            Notice::Reconnecting => f.write_str("reconnecting, as the reconnect command asked"),
            Notice::ShuttingDown => f.write_str("shutting down"),
            Notice::OfflineDelivered => f.write_str("offline status delivered"),
            Notice::OfflineNotAcknowledged => {
                f.write_str("the offline status was not acknowledged in time")
            }
        }
    }
}
