//! The demo's cloud side on MQTT: a service identity (CN `service:cloud`, from the service
//! CA, a name no device can register) that
//! counts the presses it receives (once per `pressId`: QoS 1 may deliver one twice across a
//! reconnect, such as a certificate rotation's), follows the devices' certificate rotations
//! on their status, and sends every device that comes online a settings update and a
//! `get-status` command.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use acorn_backend::IssuedKeyPair;
use acorn_mqtt::{
    ButtonPressMessage, DeviceStatus, DeviceStatusMessage, RotationState, TOPIC_BUTTON_PRESS,
    TOPIC_COMMANDS, TOPIC_DEVICE_STATUS, TOPIC_SETTINGS,
};
use acorn_transport::rumqttc::{AsyncClient, Event, Packet, QoS};
use acorn_transport::TrustRoots;
use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::log::DemoLog;

/// The cloud client's MQTT client id and certificate CN.
pub const CLOUD_ID: &str = "service:cloud";

/// A running cloud client.
pub struct Cloud {
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Cloud {
    /// Connects to the broker with the cloud's service identity and subscribes to every
    /// device's presses and status.
    pub async fn start(
        issued: IssuedKeyPair,
        port: u16,
        roots: TrustRoots,
        log: DemoLog,
        stop: watch::Receiver<bool>,
    ) -> Result<Self> {
        let mut options = super::service_session(&issued, port, roots, CLOUD_ID);
        options.clean_session = true;
        let (client, mut eventloop) = options.connect().context("cloud client settings")?;
        // Wait (bounded) for the CONNACK so the subscriptions are in place before devices start.
        let connack = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(options.diagnose(&e)),
                }
            }
        })
        .await;
        match connack {
            Ok(Ok(())) => {}
            Ok(Err(diagnosis)) => anyhow::bail!("the cloud client could not connect: {diagnosis}"),
            Err(_) => anyhow::bail!("the cloud client got no CONNACK within 10 s"),
        }
        for filter in [
            format!("{TOPIC_BUTTON_PRESS}/+"),
            format!("{TOPIC_DEVICE_STATUS}/+"),
        ] {
            client
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .context("cloud subscribe")?;
        }
        log.line(
            "cloud",
            format!("connected as `{CLOUD_ID}` (its own client certificate); subscribed to presses and status"),
        );
        let task = tokio::spawn(run(client.clone(), eventloop, log, stop));
        Ok(Self { client, task })
    }

    /// Disconnects and waits (bounded) for the event loop to end.
    pub async fn stop(self) {
        let _ = self.client.disconnect().await;
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(3), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// What the cloud still waits for from one device.
struct Pending {
    settings_done: bool,
    command_done: bool,
    last_sent: Option<tokio::time::Instant>,
}

/// How long to wait for a reply before sending again (the device may not have subscribed
/// yet when its `online` status arrives: MQTT does not keep messages for absent subscribers).
const RESEND_AFTER: Duration = Duration::from_secs(1);

async fn run(
    client: AsyncClient,
    mut eventloop: acorn_transport::rumqttc::EventLoop,
    log: DemoLog,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    // (device, pressId) of every press counted.
    let mut presses: HashSet<(String, String)> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = tick.tick() => {
                send_due(&client, &log, &mut pending);
                continue;
            }
            _ = stop.changed() => {
                if *stop.borrow() { return; }
                continue;
            }
        };
        let publish = match event {
            Ok(Event::Incoming(Packet::Publish(p))) => p,
            Ok(_) => continue,
            Err(e) => {
                if !*stop.borrow() {
                    log.line("cloud", format!("connection lost: {e}"));
                }
                return;
            }
        };
        if let Some(device) = publish
            .topic
            .strip_prefix(&format!("{TOPIC_BUTTON_PRESS}/"))
        {
            let press_id = serde_json::from_slice::<ButtonPressMessage>(&publish.payload)
                .ok()
                .and_then(|press| press.press_id);
            let first = press_id.is_none_or(|pid| presses.insert((device.to_owned(), pid)));
            if first {
                log.tally(device, |t| t.presses_received += 1);
            }
            continue;
        }
        let Some(device) = publish
            .topic
            .strip_prefix(&format!("{TOPIC_DEVICE_STATUS}/"))
        else {
            continue;
        };
        let device = device.to_owned();
        let Ok(status) = DeviceStatusMessage::from_json(&publish.topic, &publish.payload) else {
            log.line("cloud", format!("unreadable status from {device}"));
            continue;
        };
        if let Some(rotation) = status.rotation {
            log.line("cloud", rotation_line(&device, rotation, &status));
            continue;
        }
        if let Some(command) = &status.command {
            let request_id = status.request_id.clone().unwrap_or_default();
            if let Some(p) = pending.get_mut(&device) {
                if request_id == settings_request_id(&device) {
                    p.settings_done = true;
                } else if request_id == command_request_id(&device) {
                    p.command_done = true;
                }
            }
            log.line(
                "cloud",
                format!(
                    "{device} answered `{command}` ({request_id}): {}",
                    status.result.map_or_else(
                        || "no result".to_owned(),
                        |r| format!("{r:?}").to_lowercase()
                    )
                ),
            );
            continue;
        }
        if status.status == DeviceStatus::Online && !pending.contains_key(&device) {
            log.line(
                "cloud",
                format!("{device} is online: sending settings {{soundVolume 7, ledBrightness 80}} and command get-status"),
            );
            pending.insert(
                device,
                Pending {
                    settings_done: false,
                    command_done: false,
                    last_sent: None,
                },
            );
            send_due(&client, &log, &mut pending);
        }
    }
}

/// What a device's rotation answer says, in words.
fn rotation_line(device: &str, rotation: RotationState, status: &DeviceStatusMessage) -> String {
    let error = status.error.as_deref().unwrap_or("no reason given");
    match rotation {
        RotationState::Started => {
            format!(
                "{device} reports: certificate rotation started (new key, certificate requested)"
            )
        }
        RotationState::Committed => format!(
            "{device} reports: certificate rotation committed, now on certificate {}…",
            super::sim::short_id(status.certificate_id.as_deref().unwrap_or_default())
        ),
        RotationState::RolledBack => {
            format!(
                "{device} reports: certificate rotation rolled back, old certificate kept: {error}"
            )
        }
        RotationState::AlreadyRotating => format!("{device} reports: already rotating"),
        RotationState::Failed => format!("{device} reports: certificate rotation failed: {error}"),
    }
}

fn settings_request_id(device: &str) -> String {
    format!("settings-{device}")
}

fn command_request_id(device: &str) -> String {
    format!("status-{device}")
}

/// Sends the settings update and command to every device that has not answered them yet
/// (first time, or again after [`RESEND_AFTER`]). Never blocks: the event loop runs in this
/// same task, so a full request channel just means "next tick".
fn send_due(client: &AsyncClient, log: &DemoLog, pending: &mut BTreeMap<String, Pending>) {
    let now = tokio::time::Instant::now();
    for (device, p) in pending.iter_mut() {
        let due = p
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= RESEND_AFTER);
        if !due || (p.settings_done && p.command_done) {
            continue;
        }
        if p.last_sent.is_some() {
            log.line(
                "cloud",
                format!("no answer from {device} yet: sending again"),
            );
        }
        let mut ok = true;
        if !p.settings_done {
            let settings = format!(
                r#"{{"requestId":"{}","soundVolume":7,"ledBrightness":80}}"#,
                settings_request_id(device)
            );
            ok &= client
                .try_publish(
                    format!("{TOPIC_SETTINGS}/{device}"),
                    QoS::AtLeastOnce,
                    false,
                    settings,
                )
                .is_ok();
        }
        if !p.command_done {
            let cmd = format!(
                r#"{{"requestId":"{}","command":"get-status"}}"#,
                command_request_id(device)
            );
            ok &= client
                .try_publish(
                    format!("{TOPIC_COMMANDS}/{device}"),
                    QoS::AtLeastOnce,
                    false,
                    cmd,
                )
                .is_ok();
        }
        if ok {
            p.last_sent = Some(now);
        }
    }
}
