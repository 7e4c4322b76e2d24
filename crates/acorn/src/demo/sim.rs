//! One simulated device of the demo: register with a CSR into its own NVS image, run the
//! device runtime (`acorn_agent::device`), press buttons, and tally what happens.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use acorn_agent::device::{Device, DeviceEvent, DeviceOptions, PressOutcome};
use acorn_device::PressId;
use acorn_mqtt::{BackoffConfig, ConnectionStatus};
use acorn_register::{register, HostNetwork, ImageTarget, RegistrationOptions, RetryPolicy};
use acorn_transport::{BrokerTarget, SecretString, TrustRoots};
use tokio::sync::{broadcast, watch};

use super::log::DemoLog;

/// What a simulated device needs.
pub struct SimConfig {
    /// Its device id.
    pub device_id: String,
    /// Its NVS image (created by the registration).
    pub image: PathBuf,
    /// The backend's URL.
    pub backend_url: String,
    /// A registration token for it.
    pub token: SecretString,
    /// The broker port on localhost.
    pub port: u16,
    /// The broker's CA.
    pub roots: TrustRoots,
    /// Time between presses.
    pub press_every: Duration,
    /// Delay before the first press (staggers the devices).
    pub offset: Duration,
}

/// Buttons each device cycles through (each has a 1 s cooldown by default).
const BUTTONS: [&str; 3] = ["rf-5a3c", "rf-77e1", "rf-0b42"];

/// Runs the device until `stop` turns true, then waits (bounded) for its outstanding presses
/// to be acknowledged and shuts it down cleanly.
pub async fn run(config: SimConfig, log: DemoLog, mut stop: watch::Receiver<bool>) {
    let id = config.device_id.clone();
    log.tally(&id, |_| {});
    // Register: key made here, CSR sent, answer checked, identity stored in the NVS image.
    let mut options = RegistrationOptions::new(&config.backend_url, config.token, &id);
    options.retry = RetryPolicy {
        backoff: BackoffConfig {
            initial_ms: 200,
            cap_ms: 2000,
            ..BackoffConfig::default()
        },
        max_attempts: 5,
        request_timeout: Duration::from_secs(10),
    };
    let image = ImageTarget::new(&config.image);
    match register(&options, &image, &mut HostNetwork).await {
        Ok(done) => {
            log.tally(&id, |t| t.registered = true);
            log.line(
                &id,
                format!(
                    "registered: P-256 key made on the device, CSR signed, certificate {}… stored in {}",
                    &done.certificate_id[..12.min(done.certificate_id.len())],
                    image
                        .path()
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
            );
        }
        Err(e) => {
            log.tally(&id, |t| t.errors += 1);
            log.line(&id, format!("registration failed: {e}"));
            return;
        }
    }

    // Run: identity loaded from the image, mutual TLS to the broker.
    let mut device_options = DeviceOptions::new(&config.image);
    device_options.broker = Some(BrokerTarget::new("localhost", config.port));
    device_options.roots = config.roots;
    let device = match Device::open(device_options) {
        Ok(d) => d,
        Err(e) => {
            log.tally(&id, |t| t.errors += 1);
            log.line(&id, format!("cannot start: {e}"));
            return;
        }
    };
    let handle = device.spawn();
    let mut events = handle.events();
    // Presses answered and not yet acknowledged, by pressId.
    let mut pending: HashSet<PressId> = HashSet::new();
    let mut presses = tokio::time::interval_at(
        tokio::time::Instant::now() + config.offset + config.press_every,
        config.press_every,
    );
    presses.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_button = 0usize;
    let mut connected = false;
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() { break; }
            }
            _ = presses.tick(), if connected => {
                let button = BUTTONS[next_button % BUTTONS.len()];
                next_button += 1;
                match handle.press(button, Some(87)).await {
                    Ok(PressOutcome::Queued(pid)) => {
                        pending.insert(pid);
                        log.tally(&id, |t| t.presses_sent += 1);
                    }
                    Ok(PressOutcome::CooledDown) => {}
                    Err(e) => {
                        log.tally(&id, |t| t.errors += 1);
                        log.line(&id, format!("press failed: {e}"));
                    }
                }
            }
            event = events.recv() => {
                match event {
                    Ok(e) => on_event(&id, e, &log, &mut pending, &mut connected),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        log.line(&id, format!("(log skipped {n} events)"));
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }
    // Let the last presses be acknowledged (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) => on_event(&id, e, &log, &mut pending, &mut connected),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            _ => break,
        }
    }
    if let Err(e) = handle.shutdown().await {
        log.line(&id, format!("shutdown: {e}"));
    }
}

fn on_event(
    id: &str,
    event: DeviceEvent,
    log: &DemoLog,
    pending: &mut HashSet<PressId>,
    connected: &mut bool,
) {
    match event {
        DeviceEvent::Status(ConnectionStatus::Connected) => {
            *connected = true;
            log.tally(id, |t| t.connected = true);
            log.line(id, "connected over mutual TLS; status online published");
        }
        DeviceEvent::Status(ConnectionStatus::Error(why)) => {
            *connected = false;
            log.tally(id, |t| t.errors += 1);
            log.line(id, format!("connection problem: {why}"));
        }
        DeviceEvent::Status(ConnectionStatus::Disconnected) => *connected = false,
        DeviceEvent::Status(ConnectionStatus::Connecting) => {}
        DeviceEvent::PressDelivered(pid) => {
            if pending.remove(&pid) {
                log.tally(id, |t| t.presses_acked += 1);
                let acked = log
                    .tallies()
                    .get(id)
                    .map(|t| t.presses_acked)
                    .unwrap_or_default();
                log.line(id, format!("press #{acked} acknowledged by the broker"));
            }
        }
        // A reply acknowledged (presses are counted by their pressId above).
        DeviceEvent::Delivered(_) => {}
        DeviceEvent::PressDropped(pid) => {
            pending.remove(&pid);
            log.tally(id, |t| t.errors += 1);
            log.line(id, format!("press {pid} dropped: the press queue was full"));
        }
        DeviceEvent::PressNotStored { press_id, reason } => {
            log.tally(id, |t| t.errors += 1);
            log.line(id, format!("press {press_id} kept in RAM only: {reason}"));
        }
        DeviceEvent::RotationEnded { committed, detail } => {
            let what = if committed { "committed" } else { "failed" };
            log.line(id, format!("certificate rotation {what}: {detail}"));
        }
        // A reply given up (a press given up by the session is handed to it again).
        DeviceEvent::Dropped { id: mid, reason } => {
            log.tally(id, |t| t.errors += 1);
            log.line(id, format!("message {} dropped: {reason:?}", mid.0));
        }
        DeviceEvent::SettingsApplied(s) => {
            log.tally(id, |t| t.settings_applied += 1);
            log.line(
                id,
                format!(
                    "settings applied and saved in NVS: volume {}, LED {} %, cooldown {} ms",
                    s.sound_volume, s.led_brightness, s.cooldown_ms
                ),
            );
        }
        DeviceEvent::Answered {
            command,
            request_id,
        } => {
            log.tally(id, |t| t.commands_answered += 1);
            log.line(id, format!("answered command `{command}` ({request_id})"));
        }
        DeviceEvent::Rejected { reason } => {
            log.tally(id, |t| t.errors += 1);
            log.line(id, format!("rejected a message: {reason}"));
        }
        DeviceEvent::Health(_) | DeviceEvent::HeartbeatSent { .. } => {}
    }
}
