//! `acorn device`: run a device from its NVS image (`run`), check its connection (`ping`),
//! register it with the backend (`register`).

mod console;
mod embedded;
mod register;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use acorn_agent::device::{Device, DeviceHandle, DeviceOptions, AGENT_VERSION};
use acorn_agent::device_image::unix_now;
use acorn_agent::queue_image::default_queue_path;
use acorn_agent::{DeviceImage, QueueImage};
use acorn_mqtt::{DeviceStatus, DeviceStatusMessage};
use acorn_transport::{ping, BrokerTarget, PingOptions, TrustRoots};
use anyhow::{bail, Context, Result};
use tokio::io::AsyncBufReadExt as _;

/// Subcommands of `acorn device`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Run the device whose identity is in an NVS image: connect, publish button presses,
    /// apply settings and answer commands until SIGINT/SIGTERM or `quit`.
    ///
    /// Presses wait in a second NVS image (the press queue: `NAME.queue.bin` beside
    /// `NAME.bin` unless --queue-image says otherwise, made on first use) from the moment they
    /// are answered until the broker acknowledges them, so a crash or a restart loses none:
    /// they go first, oldest first, at the next start. A heartbeat status goes out every `heartbeatSeconds`
    /// (setting, default 300 s; --heartbeat overrides it until a settings update names one).
    ///
    /// With --rotation-template the device rotates its certificate over AWS IoT's
    /// provisioning MQTT API (CreateCertificateFromCsr, RegisterThing with that template) on
    /// the `rotate-certificate` command, on the console's `rotate`, and by itself 30 days
    /// before the certificate ends; the new certificate is tried on a new connection before it
    /// replaces the old one in the image, or rolled back.
    ///
    /// Commands on stdin, with either --transport: `press <buttonRfId> [battery]`, `status`,
    /// `rotate`, `quit`. Answers are JSON lines on stdout; refusals and logs go to stderr
    /// (level from RUST_LOG, default `info`).
    Run(RunArgs),
    /// Run the device until one certificate rotation ends (as `device run --rotation-template`
    /// with `rotate` at start): exit 0 when the new certificate is in use, 1 when the rotation
    /// failed or was rolled back (the old certificate stays).
    Rotate(RotateArgs),
    /// Connect once, publish one status at QoS 1, disconnect: the time of every step (DNS,
    /// TCP, TLS, CONNACK, SUBACK, PUBACK) or the diagnosis of the one that failed (exit 1).
    Ping(PingArgs),
    /// Register with the registration backend (`acorn dev up`): make a key pair here, send a
    /// CSR (or, with --server-keygen, get a key pair), check the certificate and store it in
    /// the NVS image; with --connect, go on as `device run`.
    Register(register::RegisterArgs),
}

/// Where the device's identity is and where to connect.
#[derive(clap::Args)]
pub struct ConnectionArgs {
    /// NVS partition image holding the identity (namespace `mqtt_certs`).
    #[arg(long)]
    image: PathBuf,
    /// NVS key partition file, for an encrypted image.
    #[arg(long)]
    nvs_keys: Option<PathBuf>,
    /// Broker as HOST or HOST:PORT (default: the endpoint stored in the image, port 8883, or
    /// 443 with --alpn).
    #[arg(long)]
    broker: Option<String>,
    /// CA certificate file (PEM) the broker's certificate must chain to (default: Amazon
    /// Root CA 1 and 3, built in).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Offer ALPN `x-amzn-mqtt-ca` (AWS IoT Core on port 443).
    #[arg(long)]
    alpn: bool,
    /// The network stack: `rustls` (rustls + rumqttc, TLS 1.2/1.3, RSA or EC identities) or
    /// `embedded` (the firmware's own: embedded-tls 1.3 + mqttrs, P-256 identities only).
    #[arg(long, value_enum, default_value = "rustls")]
    transport: TransportKind,
}

/// Which network stack a command uses.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// rustls + rumqttc on tokio (the host's transport).
    Rustls,
    /// The firmware's transport (`acorn-embedded`) over tokio TCP.
    Embedded,
}

/// Log line format.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `acorn device run`.
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Simulate a press of button `sim-button` at this interval (e.g. `500ms`, `10s`, `1m`).
    #[arg(long, value_parser = crate::cli::parse_positive_duration)]
    press_every: Option<Duration>,
    /// Send a heartbeat status at this interval (e.g. `2s`, `5m`) until a settings update
    /// names `heartbeatSeconds` (default: the stored setting, 300 s out of the box).
    #[arg(long, value_parser = crate::cli::parse_positive_duration)]
    heartbeat: Option<Duration>,
    /// The press queue's NVS image (default: beside --image, `NAME.queue.bin` for
    /// `NAME.bin`); made on first use, encrypted with --nvs-keys when the image is.
    #[arg(long)]
    queue_image: Option<PathBuf>,
    /// Presses kept at most in the queue (2 to 256); when full, the oldest is dropped and
    /// counted in the heartbeat's `droppedPresses`.
    #[arg(long, default_value_t = acorn_agent::device::DEFAULT_QUEUE_CAPACITY, value_parser = parse_capacity)]
    queue_capacity: usize,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    rotation: RotationArgs,
}

/// Certificate rotation options.
#[derive(clap::Args)]
pub struct RotationArgs {
    /// The AWS IoT provisioning template RegisterThing uses (e.g. `acorn-pups`): turns
    /// certificate rotation on.
    #[arg(long)]
    rotation_template: Option<String>,
    /// The CA (PEM) a new certificate must chain to (default: the issuer of the current one).
    #[arg(long, requires = "rotation_template")]
    rotation_ca: Option<PathBuf>,
    /// Use the local stack's provisioning API (`acorn dev up`): every topic under
    /// `acorn-local/<device id>/`, where only this device can read its answers.
    #[arg(long, requires = "rotation_template")]
    rotation_local: bool,
    /// Rotate on its own when the certificate has fewer whole days left than this.
    #[arg(long, default_value_t = 30, requires = "rotation_template")]
    rotation_days_before: u32,
}

impl RotationArgs {
    /// The core's rotation configuration (`None` without `--rotation-template`); the topic
    /// prefix is left to the caller (`--rotation-local` needs the device id).
    fn config(&self) -> Result<Option<acorn_agent::device::RotationConfig>> {
        let Some(template) = &self.rotation_template else {
            return Ok(None);
        };
        let mut config = acorn_agent::device::RotationConfig::new(template)
            .map_err(|e| anyhow::anyhow!("--rotation-template: {e}"))?;
        config.days_before = self.rotation_days_before;
        Ok(Some(config))
    }

    /// The CA a new certificate must chain to (`--rotation-ca`), read.
    fn ca(&self) -> Result<Option<Vec<u8>>> {
        self.rotation_ca
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .with_context(|| format!("cannot read --rotation-ca {}", path.display()))
            })
            .transpose()
    }

    fn apply(&self, options: &mut DeviceOptions) -> Result<()> {
        options.rotation = self.config()?;
        options.rotation_local = self.rotation_local;
        options.rotation_ca = self.ca()?;
        Ok(())
    }
}

/// Arguments of `acorn device rotate`.
#[derive(clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(flatten)]
    rotation: RotationArgs,
    /// Give up (exit 1) when the rotation has not ended after this long.
    #[arg(long, default_value = "5m", value_parser = crate::cli::parse_positive_duration)]
    timeout: Duration,
}

/// `--queue-capacity`: 2 ..= 256 presses (what a queue image made here holds).
fn parse_capacity(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (2..=acorn_agent::device::DEFAULT_QUEUE_CAPACITY).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a queue capacity: give a number of presses from 2 to {0} (the queue image holds {0})",
            acorn_agent::device::DEFAULT_QUEUE_CAPACITY
        )),
    }
}

/// Arguments of `acorn device ping`.
#[derive(clap::Args)]
pub struct PingArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a subcommand.
pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Run(args) => run_device(args),
        Command::Rotate(args) => rotate_device(args),
        Command::Ping(args) => run_ping(args),
        Command::Register(args) => register::register(args, |plan| {
            run_device(RunArgs {
                connection: ConnectionArgs {
                    image: plan.image,
                    nvs_keys: plan.nvs_keys,
                    broker: Some(plan.broker),
                    ca: plan.ca,
                    alpn: false,
                    transport: TransportKind::Rustls,
                },
                press_every: None,
                heartbeat: None,
                queue_image: None,
                queue_capacity: acorn_agent::device::DEFAULT_QUEUE_CAPACITY,
                log_format: LogFormat::Text,
                rotation: RotationArgs {
                    rotation_template: None,
                    rotation_ca: None,
                    rotation_local: false,
                    rotation_days_before: 30,
                },
            })
        }),
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `3m`, `1h` (a bare number is seconds).
fn roots(ca: Option<&Path>) -> Result<TrustRoots> {
    match ca {
        Some(path) => Ok(TrustRoots::from_pem_file(path)?),
        None => Ok(TrustRoots::Amazon),
    }
}

fn broker(args: &ConnectionArgs) -> Result<Option<BrokerTarget>> {
    args.broker
        .as_deref()
        .map(|b| BrokerTarget::parse(b, args.alpn))
        .transpose()
        .map_err(Into::into)
}

/// Loads the identity from `image` (its warnings printed) and picks the broker: `--broker`, or
/// the endpoint stored with the identity.
fn identity_and_target<F: embedded_storage::nor_flash::NorFlash>(
    image: &mut DeviceImage<F>,
    conn: &ConnectionArgs,
) -> Result<(acorn_agent::LoadedDevice, BrokerTarget)> {
    let loaded = image.load_identity(unix_now())?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let target = match broker(conn)? {
        Some(target) => target,
        None => BrokerTarget::aws(loaded.endpoint.clone(), conn.alpn),
    };
    Ok((loaded, target))
}

fn init_logging(format: LogFormat) {
    crate::cli::init_logs("info", matches!(format, LogFormat::Json));
}

fn run_device(args: RunArgs) -> Result<ExitCode> {
    init_logging(args.log_format);
    if args.connection.transport == TransportKind::Embedded {
        embedded::claim_if_needed(&args.connection)?;
    } else {
        claim_if_needed(&args.connection)?;
    }
    if args.connection.transport == TransportKind::Embedded {
        let conn = &args.connection;
        let keys = crate::image_file::maybe_keys(conn.nvs_keys.as_deref())?;
        let mut image = DeviceImage::open(&conn.image, keys.as_ref())?;
        // As the default transport does: finish or drop what an interrupted rotation left.
        if let Some(note) = image.recover_rotation()? {
            eprintln!("{note}");
        }
        let (loaded, target) = identity_and_target(&mut image, conn)?;
        let queue_path = args
            .queue_image
            .clone()
            .unwrap_or_else(|| default_queue_path(&conn.image));
        let queue = QueueImage::open_or_create(&queue_path, keys.as_ref())?;
        return embedded::run(image, queue, &loaded, &target, conn.ca.as_deref(), &args);
    }
    let mut options = device_options(&args.connection, &args.rotation)?;
    options.queue_image = args.queue_image.clone();
    options.queue_capacity = args.queue_capacity;
    options.heartbeat = args.heartbeat;
    let runtime = current_thread_runtime()?;
    let result = runtime.block_on(async move {
        let device = Device::open(options)?;
        print_recovered(device.recovered_presses());
        let handle = device.spawn();
        drive(&handle, args.press_every).await?;
        handle.shutdown().await?;
        Ok::<_, anyhow::Error>(())
    });
    // The stdin reader may be blocked in a read: do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result.map(|()| ExitCode::SUCCESS)
}

/// A device whose image holds only a claim identity (`acorn certs provision --claim`)
/// provisions itself first: its own key, its certificate over the provisioning MQTT API
/// (against a local stack, under `acorn-claim/claim:<id>/`), its identity stored; then it runs
/// as itself. `--ca` is trusted for the claim endpoint and for the new certificate.
fn claim_if_needed(conn: &ConnectionArgs) -> Result<()> {
    use acorn_register::claim::{provision_by_claim, ClaimIdentity, ClaimOptions};
    let mut image = acorn_register::ImageTarget::new(&conn.image);
    image.keys = crate::image_file::maybe_keys(conn.nvs_keys.as_deref())?;
    let now = acorn_agent::device_image::unix_now();
    if !conn.image.exists() || image.stored_device(now)?.is_some() {
        return Ok(());
    }
    let Some(identity) = ClaimIdentity::load(&image)? else {
        return Ok(());
    };
    let host = acorn_transport::BrokerTarget::parse(&identity.endpoint, false)
        .map_err(|e| anyhow::anyhow!("the claim endpoint in the image: {e}"))?
        .host;
    let ca_pem = match &conn.ca {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --ca {}", path.display()))?,
        None => String::new(),
    };
    let device_id = identity.device_id.clone();
    let endpoint = identity.endpoint.clone();
    let mut options = ClaimOptions::new(identity, roots(conn.ca.as_deref())?, ca_pem);
    options.local = !acorn_certs::is_aws_iot_endpoint(&host);
    options.allow_custom_endpoint = options.local;
    eprintln!("no identity yet: provisioning `{device_id}` by claim at {endpoint}");
    let runtime = current_thread_runtime()?;
    let done = runtime
        .block_on(provision_by_claim(&options, &image))
        .context("fleet provisioning by claim failed")?;
    eprintln!(
        "provisioned by claim: `{}` has certificate {}; connecting as itself",
        done.device_id, done.certificate_id
    );
    Ok(())
}

/// The device options every command that runs the device shares: the image, its keys, where
/// to connect, the roots, and rotation.
fn device_options(conn: &ConnectionArgs, rotation: &RotationArgs) -> Result<DeviceOptions> {
    let mut options = DeviceOptions::new(&conn.image);
    options.nvs_keys = crate::image_file::maybe_keys(conn.nvs_keys.as_deref())?;
    options.broker = broker(conn)?;
    options.alpn = conn.alpn;
    options.roots = roots(conn.ca.as_deref())?;
    rotation.apply(&mut options)?;
    Ok(options)
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `acorn device rotate`: runs the device until one rotation ends.
fn rotate_device(args: RotateArgs) -> Result<ExitCode> {
    init_logging(LogFormat::Text);
    if args.rotation.rotation_template.is_none() {
        anyhow::bail!(
            "give --rotation-template NAME: the AWS IoT provisioning template RegisterThing uses (e.g. acorn-pups)"
        );
    }
    let options = device_options(&args.connection, &args.rotation)?;
    let runtime = current_thread_runtime()?;
    let outcome = runtime.block_on(async move {
        let device = Device::open(options)?;
        let handle = device.spawn();
        let mut events = handle.events();
        handle
            .rotate()
            .await?
            .map_err(|e| anyhow::anyhow!("the rotation did not start: {e}"))?;
        let ended = tokio::time::timeout(args.timeout, async {
            loop {
                match events.recv().await {
                    Ok(acorn_agent::device::DeviceEvent::RotationEnded { committed, detail }) => {
                        return Some((committed, detail));
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .await;
        handle.shutdown().await?;
        Ok::<_, anyhow::Error>(ended)
    })?;
    match outcome {
        Ok(Some((true, id))) => {
            println!("{}", serde_json::json!({"rotation": "committed", "certificateId": id}));
            Ok(ExitCode::SUCCESS)
        }
        Ok(Some((false, why))) => {
            println!("{}", serde_json::json!({"rotation": "failed", "error": why}));
            Ok(ExitCode::FAILURE)
        }
        Ok(None) => anyhow::bail!("the device stopped before the rotation ended"),
        Err(_) => anyhow::bail!(
            "the rotation did not end within {:?}: check that the broker answers AWS IoT's provisioning API",
            args.timeout
        ),
    }
}

/// The start line about presses from before this start (none: nothing), as a JSON line on
/// stdout like every answer of the console.
pub(crate) fn print_recovered(count: usize) {
    if count > 0 {
        println!(
            "{}",
            serde_json::json!({
                "recoveredPresses": count,
                "note": format!("{count} queued presses from before the restart"),
            })
        );
    }
}

/// Reads stdin commands, signals and the press timer until it is time to stop.
async fn drive(handle: &DeviceHandle, press_every: Option<Duration>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let period = press_every.unwrap_or(Duration::from_secs(3600));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut watchdog = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    if !command(handle, &line).await {
                        return Ok(());
                    }
                }
                // End of input: keep running until a signal.
                Ok(None) | Err(_) => stdin_open = false,
            },
            _ = ticker.tick(), if press_every.is_some() => {
                print_press(handle, "sim-button", None).await;
            }
            _ = watchdog.tick() => {
                if handle.is_finished() {
                    bail!("the device runtime stopped unexpectedly");
                }
            }
        }
    }
}

/// Runs one stdin command; `false` means quit.
async fn command(handle: &DeviceHandle, line: &str) -> bool {
    let command = match console::parse(line) {
        Ok(Some(command)) => command,
        Ok(None) => return true,
        Err(message) => {
            eprintln!("{message}");
            return true;
        }
    };
    match command {
        console::Command::Quit => return false,
        console::Command::Status => {
            match tokio::try_join!(handle.snapshot(), handle.press_queue()) {
                Ok((snapshot, queue)) => println!(
                    "{}",
                    console::status_json(
                        &snapshot,
                        queue.presses.len(),
                        queue.presses.first().map(|press| press.id),
                        queue.dropped,
                    )
                ),
                Err(e) => eprintln!("status: {e}"),
            }
        }
        console::Command::Rotate => match handle.rotate().await {
            Ok(Ok(())) => println!("{}", console::rotate_started_json()),
            Ok(Err(e)) => eprintln!("{}", console::rotate_error(&e)),
            Err(e) => eprintln!("{}", console::rotate_error(&e)),
        },
        console::Command::Press { button, battery } => {
            print_press(handle, &button, battery).await;
        }
    }
    true
}

async fn print_press(handle: &DeviceHandle, button: &str, battery: Option<u8>) {
    match handle.press(button, battery).await {
        // Printed once the press is in the queue image.
        Ok(outcome) => println!("{}", console::press_json(button, outcome)),
        Err(e) => eprintln!("{}", console::press_error(button, &e)),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn run_ping(args: PingArgs) -> Result<ExitCode> {
    let conn = &args.connection;
    let keys = crate::image_file::maybe_keys(conn.nvs_keys.as_deref())?;
    // A copy: a device running from the same image keeps sole ownership of the file.
    let mut image = DeviceImage::open_copy(&conn.image, keys.as_ref())?;
    let (loaded, target) = identity_and_target(&mut image, conn)?;
    let payload = DeviceStatusMessage::new(
        &loaded.device_id,
        unix_ms(),
        DeviceStatus::Online,
        AGENT_VERSION,
    )
    .to_json()?;
    if conn.transport == TransportKind::Embedded {
        return embedded::ping(&loaded, &target, conn.ca.as_deref(), payload, args.json);
    }
    let mut options = PingOptions::new(
        target.clone(),
        loaded.identity.clone(),
        roots(conn.ca.as_deref())?,
        loaded.device_id.clone(),
        AGENT_VERSION,
    );
    options.payload = payload;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(ping(&options));
    let broker = format!("{}:{}", target.host, target.port);
    let steps_json = |steps: &[(acorn_transport::Step, Duration)]| {
        steps
            .iter()
            .map(|(s, d)| serde_json::json!({"step": s.name(), "ms": ms(*d)}))
            .collect::<Vec<_>>()
    };
    match result {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true,
                        "deviceId": loaded.device_id,
                        "broker": broker,
                        "peer": report.peer.to_string(),
                        "steps": steps_json(&report.steps),
                        "totalMs": ms(report.total),
                        "tlsVersion": report.tls_version,
                        "cipherSuite": report.cipher_suite,
                        "alpn": report.alpn,
                        "sessionPresent": report.session_present,
                    })
                );
            } else {
                println!("ping {} at {broker} ({})", loaded.device_id, report.peer);
                for (step, d) in &report.steps {
                    println!("  {:<11} {:>9.3} ms", step.name(), ms(*d));
                }
                println!("  {:<11} {:>9.3} ms", "total", ms(report.total));
                println!(
                    "ok: {}, {}{}",
                    report.tls_version,
                    report.cipher_suite,
                    report
                        .alpn
                        .as_deref()
                        .map(|a| format!(", ALPN {a}"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": false,
                        "deviceId": loaded.device_id,
                        "broker": broker,
                        "steps": steps_json(&failure.completed),
                        "failedStep": failure.step.name(),
                        "diagnosis": failure.diagnosis.to_string(),
                    })
                );
            } else {
                println!("ping {} at {broker}", loaded.device_id);
                for (step, d) in &failure.completed {
                    println!("  {:<11} {:>9.3} ms", step.name(), ms(*d));
                }
                println!("  {:<11} FAILED", failure.step.name());
                println!("diagnosis: {}", failure.diagnosis);
            }
            Ok(ExitCode::from(1))
        }
    }
}
