//! Shutdown: `offline` sent and its PUBACK awaited (bounded), nothing new sent meanwhile, a
//! clean DISCONNECT, then [`Action::ShutdownComplete`].

use acorn_device::acorn_mqtt::{ConnectionStatus, DisconnectCause};
use acorn_device::{Action, Error, Notice, Tag, TransportEvent};

use crate::support::{json, notices, presence, publishes, Sim, COMMANDS, FIRMWARE};

/// A readable trace of actions.
fn trace(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Publish(p) => format!("publish {:?}", p.tag),
            Action::Disconnect => "disconnect".to_owned(),
            Action::ShutdownComplete => "complete".to_owned(),
            Action::Notice(n) => n.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn shutdown_sends_offline_and_waits_for_its_puback() {
    let mut sim = Sim::online();
    sim.mono = 5_000;
    let actions = sim.shutdown();
    assert_eq!(trace(&actions), ["shutting down", "publish Offline"]);
    let offline = json(publishes(&actions)[0]);
    assert_eq!(offline["status"], "offline");
    assert_eq!(offline["firmwareVersion"], FIRMWARE);
    assert_eq!(offline["timestamp"], "2026-11-28T16:42:05.000Z");
    assert!(sim.device.is_stopping() && !sim.device.is_stopped());
    assert_eq!(sim.device.poll_timeout(), Some(8_000));

    sim.mono = 5_030;
    let actions = sim.event(TransportEvent::PubAck(Tag::Offline));
    assert_eq!(
        trace(&actions),
        [
            "offline status delivered",
            "disconnect",
            "disconnected",
            "complete"
        ]
    );
    assert!(sim.device.is_stopped());
    assert_eq!(sim.device.poll_timeout(), None);
    assert_eq!(*sim.device.status(), ConnectionStatus::Disconnected);
}

#[test]
fn shutdown_is_bounded_when_the_puback_never_comes() {
    let mut sim = Sim::online();
    sim.mono = 5_000;
    sim.shutdown();
    let actions = sim.advance(2_999);
    assert!(actions.is_empty(), "{actions:?}");
    let actions = sim.advance(1);
    assert_eq!(
        trace(&actions),
        [
            "the offline status was not acknowledged in time",
            "disconnect",
            "disconnected",
            "complete"
        ]
    );
    assert_eq!(
        notices(&actions)[0],
        &Notice::OfflineNotAcknowledged,
        "a warning"
    );
    assert_eq!(notices(&actions)[0].level(), acorn_device::Level::Warn);
}

#[test]
fn shutdown_ends_at_once_when_the_connection_drops_while_waiting() {
    let mut sim = Sim::online();
    sim.shutdown();
    let actions = sim.event(TransportEvent::Disconnected {
        cause: DisconnectCause::Network,
        diagnosis: "connection reset".into(),
    });
    let trace = trace(&actions);
    assert!(
        trace[0].starts_with("connection lost: connection reset"),
        "{trace:?}"
    );
    assert_eq!(
        trace[1..],
        [
            "the offline status was not acknowledged in time",
            "disconnected",
            "complete"
        ]
    );
    // No reconnect was asked for.
    assert!(!actions.iter().any(|a| matches!(a, Action::Connect(_))));
}

#[test]
fn shutdown_while_not_connected_completes_at_once_without_offline() {
    let mut sim = Sim::new();
    sim.start();
    let actions = sim.shutdown();
    assert!(presence(&actions).is_empty());
    // The CONNECT under way is closed.
    assert_eq!(
        trace(&actions),
        ["shutting down", "disconnect", "disconnected", "complete"]
    );

    // Never started: nothing to close.
    let mut sim = Sim::new();
    assert_eq!(trace(&sim.shutdown()), ["shutting down", "complete"]);
}

#[test]
fn nothing_new_is_sent_while_stopping() {
    let mut sim = Sim::online();
    // Nine presses: eight in flight (the press window), one waiting for room.
    let mut sent = Vec::new();
    for i in 0..9 {
        sent.extend(sim.press(&format!("rf-{i}"), None).1);
    }
    assert_eq!(publishes(&sent).len(), 8);
    sim.shutdown();
    assert_eq!(sim.press("rf-late", None).0, Err(Error::Stopped));
    // A PUBACK would free the window: still nothing new is sent.
    let actions = sim.ack(&sent[..2]);
    assert!(publishes(&actions).is_empty(), "{actions:?}");
    assert!(notices(&actions)
        .iter()
        .any(|n| matches!(n, Notice::PressDelivered { .. })));
    // The presses not acknowledged stay in the store for the next start.
    assert_eq!(sim.device.queued_presses().count(), 8);
    // A command is not processed (no reply, no reconnect).
    let actions = sim.message(COMMANDS, br#"{"requestId":"r","command":"reconnect"}"#);
    assert!(publishes(&actions).is_empty());
    assert!(matches!(
        notices(&actions)[..],
        [Notice::IgnoredWhileStopping { .. }]
    ));
    // Timers of the session do not fire a reconnect or a health report either.
    let actions = sim.advance(2_000);
    assert!(actions.is_empty(), "{actions:?}");
    // Shutdown again: nothing more.
    assert!(sim.shutdown().is_empty());
}

#[test]
fn after_shutdown_every_input_is_ignored() {
    let mut sim = Sim::online();
    sim.shutdown();
    sim.event(TransportEvent::PubAck(Tag::Offline));
    assert!(sim.device.is_stopped());
    assert!(sim
        .event(TransportEvent::ConnAck {
            session_present: true
        })
        .is_empty());
    assert!(sim
        .message(COMMANDS, br#"{"requestId":"r","command":"ping"}"#)
        .is_empty());
    assert!(sim.advance(100_000).is_empty());
    assert!(sim.start().is_empty());
    assert_eq!(sim.press("rf-1", None).0, Err(Error::Stopped));
}

#[test]
fn a_silent_broker_while_stopping_ends_the_wait() {
    let mut sim = Sim::online();
    sim.shutdown();
    let actions = sim.event(TransportEvent::PingTimeout);
    let trace = trace(&actions);
    assert_eq!(trace[0], "disconnect");
    assert_eq!(trace.last().unwrap(), "complete");
    assert!(trace.contains(&"the offline status was not acknowledged in time".to_owned()));
}
