//! The session policy as a sans-IO state machine.
//!
//! The driver (the host agent over rumqttc, or firmware over ESP-MQTT) owns the sockets, the
//! clock and the random source. It feeds [`Event`]s and the current time into
//! [`Session::handle`], submits messages with [`Session::publish`], carries out every
//! [`Action`] from [`Session::poll_action`], and calls `handle(now, Event::Tick)` once
//! [`Session::poll_timeout`] is reached. Nothing in here blocks, sleeps, reads a clock or
//! touches the network.
//!
//! # Policy
//! - **Backoff** ([`BackoffConfig`]): after a failed connect *or* a lost connection, sleep
//!   `random(0, min(60 s, 1 s · 2^(n-1)))` (full jitter), `n` = consecutive failures. A
//!   connection that stays up 30 s resets `n`. From the 10th consecutive failure on, sleep
//!   `random(5 min, 10 min)` and say so in the status: never give up.
//! - **CONNECT floor**: a CONNECT is never sent less than 1 s after the previous one (AWS IoT
//!   Core allows one per second per client id). The jittered sleep is drawn from the moment of
//!   failure and the connect time is then `max(failure + sleep, previous CONNECT + 1 s)`, so the
//!   jitter keeps its full spread and the floor holds exactly.
//! - **Connect timeout**: no CONNACK within `connect_timeout_ms` (30 s) counts as a failure.
//! - **Health**: every `health_interval_ms` (30 s) a [`HealthReport`] is emitted; a connection
//!   whose broker has been silent for two keepalive intervals is dropped and retried, as is one
//!   whose driver reports [`Event::PingTimeout`].
//! - **Queue**: QoS 1 messages are queued in order while disconnected (oldest dropped when
//!   full, each with an expiry), at most `max_in_flight` are unacknowledged at once, and
//!   unacknowledged ones are re-sent first after a reconnect. QoS 0 messages are never queued.
//! - **Rate**: at most `max_publishes_per_sec` (100, the AWS limit) publishes in any second.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use rand_core::RngCore;

use crate::limits::{check_payload, check_topic, QoS};
use crate::queue::{OfflineQueue, OutgoingMessage, PublishId};
use crate::status::{ConnectionStatus, HealthReport, Stats};
use crate::Error;

mod config;
mod io;

pub use config::SessionConfig;
pub use io::{Action, DisconnectCause, DropReason, Event, Publish, PublishRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Waiting {
        until: u64,
    },
    Connecting {
        deadline: u64,
    },
    Connected {
        since: u64,
        stable: bool,
        last_heard: u64,
    },
    Stopped,
}

/// The session state machine. `R` is the injected random source (for jitter).
#[derive(Debug)]
pub struct Session<R> {
    config: SessionConfig,
    rng: R,
    state: State,
    status: ConnectionStatus,
    now: u64,
    last_connect_at: Option<u64>,
    next_health_at: Option<u64>,
    next_id: u64,
    recent_sends: VecDeque<u64>,
    rate_wake: Option<u64>,
    queue: OfflineQueue,
    in_flight: Vec<OutgoingMessage>,
    actions: VecDeque<Action>,
    stats: Stats,
}

/// What an MQTT 3.1.1 CONNACK return code means and what to do about it, in plain words: the
/// one text for every user (the session's status, the transports' diagnoses).
pub fn connack_meaning(code: u8) -> &'static str {
    match code {
        0 => "connection accepted",
        1 => "unacceptable protocol version (the broker needs MQTT 3.1.1)",
        2 => "client id rejected (check it is 1..=128 bytes of A-Z a-z 0-9 _ - and matches the policy)",
        3 => "server unavailable (broker overloaded or down; will retry)",
        4 => "bad user name or password",
        5 => "not authorized (check the IoT policy attached to the certificate allows iot:Connect for this client id)",
        _ => "unknown return code",
    }
}

impl<R: RngCore> Session<R> {
    /// Creates a session after validating `config`. It does nothing until [`Event::Start`].
    pub fn new(config: SessionConfig, rng: R) -> Result<Self, Error> {
        config.validate()?;
        Ok(Session {
            queue: OfflineQueue::new(config.queue_capacity),
            config,
            rng,
            state: State::Idle,
            status: ConnectionStatus::Disconnected,
            now: 0,
            last_connect_at: None,
            next_health_at: None,
            next_id: 1,
            recent_sends: VecDeque::new(),
            rate_wake: None,
            in_flight: Vec::new(),
            actions: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The current connection status.
    pub fn status(&self) -> &ConnectionStatus {
        &self.status
    }

    /// Counters, with the current queue and in-flight sizes.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.queued = self.queue.len();
        stats.in_flight = self.in_flight.len();
        stats
    }

    /// How long the current connection has been up at `now_ms`, when connected.
    pub fn connected_for_ms(&self, now_ms: u64) -> Option<u64> {
        match self.state {
            State::Connected { since, .. } => Some(now_ms.max(self.now).saturating_sub(since)),
            _ => None,
        }
    }

    /// The next action to carry out, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Takes every pending action, oldest first.
    pub fn drain_actions(&mut self) -> impl Iterator<Item = Action> + '_ {
        self.actions.drain(..)
    }

    /// The session time (ms) at which the driver must call `handle(t, Event::Tick)`;
    /// `None` when no timer runs (before start, after stop).
    pub fn poll_timeout(&self) -> Option<u64> {
        let state_deadline = match self.state {
            State::Waiting { until } => Some(until),
            State::Connecting { deadline } => Some(deadline),
            State::Connected {
                since,
                stable: false,
                ..
            } => Some(since.saturating_add(self.config.backoff.stable_after_ms)),
            _ => None,
        };
        [state_deadline, self.next_health_at, self.rate_wake]
            .into_iter()
            .flatten()
            .min()
    }

    /// Feeds one event at session time `now_ms` (monotonic milliseconds; a value earlier than
    /// a previous one is treated as the previous one). Timers due at `now_ms` fire first.
    pub fn handle(&mut self, now_ms: u64, event: Event) {
        let now = self.advance(now_ms);
        match event {
            Event::Start => {
                if matches!(self.state, State::Idle | State::Stopped) {
                    self.next_health_at = Some(now.saturating_add(self.config.health_interval_ms));
                    self.schedule_connect(now, 0);
                }
            }
            Event::ConnAck { session_present } => {
                if let State::Connecting { .. } = self.state {
                    self.state = State::Connected {
                        since: now,
                        stable: false,
                        last_heard: now,
                    };
                    self.stats.connects += 1;
                    self.set_status(ConnectionStatus::Connected);
                    if !session_present && !self.config.subscriptions.is_empty() {
                        self.actions
                            .push_back(Action::Subscribe(self.config.subscriptions.clone()));
                    }
                    self.flush(now);
                }
            }
            Event::ConnectRefused { code } => {
                if let State::Connecting { .. } = self.state {
                    let why = format!(
                        "broker refused the connection (CONNACK code {code}: {})",
                        connack_meaning(code)
                    );
                    self.fail(now, why);
                }
            }
            Event::ConnectFailed { diagnosis } => {
                if let State::Connecting { .. } = self.state {
                    self.fail(now, diagnosis);
                }
            }
            Event::CredentialsRefused { diagnosis } => {
                if let State::Connecting { .. } = self.state {
                    // Count as if the fast-retry budget were spent: the next delays are slow.
                    let budget = self.config.backoff.slow_after_failures;
                    let spent = budget.saturating_sub(1);
                    self.stats.consecutive_failures = self.stats.consecutive_failures.max(spent);
                    self.fail(now, format!(
                        "{diagnosis} (the broker refuses this certificate for good: retrying only at the slow cadence)"
                    ));
                }
            }
            Event::Disconnected { cause, diagnosis } => {
                if matches!(
                    self.state,
                    State::Connected { .. } | State::Connecting { .. }
                ) {
                    let who = match cause {
                        DisconnectCause::Broker => "broker closed the connection",
                        DisconnectCause::Network => "connection lost",
                    };
                    self.fail(now, format!("{who}: {diagnosis}"));
                }
            }
            Event::PingResponse | Event::MessageReceived => self.heard(now),
            Event::PingTimeout => {
                if let State::Connected { .. } = self.state {
                    self.actions.push_back(Action::Disconnect);
                    let ka = self.config.keep_alive_secs;
                    self.fail(
                        now,
                        format!("broker did not answer the keepalive ping (keepalive {ka} s)"),
                    );
                }
            }
            Event::PublishAcked(id) => {
                self.heard(now);
                if let Some(pos) = self.in_flight.iter().position(|m| m.id == id) {
                    self.in_flight.remove(pos);
                    self.stats.delivered += 1;
                    self.actions.push_back(Action::Delivered(id));
                    self.flush(now);
                }
            }
            Event::SubscribeAcked { granted } => {
                self.heard(now);
                if !granted {
                    self.stats.subscribe_refusals += 1;
                    self.stats.last_error = Some(
                        "broker refused a subscription: the device policy must allow subscribing to its settings and commands topics"
                            .to_string(),
                    );
                }
            }
            Event::Reconnect => match self.state {
                State::Connected { .. } | State::Connecting { .. } | State::Waiting { .. } => {
                    if !matches!(self.state, State::Waiting { .. }) {
                        self.actions.push_back(Action::Disconnect);
                    }
                    self.requeue_in_flight();
                    self.set_status(ConnectionStatus::Disconnected);
                    self.schedule_connect(now, 0);
                }
                State::Idle | State::Stopped => {}
            },
            Event::Stop => {
                if matches!(
                    self.state,
                    State::Connected { .. } | State::Connecting { .. }
                ) {
                    self.actions.push_back(Action::Disconnect);
                }
                self.requeue_in_flight();
                self.state = State::Stopped;
                self.next_health_at = None;
                self.set_status(ConnectionStatus::Disconnected);
            }
            Event::Tick => {}
        }
    }

    /// Submits a message. Checks the topic and payload against AWS IoT Core limits first.
    ///
    /// QoS 1 messages are queued (in order) and sent when connected, within the in-flight
    /// window; when the queue is full the oldest is dropped ([`Action::Dropped`]). QoS 0
    /// messages are sent at once when connected and refused with [`Error::NotConnected`]
    /// otherwise.
    pub fn publish(&mut self, now_ms: u64, request: PublishRequest) -> Result<PublishId, Error> {
        let now = self.advance(now_ms);
        if self.state == State::Stopped {
            return Err(Error::Stopped);
        }
        check_topic(&request.topic)?;
        check_payload(&request.payload)?;
        let id = PublishId(self.next_id);
        let connected = matches!(self.state, State::Connected { .. });
        let msg = OutgoingMessage {
            id,
            topic: request.topic,
            payload: request.payload,
            qos: request.qos,
            expires_at_ms: request
                .ttl_ms
                .or(self.config.message_ttl_ms)
                .map(|ttl| now.saturating_add(ttl)),
            retransmit: false,
        };
        match request.qos {
            QoS::AtMostOnce if !connected => return Err(Error::NotConnected { topic: msg.topic }),
            QoS::AtMostOnce if !self.rate_allows(now) => {
                return Err(Error::RateLimited {
                    per_sec: self.config.max_publishes_per_sec,
                })
            }
            QoS::AtMostOnce => self.actions.push_back(Action::Publish(Publish {
                id,
                topic: msg.topic,
                payload: msg.payload,
                qos: QoS::AtMostOnce,
                retransmit: false,
            })),
            QoS::AtLeastOnce => {
                let dropped = self.queue.push_back(msg);
                self.report_dropped(dropped, DropReason::QueueFull);
                self.flush(now);
            }
        }
        self.next_id += 1;
        Ok(id)
    }

    /// Withdraws a QoS 1 message that is still queued (not sent on the current connection):
    /// `true` when it was withdrawn, `false` when it is in flight or unknown. A durable
    /// queue uses it to drop its oldest message when full.
    pub fn cancel(&mut self, id: PublishId) -> bool {
        self.queue.remove(id).is_some()
    }

    fn advance(&mut self, now_ms: u64) -> u64 {
        let now = now_ms.max(self.now);
        self.now = now;
        match self.state {
            State::Waiting { until } if now >= until => self.connect_now(now),
            State::Connecting { deadline } if now >= deadline => {
                self.actions.push_back(Action::Disconnect);
                let secs = self.config.connect_timeout_ms / 1000;
                self.fail(
                    now,
                    format!("no CONNACK within {secs} s (connect timed out)"),
                );
            }
            State::Connected {
                since,
                stable: false,
                last_heard,
            } if now.saturating_sub(since) >= self.config.backoff.stable_after_ms => {
                self.state = State::Connected {
                    since,
                    stable: true,
                    last_heard,
                };
                self.mark_stable();
            }
            _ => {}
        }
        if self.rate_wake.is_some_and(|t| now >= t) {
            self.rate_wake = None;
            self.flush(now);
        }
        if self.next_health_at.is_some_and(|t| now >= t) {
            self.next_health_at = Some(now.saturating_add(self.config.health_interval_ms));
            self.health_check(now);
        }
        now
    }

    fn mark_stable(&mut self) {
        self.stats.consecutive_failures = 0;
        self.stats.slow_mode = false;
    }

    fn heard(&mut self, now: u64) {
        if let State::Connected {
            since,
            stable,
            last_heard,
        } = self.state
        {
            self.state = State::Connected {
                since,
                stable,
                last_heard: last_heard.max(now),
            };
        }
    }

    fn health_check(&mut self, now: u64) {
        let dead_after = u64::from(self.config.keep_alive_secs) * 2000;
        let mut report = HealthReport {
            now_ms: now,
            status: self.status.clone(),
            healthy: false,
            connected_for_ms: None,
            broker_silent_ms: None,
            next_connect_at_ms: None,
            stats: Stats::default(),
        };
        match self.state {
            State::Connected {
                since, last_heard, ..
            } => {
                let silent = now.saturating_sub(last_heard);
                report.connected_for_ms = Some(now.saturating_sub(since));
                report.broker_silent_ms = Some(silent);
                report.healthy = silent <= dead_after;
            }
            State::Waiting { until } => report.next_connect_at_ms = Some(until),
            _ => {}
        }
        let expired = self.queue.take_expired(now);
        self.report_dropped(expired, DropReason::Expired);
        report.stats = self.stats();
        let dead = matches!(self.state, State::Connected { .. }) && !report.healthy;
        let silent = report.broker_silent_ms.unwrap_or(0) / 1000;
        self.actions.push_back(Action::Health(report));
        if dead {
            self.actions.push_back(Action::Disconnect);
            let ka = self.config.keep_alive_secs;
            self.fail(
                now,
                format!(
                    "broker silent for {silent} s (more than two keepalive intervals of {ka} s)"
                ),
            );
        }
    }

    fn set_status(&mut self, status: ConnectionStatus) {
        if self.status != status {
            self.status = status.clone();
            self.actions.push_back(Action::ReportStatus(status));
        }
    }

    fn report_dropped(&mut self, dropped: Vec<OutgoingMessage>, reason: DropReason) {
        for msg in dropped {
            match reason {
                DropReason::QueueFull => self.stats.dropped_full += 1,
                DropReason::Expired => self.stats.expired += 1,
            }
            self.actions
                .push_back(Action::Dropped { id: msg.id, reason });
        }
    }

    fn requeue_in_flight(&mut self) {
        let mut in_flight = core::mem::take(&mut self.in_flight);
        for msg in &mut in_flight {
            msg.retransmit = true;
        }
        let dropped = self.queue.push_front_all(in_flight);
        self.report_dropped(dropped, DropReason::QueueFull);
    }

    /// Sends queued QoS 1 messages, oldest first, while the in-flight window has room.
    fn flush(&mut self, now: u64) {
        if !matches!(self.state, State::Connected { .. }) {
            return;
        }
        while self.in_flight.len() < self.config.max_in_flight && !self.queue.is_empty() {
            if !self.rate_allows(now) {
                self.rate_wake = self.recent_sends.front().map(|t| t.saturating_add(1000));
                break;
            }
            let Some(msg) = self.queue.pop_front() else {
                break;
            };
            if msg.expired(now) {
                self.report_dropped(alloc::vec![msg], DropReason::Expired);
                continue;
            }
            self.actions.push_back(Action::Publish(Publish {
                id: msg.id,
                topic: msg.topic.clone(),
                payload: msg.payload.clone(),
                qos: msg.qos,
                retransmit: msg.retransmit,
            }));
            self.in_flight.push(msg);
        }
    }

    /// Counts one publish if fewer than the limit were sent in the last second (sliding).
    fn rate_allows(&mut self, now: u64) -> bool {
        while self
            .recent_sends
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= 1000)
        {
            self.recent_sends.pop_front();
        }
        if self.recent_sends.len() < self.config.max_publishes_per_sec as usize {
            self.recent_sends.push_back(now);
            true
        } else {
            false
        }
    }

    fn connect_now(&mut self, now: u64) {
        self.state = State::Connecting {
            deadline: now.saturating_add(self.config.connect_timeout_ms),
        };
        self.last_connect_at = Some(now);
        self.stats.connect_attempts += 1;
        self.set_status(ConnectionStatus::Connecting);
        self.actions.push_back(Action::Connect {
            attempt: self.stats.connect_attempts,
        });
    }

    /// When to connect after `delay_ms`: never sooner than the floor after the previous CONNECT.
    fn connect_time(&self, now: u64, delay_ms: u64) -> u64 {
        let at = now.saturating_add(delay_ms);
        match self.last_connect_at {
            Some(prev) => at.max(prev.saturating_add(self.config.backoff.min_connect_interval_ms)),
            None => at,
        }
    }

    fn schedule_connect(&mut self, now: u64, delay_ms: u64) {
        let at = self.connect_time(now, delay_ms);
        if at <= now {
            self.connect_now(now);
        } else {
            self.state = State::Waiting { until: at };
            self.actions.push_back(Action::WaitUntil(at));
        }
    }

    /// A connect failed or a connection was lost: back off (never give up).
    fn fail(&mut self, now: u64, why: String) {
        if let State::Connected { since, .. } = self.state {
            if now.saturating_sub(since) >= self.config.backoff.stable_after_ms {
                self.mark_stable();
            }
        }
        self.state = State::Idle;
        self.requeue_in_flight();
        self.stats.failures += 1;
        self.stats.consecutive_failures = self.stats.consecutive_failures.saturating_add(1);
        let n = self.stats.consecutive_failures;
        let delay = self.config.backoff.delay(n, &mut self.rng);
        self.stats.slow_mode = delay.slow;
        let next = self.connect_time(now, delay.ms).saturating_sub(now);
        let mode = if delay.slow {
            format!(
                "; slow retry mode after {n} consecutive failures: next attempt in {} s",
                next / 1000
            )
        } else {
            format!(
                "; failure {n}, next attempt in {}.{:03} s",
                next / 1000,
                next % 1000
            )
        };
        self.set_status(ConnectionStatus::Error(format!("{why}{mode}")));
        self.stats.last_error = Some(why);
        self.schedule_connect(now, delay.ms);
    }
}
