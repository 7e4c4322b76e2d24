//! `acorn device ping|run --transport embedded`: the firmware's own network stack
//! (`acorn-embedded`: embedded-tls 1.3 + mqttrs, driven by the session / the device core) over
//! tokio TCP, so the chip's transport is exercised against a real broker on Linux.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use acorn_agent::device::AGENT_VERSION;
use acorn_agent::{DeviceImage, LoadedDevice, QueueImage};
use acorn_device::{Device, DeviceConfig, HostFacts};
use acorn_embedded::device::{DeviceDriver, DeviceIo, Input, Report};
use acorn_embedded::ping::PingOptions;
use acorn_embedded::rotation::{Rotation, RotationSlots};
use acorn_embedded::{
    host, Buffers, Target, Time, TlsIdentity, Transport, TransportConfig, TrustAnchors,
};
use acorn_transport::BrokerTarget;
use anyhow::{bail, Context, Result};
use tokio::io::AsyncBufReadExt as _;

use super::console;

/// The identity as the embedded transport needs it (P-256; an RSA key is refused here, with
/// a message that names the key type this transport needs).
fn tls_identity(loaded: &LoadedDevice) -> Result<TlsIdentity> {
    let chain = loaded.identity.cert_chain()?;
    let cert = chain
        .first()
        .context("the image holds no device certificate")?
        .to_vec();
    let key = loaded.identity.private_key()?;
    if matches!(key, rustls_pki_types::PrivateKeyDer::Pkcs1(_)) {
        bail!(
            "the embedded transport needs a P-256 (EC) key, as the chip makes; this identity's \
             key is RSA (PKCS#1, as AWS CreateKeysAndCertificate issues). Use the default \
             transport (rustls), or register the device with a key made on it (P-256)"
        );
    }
    let identity =
        TlsIdentity::from_der(cert, key.secret_der(), &loaded.device_id, &loaded.endpoint)
            .map_err(|e| anyhow::anyhow!("the embedded transport cannot use this identity: {e}"))?;
    Ok(identity)
}

fn anchors(ca: Option<&Path>) -> Result<TrustAnchors> {
    match ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            TrustAnchors::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("CA file {}: {e}", path.display()))
        }
        None => Ok(TrustAnchors::amazon()),
    }
}

fn target(broker: &BrokerTarget) -> Result<Target> {
    if broker.alpn {
        bail!("--alpn is not offered by the embedded transport yet: connect on port 8883");
    }
    Ok(Target::new(&broker.host, broker.port))
}

/// One ping through the embedded transport; prints the steps or the diagnosis (exit 1).
pub fn ping(
    loaded: &LoadedDevice,
    broker: &BrokerTarget,
    ca: Option<&Path>,
    payload: Vec<u8>,
    json: bool,
) -> Result<ExitCode> {
    let identity = tls_identity(loaded)?;
    let anchors = anchors(ca)?;
    let options = PingOptions::new(target(broker)?, &loaded.device_id, payload);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(host::ping(&identity, &anchors, &options));
    let address = format!("{}:{}", broker.host, broker.port);
    let steps = |steps: &[(acorn_embedded::Step, u64)]| {
        steps
            .iter()
            .map(|(s, ms)| serde_json::json!({"step": s.to_string(), "ms": ms}))
            .collect::<Vec<_>>()
    };
    match result {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true, "transport": "embedded", "deviceId": loaded.device_id,
                        "broker": address, "steps": steps(&report.steps),
                        "totalMs": report.total_ms, "tlsVersion": report.tls_version,
                        "cipherSuite": report.cipher_suite, "sessionPresent": report.session_present,
                    })
                );
            } else {
                println!(
                    "ping {} at {address} (embedded transport)",
                    loaded.device_id
                );
                for (step, ms) in &report.steps {
                    println!("  {:<11} {:>6} ms", step.to_string(), ms);
                }
                println!("  {:<11} {:>6} ms", "total", report.total_ms);
                println!("ok: {}, {}", report.tls_version, report.cipher_suite);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": false, "transport": "embedded", "deviceId": loaded.device_id,
                        "broker": address, "steps": steps(&failure.completed),
                        "failedStep": failure.step.to_string(),
                        "diagnosis": failure.diagnosis.to_string(),
                    })
                );
            } else {
                println!(
                    "ping {} at {address} (embedded transport)",
                    loaded.device_id
                );
                println!("  {:<11} FAILED", failure.step.to_string());
                println!("diagnosis: {}", failure.diagnosis);
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// The identity's slots are in the device image, which is also the settings store.
struct InImage;

impl<F: embedded_storage::nor_flash::NorFlash> RotationSlots<DeviceImage<F>> for InImage {
    type Kv<'a>
        = &'a mut acorn_nvs::Nvs<F>
    where
        F: 'a;

    fn slots<'a>(&'a mut self, image: &'a mut DeviceImage<F>) -> acorn_certs::Slots<Self::Kv<'a>> {
        image.slots()
    }
}

/// Certificate rotation as the chip does it (`acorn_embedded::rotation`), configured by the
/// same `--rotation-*` options as the default transport's; `config` gets the core's part.
fn rotation(
    loaded: &LoadedDevice,
    args: &super::RotationArgs,
    config: &mut DeviceConfig,
) -> Result<Rotation<InImage, rand::rngs::OsRng>> {
    if let Some(mut rotation) = args.config()? {
        if args.rotation_local {
            rotation.topic_prefix = acorn_mqtt::provisioning::local_prefix(&loaded.device_id);
        }
        config.rotation = Some(rotation);
    }
    let rotator = Rotation::new(InImage, rand::rngs::OsRng, &loaded.endpoint, &loaded.issuer);
    Ok(match args.ca()? {
        Some(ca) => rotator.with_ca(ca),
        None => rotator,
    })
}

/// A device whose image holds only a claim identity provisions itself as the chip does
/// (`acorn_embedded::claim` over this transport; the claim endpoint trusted through `--ca`,
/// else Amazon's roots), stores its own identity, then runs as itself.
pub fn claim_if_needed(conn: &super::ConnectionArgs) -> Result<()> {
    use acorn_embedded::claim::{provision, read_config, ThingParameters};
    if !conn.image.exists() {
        return Ok(());
    }
    let keys = crate::image_file::maybe_keys(conn.nvs_keys.as_deref())?;
    let mut image = DeviceImage::open(&conn.image, keys.as_ref())?;
    let now = acorn_agent::device_image::unix_now();
    if image.load_identity(now).is_ok() {
        return Ok(());
    }
    let Some(config) = read_config(image.nvs_mut())
        .map_err(|e| anyhow::anyhow!("{}: {e}", conn.image.display()))?
    else {
        return Ok(());
    };
    let anchors = anchors(conn.ca.as_deref())?;
    let (serial_number, mac_address) = acorn_register::derived_serial_and_mac(&config.device_id);
    let parameters = ThingParameters {
        serial_number,
        mac_address,
        firmware_version: AGENT_VERSION.to_owned(),
    };
    eprintln!(
        "no identity yet: provisioning `{}` by claim at {}:{} (embedded transport)",
        config.device_id, config.host, config.port
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let claimed = runtime
        .block_on(provision(
            host::TokioConnector,
            host::SystemClock::new(),
            host::OsRng,
            &config,
            &anchors,
            parameters,
        ))
        .context("fleet provisioning by claim failed")?;
    // Stored as the chip stores it: checked first (this key, the dates, this device).
    acorn_certs::CertStore::new(acorn_certs::nvs_kv::NvsCertKv::new(image.nvs_mut()))
        .allow_custom_endpoint(true)
        .store(&claimed.certificates, now)
        .map_err(|e| anyhow::anyhow!("the identity obtained by claim was not stored: {e}"))?;
    eprintln!(
        "provisioned by claim: `{}` has certificate {}; connecting as itself",
        claimed.certificates.device_id, claimed.certificate_id
    );
    Ok(())
}

/// The device's inputs: the console's stdin lines (`press <buttonRfId> [battery]`, `status`,
/// `rotate`, `quit`), the optional press timer, and SIGINT/SIGTERM. The answers to them are
/// printed as the default transport prints them (JSON lines on stdout, refusals on stderr,
/// through [`super::console`]); every other report goes to stderr.
struct HostIo {
    inputs: tokio::sync::mpsc::UnboundedReceiver<Input>,
}

impl DeviceIo for HostIo {
    async fn next_input(&mut self) -> Input {
        self.inputs.recv().await.unwrap_or(Input::Shutdown)
    }

    fn report(&mut self, _now: Time, report: Report<'_>) {
        match report {
            Report::Press { button, outcome } => {
                println!("{}", console::press_json(button, outcome));
            }
            Report::PressRefused { button, error } => {
                eprintln!("{}", console::press_error(button, error));
            }
            Report::Status(answer) => println!(
                "{}",
                console::status_json(
                    &answer.snapshot,
                    answer.queued_presses,
                    answer.oldest_queued_press,
                    answer.dropped_presses,
                )
            ),
            Report::Rotate(Ok(())) => println!("{}", console::rotate_started_json()),
            Report::Rotate(Err(error)) => eprintln!("{}", console::rotate_error(&error)),
            other => eprintln!("{other}"),
        }
    }

    /// The process's resident memory, as the default transport reports it.
    fn host_facts(&mut self) -> Option<HostFacts> {
        Some(acorn_agent::device::host_facts())
    }
}

/// Runs the device core over the embedded transport until `quit`, SIGINT or SIGTERM (at the
/// end of input it runs on, as with the default transport); the settings live in the image
/// and the presses in the queue image, as with the default transport (and as on the chip: one
/// NVS format for both).
pub fn run(
    image: DeviceImage<acorn_nvs::FileFlash>,
    queue: QueueImage,
    loaded: &LoadedDevice,
    broker: &BrokerTarget,
    ca: Option<&Path>,
    args: &super::RunArgs,
) -> Result<ExitCode> {
    let identity = tls_identity(loaded)?;
    let anchors = anchors(ca)?;
    let mut config = DeviceConfig::new(&loaded.device_id, AGENT_VERSION)?;
    config.certificate = loaded.certificate.clone();
    config.set_press_queue_capacity(args.queue_capacity);
    config.heartbeat_override_ms = args
        .heartbeat
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let rotation = rotation(loaded, &args.rotation, &mut config)?;
    let device = Device::with_press_store(config, image, queue, rand::rngs::OsRng)?;
    for warning in device
        .settings_warning()
        .into_iter()
        .chain(device.press_queue_warnings().iter().map(String::as_str))
    {
        eprintln!("warning: {warning}");
    }
    super::print_recovered(device.recovered_presses());
    let press_every = args.press_every;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let target = target(broker)?;
    let result = runtime.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        spawn_inputs(tx, press_every)?;
        let mut driver = DeviceDriver::with_rotation(device, HostIo { inputs: rx }, rotation);
        let mut buffers = Buffers::new();
        let mut transport = Transport::new(
            host::TokioConnector,
            host::SystemClock::new(),
            host::OsRng,
            &identity,
            &anchors,
            TransportConfig::new(target),
            &mut buffers,
        );
        transport.drive(&mut driver).await;
        eprintln!("device stopped");
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    });
    // The stdin reader may be blocked in a read: do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

fn spawn_inputs(
    tx: tokio::sync::mpsc::UnboundedSender<Input>,
    press_every: Option<Duration>,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let signals = tx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        let _ = signals.send(Input::Shutdown);
    });
    if let Some(every) = press_every {
        let timer = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let press = Input::Press {
                    button: "sim-button".into(),
                    battery: None,
                };
                if timer.send(press).is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let input = match console::parse(&line) {
                Ok(Some(console::Command::Press { button, battery })) => {
                    Input::Press { button, battery }
                }
                Ok(Some(console::Command::Status)) => Input::Status,
                Ok(Some(console::Command::Rotate)) => Input::Rotate,
                Ok(Some(console::Command::Quit)) => Input::Shutdown,
                Ok(None) => continue,
                Err(message) => {
                    eprintln!("{message}");
                    continue;
                }
            };
            let stop = input == Input::Shutdown;
            if tx.send(input).is_err() || stop {
                return;
            }
        }
        // End of input: the device runs on until `quit` or a signal, as with rustls.
    });
    Ok(())
}
