//! Connecting: CONNECT parameters and last will, `online` after the SUBACK or at once,
//! resubscription, backoff notices, the `reconnect` command.

use acorn_device::acorn_mqtt::{ConnectionStatus, DisconnectCause};
use acorn_device::{Action, Notice, Tag, TransportEvent};

use crate::support::{
    json, notices, presence, publishes, reply, Sim, COMMANDS, DEVICE, FIRMWARE, SETTINGS, STATUS,
};

fn connects(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Connect(_)))
        .count()
}

fn subscribes(actions: &[Action]) -> Vec<Vec<String>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Subscribe(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

fn lose_connection(sim: &mut Sim) -> Vec<Action> {
    sim.event(TransportEvent::Disconnected {
        cause: DisconnectCause::Broker,
        diagnosis: "connection closed by peer".into(),
    })
}

#[test]
fn start_asks_for_a_connect_with_the_offline_last_will() {
    let mut sim = Sim::new();
    assert_eq!(sim.device.poll_timeout(), None, "nothing runs before start");
    let actions = sim.start();
    let Some(Action::Connect(connect)) = actions.iter().find(|a| matches!(a, Action::Connect(_)))
    else {
        panic!("{actions:?}")
    };
    assert_eq!(connect.attempt, 1);
    assert_eq!(connect.client_id, DEVICE);
    assert_eq!(connect.keep_alive_secs, 60);
    assert!(!connect.clean_session);
    assert_eq!(connect.will.topic, STATUS);
    assert_eq!(connect.will.qos, acorn_device::acorn_mqtt::QoS::AtLeastOnce);
    assert!(!connect.will.retain);
    let will: serde_json::Value = serde_json::from_slice(&connect.will.payload).unwrap();
    assert_eq!(
        will,
        serde_json::json!({
            "deviceId": DEVICE,
            "timestamp": "2026-11-28T16:42:00.000Z",
            "status": "offline",
            "firmwareVersion": FIRMWARE,
        })
    );
    assert!(notices(&actions).contains(&&Notice::Status(ConnectionStatus::Connecting)));
    // The CONNACK timeout runs.
    assert_eq!(sim.device.poll_timeout(), Some(30_000));
}

#[test]
fn online_is_announced_only_after_the_suback_on_a_new_session() {
    let mut sim = Sim::new();
    sim.start();
    sim.mono = 20;
    let actions = sim.event(TransportEvent::ConnAck {
        session_present: false,
    });
    assert_eq!(
        subscribes(&actions),
        [vec![SETTINGS.to_owned(), COMMANDS.to_owned()]]
    );
    assert!(
        presence(&actions).is_empty(),
        "not before the SUBACK: {actions:?}"
    );
    assert!(notices(&actions).contains(&&Notice::Status(ConnectionStatus::Connected)));
    // A command that races the SUBACK is still answered, but `online` waits.
    sim.mono = 30;
    let actions = sim.event(TransportEvent::PingResponse);
    assert!(actions.is_empty(), "{actions:?}");
    sim.mono = 40;
    let actions = sim.event(TransportEvent::SubAck { granted: true });
    assert_eq!(presence(&actions), [(Tag::Online, "online".to_owned())]);
    let online = json(publishes(&actions)[0]);
    assert_eq!(
        online,
        serde_json::json!({
            "deviceId": DEVICE,
            "timestamp": "2026-11-28T16:42:00.040Z",
            "status": "online",
            "firmwareVersion": FIRMWARE,
        })
    );
    // Exactly once per connection.
    let actions = sim.event(TransportEvent::SubAck { granted: true });
    assert!(presence(&actions).is_empty());
}

#[test]
fn online_is_announced_at_once_when_the_broker_kept_the_session() {
    let mut sim = Sim::new();
    sim.start();
    let actions = sim.event(TransportEvent::ConnAck {
        session_present: true,
    });
    assert!(subscribes(&actions).is_empty());
    assert_eq!(presence(&actions), [(Tag::Online, "online".to_owned())]);
    // Its PUBACK is broker activity, nothing more.
    let actions = sim.event(TransportEvent::PubAck(Tag::Online));
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn a_refused_subscription_is_reported_and_online_still_follows() {
    let mut sim = Sim::new();
    sim.start();
    sim.event(TransportEvent::ConnAck {
        session_present: false,
    });
    let actions = sim.event(TransportEvent::SubAck { granted: false });
    assert!(notices(&actions).contains(&&Notice::SubscribeRefused));
    assert_eq!(presence(&actions).len(), 1);
    assert_eq!(sim.device.stats().subscribe_refusals, 1);
}

#[test]
fn a_lost_connection_backs_off_and_resubscribes_when_the_broker_forgot_the_session() {
    let mut sim = Sim::online();
    sim.mono = 40_000;
    let (_, sent) = sim.press("rf-1", None);
    let actions = lose_connection(&mut sim);
    let status = notices(&actions)
        .into_iter()
        .find_map(|n| match n {
            Notice::Status(ConnectionStatus::Error(reason)) => Some(reason.clone()),
            _ => None,
        })
        .expect("an error status");
    assert!(status.contains("broker closed the connection"), "{status}");
    assert!(status.contains("next attempt in"), "{status}");
    assert!(notices(&actions)
        .iter()
        .any(|n| matches!(n, Notice::NextAttempt { in_ms } if *in_ms <= 1_000)));
    assert!(notices(&actions)
        .iter()
        .any(|n| n.to_string().starts_with("next connect attempt in ")));
    // Within the first backoff bound (1 s), a new CONNECT.
    let actions = sim.advance(1_000);
    assert_eq!(connects(&actions), 1, "{actions:?}");
    // A restarted broker has no session: subscribe again, then `online` again, and the
    // unacknowledged press is sent again with DUP.
    let actions = sim.event(TransportEvent::ConnAck {
        session_present: false,
    });
    assert_eq!(subscribes(&actions).len(), 1);
    let resent = publishes(&actions);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].tag, publishes(&sent)[0].tag);
    assert!(resent[0].retransmit);
    assert!(presence(&actions).is_empty());
    let actions = sim.event(TransportEvent::SubAck { granted: true });
    assert_eq!(presence(&actions), [(Tag::Online, "online".to_owned())]);

    // The next time the broker kept the session: no SUBSCRIBE, `online` at once.
    lose_connection(&mut sim);
    let actions = sim.advance(2_000);
    assert_eq!(connects(&actions), 1);
    let actions = sim.event(TransportEvent::ConnAck {
        session_present: true,
    });
    assert!(subscribes(&actions).is_empty());
    assert_eq!(presence(&actions).len(), 1);
}

#[test]
fn a_failed_connect_is_diagnosed_and_retried_with_backoff() {
    let mut sim = Sim::new();
    sim.start();
    let actions = sim.event(TransportEvent::ConnectFailed {
        diagnosis: "TLS: server certificate signed by an unknown server CA".into(),
    });
    let reason = notices(&actions)
        .into_iter()
        .find_map(|n| match n {
            Notice::Status(ConnectionStatus::Error(r)) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains("unknown server CA"), "{reason}");
    assert!(reason.contains("failure 1, next attempt in"), "{reason}");
    assert!(sim
        .device
        .stats()
        .last_error
        .unwrap()
        .contains("unknown server CA"));
    // Never two CONNECTs within a second.
    let actions = sim.advance(999);
    assert_eq!(connects(&actions), 0);
    let actions = sim.advance(1);
    assert_eq!(connects(&actions), 1);
    let actions = sim.event(TransportEvent::ConnectRefused { code: 5 });
    let text = notices(&actions)[0].to_string();
    assert!(text.contains("not authorized"), "{text}");
}

#[test]
fn a_ping_timeout_drops_the_connection() {
    let mut sim = Sim::online();
    let actions = sim.event(TransportEvent::PingTimeout);
    assert_eq!(actions[0], Action::Disconnect);
    assert!(notices(&actions)
        .iter()
        .any(|n| n.to_string().contains("keepalive")));
}

#[test]
fn reconnect_replies_first_then_reconnects_once_the_reply_is_acknowledged() {
    let mut sim = Sim::online();
    sim.mono = 10_000;
    let actions = sim.message(COMMANDS, br#"{"requestId":"req-5","command":"reconnect"}"#);
    let answer = reply(&actions);
    assert_eq!(answer["command"], "reconnect");
    assert_eq!(answer["result"], "ok");
    assert_eq!(answer["requestId"], "req-5");
    assert!(!actions.iter().any(|a| matches!(a, Action::Disconnect)));
    // Other traffic before the reply's PUBACK changes nothing.
    assert!(sim.event(TransportEvent::PingResponse).is_empty());
    let tag = publishes(&actions)[0].tag;
    sim.mono += 15;
    let actions = sim.event(TransportEvent::PubAck(tag));
    // Delivered, then the reconnect: DISCONNECT, status disconnected, CONNECT (the last was
    // 10 s ago, so the one-per-second floor does not delay it).
    let kinds: Vec<String> = actions
        .iter()
        .map(|a| match a {
            Action::Connect(_) => "connect".to_owned(),
            Action::Disconnect => "disconnect".to_owned(),
            Action::Notice(Notice::Delivered(_)) => "delivered".to_owned(),
            Action::Notice(Notice::Reconnecting) => "reconnecting".to_owned(),
            Action::Notice(Notice::Status(s)) => format!("status {s}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "delivered",
            "reconnecting",
            "disconnect",
            "status disconnected",
            "status connecting",
            "connect"
        ]
    );
    // Not counted as a failure.
    assert_eq!(sim.device.stats().failures, 0);
    let actions = sim.event(TransportEvent::ConnAck {
        session_present: true,
    });
    assert_eq!(presence(&actions).len(), 1, "a new online");
    assert_eq!(sim.device.stats().connects, 2);
}

#[test]
fn reconnect_goes_ahead_when_the_reply_is_never_acknowledged() {
    let mut sim = Sim::online();
    sim.mono = 10_000;
    sim.message(COMMANDS, br#"{"requestId":"r","command":"reconnect"}"#);
    assert_eq!(sim.device.poll_timeout(), Some(15_000));
    let actions = sim.advance(4_999);
    assert!(!actions.iter().any(|a| matches!(a, Action::Disconnect)));
    let actions = sim.advance(1);
    assert!(notices(&actions).contains(&&Notice::Reconnecting));
    assert!(actions.contains(&Action::Disconnect));
    assert_eq!(connects(&actions), 1);
}

#[test]
fn a_reconnect_whose_connection_dropped_first_does_not_reconnect_twice() {
    let mut sim = Sim::online();
    sim.mono = 10_000;
    let actions = sim.message(COMMANDS, br#"{"requestId":"r","command":"reconnect"}"#);
    let tag = publishes(&actions)[0].tag;
    lose_connection(&mut sim);
    let actions = sim.advance(1_000);
    assert_eq!(connects(&actions), 1);
    // The reply is sent again on the new connection; its PUBACK no longer reconnects.
    let actions = sim.event(TransportEvent::ConnAck {
        session_present: true,
    });
    assert_eq!(publishes(&actions)[0].tag, tag);
    let actions = sim.event(TransportEvent::PubAck(tag));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Disconnect)),
        "{actions:?}"
    );
    let actions = sim.advance(10_000);
    assert_eq!(connects(&actions), 0);
}
