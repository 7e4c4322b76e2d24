//! Deterministic simulation of the session policy over days of virtual time: a seeded network
//! that flaps, a broker that kicks the client, refuses it, or goes silent (half-open TCP), and
//! long outages. The session's own RNG is seeded too, so every run is reproducible.
//!
//! Checked on every run: every backoff sleep within its bound; the one-CONNECT-per-second floor
//! (no tight loop); never giving up (each long enough "up" window ends in a connection); dead
//! connections detected by the health check; health reports every 30 s; every QoS 1 message
//! delivered exactly once or dropped/expired with a counter; per-connection in-order sends.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use acorn_mqtt::{
    Action, BackoffConfig, ConnectionStatus, DisconnectCause, DropReason, Error, Event, PublishId,
    PublishRequest, QoS, Session, SessionConfig, Topics,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HOUR: u64 = 3_600_000;
const MIN: u64 = 60_000;

/// What the simulated world schedules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SimEvent {
    /// The network goes up (true) or down (false).
    Net(bool),
    /// Answer to the CONNECT of `epoch`.
    ConnResult(u64, ConnOutcome),
    /// PUBACK on connection `epoch`.
    Ack(u64, u64),
    /// PINGRESP on connection `epoch`.
    Ping(u64),
    /// The transport reports a ping timeout on `epoch`.
    PingTimeout(u64),
    /// The broker (or network) drops connection `epoch`.
    Drop(u64, bool),
    /// The broker goes silent on `epoch` (half-open connection).
    Silence(u64),
    /// The application publishes a message.
    AppPublish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ConnOutcome {
    Ack(bool),
    Refused,
    Failed,
}

struct World {
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, SimEvent)>>,
    net_up: bool,
    epoch: u64,
    connected: Option<u64>,
    silent: bool,
    silent_since: Option<u64>,
}

impl World {
    fn after(&mut self, range: std::ops::Range<u64>, ev: SimEvent) {
        let t = self.now + self.rng.gen_range(range);
        self.at(t, ev);
    }

    fn at(&mut self, t: u64, ev: SimEvent) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, ev)));
    }
}

#[derive(Default)]
struct Checks {
    connects: Vec<u64>,
    failures: u64,
    fast_ratios: Vec<f64>,
    slow_ratios: Vec<f64>,
    slow_waits: u64,
    published: BTreeSet<u64>,
    delivered: BTreeSet<u64>,
    dropped: BTreeMap<u64, DropReason>,
    health_times: Vec<u64>,
    silence_detections: u64,
    max_status_error_len: usize,
    up_windows: Vec<(u64, u64)>,
    connected_at: Vec<u64>,
    long_up_windows: u64,
}

fn run(seed: u64, hours: u64) -> Checks {
    let topics = Topics::new("acorn-sim-0001").expect("valid device id");
    let config = SessionConfig::for_device(&topics);
    let backoff: BackoffConfig = config.backoff;
    let keepalive_ms = u64::from(config.keep_alive_secs) * 1000;
    let health_ms = config.health_interval_ms;
    let mut session =
        Session::new(config, StdRng::seed_from_u64(seed ^ 0xA5A5)).expect("valid config");
    let mut w = World {
        rng: StdRng::seed_from_u64(seed),
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        net_up: true,
        epoch: 0,
        connected: None,
        silent: false,
        silent_since: None,
    };
    let mut c = Checks::default();

    // The network schedule: alternating up/down phases, from flapping to long outages.
    let end = hours * HOUR;
    let mut t = 0;
    let mut up = true;
    while t < end {
        let len = if up {
            match w.rng.gen_range(0..10) {
                0..=3 => w.rng.gen_range(1_000..60_000),
                4..=7 => w.rng.gen_range(MIN..30 * MIN),
                _ => w.rng.gen_range(30 * MIN..3 * HOUR),
            }
        } else {
            match w.rng.gen_range(0..10) {
                0..=4 => w.rng.gen_range(500..30_000),
                5..=7 => w.rng.gen_range(MIN..15 * MIN),
                _ => w.rng.gen_range(HOUR..4 * HOUR),
            }
        };
        if up {
            c.up_windows.push((t, t + len));
        }
        t += len;
        up = !up;
        w.at(t, SimEvent::Net(up));
    }
    // A final calm hour to drain the queue.
    let drain_start = t;
    w.at(drain_start, SimEvent::Net(true));
    let finish = drain_start + HOUR;
    w.after(0..20_000, SimEvent::AppPublish);

    session.handle(0, Event::Start);
    let mut pending_failure: Option<(u64, u32, bool)> = None;
    let mut last_failures = 0u64;
    let mut last_connect: Option<u64> = None;
    let mut conn_ids: Vec<u64> = Vec::new();
    let mut iterations = 0u64;

    loop {
        iterations += 1;
        assert!(iterations < 50_000_000, "simulation did not terminate");
        // Carry out every action the session asked for.
        while let Some(action) = session.poll_action() {
            match action {
                Action::Connect { .. } => {
                    if let Some(prev) = last_connect {
                        assert!(
                            w.now >= prev + 1000,
                            "seed {seed}: CONNECT at {} only {} ms after the previous one",
                            w.now,
                            w.now - prev
                        );
                    }
                    if let Some((ft, n, slow)) = pending_failure.take() {
                        let waited = w.now - ft;
                        if slow {
                            c.slow_waits += 1;
                            assert!(
                                (backoff.slow_min_ms..=backoff.slow_max_ms).contains(&waited),
                                "seed {seed}: slow wait {waited} ms out of range"
                            );
                            c.slow_ratios.push(
                                (waited - backoff.slow_min_ms) as f64
                                    / (backoff.slow_max_ms - backoff.slow_min_ms) as f64,
                            );
                        } else {
                            let bound = backoff.bound_ms(n);
                            let floor_at = last_connect.map_or(0, |p| p + 1000);
                            assert!(
                                w.now <= (ft + bound).max(floor_at),
                                "seed {seed}: wait {waited} ms after failure {n} exceeds bound {bound} ms"
                            );
                            if n >= 2 && w.now != floor_at {
                                c.fast_ratios.push(waited as f64 / bound as f64);
                            }
                        }
                    }
                    last_connect = Some(w.now);
                    c.connects.push(w.now);
                    w.epoch += 1;
                    w.connected = None;
                    conn_ids.clear();
                    let e = w.epoch;
                    let roll = w.rng.gen_range(0..100);
                    if w.net_up {
                        let lat = w.rng.gen_range(20..300);
                        let outcome = if roll < 95 {
                            ConnOutcome::Ack(w.rng.gen_bool(0.5))
                        } else {
                            ConnOutcome::Refused
                        };
                        w.at(w.now + lat, SimEvent::ConnResult(e, outcome));
                    } else if roll < 70 {
                        let lat = w.rng.gen_range(5..3_000);
                        w.at(w.now + lat, SimEvent::ConnResult(e, ConnOutcome::Failed));
                    } else if roll < 90 {
                        let lat = w.rng.gen_range(3_000..25_000);
                        w.at(w.now + lat, SimEvent::ConnResult(e, ConnOutcome::Failed));
                    } // else: no answer at all; the session's connect timeout must fire.
                }
                Action::Disconnect => {
                    if w.silent_since.is_some() && w.connected.is_some() {
                        c.silence_detections += 1;
                        let since = w.silent_since.unwrap_or(0);
                        assert!(
                            w.now <= since + 2 * keepalive_ms + health_ms,
                            "seed {seed}: silent broker detected only after {} ms",
                            w.now - since
                        );
                    }
                    w.epoch += 1;
                    w.connected = None;
                    w.silent = false;
                    w.silent_since = None;
                }
                Action::Subscribe(filters) => {
                    assert_eq!(filters.len(), 2);
                    assert!(w.connected.is_some(), "subscribe while not connected");
                }
                Action::Publish(p) => {
                    let e = w.connected.expect("publish while not connected");
                    if p.qos == QoS::AtLeastOnce {
                        if let Some(&last) = conn_ids.last() {
                            assert!(
                                p.id.0 > last,
                                "seed {seed}: out-of-order send on one connection"
                            );
                        }
                        conn_ids.push(p.id.0);
                        if !w.silent {
                            let lat = w.rng.gen_range(10..200);
                            w.at(w.now + lat, SimEvent::Ack(e, p.id.0));
                        }
                    }
                }
                Action::Delivered(id) => {
                    assert!(
                        c.delivered.insert(id.0),
                        "seed {seed}: {id:?} delivered twice"
                    );
                    assert!(!c.dropped.contains_key(&id.0));
                }
                Action::Dropped { id, reason } => {
                    assert!(!c.delivered.contains(&id.0));
                    assert!(c.dropped.insert(id.0, reason).is_none(), "dropped twice");
                }
                Action::Health(report) => {
                    assert_eq!(report.now_ms, w.now);
                    c.health_times.push(w.now);
                }
                Action::ReportStatus(status) => {
                    if let ConnectionStatus::Error(text) = &status {
                        c.max_status_error_len = c.max_status_error_len.max(text.len());
                    }
                    if status == ConnectionStatus::Connected {
                        c.connected_at.push(w.now);
                    }
                }
                Action::WaitUntil(until) => assert!(until > w.now),
            }
        }
        // Record a failure (and its parameters) for the bound check at the next CONNECT.
        let stats = session.stats();
        if stats.failures > last_failures {
            assert_eq!(
                stats.failures,
                last_failures + 1,
                "two failures in one step"
            );
            last_failures = stats.failures;
            c.failures += 1;
            pending_failure = Some((w.now, stats.consecutive_failures, stats.slow_mode));
        }
        if w.now >= finish {
            break;
        }
        // Jump to the next thing that happens.
        let timer = session
            .poll_timeout()
            .expect("a started session always has a timer");
        assert!(timer >= w.now, "timer in the past");
        let next_sim = w.queue.peek().map(|Reverse((t, _, _))| *t);
        if next_sim.is_none_or(|t| timer < t) {
            w.now = timer;
            session.handle(w.now, Event::Tick);
            continue;
        }
        let Some(Reverse((t, _, ev))) = w.queue.pop() else {
            unreachable!()
        };
        w.now = t;
        match ev {
            SimEvent::Net(up) => {
                w.net_up = up;
                if !up {
                    if let Some(e) = w.connected {
                        // How the transport notices: at once, by ping timeout, or not at all.
                        match w.rng.gen_range(0..3) {
                            0 => w.after(0..5_000, SimEvent::Drop(e, false)),
                            1 => {
                                w.silent = true;
                                w.silent_since = Some(w.now);
                                w.after(60_000..90_000, SimEvent::PingTimeout(e));
                            }
                            _ => {
                                w.silent = true;
                                w.silent_since = Some(w.now);
                            }
                        }
                    }
                }
            }
            SimEvent::ConnResult(e, outcome) if e == w.epoch => match outcome {
                ConnOutcome::Ack(_) | ConnOutcome::Refused if !w.net_up => session.handle(
                    w.now,
                    Event::ConnectFailed {
                        diagnosis: "network unreachable".into(),
                    },
                ),
                ConnOutcome::Ack(session_present) => {
                    w.connected = Some(e);
                    session.handle(w.now, Event::ConnAck { session_present });
                    w.at(w.now + keepalive_ms, SimEvent::Ping(e));
                    // A broker kick (duplicate client id, policy) now and then; none while
                    // the queue drains at the end.
                    let calm = w.now >= drain_start;
                    if !calm && w.rng.gen_range(0..4) == 0 {
                        let after = w.rng.gen_range(100..40 * MIN);
                        w.at(w.now + after, SimEvent::Drop(e, true));
                    }
                    if !calm && w.rng.gen_range(0..25) == 0 {
                        w.after(0..20 * MIN, SimEvent::Silence(e));
                    }
                }
                ConnOutcome::Refused => session.handle(w.now, Event::ConnectRefused { code: 3 }),
                ConnOutcome::Failed => session.handle(
                    w.now,
                    Event::ConnectFailed {
                        diagnosis: "connection refused (TCP RST)".into(),
                    },
                ),
            },
            SimEvent::Ack(e, id) if w.connected == Some(e) && !w.silent => {
                session.handle(w.now, Event::PublishAcked(PublishId(id)));
            }
            SimEvent::Ping(e) if w.connected == Some(e) => {
                if !w.silent {
                    session.handle(w.now, Event::PingResponse);
                }
                w.at(w.now + keepalive_ms, SimEvent::Ping(e));
            }
            SimEvent::PingTimeout(e) if w.connected == Some(e) => {
                c.silence_detections += 1;
                w.connected = None;
                w.silent = false;
                w.silent_since = None;
                w.epoch += 1;
                session.handle(w.now, Event::PingTimeout);
            }
            SimEvent::Drop(e, by_broker)
                if w.connected == Some(e) && !(by_broker && w.now >= drain_start) =>
            {
                w.connected = None;
                w.silent = false;
                w.silent_since = None;
                w.epoch += 1;
                let cause = if by_broker {
                    DisconnectCause::Broker
                } else {
                    DisconnectCause::Network
                };
                session.handle(
                    w.now,
                    Event::Disconnected {
                        cause,
                        diagnosis: "connection closed by peer".into(),
                    },
                );
            }
            SimEvent::Silence(e) if w.connected == Some(e) && !w.silent && w.now < drain_start => {
                w.silent = true;
                w.silent_since = Some(w.now);
            }
            SimEvent::AppPublish if w.now < drain_start => {
                let qos = if w.rng.gen_range(0..5) == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                let ttl = w.rng.gen_bool(0.3).then_some(HOUR);
                let req = PublishRequest {
                    topic: topics.button_press().to_string(),
                    payload: format!("{{\"n\":{}}}", w.seq).into_bytes(),
                    qos,
                    ttl_ms: ttl,
                };
                match session.publish(w.now, req) {
                    Ok(id) => {
                        if qos == QoS::AtLeastOnce {
                            c.published.insert(id.0);
                        }
                    }
                    Err(Error::NotConnected { .. }) => {
                        assert_eq!(qos, QoS::AtMostOnce);
                        assert_ne!(session.status(), &ConnectionStatus::Connected);
                    }
                    Err(e) => panic!("unexpected publish error: {e}"),
                }
                let next = w.now + w.rng.gen_range(1_000..60_000);
                w.at(next, SimEvent::AppPublish);
            }
            _ => {} // stale event of an old connection
        }
    }

    // Never gave up: every up window of 25 minutes or more has a connection made inside it
    // (worst case: 150 s to detect a half-open connection, a 10 min slow wait, a refused
    // CONNACK, another 10 min wait).
    let patience = 25 * MIN;
    for &(start, stop) in &c.up_windows {
        if stop - start > patience {
            assert!(
                c.connected_at.iter().any(|&t| t >= start && t <= start + patience),
                "seed {seed}: no connection within the up window {start}..{stop}: connects {:?} connected {:?}",
                c.connects.iter().filter(|&&t| t + 2 * HOUR > start && t < stop).collect::<Vec<_>>(),
                c.connected_at.iter().filter(|&&t| t + 2 * HOUR > start && t < stop).collect::<Vec<_>>()
            );
            c.long_up_windows += 1;
        }
    }
    // Health reports exactly every interval.
    for pair in c.health_times.windows(2) {
        assert_eq!(pair[1] - pair[0], health_ms, "seed {seed}: health interval");
    }
    assert!(c.health_times.len() as u64 >= (finish / health_ms) - 1);
    // Every QoS 1 message accounted for exactly once.
    let stats = session.stats();
    assert_eq!(
        stats.queued + stats.in_flight,
        0,
        "seed {seed}: queue not drained"
    );
    for id in &c.published {
        assert!(
            c.delivered.contains(id) ^ c.dropped.contains_key(id),
            "seed {seed}: message {id} neither delivered nor dropped"
        );
    }
    assert_eq!(c.delivered.len() + c.dropped.len(), c.published.len());
    assert_eq!(stats.delivered, c.delivered.len() as u64);
    let full = c
        .dropped
        .values()
        .filter(|r| **r == DropReason::QueueFull)
        .count() as u64;
    assert_eq!(stats.dropped_full, full);
    assert_eq!(stats.expired, c.dropped.len() as u64 - full);
    assert_eq!(session.status(), &ConnectionStatus::Connected);
    c
}

fn spread(ratios: &[f64], what: &str) {
    let mut buckets = [0usize; 4];
    for &r in ratios {
        assert!(
            (0.0..=1.0).contains(&r),
            "{what}: ratio {r} outside its bound"
        );
        buckets[((r * 4.0) as usize).min(3)] += 1;
    }
    let n = ratios.len();
    for (i, &b) in buckets.iter().enumerate() {
        let share = b as f64 / n as f64;
        assert!(
            (0.15..=0.35).contains(&share),
            "{what}: quarter {i} holds {share:.3} of {n} sleeps: jitter not spread ({buckets:?})"
        );
    }
}

#[test]
fn days_of_flapping_network_keep_every_policy_promise() {
    let mut all = Checks::default();
    for seed in 1..=8u64 {
        let c = run(seed, 48);
        assert!(
            c.failures > 50,
            "seed {seed}: the simulation must actually fail often"
        );
        assert!(
            c.slow_waits > 0,
            "seed {seed}: long outages must reach slow mode"
        );
        assert!(
            c.silence_detections > 0,
            "seed {seed}: half-open connections must be detected"
        );
        assert!(!c.dropped.is_empty() || c.published.len() < 100);
        let stats_line = format!(
            "seed {seed}: 48 h, {} connects, {} failures, {} slow waits, {} long up windows, {} published, {} delivered, {} dropped, {} half-open detections",
            c.connects.len(), c.failures, c.slow_waits, c.long_up_windows, c.published.len(),
            c.delivered.len(), c.dropped.len(), c.silence_detections
        );
        eprintln!("{stats_line}");
        assert!(c.long_up_windows > 5, "{stats_line}");
        all.fast_ratios.extend(c.fast_ratios);
        all.slow_ratios.extend(c.slow_ratios);
        all.connects.extend(c.connects);
        all.max_status_error_len = all.max_status_error_len.max(c.max_status_error_len);
    }
    assert!(
        all.fast_ratios.len() > 400,
        "{} fast samples",
        all.fast_ratios.len()
    );
    assert!(
        all.slow_ratios.len() > 40,
        "{} slow samples",
        all.slow_ratios.len()
    );
    spread(&all.fast_ratios, "fast backoff");
    spread(&all.slow_ratios, "slow cadence");
    assert!(all.max_status_error_len < 300);
}

#[test]
fn simulation_is_deterministic() {
    let a = run(42, 6);
    let b = run(42, 6);
    assert_eq!(a.connects, b.connects);
    assert_eq!(a.delivered, b.delivered);
    assert_eq!(a.dropped, b.dropped);
}
