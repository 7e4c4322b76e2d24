//! One simulated device of the demo: register with a CSR into its own NVS image, run the
//! device runtime (`acorn_agent::device`) with certificate rotation on (the local stack's
//! provisioning topics, the demo CA), press buttons, rotate once when planned, and tally what
//! happens.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use acorn_agent::device::{Device, DeviceEvent, DeviceOptions, PressOutcome, RotationConfig};
use acorn_agent::device_image::unix_now;
use acorn_agent::DeviceImage;
use acorn_device::PressId;
use acorn_mqtt::{BackoffConfig, ConnectionStatus};
use acorn_register::{register, HostNetwork, ImageTarget, RegistrationOptions, RetryPolicy};
use acorn_transport::{ping, BrokerTarget, ClientIdentity, PingOptions, SecretString, TrustRoots};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

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
    /// The CA (PEM) a rotated certificate must chain to.
    pub rotation_ca: Vec<u8>,
    /// When to rotate the certificate, if this device does.
    pub rotate: Option<RotatePlan>,
    /// Time between presses.
    pub press_every: Duration,
    /// Delay before the first press (staggers the devices).
    pub offset: Duration,
}

/// One certificate rotation during the run.
pub struct RotatePlan {
    /// Time from the device's start to the rotation (it waits for a connection).
    pub after: Duration,
    /// The number of the last CRL the broker installed.
    pub crl_installed: watch::Receiver<u64>,
}

/// How long the old certificate's revocation may take to reach the broker after the commit.
const REVOCATION_WAIT: Duration = Duration::from_secs(10);

/// What the device loop keeps track of.
#[derive(Default)]
struct Progress {
    /// Presses answered and not yet acknowledged, by pressId.
    pending: HashSet<PressId>,
    connected: bool,
    /// A rotation is under way (a reconnect is its trial with the new certificate).
    rotating: bool,
    /// A rotation was committed.
    committed: bool,
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
                    short_id(&done.certificate_id),
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

    // The identity a rotation replaces, to show afterwards that the broker refuses it.
    let mut old_identity = match &config.rotate {
        Some(_) => match DeviceImage::open_copy(&config.image, None)
            .and_then(|mut image| image.load_identity(unix_now()))
        {
            Ok(loaded) => Some((loaded.identity, loaded.metadata.certificate_fingerprint)),
            Err(e) => {
                log.line(&id, format!("cannot read its identity back: {e}"));
                None
            }
        },
        None => None,
    };

    // Run: identity loaded from the image, mutual TLS to the broker; rotation over AWS IoT's
    // provisioning API on this device's own local topics, new certificates from the demo CA.
    let mut device_options = DeviceOptions::new(&config.image);
    device_options.broker = Some(BrokerTarget::new("localhost", config.port));
    device_options.roots = config.roots.clone();
    device_options.rotation =
        RotationConfig::new(acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE).ok();
    device_options.rotation_local = true;
    device_options.rotation_ca = Some(config.rotation_ca.clone());
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
    let mut progress = Progress::default();
    let rotate_at = tokio::time::sleep(
        config
            .rotate
            .as_ref()
            .map_or(Duration::from_secs(24 * 3600), |plan| plan.after),
    );
    tokio::pin!(rotate_at);
    let mut rotation_due = config.rotate.is_some();
    let mut old_refused: Option<JoinHandle<()>> = None;
    let mut presses = tokio::time::interval_at(
        tokio::time::Instant::now() + config.offset + config.press_every,
        config.press_every,
    );
    presses.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_button = 0usize;
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() { break; }
            }
            _ = &mut rotate_at, if rotation_due && progress.connected => {
                rotation_due = false;
                let crl_before = config.rotate.as_ref().map(|plan| *plan.crl_installed.borrow());
                match handle.rotate().await {
                    Ok(Ok(())) => {
                        progress.rotating = true;
                        log.line(&id, format!(
                            "certificate rotation started: a new P-256 key is made on the device and its CSR sent on its own topic {}{}",
                            acorn_mqtt::provisioning::local_prefix(&id),
                            acorn_mqtt::provisioning::CREATE_FROM_CSR
                        ));
                        if let (Some(plan), Some((identity, fingerprint)), Some(seen)) =
                            (&config.rotate, old_identity.take(), crl_before)
                        {
                            old_refused = Some(tokio::spawn(show_old_refused(OldIdentity {
                                device_id: id.clone(),
                                identity,
                                fingerprint,
                                port: config.port,
                                roots: config.roots.clone(),
                                crl_installed: plan.crl_installed.clone(),
                                crl_before: seen,
                            }, log.clone())));
                        }
                    }
                    Ok(Err(e)) => {
                        log.tally(&id, |t| t.errors += 1);
                        log.line(&id, format!("certificate rotation did not start: {e}"));
                    }
                    Err(e) => {
                        log.tally(&id, |t| t.errors += 1);
                        log.line(&id, format!("certificate rotation: {e}"));
                    }
                }
            }
            _ = presses.tick(), if progress.connected => {
                let button = BUTTONS[next_button % BUTTONS.len()];
                next_button += 1;
                match handle.press(button, Some(87)).await {
                    Ok(PressOutcome::Queued(pid)) => {
                        progress.pending.insert(pid);
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
                    Ok(e) => on_event(&id, e, &log, &mut progress),
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
    while !progress.pending.is_empty() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) => on_event(&id, e, &log, &mut progress),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            _ => break,
        }
    }
    if let Err(e) = handle.shutdown().await {
        log.line(&id, format!("shutdown: {e}"));
    }
    match old_refused {
        // The check ends by itself (bounded); a rotation that never committed leaves it
        // waiting for a revocation that will not come.
        Some(task) if progress.committed => {
            let _ = tokio::time::timeout(REVOCATION_WAIT, task).await;
        }
        Some(task) => task.abort(),
        None => {}
    }
}

/// The first 12 characters of a certificate id, enough to tell two apart in the log.
pub fn short_id(certificate_id: &str) -> &str {
    certificate_id.get(..12).unwrap_or(certificate_id)
}

/// The certificate a rotation replaces, and how to know when its revocation reached the
/// broker.
struct OldIdentity {
    device_id: String,
    identity: ClientIdentity,
    /// Its certificate id (SHA-256 of the DER, hex).
    fingerprint: String,
    port: u16,
    roots: TrustRoots,
    crl_installed: watch::Receiver<u64>,
    /// The last CRL installed before the rotation started.
    crl_before: u64,
}

/// Waits (bounded) for the CRL that revokes the old certificate, then connects with it once:
/// the broker must refuse it in the TLS handshake. Only after the revocation: an accepted
/// connection with the device's client id would take its live session over.
async fn show_old_refused(mut old: OldIdentity, log: DemoLog) {
    let id = old.device_id.clone();
    let before = old.crl_before;
    let revoked = tokio::time::timeout(
        REVOCATION_WAIT,
        old.crl_installed.wait_for(|number| *number > before),
    )
    .await
    .is_ok_and(|changed| changed.is_ok());
    if !revoked {
        log.tally(&id, |t| t.errors += 1);
        log.line(
            &id,
            format!(
                "the old certificate was not revoked within {REVOCATION_WAIT:?} of the rotation"
            ),
        );
        return;
    }
    let mut options = PingOptions::new(
        BrokerTarget::new("localhost", old.port),
        old.identity,
        old.roots,
        &id,
        env!("CARGO_PKG_VERSION"),
    );
    options.step_timeout = Duration::from_secs(5);
    let short = short_id(&old.fingerprint);
    match ping(&options).await {
        Ok(_) => {
            log.tally(&id, |t| t.errors += 1);
            log.line(
                &id,
                format!("WARNING: the broker still accepts the old certificate {short}…"),
            );
        }
        Err(failure) => log.line(
            &id,
            format!(
                "a connection with the old certificate {short}… is refused (step {}): {}",
                failure.step.name(),
                failure.diagnosis
            ),
        ),
    }
}

fn on_event(id: &str, event: DeviceEvent, log: &DemoLog, progress: &mut Progress) {
    let pending = &mut progress.pending;
    match event {
        DeviceEvent::Status(ConnectionStatus::Connected) => {
            progress.connected = true;
            log.tally(id, |t| t.connected = true);
            if progress.rotating {
                log.line(id, "trial connection with the new certificate accepted by the broker (it chains to the demo CA); committing it");
            } else {
                log.line(id, "connected over mutual TLS; status online published");
            }
        }
        DeviceEvent::Status(ConnectionStatus::Error(why)) => {
            progress.connected = false;
            log.tally(id, |t| t.errors += 1);
            log.line(id, format!("connection problem: {why}"));
        }
        DeviceEvent::Status(ConnectionStatus::Disconnected) => progress.connected = false,
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
            progress.rotating = false;
            if committed {
                progress.committed = true;
                log.tally(id, |t| t.rotations += 1);
                log.line(id, format!("certificate rotation committed: the new certificate {}… is the active identity in its NVS image; presses go on", short_id(&detail)));
            } else {
                log.tally(id, |t| t.errors += 1);
                log.line(id, format!("certificate rotation failed or rolled back (the old certificate is kept): {detail}"));
            }
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
