//! The device runtime against a real mosquitto with an AWS IoT-like ACL: presses reach the
//! backend with the exact JSON, settings and commands are applied and answered (settings
//! persist in the image), a broker restart is survived with every queued press delivered in
//! order, and a device never receives another device's commands.
//!
//! The CLI's tests (`crates/acorn/tests/press_queue.rs`) cover the press queue across a
//! `kill -9`, a full queue and the heartbeat.

use acorn_test_support::mqtt as common;

use std::time::Duration;

use acorn_agent::device::{DeviceEvent, PressOutcome};
use acorn_agent::Device;
use acorn_mqtt::{ButtonPressMessage, ConnectionStatus};
use common::{device_image, Client, Env, WAIT};
use serde_json::Value;
use tokio::sync::broadcast;

/// Waits (bounded) for a publish on `topic` whose JSON satisfies `pred`.
async fn wait_json(backend: &mut Client, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let publish = tokio::time::timeout_at(deadline, backend.next_publish())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for a message on {topic}"));
        if publish.topic != topic {
            continue;
        }
        let value: Value = serde_json::from_slice(&publish.payload).expect("JSON payload");
        if pred(&value) {
            return value;
        }
    }
}

/// Waits (bounded) for a device event matching `pred`.
async fn wait_event(
    events: &mut broadcast::Receiver<DeviceEvent>,
    pred: impl Fn(&DeviceEvent) -> bool,
) -> DeviceEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("timed out waiting for a device event")
            .expect("event stream open");
        if pred(&event) {
            return event;
        }
    }
}

fn status_topic(id: &str) -> String {
    format!("acorn-pups/status/{id}")
}

#[tokio::test]
async fn button_press_arrives_with_the_exact_json() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/#").await;
    let (image, _) = device_image(env.dir.path(), &env.ca, "acorn-0001");
    let device = Device::open(env.device_options(&image)).unwrap();
    assert_eq!(device.device_id(), "acorn-0001");
    let handle = device.spawn();
    let online = wait_json(&mut backend, &status_topic("acorn-0001"), |v| {
        v["status"] == "online"
    })
    .await;
    assert_eq!(online["firmwareVersion"], "1.0.0-test");

    let outcome = handle.press("rf-5a3c", Some(87)).await.unwrap();
    let PressOutcome::Queued(press_id) = outcome else {
        panic!("queued: {outcome:?}")
    };
    let publish = backend.next_publish().await;
    assert_eq!(publish.topic, "acorn-pups/button-press/acorn-0001");
    assert_eq!(publish.qos, acorn_transport::rumqttc::QoS::AtLeastOnce);
    let text = String::from_utf8(publish.payload.to_vec()).unwrap();
    let press = ButtonPressMessage::from_json(&publish.topic, text.as_bytes()).unwrap();
    // The seed's fields in the seed's order, then the press's stable id.
    let expected = format!(
        r#"{{"deviceId":"acorn-0001","buttonRfId":"rf-5a3c","timestamp":"{}","batteryLevel":87,"pressId":"{press_id}"}}"#,
        press.timestamp
    );
    assert_eq!(text, expected);
    assert_eq!(press.timestamp.len(), 24, "ISO 8601 with milliseconds");

    // Without a battery level the field is omitted.
    handle.press("rf-77", None).await.unwrap();
    let publish = backend.next_publish().await;
    let value: Value = serde_json::from_slice(&publish.payload).unwrap();
    assert_eq!(value.as_object().unwrap().len(), 4, "{value}");
    assert!(value.get("batteryLevel").is_none(), "{value}");
    assert_eq!(value["buttonRfId"], "rf-77");

    // The same button again within the 1 s default cooldown is reported once.
    assert_eq!(
        handle.press("rf-77", None).await.unwrap(),
        PressOutcome::CooledDown
    );
    handle.shutdown().await.unwrap();
    wait_json(&mut backend, &status_topic("acorn-0001"), |v| {
        v["status"] == "offline"
    })
    .await;
}

#[tokio::test]
async fn settings_and_commands_are_applied_answered_and_persisted() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/status/#").await;
    let (image, _) = device_image(env.dir.path(), &env.ca, "dev-s");
    let handle = Device::open(env.device_options(&image)).unwrap().spawn();
    let status = status_topic("dev-s");
    wait_json(&mut backend, &status, |v| v["status"] == "online").await;

    // A settings update: applied, saved, answered with the settings now in effect.
    backend
        .publish(
            "acorn-pups/settings/dev-s",
            br#"{"requestId":"req-42","soundVolume":7,"ledBrightness":20}"#,
        )
        .await;
    let reply = wait_json(&mut backend, &status, |v| v["requestId"] == "req-42").await;
    assert_eq!(reply["result"], "ok");
    assert_eq!(reply["command"], "settings");
    assert_eq!(reply["status"], "online");
    assert_eq!(reply["settings"]["soundVolume"], 7);
    assert_eq!(reply["settings"]["ledBrightness"], 20);
    assert_eq!(reply["settings"]["soundEnabled"], true);

    // Commands, each answered with its requestId.
    backend
        .publish(
            "acorn-pups/commands/dev-s",
            br#"{"requestId":"req-1","command":"ping"}"#,
        )
        .await;
    let reply = wait_json(&mut backend, &status, |v| v["requestId"] == "req-1").await;
    assert_eq!(
        (&reply["command"], &reply["result"]),
        (&"ping".into(), &"ok".into())
    );

    backend
        .publish(
            "acorn-pups/commands/dev-s",
            br#"{"requestId":"req-2","command":"get-status"}"#,
        )
        .await;
    let reply = wait_json(&mut backend, &status, |v| v["requestId"] == "req-2").await;
    assert_eq!(reply["settings"]["soundVolume"], 7);
    assert_eq!(reply["diagnostics"]["connects"], 1);
    assert!(reply["diagnostics"]["uptimeMs"].is_u64());

    // Bad messages: an error reply (requestId echoed when readable), no crash.
    backend
        .publish(
            "acorn-pups/commands/dev-s",
            br#"{"requestId":"req-3","command":"self-destruct"}"#,
        )
        .await;
    let reply = wait_json(&mut backend, &status, |v| v["requestId"] == "req-3").await;
    assert_eq!(
        (&reply["status"], &reply["result"]),
        (&"error".into(), &"error".into())
    );
    assert!(reply["error"].as_str().unwrap().contains("self-destruct"));
    backend
        .publish(
            "acorn-pups/settings/dev-s",
            br#"{"requestId":"req-4","soundVolume":99}"#,
        )
        .await;
    let reply = wait_json(&mut backend, &status, |v| v["requestId"] == "req-4").await;
    assert_eq!(reply["result"], "error");
    assert!(reply["error"].as_str().unwrap().contains("soundVolume"));
    backend
        .publish("acorn-pups/commands/dev-s", b"{not json")
        .await;
    let reply = wait_json(&mut backend, &status, |v| {
        v["result"] == "error" && v.get("requestId").is_none()
    })
    .await;
    assert_eq!(reply["status"], "error");

    // `reconnect`: answered, then a new connection (a new `online`).
    let mut events = handle.events();
    backend
        .publish(
            "acorn-pups/commands/dev-s",
            br#"{"requestId":"req-5","command":"reconnect"}"#,
        )
        .await;
    let reply = wait_json(&mut backend, &status, |v| v["requestId"] == "req-5").await;
    assert_eq!(reply["result"], "ok");
    wait_event(&mut events, |e| {
        matches!(e, DeviceEvent::Status(ConnectionStatus::Disconnected))
    })
    .await;
    wait_json(&mut backend, &status, |v| v["status"] == "online").await;
    // The broker kept the session (clean session off): commands still arrive.
    backend
        .publish(
            "acorn-pups/commands/dev-s",
            br#"{"requestId":"req-6","command":"ping"}"#,
        )
        .await;
    wait_json(&mut backend, &status, |v| v["requestId"] == "req-6").await;
    let snapshot = handle.snapshot().await.unwrap();
    assert_eq!(snapshot.stats.connects, 2);
    assert_eq!(snapshot.settings.sound_volume, 7);
    handle.shutdown().await.unwrap();

    // The settings persist in the image: a restarted device has them.
    let device = Device::open(env.device_options(&image)).unwrap();
    assert_eq!(device.settings().sound_volume, 7);
    assert_eq!(device.settings().led_brightness, 20);
    // Every load was validated and recorded in the image's metadata.
    let mut image = acorn_agent::DeviceImage::open(&image, None).unwrap();
    drop(device);
    let loaded = image
        .load_identity(acorn_agent::device_image::unix_now())
        .unwrap();
    assert_eq!(loaded.metadata.validation_attempts, 3);
    assert!(loaded.metadata.last_used.is_some());
}

#[tokio::test]
async fn broker_restart_is_survived_and_queued_presses_arrive_in_order() {
    let mut env = Env::start();
    let (image, _) = device_image(env.dir.path(), &env.ca, "dev-r");
    let mut options = env.device_options(&image);
    // Three seconds between CONNECTs (AWS requires one), so that the backend is subscribed
    // again before the device comes back after the restart.
    options.tune = Some(|c| c.backoff.min_connect_interval_ms = 3000);
    let handle = Device::open(options).unwrap().spawn();
    let mut events = handle.events();
    wait_event(&mut events, |e| {
        matches!(e, DeviceEvent::Status(ConnectionStatus::Connected))
    })
    .await;

    env.kill_broker();
    // The device notices, and backs off with the reason and the next attempt in its status.
    let DeviceEvent::Status(ConnectionStatus::Error(reason)) = wait_event(&mut events, |e| {
        matches!(e, DeviceEvent::Status(ConnectionStatus::Error(_)))
    })
    .await
    else {
        unreachable!()
    };
    assert!(reason.contains("next attempt in"), "{reason}");

    // Presses while the broker is down are queued.
    let mut ids = Vec::new();
    for i in 0..12 {
        match handle.press(&format!("rf-{i:02}"), Some(50)).await.unwrap() {
            PressOutcome::Queued(id) => ids.push(id),
            PressOutcome::CooledDown => panic!("distinct buttons are never cooled down"),
        }
    }
    // At least one reconnect attempt fails against the dead port, with a diagnosis.
    let DeviceEvent::Status(ConnectionStatus::Error(reason)) = wait_event(
        &mut events,
        |e| matches!(e, DeviceEvent::Status(ConnectionStatus::Error(r)) if r.contains("refused")),
    )
    .await
    else {
        unreachable!()
    };
    assert!(reason.contains("failure"), "{reason}");
    // All twelve wait in the queue image; the session holds the first few (its window).
    let queue = handle.press_queue().await.unwrap();
    let queued: Vec<_> = queue.presses.iter().map(|p| p.id).collect();
    assert_eq!(queued, ids);
    assert_eq!(queue.dropped, 0);

    env.start_broker_again();
    let mut backend = env.backend("acorn-pups/button-press/dev-r").await;
    // Every queued press arrives, in order, exactly as queued.
    for i in 0..12 {
        let publish = backend.next_publish().await;
        let press = ButtonPressMessage::from_json(&publish.topic, &publish.payload).unwrap();
        assert_eq!(press.button_rf_id, format!("rf-{i:02}"));
        assert_eq!(press.battery_level, Some(50));
    }
    let mut delivered = Vec::new();
    while delivered.len() < ids.len() {
        if let DeviceEvent::PressDelivered(id) =
            wait_event(&mut events, |e| matches!(e, DeviceEvent::PressDelivered(_))).await
        {
            if ids.contains(&id) {
                delivered.push(id);
            }
        }
    }
    assert_eq!(delivered, ids, "PUBACKs in order");
    // The restarted broker had no session: the device subscribed again, so commands arrive.
    let mut control = env.backend("acorn-pups/status/dev-r").await;
    control
        .publish(
            "acorn-pups/commands/dev-r",
            br#"{"requestId":"after-restart","command":"ping"}"#,
        )
        .await;
    wait_json(&mut control, "acorn-pups/status/dev-r", |v| {
        v["requestId"] == "after-restart"
    })
    .await;
    let snapshot = handle.snapshot().await.unwrap();
    assert_eq!(snapshot.status, ConnectionStatus::Connected);
    assert_eq!(snapshot.stats.queued, 0);
    assert!(handle.press_queue().await.unwrap().presses.is_empty());
    assert_eq!(snapshot.stats.connects, 2);
    assert!(snapshot.stats.failures >= 2);
    // Backoff, not a tight loop: the CONNECTs were at least 3 s apart.
    let attempts = snapshot.stats.connect_attempts;
    assert!(attempts >= 3, "{attempts}");
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_device_never_receives_another_devices_commands() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/status/#").await;
    let (image_a, _) = device_image(env.dir.path(), &env.ca, "dev-a");
    let (image_b, _) = device_image(env.dir.path(), &env.ca, "dev-b");
    let device_a = Device::open(env.device_options(&image_a)).unwrap().spawn();
    let mut events_a = device_a.events();
    let device_b = Device::open(env.device_options(&image_b)).unwrap().spawn();
    // Both come online (in either order).
    let mut online = std::collections::BTreeSet::new();
    while online.len() < 2 {
        let publish = backend.next_publish().await;
        let value: Value = serde_json::from_slice(&publish.payload).unwrap();
        if value["status"] == "online" {
            online.insert(publish.topic.clone());
        }
    }
    // A third device's client tries to read device B's commands (the broker grants the
    // subscription, as AWS IoT may, but must deliver nothing).
    let mut spy = Client::start(&env.session("dev-c")).await;
    spy.subscribe("acorn-pups/commands/dev-b").await;
    spy.subscribe("acorn-pups/commands/#").await;

    backend
        .publish(
            "acorn-pups/commands/dev-b",
            br#"{"requestId":"for-b","command":"ping"}"#,
        )
        .await;
    // Device B answers: the command was delivered...
    let reply = wait_json(&mut backend, &status_topic("dev-b"), |v| {
        v["requestId"] == "for-b"
    })
    .await;
    assert_eq!(reply["deviceId"], "dev-b");
    // ...and neither device A nor another device's certificate ever saw it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(event) = events_a.try_recv() {
        assert!(
            !matches!(
                event,
                DeviceEvent::Answered { .. } | DeviceEvent::Rejected { .. }
            ),
            "device A saw a message: {event:?}"
        );
    }
    while let Ok(event) = spy.events.try_recv() {
        if let Ok(acorn_transport::rumqttc::Event::Incoming(
            acorn_transport::rumqttc::Packet::Publish(p),
        )) = event
        {
            panic!("another device received {}", p.topic);
        }
    }
    device_a.shutdown().await.unwrap();
    device_b.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_is_reported_periodically_and_failures_are_diagnosed() {
    let env = Env::start();
    let (image, _) = device_image(env.dir.path(), &env.ca, "dev-h");
    let mut options = env.device_options(&image);
    options.tune = Some(|c| c.health_interval_ms = 200);
    let handle = Device::open(options).unwrap().spawn();
    let mut events = handle.events();
    let DeviceEvent::Health(report) = wait_event(
        &mut events,
        |e| matches!(e, DeviceEvent::Health(r) if r.status == ConnectionStatus::Connected),
    )
    .await
    else {
        unreachable!()
    };
    assert!(report.healthy);
    assert!(report.connected_for_ms.is_some());
    handle.shutdown().await.unwrap();

    // The same device trusting only Amazon's roots: the TLS failure is named, and the
    // session backs off instead of retrying at once.
    let mut options = env.device_options(&image);
    options.roots = acorn_transport::TrustRoots::Amazon;
    let handle = Device::open(options).unwrap().spawn();
    let mut events = handle.events();
    let DeviceEvent::Status(ConnectionStatus::Error(reason)) = wait_event(&mut events, |e| {
        matches!(e, DeviceEvent::Status(ConnectionStatus::Error(_)))
    })
    .await
    else {
        unreachable!()
    };
    assert!(reason.contains("unknown server CA"), "{reason}");
    assert!(reason.contains("failure 1, next attempt in"), "{reason}");
    let snapshot = handle.snapshot().await.unwrap();
    assert_eq!(snapshot.stats.connects, 0);
    assert!(snapshot
        .stats
        .last_error
        .unwrap()
        .contains("unknown server CA"));
    handle.shutdown().await.unwrap();
    assert!(!env
        .broker
        .log()
        .contains("New client connected from 127.0.0.1 as dev-h (p2"));
}

#[tokio::test]
async fn large_and_oversized_inbound_messages_are_answered_without_dropping_the_connection() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/status/#").await;
    let (image, _) = device_image(env.dir.path(), &env.ca, "dev-big");
    let handle = Device::open(env.device_options(&image)).unwrap().spawn();
    let status = status_topic("dev-big");
    wait_json(&mut backend, &status, |v| v["status"] == "online").await;

    // 100 KB of JSON whitespace: large but within AWS's 128 KB, so valid.
    let mut big = br#"{"requestId":"big","ledBrightness":3"#.to_vec();
    big.extend(std::iter::repeat_n(b' ', 100 * 1024));
    big.push(b'}');
    backend.publish("acorn-pups/settings/dev-big", &big).await;
    let reply = wait_json(&mut backend, &status, |v| v["requestId"] == "big").await;
    assert_eq!(reply["result"], "ok");
    assert_eq!(reply["settings"]["ledBrightness"], 3);

    // 150 KB: over the limit, rejected in words (no requestId can be trusted past the limit).
    let mut huge = br#"{"requestId":"huge","command":"ping""#.to_vec();
    huge.extend(std::iter::repeat_n(b' ', 150 * 1024));
    huge.push(b'}');
    // (A sender that is not held to AWS's limit, like a misbehaving broker bridge.)
    let options = env.backend_session();
    let mut mqtt = options.mqtt_options().unwrap();
    mqtt.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = acorn_transport::rumqttc::AsyncClient::new(mqtt, 10);
    eventloop.set_network_options(options.network_options());
    drop(backend); // same client id: the sender takes over
    let mut sender = Client::run(client, eventloop);
    sender
        .wait_for(|p| matches!(p, acorn_transport::rumqttc::Packet::ConnAck(_)))
        .await;
    sender.subscribe("acorn-pups/status/#").await;
    sender.publish("acorn-pups/commands/dev-big", &huge).await;
    let reply = wait_json(&mut sender, &status, |v| v["result"] == "error").await;
    assert!(
        reply["error"].as_str().unwrap().contains("131072"),
        "{reply}"
    );
    let snapshot = handle.snapshot().await.unwrap();
    assert_eq!(snapshot.stats.connects, 1, "the connection stayed up");
    handle.shutdown().await.unwrap();
}

/// Regression: `device ping` made the broker keep a persistent session subscribed to the
/// commands topic only; the device that connected next found its session present, did not
/// subscribe again, and never received settings.
#[tokio::test]
async fn a_ping_before_the_first_run_leaves_the_device_subscribed_to_settings_too() {
    let env = Env::start();
    let mut backend = env.backend("acorn-pups/status/#").await;
    let (image, _) = device_image(env.dir.path(), &env.ca, "dev-p");
    let mut image_file = acorn_agent::DeviceImage::open(&image, None).unwrap();
    let loaded = image_file
        .load_identity(acorn_agent::device_image::unix_now())
        .unwrap();
    drop(image_file);
    let options = acorn_transport::ping::PingOptions::new(
        env.target(),
        loaded.identity.clone(),
        env.roots(),
        "dev-p",
        "1.0.0-test",
    );
    acorn_transport::ping::ping(&options)
        .await
        .expect("the ping succeeds");

    let handle = Device::open(env.device_options(&image)).unwrap().spawn();
    let status = status_topic("dev-p");
    wait_json(&mut backend, &status, |v| v["status"] == "online").await;
    backend
        .publish(
            "acorn-pups/settings/dev-p",
            br#"{"requestId":"req-p","soundVolume":3}"#,
        )
        .await;
    let reply = wait_json(&mut backend, &status, |v| v["requestId"] == "req-p").await;
    assert_eq!(reply["settings"]["soundVolume"], 3);
    handle.shutdown().await.unwrap();
}
