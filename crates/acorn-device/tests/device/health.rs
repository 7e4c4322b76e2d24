//! Health reports and the notices' levels and texts (what the runtimes log).

use acorn_device::acorn_mqtt::{ConnectionStatus, DropReason, PublishId};
use acorn_device::{Action, Level, Notice, TransportEvent};

use crate::support::{config, notices, Sim};

fn health(actions: &[Action]) -> Vec<acorn_device::acorn_mqtt::HealthReport> {
    notices(actions)
        .into_iter()
        .filter_map(|n| match n {
            Notice::Health(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn health_is_reported_every_interval() {
    let mut sim = Sim::online();
    // Keep the broker audible: a PINGRESP every keepalive.
    let mut reports = Vec::new();
    for _ in 0..3 {
        reports.extend(health(&sim.advance(30_000)));
        sim.event(TransportEvent::PingResponse);
    }
    assert_eq!(reports.len(), 3);
    let times: Vec<u64> = reports.iter().map(|r| r.now_ms).collect();
    assert_eq!(times, [30_000, 60_000, 90_000]);
    for r in &reports {
        assert!(r.healthy);
        assert_eq!(r.status, ConnectionStatus::Connected);
        assert!(r.connected_for_ms.is_some());
    }
    assert_eq!(Notice::Health(reports[0].clone()).level(), Level::Info);
    assert!(Notice::Health(reports[0].clone())
        .to_string()
        .starts_with("health: connected, healthy true"));
}

#[test]
fn the_health_interval_is_the_sessions() {
    let mut c = config();
    c.session.health_interval_ms = 200;
    let mut sim = Sim::with(c, acorn_device::MemorySettings::default());
    sim.connect(true);
    assert_eq!(health(&sim.advance(1_000)).len(), 5);
}

#[test]
fn a_silent_broker_is_dropped_by_the_health_check() {
    let mut sim = Sim::online();
    // Nothing heard for more than two keepalive intervals (120 s).
    let actions = sim.advance(150_000);
    let reports = health(&actions);
    assert!(reports.iter().any(|r| !r.healthy));
    assert!(actions.contains(&Action::Disconnect));
    assert!(notices(&actions)
        .iter()
        .any(|n| n.to_string().contains("broker silent for")));
}

#[test]
fn while_disconnected_health_says_when_the_next_attempt_is() {
    let mut sim = Sim::new();
    sim.start();
    for _ in 0..3 {
        sim.event(TransportEvent::ConnectFailed {
            diagnosis: "TCP: connection refused".into(),
        });
        let actions = sim.advance(29_999);
        if let Some(report) = health(&actions).pop() {
            assert!(!report.healthy);
            assert!(report.connected_for_ms.is_none());
            return;
        }
    }
    let report = health(&sim.advance(30_000)).pop().expect("a report");
    assert!(!report.healthy);
}

#[test]
fn notices_have_levels_and_plain_texts() {
    // (notice, level, text) — the texts the runtimes' logs and tests rely on.
    let cases = [
        (Notice::ShuttingDown, Level::Info, "shutting down"),
        (Notice::OfflineDelivered, Level::Info, "offline status delivered"),
        (
            Notice::OfflineNotAcknowledged,
            Level::Warn,
            "the offline status was not acknowledged in time",
        ),
        (
            Notice::NextAttempt { in_ms: 1_234 },
            Level::Debug,
            "next connect attempt in 1.234 s",
        ),
        (
            Notice::Status(ConnectionStatus::Connected),
            Level::Info,
            "connected",
        ),
        (
            Notice::Status(ConnectionStatus::Connecting),
            Level::Debug,
            "connecting",
        ),
        (
            Notice::Status(ConnectionStatus::Error("TCP: connection refused".into())),
            Level::Warn,
            "TCP: connection refused",
        ),
        (
            Notice::Reconnecting,
            Level::Info,
            "reconnecting, as the reconnect command asked",
        ),
        (
            Notice::Dropped {
                id: PublishId(4),
                reason: DropReason::QueueFull,
            },
            Level::Warn,
            "queued message 4 dropped: the offline queue was full and it was the oldest",
        ),
        (
            Notice::SubscribeRefused,
            Level::Warn,
            "the broker refused a subscription: the device policy must allow its settings and commands topics",
        ),
        (
            Notice::SettingsNotSaved {
                reason: "flash full".into(),
            },
            Level::Warn,
            "settings not applied: flash full",
        ),
    ];
    for (notice, level, text) in cases {
        assert_eq!(notice.level(), level, "{notice:?}");
        assert_eq!(notice.to_string(), text);
    }
}
