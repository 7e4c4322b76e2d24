//! The device core (`acorn_device::Device`) driving the embedded transport through
//! `DeviceDriver`, against a real mosquitto over tokio TCP, with its settings in a real
//! acorn-nvs partition (in memory): what the firmware runs, with only the radio and the flash
//! chip swapped. A module of the `mosquitto` test (feature `device`), so that it shares its
//! test support.

use std::time::Duration;

use crate::common::{self, Backend, Env, WAIT};
use acorn_device::rotation::RotateError;
use acorn_device::{Device, DeviceConfig, PressOutcome, SettingsStore};
use acorn_embedded::device::{DeviceDriver, DeviceIo, Input, Report, StatusAnswer};
use acorn_embedded::host::{OsRng, TokioConnector};
use acorn_embedded::{Buffers, Time, Transport, TransportConfig};
use acorn_mqtt::{ButtonPressMessage, CommandResult, DeviceStatus, DeviceStatusMessage, Topics};
use acorn_nvs::{MemFlash, Nvs};
use rand::SeedableRng;
use tokio::sync::mpsc;

#[cfg(feature = "rotation")]
mod rotation;

const PARTITION: u32 = 0x6000;

/// Inputs from the test; every report kept as text, and the answers kept as they came.
pub(crate) struct TestIo {
    pub(crate) inputs: mpsc::UnboundedReceiver<Input>,
    pub(crate) reports: Vec<String>,
    /// The answers to presses: the button and what became of the press.
    pub(crate) presses: Vec<(String, PressOutcome)>,
    /// The answers to [`Input::Status`].
    pub(crate) statuses: Vec<StatusAnswer>,
    /// The answers to [`Input::Rotate`].
    pub(crate) rotations: Vec<Result<(), RotateError>>,
}

impl TestIo {
    pub(crate) fn new(inputs: mpsc::UnboundedReceiver<Input>) -> Self {
        TestIo {
            inputs,
            reports: Vec::new(),
            presses: Vec::new(),
            statuses: Vec::new(),
            rotations: Vec::new(),
        }
    }
}

impl DeviceIo for TestIo {
    async fn next_input(&mut self) -> Input {
        self.inputs.recv().await.unwrap_or(Input::Shutdown)
    }

    fn report(&mut self, _now: Time, report: Report<'_>) {
        self.reports.push(report.to_string());
        match report {
            Report::Press { button, outcome } => self.presses.push((button.into(), outcome)),
            Report::Status(answer) => self.statuses.push(answer.clone()),
            Report::Rotate(started) => self.rotations.push(started),
            _ => {}
        }
    }
}

type Driver = DeviceDriver<rand::rngs::StdRng, Nvs<MemFlash>, TestIo>;

fn driver(device_id: &str, nvs: Nvs<MemFlash>) -> (Driver, mpsc::UnboundedSender<Input>) {
    let config = DeviceConfig::new(device_id, "1.0.0-test").unwrap();
    let device = Device::new(config, nvs, rand::rngs::StdRng::seed_from_u64(11)).unwrap();
    let (tx, inputs) = mpsc::unbounded_channel();
    (DeviceDriver::new(device, TestIo::new(inputs)), tx)
}

/// The next message on the status topic, decoded.
async fn next_status(backend: &mut Backend, topics: &Topics) -> DeviceStatusMessage {
    let (topic, payload) = backend.next_publish().await;
    assert_eq!(
        topic,
        topics.status(),
        "{}",
        String::from_utf8_lossy(&payload)
    );
    serde_json::from_slice(&payload).unwrap()
}

fn press(button: &str) -> Input {
    Input::Press {
        button: button.into(),
        battery: Some(87),
    }
}

#[tokio::test]
async fn a_press_a_settings_update_and_get_status_go_through_the_device_core() {
    let env = Env::start();
    let topics = Topics::new("acorn-0101").unwrap();
    let identity = env.ca.identity("acorn-0101");
    let anchors = env.anchors();
    let mut backend = env.backend("acorn-pups/#").await;
    let nvs = Nvs::open(MemFlash::new(PARTITION as usize), 0, PARTITION).unwrap();
    let (mut driver, tx) = driver(topics.device_id(), nvs);
    let mut buffers = Buffers::new();
    let mut transport = Transport::new(
        TokioConnector,
        common::clock(),
        OsRng,
        &identity,
        &anchors,
        TransportConfig::new(env.target()),
        &mut buffers,
    );
    let t = topics.clone();
    let check = async move {
        // `online` once the device can receive (after its SUBACK).
        let online = next_status(&mut backend, &t).await;
        assert_eq!(online.status, DeviceStatus::Online);
        assert_eq!(online.firmware_version, "1.0.0-test");

        // A press arrives with the seed's JSON; the same button again at once is cooled down.
        tx.send(press("rf-5a3c")).unwrap();
        tx.send(press("rf-5a3c")).unwrap();
        let (topic, payload) = backend.next_publish().await;
        assert_eq!(topic, t.button_press());
        let message: ButtonPressMessage = serde_json::from_slice(&payload).unwrap();
        assert_eq!(message.device_id, "acorn-0101");
        assert_eq!(message.button_rf_id, "rf-5a3c");
        assert_eq!(message.battery_level, Some(87));
        let press_id = message.press_id.expect("a press carries its pressId");

        // A settings update is applied, saved and answered with the settings in effect.
        backend
            .publish(t.settings(), br#"{"requestId":"req-42","soundVolume":7}"#)
            .await;
        let reply = next_status(&mut backend, &t).await;
        assert_eq!(reply.request_id.as_deref(), Some("req-42"));
        assert_eq!(reply.result, Some(CommandResult::Ok));
        assert_eq!(reply.settings.map(|s| s.sound_volume), Some(7));

        // get-status answers with the settings and the diagnostics.
        backend
            .publish(
                t.commands(),
                br#"{"requestId":"req-7","command":"get-status"}"#,
            )
            .await;
        let reply = next_status(&mut backend, &t).await;
        assert_eq!(reply.request_id.as_deref(), Some("req-7"));
        assert_eq!(reply.command.as_deref(), Some("get-status"));
        assert_eq!(reply.result, Some(CommandResult::Ok));
        assert_eq!(reply.settings.map(|s| s.sound_volume), Some(7));
        let diagnostics = reply.diagnostics.expect("get-status carries diagnostics");
        assert_eq!(diagnostics.connects, Some(1));

        // The platform asks for the status (answered after the press's PUBACK, which came
        // before the settings update on the connection) and for a rotation (none configured).
        tx.send(Input::Status).unwrap();
        tx.send(Input::Rotate).unwrap();

        // A bad settings update is answered with an error and changes nothing.
        backend
            .publish(t.settings(), br#"{"requestId":"req-43","soundVolume":99}"#)
            .await;
        let reply = next_status(&mut backend, &t).await;
        assert_eq!(reply.request_id.as_deref(), Some("req-43"));
        assert_eq!(reply.result, Some(CommandResult::Error));

        // Shutdown: `offline`, acknowledged, then the transport returns.
        tx.send(Input::Shutdown).unwrap();
        let offline = next_status(&mut backend, &t).await;
        assert_eq!(offline.status, DeviceStatus::Offline);
        // Nothing else was published: the cooled-down press never went out.
        let quiet = tokio::time::timeout(Duration::from_millis(300), backend.next_publish()).await;
        assert!(quiet.is_err(), "unexpected publish: {quiet:?}");
        press_id
    };
    let run = async {
        tokio::time::timeout(WAIT * 3, transport.drive(&mut driver))
            .await
            .expect("the transport returns after the shutdown");
    };
    let ((), press_id) = tokio::join!(run, check);

    let (device, io) = driver.into_parts();
    let reports = io.reports.join("\n");
    // Each press answered: the first queued under the pressId it was published with, the
    // second cooled down.
    let [(first, PressOutcome::Queued(id)), (second, PressOutcome::CooledDown)] =
        io.presses.as_slice()
    else {
        panic!("{:?}\n{reports}", io.presses);
    };
    assert_eq!((first.as_str(), second.as_str()), ("rf-5a3c", "rf-5a3c"));
    assert_eq!(id.to_string(), press_id);
    // The status answer: connected once, the settings in effect, the queue empty.
    let [status] = io.statuses.as_slice() else {
        panic!("{:?}\n{reports}", io.statuses);
    };
    assert_eq!(status.snapshot.device_id, "acorn-0101");
    assert_eq!(
        status.snapshot.status,
        acorn_mqtt::ConnectionStatus::Connected
    );
    assert!(status.snapshot.connected_for_ms.is_some());
    assert_eq!(status.snapshot.settings.sound_volume, 7);
    assert_eq!(status.snapshot.stats.connects, 1);
    assert_eq!(status.queued_presses, 0);
    assert_eq!(status.oldest_queued_press, None);
    assert_eq!(status.dropped_presses, 0);
    // No rotation configured: refused, with the core's reason.
    assert_eq!(io.rotations, [Err(RotateError::NotConfigured)]);
    for expected in [
        "button press queued: rf-5a3c (battery 87 %)",
        "press of rf-5a3c within the cooldown (1000 ms): not reported",
        "settings applied and saved: soundEnabled true, soundVolume 7",
        "command get-status answered (requestId req-7)",
        &format!("press of rf-5a3c queued: pressId {press_id}"),
        "press of rf-5a3c not queued: within the cooldown",
        "status: connected for ",
        "soundVolume 7, ledBrightness 50, cooldownMs 1000, heartbeatSeconds 300; presses: 0 queued, 0 dropped;",
        "rotate: this device has no certificate rotation configured",
        "rejected inbound message on acorn-pups/settings/acorn-0101",
        "offline status delivered",
    ] {
        assert!(
            reports.contains(expected),
            "{expected:?} not in:\n{reports}"
        );
    }
    // The settings are in the NVS partition: a device made from the same flash starts with
    // them.
    let flash = device.into_store().release();
    let mut reopened = Nvs::open(flash, 0, PARTITION).unwrap();
    let stored = reopened.load().unwrap().expect("settings stored");
    assert_eq!(stored.sound_volume, 7);
    assert!(env.broker_saw_mqtt());
}
