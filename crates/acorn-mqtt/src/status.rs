//! What the session reports: the seed's `ConnectionStatus`, counters and health reports.

use alloc::string::String;
use core::fmt;

/// The connection state, as the seed names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Not connected and not trying right now (before start, after stop, or waiting to reconnect
    /// after a requested reconnect).
    Disconnected,
    /// A CONNECT is under way.
    Connecting,
    /// CONNACK received; the session is up.
    Connected,
    /// The last attempt or connection failed; the text says why in plain language and when the
    /// next attempt is (including whether the session is in slow-retry mode).
    Error(String),
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionStatus::Disconnected => f.write_str("disconnected"),
            ConnectionStatus::Connecting => f.write_str("connecting"),
            ConnectionStatus::Connected => f.write_str("connected"),
            ConnectionStatus::Error(reason) => write!(f, "error: {reason}"),
        }
    }
}

/// Counters since the session was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// CONNECTs requested.
    pub connect_attempts: u64,
    /// CONNACKs accepted.
    pub connects: u64,
    /// Failed attempts and lost connections, in all.
    pub failures: u64,
    /// Consecutive failures without a connection that stayed up (reset after 30 s up).
    pub consecutive_failures: u32,
    /// Whether the session is retrying at the slow cadence.
    pub slow_mode: bool,
    /// QoS 1 messages waiting to be sent.
    pub queued: usize,
    /// QoS 1 messages sent and not yet acknowledged.
    pub in_flight: usize,
    /// QoS 1 messages acknowledged.
    pub delivered: u64,
    /// Messages dropped because the queue was full (oldest first).
    pub dropped_full: u64,
    /// Messages dropped because they expired before they could be sent.
    pub expired: u64,
    /// Subscriptions the broker refused (SUBACK failure).
    pub subscribe_refusals: u64,
    /// The last failure, in plain language.
    pub last_error: Option<String>,
}

impl Stats {
    /// The counters as the `diagnostics` object of a `get-status` reply. The agent adds
    /// `uptime_ms` (and `connected_for_ms` from [`crate::Session::connected_for_ms`]).
    pub fn to_diagnostics(&self) -> crate::Diagnostics {
        crate::Diagnostics {
            uptime_ms: None,
            connected_for_ms: None,
            connects: Some(self.connects),
            connect_attempts: Some(self.connect_attempts),
            queued_messages: Some(self.queued as u64),
            dropped_messages: Some(self.dropped_full),
            expired_messages: Some(self.expired),
            last_error: self.last_error.clone(),
        }
    }
}

/// Emitted every health interval (30 s): what the agent logs as its health line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Session time of the check, ms.
    pub now_ms: u64,
    /// Connection status at the check.
    pub status: ConnectionStatus,
    /// Connected and the broker answered within two keepalive intervals.
    pub healthy: bool,
    /// How long the connection has been up, when connected.
    pub connected_for_ms: Option<u64>,
    /// Time since the broker was last heard from (CONNACK, PINGRESP, PUBACK, message), when
    /// connected.
    pub broker_silent_ms: Option<u64>,
    /// When the next CONNECT is due, when waiting to reconnect.
    pub next_connect_at_ms: Option<u64>,
    /// Counters.
    pub stats: Stats,
}
