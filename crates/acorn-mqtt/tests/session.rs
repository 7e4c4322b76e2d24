//! The session policy, one promise per test, on virtual time.

use acorn_mqtt::{
    Action, ConnectionStatus, DisconnectCause, DropReason, Error, Event, PublishId, PublishRequest,
    QoS, Session, SessionConfig, Topics,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn topics() -> Topics {
    Topics::new("acorn-0001").expect("valid device id")
}

fn session_with(f: impl FnOnce(&mut SessionConfig)) -> Session<StdRng> {
    let mut config = SessionConfig::for_device(&topics());
    f(&mut config);
    Session::new(config, StdRng::seed_from_u64(1)).expect("valid config")
}

fn session() -> Session<StdRng> {
    session_with(|_| {})
}

fn take(s: &mut Session<StdRng>) -> Vec<Action> {
    s.drain_actions().collect()
}

fn published(actions: &[Action]) -> Vec<(u64, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish(p) => Some((p.id.0, p.retransmit)),
            _ => None,
        })
        .collect()
}

fn has_connect(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Connect { .. }))
}

/// Ticks until the session sends CONNECT; returns the time it did.
fn run_to_connect(s: &mut Session<StdRng>) -> u64 {
    for _ in 0..100 {
        let t = s.poll_timeout().expect("a timer runs");
        s.handle(t, Event::Tick);
        if has_connect(&take(s)) {
            return t;
        }
    }
    panic!("no CONNECT after 100 timers");
}

fn connect(s: &mut Session<StdRng>, now: u64, session_present: bool) -> Vec<Action> {
    s.handle(now, Event::ConnAck { session_present });
    take(s)
}

fn msg(n: u8) -> PublishRequest {
    PublishRequest::qos1(topics().button_press(), vec![b'0' + n])
}

#[test]
fn start_connects_at_once_and_subscribes_only_without_a_stored_session() {
    let mut s = session();
    assert_eq!(s.poll_timeout(), None, "idle before start");
    s.handle(0, Event::Start);
    assert_eq!(
        take(&mut s),
        vec![
            Action::ReportStatus(ConnectionStatus::Connecting),
            Action::Connect { attempt: 1 }
        ]
    );
    let a = connect(&mut s, 50, true);
    assert_eq!(a, vec![Action::ReportStatus(ConnectionStatus::Connected)]);

    s.handle(
        40_000,
        Event::Disconnected {
            cause: DisconnectCause::Broker,
            diagnosis: "kicked".into(),
        },
    );
    let _ = take(&mut s);
    let t = run_to_connect(&mut s);
    let a = connect(&mut s, t + 10, false);
    assert!(a.contains(&Action::Subscribe(vec![
        "acorn-pups/settings/acorn-0001".into(),
        "acorn-pups/commands/acorn-0001".into()
    ])));
}

#[test]
fn instant_failures_never_connect_faster_than_once_a_second() {
    let mut s = session();
    s.handle(0, Event::Start);
    let _ = take(&mut s);
    let mut last = 0;
    for _ in 0..500 {
        s.handle(
            last + 1,
            Event::ConnectFailed {
                diagnosis: "connection refused".into(),
            },
        );
        let _ = take(&mut s);
        let t = run_to_connect(&mut s);
        assert!(
            t >= last + 1000,
            "CONNECT {} ms after the previous one",
            t - last
        );
        last = t;
    }
    assert_eq!(s.stats().connect_attempts, 501, "never gave up");
}

#[test]
fn backoff_doubles_to_the_cap_then_slows_down_and_never_gives_up() {
    let mut s = session();
    let bounds = s.config().backoff;
    s.handle(0, Event::Start);
    let _ = take(&mut s);
    let mut now = 0;
    for n in 1..=60u32 {
        now += 5_000; // each attempt takes 5 s to fail: the floor never binds
        s.handle(
            now,
            Event::ConnectFailed {
                diagnosis: "TLS handshake failed: unknown server CA".into(),
            },
        );
        let a = take(&mut s);
        let Some(ConnectionStatus::Error(text)) = a.iter().find_map(|a| match a {
            Action::ReportStatus(st) => Some(st.clone()),
            _ => None,
        }) else {
            panic!("failure {n} reported no error status: {a:?}")
        };
        assert!(text.starts_with("TLS handshake failed: unknown server CA"));
        let t = run_to_connect(&mut s);
        let waited = t - now;
        if n < 10 {
            let bound = 1000u64 << (n - 1);
            assert_eq!(bounds.bound_ms(n), bound.min(60_000));
            assert!(waited <= bound.min(60_000), "failure {n}: waited {waited}");
            assert!(!s.stats().slow_mode);
        } else {
            assert!(
                (300_000..=600_000).contains(&waited),
                "failure {n}: {waited}"
            );
            assert!(text.contains("slow retry mode after"), "{text}");
            assert!(s.stats().slow_mode);
        }
        assert_eq!(s.stats().consecutive_failures, n);
        now = t;
    }
}

#[test]
fn a_connection_that_stays_up_30_s_resets_the_backoff() {
    let mut s = session();
    s.handle(0, Event::Start);
    let _ = take(&mut s);
    let mut now = 0;
    for _ in 0..9 {
        now += 2_000;
        s.handle(
            now,
            Event::ConnectFailed {
                diagnosis: "dns".into(),
            },
        );
        let _ = take(&mut s);
        now = run_to_connect(&mut s);
    }
    assert_eq!(s.stats().consecutive_failures, 9);
    // Up for 29 s then kicked: still counting, and this is failure 10: slow mode.
    let _ = connect(&mut s, now + 100, true);
    s.handle(
        now + 29_000,
        Event::Disconnected {
            cause: DisconnectCause::Broker,
            diagnosis: "kicked".into(),
        },
    );
    assert_eq!(s.stats().consecutive_failures, 10);
    assert!(s.stats().slow_mode);
    now = run_to_connect(&mut s);
    // Up for 30 s: the stable timer fires and resets the count.
    let _ = connect(&mut s, now + 100, true);
    assert!(s.poll_timeout() <= Some(now + 100 + 30_000));
    s.handle(now + 100 + 30_000, Event::Tick);
    assert_eq!(s.stats().consecutive_failures, 0);
    assert!(!s.stats().slow_mode);
    let kicked = now + 100 + 45_000;
    s.handle(
        kicked,
        Event::Disconnected {
            cause: DisconnectCause::Network,
            diagnosis: "reset".into(),
        },
    );
    assert_eq!(s.stats().consecutive_failures, 1);
    let t = run_to_connect(&mut s);
    assert!(
        t <= kicked + 1000,
        "first retry after a stable connection waits at most 1 s"
    );
}

#[test]
fn broker_disconnects_are_backed_off_with_jitter_too() {
    let mut waits = Vec::new();
    for seed in 0..200 {
        let mut s = Session::new(
            SessionConfig::for_device(&topics()),
            StdRng::seed_from_u64(seed),
        )
        .expect("valid config");
        s.handle(0, Event::Start);
        let _ = connect(&mut s, 10, true);
        s.handle(
            60_000,
            Event::Disconnected {
                cause: DisconnectCause::Broker,
                diagnosis: "duplicate client id".into(),
            },
        );
        let a: Vec<Action> = take(&mut s)
            .into_iter()
            .filter(|a| !matches!(a, Action::Health(_)))
            .collect();
        assert!(
            matches!(&a[0], Action::ReportStatus(ConnectionStatus::Error(t)) if t.starts_with("broker closed the connection: duplicate client id"))
        );
        let t = if has_connect(&a) {
            60_000
        } else {
            run_to_connect(&mut s)
        };
        waits.push(t - 60_000);
    }
    assert!(waits.iter().all(|&w| w <= 1000));
    let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
    assert!(
        distinct.len() > 150,
        "jittered, not lockstep: {} distinct",
        distinct.len()
    );
}

#[test]
fn no_connack_within_30_s_is_a_failure() {
    let mut s = session();
    s.handle(0, Event::Start);
    let _ = take(&mut s);
    assert_eq!(s.poll_timeout(), Some(30_000));
    s.handle(30_000, Event::Tick);
    let a = take(&mut s);
    assert_eq!(a[0], Action::Disconnect);
    assert!(
        matches!(&a[1], Action::ReportStatus(ConnectionStatus::Error(t)) if t.contains("no CONNACK within 30 s"))
    );
    // A late CONNACK of the abandoned attempt is ignored.
    s.handle(
        30_100,
        Event::ConnAck {
            session_present: true,
        },
    );
    assert_ne!(s.status(), &ConnectionStatus::Connected);
}

#[test]
fn connack_refusal_is_explained() {
    let mut s = session();
    s.handle(0, Event::Start);
    s.handle(20, Event::ConnectRefused { code: 5 });
    let ConnectionStatus::Error(text) = s.status().clone() else {
        panic!("not an error status")
    };
    assert!(text.contains("CONNACK code 5"), "{text}");
    assert!(text.contains("not authorized"), "{text}");
    assert_eq!(
        s.stats()
            .last_error
            .as_deref()
            .map(|e| e.contains("not authorized")),
        Some(true)
    );
}

#[test]
fn offline_queue_keeps_order_and_drops_the_oldest_when_full() {
    let mut s = session_with(|c| c.queue_capacity = 3);
    let ids: Vec<PublishId> = (0..5)
        .map(|n| s.publish(0, msg(n)).expect("valid"))
        .collect();
    assert_eq!(
        take(&mut s),
        vec![
            Action::Dropped {
                id: ids[0],
                reason: DropReason::QueueFull
            },
            Action::Dropped {
                id: ids[1],
                reason: DropReason::QueueFull
            },
        ]
    );
    assert_eq!(s.stats().dropped_full, 2);
    assert_eq!(s.stats().queued, 3);
    s.handle(1, Event::Start);
    let a = connect(&mut s, 2, true);
    assert_eq!(
        published(&a),
        vec![(ids[2].0, false), (ids[3].0, false), (ids[4].0, false)]
    );
}

#[test]
fn expired_messages_are_dropped_not_sent() {
    let mut s = session();
    let mut short = msg(1);
    short.ttl_ms = Some(10_000);
    let old = s.publish(0, short).expect("valid");
    let fresh = s.publish(0, msg(2)).expect("valid");
    s.handle(20_000, Event::Start);
    let a = connect(&mut s, 20_050, true);
    assert!(a.contains(&Action::Dropped {
        id: old,
        reason: DropReason::Expired
    }));
    assert_eq!(published(&a), vec![(fresh.0, false)]);
    assert_eq!(s.stats().expired, 1);

    // The health check purges expired messages while disconnected.
    let mut s = session();
    s.handle(0, Event::Start);
    s.handle(
        5,
        Event::ConnectFailed {
            diagnosis: "down".into(),
        },
    );
    let mut short = msg(3);
    short.ttl_ms = Some(1_000);
    let id = s.publish(10, short).expect("valid");
    let _ = take(&mut s);
    while s.stats().expired == 0 {
        let t = s.poll_timeout().expect("timer");
        assert!(t <= 30_000);
        s.handle(t, Event::Tick);
        if has_connect(&take(&mut s)) {
            s.handle(
                t + 5,
                Event::ConnectFailed {
                    diagnosis: "down".into(),
                },
            );
        }
    }
    assert_eq!(s.stats().queued, 0);
    let _ = id;
}

#[test]
fn unacknowledged_messages_are_resent_first_after_reconnect() {
    let mut s = session();
    s.handle(0, Event::Start);
    let _ = connect(&mut s, 10, true);
    let ids: Vec<PublishId> = (0..3)
        .map(|n| s.publish(20, msg(n)).expect("valid"))
        .collect();
    assert_eq!(published(&take(&mut s)).len(), 3);
    s.handle(30, Event::PublishAcked(ids[1]));
    assert_eq!(take(&mut s), vec![Action::Delivered(ids[1])]);
    assert_eq!(s.connected_for_ms(35), Some(25));
    let d = s.stats().to_diagnostics();
    assert_eq!(
        (d.connects, d.connect_attempts, d.queued_messages),
        (Some(1), Some(1), Some(0))
    );
    s.handle(
        40,
        Event::Disconnected {
            cause: DisconnectCause::Network,
            diagnosis: "reset".into(),
        },
    );
    let newer = s.publish(50, msg(4)).expect("valid");
    let _ = take(&mut s);
    let t = run_to_connect(&mut s);
    let a = connect(&mut s, t + 10, true);
    assert_eq!(
        published(&a),
        vec![(ids[0].0, true), (ids[2].0, true), (newer.0, false)]
    );
    // A stale ack of an unknown id changes nothing.
    s.handle(t + 20, Event::PublishAcked(PublishId(999)));
    assert!(take(&mut s).is_empty());
}

#[test]
fn the_in_flight_window_is_bounded() {
    let mut s = session_with(|c| c.max_in_flight = 2);
    s.handle(0, Event::Start);
    let _ = connect(&mut s, 10, true);
    let ids: Vec<PublishId> = (0..5)
        .map(|n| s.publish(20, msg(n)).expect("valid"))
        .collect();
    assert_eq!(
        published(&take(&mut s)),
        vec![(ids[0].0, false), (ids[1].0, false)]
    );
    assert_eq!(s.stats().in_flight, 2);
    assert_eq!(s.stats().queued, 3);
    s.handle(30, Event::PublishAcked(ids[0]));
    let a = take(&mut s);
    assert_eq!(a[0], Action::Delivered(ids[0]));
    assert_eq!(published(&a), vec![(ids[2].0, false)]);
}

#[test]
fn at_most_100_publishes_per_second() {
    let mut s = session_with(|c| {
        c.max_in_flight = 1000;
        c.queue_capacity = 1000;
    });
    s.handle(0, Event::Start);
    let _ = connect(&mut s, 10, true);
    for n in 0..250 {
        s.publish(20, msg((n % 10) as u8)).expect("valid");
    }
    assert_eq!(published(&take(&mut s)).len(), 100);
    let mut qos0 = msg(0);
    qos0.qos = QoS::AtMostOnce;
    assert_eq!(
        s.publish(500, qos0.clone()),
        Err(Error::RateLimited { per_sec: 100 })
    );
    assert_eq!(s.poll_timeout(), Some(1020));
    s.handle(1020, Event::Tick);
    assert_eq!(published(&take(&mut s)).len(), 100);
    s.handle(2020, Event::Tick);
    assert_eq!(published(&take(&mut s)).len(), 50);
    assert!(s.publish(2030, qos0).is_ok());
    assert_eq!(s.stats().in_flight, 250);
}

#[test]
fn qos0_is_sent_when_connected_and_refused_when_not() {
    let mut s = session();
    let mut req = msg(0);
    req.qos = QoS::AtMostOnce;
    assert!(matches!(
        s.publish(0, req.clone()),
        Err(Error::NotConnected { .. })
    ));
    s.handle(0, Event::Start);
    let _ = connect(&mut s, 10, true);
    let id = s.publish(20, req).expect("connected");
    let a = take(&mut s);
    assert!(matches!(&a[..], [Action::Publish(p)] if p.id == id && p.qos == QoS::AtMostOnce));
    assert_eq!(s.stats().in_flight, 0, "QoS 0 is not tracked");
}

#[test]
fn aws_limits_are_checked_before_anything_is_queued() {
    let mut s = session();
    let deep = PublishRequest::qos1("a/b/c/d/e/f/g/h/i", vec![]);
    assert_eq!(s.publish(0, deep), Err(Error::TopicTooDeep { slashes: 8 }));
    let long = PublishRequest::qos1(&"t".repeat(257), vec![]);
    assert_eq!(s.publish(0, long), Err(Error::TopicTooLong { len: 257 }));
    let wild = PublishRequest::qos1("acorn-pups/status/+", vec![]);
    assert!(matches!(
        s.publish(0, wild),
        Err(Error::TopicCharacter { at: 18, .. })
    ));
    let big = PublishRequest::qos1("acorn-pups/status/x", vec![b'x'; 131_073]);
    assert_eq!(
        s.publish(0, big),
        Err(Error::PayloadTooLarge { len: 131_073 })
    );
    assert_eq!(s.stats().queued, 0);
    let max = PublishRequest::qos1("acorn-pups/status/x", vec![b'x'; 131_072]);
    assert!(s.publish(0, max).is_ok());
    let seven = PublishRequest::qos1("a/b/c/d/e/f/g/h", vec![]);
    assert!(s.publish(0, seven).is_ok());
}

#[test]
fn health_check_drops_a_silent_broker_and_keeps_a_live_one() {
    let mut s = session();
    s.handle(0, Event::Start);
    let _ = connect(&mut s, 0, true);
    // Pings answered every 60 s: healthy for an hour.
    let mut healthy = 0;
    let mut t = 0;
    while t < 3_600_000 {
        t += 30_000;
        if t % 60_000 == 0 {
            s.handle(t, Event::PingResponse);
        } else {
            s.handle(t, Event::Tick);
        }
        for a in take(&mut s) {
            match a {
                Action::Health(r) => {
                    assert!(r.healthy, "{r:?}");
                    assert_eq!(r.status, ConnectionStatus::Connected);
                    healthy += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(healthy, 120);
    // Then silence: dropped after two keepalive intervals, at a health check.
    let silent_from = t;
    loop {
        t += 30_000;
        s.handle(t, Event::Tick);
        let a = take(&mut s);
        if a.contains(&Action::Disconnect) {
            assert!(t - silent_from <= 150_000);
            assert!(matches!(&a[0], Action::Health(r) if !r.healthy));
            assert!(
                matches!(s.status(), ConnectionStatus::Error(e) if e.contains("broker silent"))
            );
            break;
        }
        assert!(t - silent_from < 200_000, "silent broker never detected");
    }
}

#[test]
fn ping_timeout_reconnects() {
    let mut s = session();
    s.handle(0, Event::Start);
    let _ = connect(&mut s, 0, true);
    s.handle(90_000, Event::PingTimeout);
    let a = take(&mut s);
    assert!(a.contains(&Action::Disconnect));
    assert!(matches!(s.status(), ConnectionStatus::Error(e) if e.contains("keepalive")));
    run_to_connect(&mut s);
}

#[test]
fn reconnect_command_is_not_a_failure_and_respects_the_floor() {
    let mut s = session();
    s.handle(0, Event::Start);
    let _ = connect(&mut s, 10, true);
    s.handle(200, Event::Reconnect);
    let a = take(&mut s);
    assert_eq!(a[0], Action::Disconnect);
    assert_eq!(a[1], Action::ReportStatus(ConnectionStatus::Disconnected));
    assert_eq!(a[2], Action::WaitUntil(1000));
    assert_eq!(run_to_connect(&mut s), 1000);
    assert_eq!(s.stats().failures, 0);

    // While backing off (here: slow mode), a reconnect request cuts the sleep short, floor kept.
    let mut now = 1000;
    for _ in 0..10 {
        s.handle(
            now + 5,
            Event::ConnectFailed {
                diagnosis: "down".into(),
            },
        );
        let _ = take(&mut s);
        now = run_to_connect(&mut s);
    }
    s.handle(
        now + 5,
        Event::ConnectFailed {
            diagnosis: "down".into(),
        },
    );
    assert!(s.stats().slow_mode);
    let a = take(&mut s);
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::WaitUntil(t) if *t >= now + 5 + 300_000)));
    s.handle(now + 10, Event::Reconnect);
    assert_eq!(s.poll_timeout(), Some(now + 1000));
    s.handle(now + 1000, Event::Tick);
    assert!(has_connect(&take(&mut s)));
}

#[test]
fn stop_disconnects_and_start_resumes() {
    let mut s = session();
    s.handle(0, Event::Start);
    let _ = connect(&mut s, 10, true);
    let queued = s.publish(20, msg(1)).expect("valid");
    let _ = take(&mut s);
    s.handle(100, Event::Stop);
    assert_eq!(
        take(&mut s),
        vec![
            Action::Disconnect,
            Action::ReportStatus(ConnectionStatus::Disconnected)
        ]
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.publish(200, msg(2)), Err(Error::Stopped));
    s.handle(300, Event::Start);
    assert_eq!(
        s.poll_timeout(),
        Some(1000),
        "the floor holds across stop/start"
    );
    let t = run_to_connect(&mut s);
    let a = connect(&mut s, t + 5, true);
    assert_eq!(published(&a), vec![(queued.0, true)]);
}

#[test]
fn configuration_is_validated() {
    let bad = |f: fn(&mut SessionConfig)| {
        let mut c = SessionConfig::for_device(&topics());
        f(&mut c);
        Session::new(c, StdRng::seed_from_u64(0)).err()
    };
    assert_eq!(
        bad(|c| c.keep_alive_secs = 29),
        Some(Error::KeepAlive { secs: 29 })
    );
    assert_eq!(
        bad(|c| c.keep_alive_secs = 1201),
        Some(Error::KeepAlive { secs: 1201 })
    );
    assert_eq!(
        bad(|c| c.client_id = "x".repeat(129)),
        Some(Error::ClientIdLength { len: 129 })
    );
    assert_eq!(
        bad(|c| c.client_id.clear()),
        Some(Error::ClientIdLength { len: 0 })
    );
    assert!(matches!(
        bad(|c| c.backoff.min_connect_interval_ms = 500),
        Some(Error::Config { .. })
    ));
    assert!(matches!(
        bad(|c| c.queue_capacity = 0),
        Some(Error::Config { .. })
    ));
    assert!(matches!(
        bad(|c| c.subscriptions.push("a/#/b".into())),
        Some(Error::TopicCharacter { .. })
    ));
    assert_eq!(bad(|c| c.keep_alive_secs = 1200), None);
    assert_eq!(bad(|c| c.keep_alive_secs = 30), None);
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Ev(u8),
    Publish(bool, u8),
    Ack(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..700_000).prop_map(Op::Advance),
        (0u8..13).prop_map(Op::Ev),
        (any::<bool>(), any::<u8>()).prop_map(|(q, n)| Op::Publish(q, n)),
        any::<u8>().prop_map(Op::Ack),
    ]
}

proptest! {
    /// Any sequence of events, in any state, at any time (even going backwards): no panic,
    /// connects at least 1 s apart, queue and window within bounds, a timer while started.
    #[test]
    fn any_event_sequence_keeps_the_invariants(ops in prop::collection::vec(op(), 1..300), seed in any::<u64>()) {
        let mut s = Session::new(
            {
                let mut c = SessionConfig::for_device(&topics());
                c.queue_capacity = 8;
                c.max_in_flight = 3;
                c
            },
            StdRng::seed_from_u64(seed),
        ).expect("valid config");
        let mut now = 0u64;
        let mut clock = 0u64;
        let mut last_connect: Option<u64> = None;
        let mut stopped = true;
        for op in ops {
            match op {
                Op::Advance(d) => {
                    now = now.saturating_add(d);
                    clock = clock.max(now);
                    s.handle(now, Event::Tick);
                }
                Op::Ev(k) => {
                    let ev = match k {
                        0 => Event::Start,
                        1 => Event::ConnAck { session_present: false },
                        2 => Event::ConnAck { session_present: true },
                        3 => Event::ConnectRefused { code: 5 },
                        4 => Event::ConnectFailed { diagnosis: "x".into() },
                        5 => Event::Disconnected { cause: DisconnectCause::Broker, diagnosis: "x".into() },
                        6 => Event::PingResponse,
                        7 => Event::PingTimeout,
                        8 => Event::SubscribeAcked { granted: false },
                        9 => Event::Reconnect,
                        10 => Event::Stop,
                        11 => Event::MessageReceived,
                        _ => Event::Tick,
                    };
                    match k { 0 => stopped = false, 10 => stopped = true, _ => {} }
                    // Time may even go backwards.
                    let t = now.saturating_sub(u64::from(k) * 100);
                    clock = clock.max(t);
                    s.handle(t, ev);
                }
                Op::Publish(q, n) => {
                    let mut r = msg(n % 10);
                    if q { r.qos = QoS::AtMostOnce; }
                    let _ = s.publish(now, r);
                }
                Op::Ack(n) => s.handle(now, Event::PublishAcked(PublishId(u64::from(n)))),
            }
            let stats = s.stats();
            prop_assert!(stats.queued <= 8);
            prop_assert!(stats.in_flight <= 3);
            prop_assert_eq!(s.poll_timeout().is_some(), !stopped);
            for a in s.drain_actions() {
                if let Action::Connect { .. } = a {
                    if let Some(prev) = last_connect {
                        prop_assert!(clock >= prev + 1000, "connects {} ms apart", clock - prev);
                    }
                    last_connect = Some(clock);
                }
            }
        }
    }
}

#[test]
fn a_revoked_certificate_goes_straight_to_the_slow_cadence_and_says_why() {
    let mut s = session();
    let slow_min = s.config().backoff.slow_min_ms;
    s.handle(0, Event::Start);
    assert!(has_connect(&take(&mut s)));
    let at = 20;
    s.handle(
        at,
        Event::CredentialsRefused {
            diagnosis: "client certificate rejected by the broker: it has been revoked".into(),
        },
    );
    let stats = s.stats();
    assert!(stats.slow_mode, "{stats:?}");
    assert_eq!(stats.failures, 1);
    let status = s.status().to_string();
    // Follow the timers to the next CONNECT (health checks fire on the way).
    let mut next_connect = None;
    for _ in 0..1000 {
        let due = s.poll_timeout().expect("a retry is still scheduled");
        s.handle(due, Event::Tick);
        if has_connect(&take(&mut s)) {
            next_connect = Some(due);
            break;
        }
    }
    let next = next_connect.expect("the session retries");
    assert!(
        next >= at + slow_min,
        "next attempt at {next}, slow cadence starts at {slow_min} ms"
    );
    assert!(status.contains("revoked"), "{status}");
    assert!(status.contains("slow cadence"), "{status}");
}
