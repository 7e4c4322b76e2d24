//! Session parameters and their validation.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::backoff::BackoffConfig;
use crate::limits::{check_client_id, check_keep_alive, check_topic_filter};
use crate::topics::Topics;
use crate::Error;

/// Session parameters. [`SessionConfig::for_device`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// MQTT client id (the device id / thing name), 1..=128 bytes.
    pub client_id: String,
    /// Keepalive in seconds, 30..=1200 (seed: 60).
    pub keep_alive_secs: u16,
    /// Topic filters subscribed (at QoS 1) whenever the broker reports no stored session.
    pub subscriptions: Vec<String>,
    /// Backoff and reconnect timing.
    pub backoff: BackoffConfig,
    /// Health check period, ms (seed: 30 s).
    pub health_interval_ms: u64,
    /// Time allowed from CONNECT to CONNACK, ms (seed's network timeout: 30 s).
    pub connect_timeout_ms: u64,
    /// Most QoS 1 messages waiting to be sent; the oldest is dropped beyond it.
    pub queue_capacity: usize,
    /// Most QoS 1 messages sent and unacknowledged at once.
    pub max_in_flight: usize,
    /// Most publishes sent per second on one connection (AWS IoT Core: 100).
    pub max_publishes_per_sec: u32,
    /// Default time a QoS 1 message may wait before it is dropped, ms; `None` = forever.
    pub message_ttl_ms: Option<u64>,
}

impl SessionConfig {
    /// Defaults for a device: client id = device id, subscribed to its settings and commands
    /// topics, keepalive 60 s, 100 queued messages, 10 in flight, 24 h message lifetime.
    pub fn for_device(topics: &Topics) -> Self {
        SessionConfig {
            client_id: topics.device_id().to_string(),
            keep_alive_secs: 60,
            subscriptions: topics
                .subscriptions()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            backoff: BackoffConfig::default(),
            health_interval_ms: 30_000,
            connect_timeout_ms: 30_000,
            queue_capacity: 100,
            max_in_flight: 10,
            max_publishes_per_sec: crate::limits::MAX_PUBLISHES_PER_SEC,
            message_ttl_ms: Some(24 * 3_600_000),
        }
    }

    /// Checks every limit and parameter.
    pub fn validate(&self) -> Result<(), Error> {
        check_client_id(&self.client_id)?;
        check_keep_alive(self.keep_alive_secs)?;
        for s in &self.subscriptions {
            check_topic_filter(s)?;
        }
        self.backoff.validate()?;
        let what = if self.health_interval_ms == 0 {
            "health_interval_ms must be > 0"
        } else if self.connect_timeout_ms == 0 {
            "connect_timeout_ms must be > 0"
        } else if self.queue_capacity == 0 {
            "queue_capacity must be >= 1"
        } else if self.max_in_flight == 0 {
            "max_in_flight must be >= 1"
        } else if self.max_publishes_per_sec == 0
            || self.max_publishes_per_sec > crate::limits::MAX_PUBLISHES_PER_SEC
        {
            "max_publishes_per_sec must be 1..=100: AWS IoT Core allows 100 publishes per second per connection"
        } else {
            return Ok(());
        };
        Err(Error::Config { what })
    }
}
