//! `acorn dev up`: the local development stack (registration backend + mosquitto configured
//! like an AWS IoT policy), and `acorn device register` (the device side of registration).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use acorn_register::{
    register as register_device, HostNetwork, ImageTarget, KeyOrigin, KeyType, RegistrationOptions,
    DEFAULT_IMAGE_SIZE,
};
use std::time::Duration;

use acorn_backend::{
    Backend, BackendConfig, CaRole, CrlEvent, LocalCa, ADMIN_KEY_FILE, SERVICE_CA_DIR,
};
use acorn_devstack::broker::{free_port, Broker, BrokerConfig, BrokerError};
use acorn_transport::{SecretString, TrustRoots};
use anyhow::{bail, Context, Result};

mod enforce;

/// Subcommands of `acorn dev`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Start the registration backend and a mosquitto broker (mutual TLS, identity as
    /// username and client id, per-device ACL, CRL, a service listener for service
    /// identities) on loopback ports, print their URLs and write a first registration token
    /// to a file, and run until Ctrl-C (SIGINT) or SIGTERM.
    Up(UpArgs),
}

/// Arguments of `acorn dev up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Directory for the CA, server certificate, admin key, registry and broker files (made
    /// once, reused afterwards; private to this user).
    #[arg(long, default_value = "acorn-dev")]
    dir: PathBuf,
    /// Port of the registration API on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    backend_port: u16,
    /// Port of the MQTT broker's device listener on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8883)]
    mqtt_port: u16,
    /// Port of the MQTT broker's service listener on 127.0.0.1, where only service
    /// identities (from the service CA) connect (0 picks a free one).
    #[arg(long, default_value_t = 8884)]
    service_port: u16,
    /// Lifetime of the first registration token, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl: i64,
    /// Lifetime of each CRL, in seconds (it is renewed at a third of this).
    #[arg(long, default_value_t = 30 * 24 * 3600, value_parser = clap::value_parser!(u64).range(3..))]
    crl_lifetime: u64,
}

/// The service identities the dev stack's broker grants every device topic to (on its
/// service listener only): the backend itself, the demo's cloud client, a fleet observer and
/// the console. Certificates for them come from `POST /v1/service-identities`.
pub const SERVICE_NAMES: [&str; 4] = ["backend", "cloud", "observer", "console"];

/// File (in the dev directory, mode 0600) holding the first registration token.
pub const TOKEN_FILE: &str = "first-token";

/// Runs a subcommand.
pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Up(args) => up(args),
    }
}

fn init_logs() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

fn pick_port(port: u16) -> Result<u16> {
    Ok(match port {
        0 => free_port()?,
        p => p,
    })
}

fn up(args: UpArgs) -> Result<ExitCode> {
    init_logs();
    let backend_dir = args.dir.join("backend");
    let broker_dir = args.dir.join("broker");
    // Fail early, before making anything, when mosquitto is missing.
    let probe = BrokerConfig::new(&broker_dir, "ca.pem", "server.pem", "server.key");
    if !probe.mosquitto.exists() {
        return Err(BrokerError::NotInstalled {
            path: probe.mosquitto,
        }
        .into());
    }
    acorn_files::create_private_dir(&args.dir)
        .with_context(|| format!("cannot make the dev directory {}", args.dir.display()))?;
    let mqtt_port = pick_port(args.mqtt_port)?;
    let service_port = pick_port(args.service_port)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // The broker starts after the backend (it needs the CA, server cert and CRL); the
        // CRL hook reaches it through this slot.
        let slot: Arc<Mutex<Option<Arc<enforce::Enforcer>>>> = Arc::default();
        let hook_slot = Arc::clone(&slot);
        let mut config = BackendConfig::new(&backend_dir);
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], args.backend_port));
        config.iot_endpoint = format!("localhost:{mqtt_port}");
        config.service_endpoint = Some(format!("localhost:{service_port}"));
        config.crl_validity = Duration::from_secs(args.crl_lifetime);
        config.crl_refresh = Duration::from_secs(args.crl_lifetime / 3);
        config.crl_hook = Some(Arc::new(move |event: &CrlEvent| {
            let enforcer = hook_slot
                .lock()
                .map_err(|e| e.to_string())?
                .clone()
                .ok_or("the broker is not running")?;
            enforcer.on_crl(event)
        }));
        let backend = Backend::start(config)
            .await
            .context("cannot start the registration backend")?;
        let paths = backend.paths().clone();
        let backend_identity = backend
            .issue_service_identity("backend")
            .context("cannot issue the backend's service identity")?;
        let service_ca = LocalCa::load_as(&paths.data_dir.join(SERVICE_CA_DIR), CaRole::Service)
            .context("cannot load the service CA")?;
        let roots = TrustRoots::from_pem(backend.ca_certificate_pem(), "ca.pem")
            .context("the backend's CA certificate")?;
        let mut broker_config = BrokerConfig::new(
            &broker_dir,
            &paths.ca_cert,
            &paths.server_cert,
            &paths.server_key,
        );
        broker_config.crl_file = Some(paths.crl.clone());
        broker_config.port = Some(mqtt_port);
        broker_config.service_ca_file = Some(paths.service_ca_cert.clone());
        broker_config.service_port = Some(service_port);
        broker_config.service_identities = SERVICE_NAMES
            .iter()
            .map(|name| acorn_mqtt::service_client_id(name))
            .collect::<Result<_, _>>()
            .context("service identity names")?;
        let broker = match tokio::task::spawn_blocking(move || Broker::start(broker_config))
            .await
            .context("broker start task")?
        {
            Ok(b) => b,
            Err(e) => {
                let _ = backend.shutdown().await;
                return Err(anyhow::Error::new(e).context("cannot start mosquitto"));
            }
        };
        let broker_pid = broker.pid().unwrap_or_default();
        let log_path = broker.log_path().to_path_buf();
        if let Ok(mut guard) = slot.lock() {
            *guard = Some(Arc::new(enforce::Enforcer {
                broker,
                service_ca,
                backend_identity,
                roots,
            }));
        }
        let token = backend
            .mint_token(args.token_ttl.max(1))
            .await
            .context("cannot mint a registration token")?;
        let token_file = args.dir.join(TOKEN_FILE);
        acorn_files::write_private(&token_file, token.token.expose().as_bytes())
            .with_context(|| format!("cannot write the token to {}", token_file.display()))?;
        print_banner(&Banner {
            backend_url: &backend.base_url(),
            mqtt_port,
            service_port,
            broker_pid,
            ca: &paths.ca_cert,
            admin_key: &paths.data_dir.join(ADMIN_KEY_FILE),
            broker_log: &log_path,
            token_file: &token_file,
            ttl: args.token_ttl.max(1),
        });
        wait_for_signal().await?;
        println!("stopping: registration backend and mosquitto");
        let stopped_backend = backend.shutdown().await;
        let enforcer = slot.lock().ok().and_then(|mut g| g.take());
        if let Some(broker) = enforcer.and_then(Arc::into_inner).map(|e| e.broker) {
            broker.stop().context("cannot stop mosquitto")?;
        }
        stopped_backend.context("the backend did not stop cleanly")?;
        println!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

struct Banner<'a> {
    backend_url: &'a str,
    mqtt_port: u16,
    service_port: u16,
    broker_pid: u32,
    ca: &'a Path,
    admin_key: &'a Path,
    broker_log: &'a Path,
    token_file: &'a Path,
    ttl: i64,
}

/// Prints where everything is. Secrets (the admin key, the token) stay in their 0600 files:
/// the banner names the files, and the suggested commands read them from there.
fn print_banner(b: &Banner<'_>) {
    let ca = b.ca.display();
    let token = b.token_file.display();
    println!("acorn dev stack is running (Ctrl-C stops it)");
    println!("  backend:   {}", b.backend_url);
    println!(
        "  broker:    mqtts://localhost:{} (mosquitto pid {}; client certificate required, \
         identity = username = client id, per-device ACL, CRL)",
        b.mqtt_port, b.broker_pid
    );
    println!(
        "  services:  mqtts://localhost:{} (service identities only: POST /v1/service-identities)",
        b.service_port
    );
    println!("  broker log: {}", b.broker_log.display());
    println!("  CA:        {ca}");
    println!(
        "  admin key: {} (Authorization: Bearer for /v1/tokens, /v1/devices)",
        b.admin_key.display()
    );
    println!(
        "  token:     {token} (one registration, expires in {} s)",
        b.ttl
    );
    println!();
    println!("Register and run a device:");
    println!(
        "  acorn device register --image acorn-0001.nvs.bin --backend {} --token-file {token} --device-id acorn-0001",
        b.backend_url
    );
    println!(
        "  acorn device run --image acorn-0001.nvs.bin --broker localhost:{} --ca {ca}",
        b.mqtt_port
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Waits for SIGINT or SIGTERM.
async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Arguments of `acorn device register`.
#[derive(clap::Args)]
pub struct RegisterArgs {
    /// NVS partition image to store the identity in (namespace `mqtt_certs`); made blank
    /// (24 KiB) if missing.
    #[arg(long)]
    image: PathBuf,
    /// NVS key partition file, for an encrypted image.
    #[arg(long)]
    nvs_keys: Option<PathBuf>,
    /// Base URL of the registration backend, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    backend: String,
    /// The one-time registration token. Prefer --token-file or the ACORN_TOKEN environment
    /// variable: a token on the command line is visible to other users in `ps`.
    #[arg(
        long,
        env = "ACORN_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file",
        required_unless_present = "token_file"
    )]
    token: Option<String>,
    /// A file holding the one-time registration token (as written by `acorn dev up`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The device id (certificate CN and MQTT client id): 1-128 of A-Z a-z 0-9 _ -.
    #[arg(long)]
    device_id: String,
    /// Key type: p256 (default) or rsa2048.
    #[arg(long, default_value = "p256", value_parser = parse_key_type)]
    key_type: KeyType,
    /// Let the backend make the key pair (it then crosses the network) instead of sending a
    /// CSR for a key made here.
    #[arg(long)]
    server_keygen: bool,
    /// CA certificate (PEM) an HTTPS backend's certificate chains to.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Serial number (default derived from the device id).
    #[arg(long)]
    serial: Option<String>,
    /// MAC address AA:BB:CC:DD:EE:FF (default: locally administered, derived from the id).
    #[arg(long)]
    mac: Option<String>,
    /// Firmware version reported to the backend.
    #[arg(long)]
    firmware_version: Option<String>,
    /// Write the CA certificate the backend returns to this file (default with --connect:
    /// IMAGE.ca.pem), for `acorn device run --ca`.
    #[arg(long)]
    save_ca: Option<PathBuf>,
    /// Requests to try on network errors and 5xx before giving up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    attempts: u32,
    /// After registering, run the device (as `acorn device run`).
    #[arg(long)]
    connect: bool,
    /// With --connect: the broker as HOST:PORT (default: the endpoint the backend returned).
    #[arg(long)]
    broker: Option<String>,
}

fn parse_key_type(text: &str) -> Result<KeyType, String> {
    KeyType::parse(text).ok_or_else(|| format!("`{text}` is not a key type: use p256 or rsa2048"))
}

/// Where `--connect` goes on after registering.
#[derive(Debug, Clone)]
pub struct ConnectPlan {
    /// The image holding the identity.
    pub image: PathBuf,
    /// Its NVS keys file.
    pub nvs_keys: Option<PathBuf>,
    /// `HOST:PORT` of the broker.
    pub broker: String,
    /// CA file the broker chains to (`None`: Amazon roots, an AWS endpoint).
    pub ca: Option<PathBuf>,
}

/// `acorn device register`: registers the device and stores its identity in the image; with
/// `--connect`, hands a [`ConnectPlan`] to `connect` (which runs the device).
pub fn register(
    args: RegisterArgs,
    connect: impl FnOnce(ConnectPlan) -> Result<ExitCode>,
) -> Result<ExitCode> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => SecretString::new(token.trim().to_owned()),
        (None, Some(path)) => SecretString::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => bail!("give the registration token with --token-file FILE or ACORN_TOKEN"),
    };
    if token.is_empty() {
        bail!("the registration token is empty; give the token minted by the backend");
    }
    let mut options = RegistrationOptions::new(args.backend.clone(), token, args.device_id.clone());
    options.key_type = args.key_type;
    options.server_keygen = args.server_keygen;
    options.retry.max_attempts = args.attempts;
    if let Some(serial) = &args.serial {
        options.serial_number = serial.clone();
    }
    if let Some(mac) = &args.mac {
        options.mac_address = mac.clone();
    }
    if let Some(v) = &args.firmware_version {
        options.firmware_version = v.clone();
    }
    if let Some(ca) = &args.ca {
        options.backend_ca_pem = Some(
            std::fs::read_to_string(ca)
                .with_context(|| format!("cannot read the backend CA {}", ca.display()))?,
        );
    }
    let mut image = ImageTarget::new(&args.image);
    image.keys = crate::image_file::maybe_keys(args.nvs_keys.as_deref())?;
    image.create_size = DEFAULT_IMAGE_SIZE;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let done = runtime.block_on(register_device(&options, &image, &mut HostNetwork))?;
    drop(runtime);
    if done.already_registered {
        println!(
            "{} already holds a valid identity for {}: nothing sent",
            args.image.display(),
            done.device_id
        );
    } else {
        let origin = match done.key_origin {
            Some(KeyOrigin::Backend) => "key made by the backend",
            _ => "key made here, only a CSR sent",
        };
        println!(
            "registered {} ({origin}); certificate {} stored in {}",
            done.device_id,
            done.certificate_id,
            args.image.display()
        );
        let port = done
            .endpoint_port
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        println!("endpoint: {}{port}", done.endpoint_host);
    }
    let save_ca = args.save_ca.clone().or_else(|| {
        args.connect
            .then(|| PathBuf::from(format!("{}.ca.pem", args.image.display())))
    });
    let mut saved_ca = None;
    if let (Some(path), Some(pem)) = (&save_ca, &done.ca_certificate_pem) {
        acorn_files::write_public(path, pem.as_bytes())
            .with_context(|| format!("cannot write the CA certificate to {}", path.display()))?;
        println!("CA certificate written to {}", path.display());
        saved_ca = Some(path.clone());
    } else if let Some(path) = &save_ca {
        if path.exists() {
            saved_ca = Some(path.clone());
        }
    }
    if !args.connect {
        return Ok(ExitCode::SUCCESS);
    }
    let broker = match (&args.broker, done.endpoint_port) {
        (Some(b), _) => b.clone(),
        (None, Some(port)) => format!("{}:{port}", done.endpoint_host),
        (None, None) => done.endpoint_host.clone(),
    };
    let aws = done.endpoint_host.ends_with(".amazonaws.com")
        || done.endpoint_host.ends_with(".amazonaws.com.cn");
    if !aws && saved_ca.is_none() {
        bail!(
            "--connect to the custom endpoint {broker} needs its CA: give --save-ca FILE with \
             the CA written at registration"
        );
    }
    connect(ConnectPlan {
        image: args.image,
        nvs_keys: args.nvs_keys,
        broker,
        ca: if aws { None } else { saved_ca },
    })
}
