//! `acorn dev up`: the local development stack (registration backend + mosquitto configured
//! like an AWS IoT policy, with a service listener and live revocation).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acorn_backend::{
    Backend, BackendConfig, CaRole, CrlEvent, LocalCa, ADMIN_KEY_FILE, SERVICE_CA_DIR,
};
use acorn_devstack::broker::{free_port, Broker, BrokerConfig, BrokerError, LocalProvisioning};
use acorn_transport::TrustRoots;
use anyhow::{Context, Result};
use secrecy::ExposeSecret as _;

mod claim;
mod enforce;
pub mod local_iot;

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
    /// Port of the claim endpoint on 127.0.0.1 (fleet provisioning by claim: devices with
    /// the shared claim certificate; 0 picks a free one).
    #[arg(long, default_value_t = 8885)]
    claim_port: u16,
    /// Lifetime of the first registration token, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl: i64,
    /// Lifetime of each CRL, in seconds (it is renewed at a third of this).
    #[arg(long, default_value_t = 30 * 24 * 3600, value_parser = clap::value_parser!(u64).range(3..))]
    crl_lifetime: u64,
    /// An IPv4 address of this machine where the broker's device listener and the claim
    /// endpoint listen instead of 127.0.0.1, so that hardware on that network (an ESP32-C3
    /// built with the firmware's `dev-ca` feature) can connect: the server certificate names
    /// it and registered devices get it as their endpoint. The registration API, the console
    /// and the service listener stay on 127.0.0.1.
    #[arg(long, value_parser = parse_lan_address)]
    lan_address: Option<Ipv4Addr>,
}

/// `--lan-address`: one address of this machine, never "every interface".
fn parse_lan_address(text: &str) -> Result<Ipv4Addr, String> {
    let address: Ipv4Addr = text.parse().map_err(|_| {
        format!("`{text}` is not an IPv4 address; give the address of this machine that the board reaches (see `ip -4 addr`)")
    })?;
    if address.is_unspecified() {
        return Err(
            "0.0.0.0 would listen on every interface; give the one address of this \
                    machine that the board reaches (see `ip -4 addr`)"
                .into(),
        );
    }
    if address.is_multicast() || address.is_broadcast() {
        return Err(format!(
            "{address} is a multicast or broadcast address; give the address of this machine \
             that the board reaches (see `ip -4 addr`)"
        ));
    }
    Ok(address)
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

fn pick_port(port: u16) -> Result<u16> {
    Ok(match port {
        0 => free_port()?,
        p => p,
    })
}

fn up(args: UpArgs) -> Result<ExitCode> {
    crate::cli::init_logs("info", false);
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
    // What devices connect to: the LAN address when one is given, else this machine alone.
    let device_host = args
        .lan_address
        .map_or_else(|| "localhost".to_owned(), |a| a.to_string());
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
        // The web console at `/`, live from the broker as `service:console`.
        config.console = Some(acorn_console::Console::new().mount());
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], args.backend_port));
        config.iot_endpoint = format!("{device_host}:{mqtt_port}");
        config.server_names = args.lan_address.iter().map(Ipv4Addr::to_string).collect();
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
        broker_config.device_address = args.lan_address.unwrap_or(Ipv4Addr::LOCALHOST);
        broker_config.service_ca_file = Some(paths.service_ca_cert.clone());
        broker_config.service_port = Some(service_port);
        // Room for a simulated fleet (`acorn sim --backend`): the open-files limit raised to
        // the hard limit (mosquitto inherits it) and mosquitto told to use it.
        let open_files = crate::sim::raise_open_files(0);
        let max_connections =
            u32::try_from(open_files.saturating_sub(64).max(64)).unwrap_or(u32::MAX);
        broker_config.max_connections = Some(max_connections);
        let limits = format!(
            "open files {open_files} (soft limit raised to the hard limit), mosquitto \
             max_connections {max_connections} per listener"
        );
        // AWS IoT's provisioning MQTT API (certificate rotation, claims), answered by the
        // backend.
        let local = LocalProvisioning {
            template: acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE.to_owned(),
            responder: acorn_mqtt::service_client_id("backend")?,
        };
        broker_config.local_provisioning = Some(local.clone());
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
        let enforcer = Arc::new(enforce::Enforcer {
            broker,
            service_ca,
            backend_identity,
            roots,
        });
        if let Ok(mut guard) = slot.lock() {
            *guard = Some(Arc::clone(&enforcer));
        }
        let claim = claim::ClaimEndpoint::start(
            &backend,
            &paths,
            local,
            &args.dir,
            (args.lan_address, pick_port(args.claim_port)?),
        )
        .await?;
        let responder = start_responder(&backend, &enforcer, claim.service_port)?;
        drop(enforcer);
        let token = backend
            .mint_token(args.token_ttl.max(1))
            .await
            .context("cannot mint a registration token")?;
        // Watch the signals before the banner: a caller may stop us as soon as it reads it.
        let stop = stop_signals()?;
        let token_file = args.dir.join(TOKEN_FILE);
        acorn_files::write_private(&token_file, token.token.expose_secret().as_bytes())
            .with_context(|| format!("cannot write the token to {}", token_file.display()))?;
        print_banner(&Banner {
            backend_url: &backend.base_url(),
            device_host: &device_host,
            lan: args.lan_address.is_some(),
            mqtt_port,
            service_port,
            broker_pid,
            ca: &paths.ca_cert,
            admin_key: &paths.data_dir.join(ADMIN_KEY_FILE),
            broker_log: &log_path,
            token_file: &token_file,
            claim: &claim,
            ttl: args.token_ttl.max(1),
            limits: &limits,
        });
        stop.wait().await;
        println!("stopping: registration backend and mosquitto");
        responder.stop().await;
        claim.stop().await;
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

/// The backend's MQTT link: answers the provisioning API and carries its commands.
fn start_responder(
    backend: &acorn_backend::BackendHandle,
    enforcer: &enforce::Enforcer,
    claim_service_port: u16,
) -> Result<local_iot::Responder> {
    let iot = backend.local_iot(acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE)?;
    let client_id = acorn_mqtt::service_client_id("backend")?;
    let mut options = enforcer
        .service_session(&enforcer.backend_identity, &client_id)
        .map_err(anyhow::Error::msg)?;
    // A reconnect keeps the subscriptions' queued requests.
    options.clean_session = false;
    let mut claim =
        enforcer.service_session_at(&enforcer.backend_identity, &client_id, claim_service_port);
    claim.clean_session = false;
    let (responder, sink) = local_iot::Responder::start(iot, &options, Some(&claim))?;
    backend.set_command_sink(sink);
    Ok(responder)
}

struct Banner<'a> {
    backend_url: &'a str,
    /// Where devices connect (`localhost`, or the LAN address).
    device_host: &'a str,
    lan: bool,
    mqtt_port: u16,
    service_port: u16,
    broker_pid: u32,
    ca: &'a Path,
    admin_key: &'a Path,
    broker_log: &'a Path,
    token_file: &'a Path,
    claim: &'a claim::ClaimEndpoint,
    ttl: i64,
    limits: &'a str,
}

/// Prints where everything is. Secrets (the admin key, the token) stay in their 0600 files:
/// the banner names the files, and the suggested commands read them from there.
fn print_banner(b: &Banner<'_>) {
    let ca = b.ca.display();
    let token = b.token_file.display();
    println!("acorn dev stack is running (Ctrl-C stops it)");
    println!("  backend:   {}", b.backend_url);
    println!(
        "  console:   {}/ (sign in with the admin key below)",
        b.backend_url
    );
    println!(
        "  broker:    mqtts://{}:{} (mosquitto pid {}; client certificate required, \
         identity = username = client id, per-device ACL, CRL)",
        b.device_host, b.mqtt_port, b.broker_pid
    );
    println!(
        "  services:  mqtts://localhost:{} (service identities only: POST /v1/service-identities)",
        b.service_port
    );
    println!("  broker log: {}", b.broker_log.display());
    println!("  limits:    {}", b.limits);
    println!("  CA:        {ca}");
    println!(
        "  admin key: {} (Authorization: Bearer for /v1/tokens, /v1/devices)",
        b.admin_key.display()
    );
    println!(
        "  token:     {token} (one registration, expires in {} s)",
        b.ttl
    );
    println!(
        "  claim:     mqtts://{}:{} (fleet provisioning by claim: certificate {}, key {}; client id claim:<device id>)",
        b.device_host,
        b.claim.port,
        b.claim.cert.display(),
        b.claim.key.display()
    );
    println!();
    println!("Register and run a device:");
    println!(
        "  acorn device register --image acorn-0001.nvs.bin --backend {} --token-file {token} --device-id acorn-0001",
        b.backend_url
    );
    println!(
        "  acorn device run --image acorn-0001.nvs.bin --broker {}:{} --ca {ca}",
        b.device_host, b.mqtt_port
    );
    if b.lan {
        println!();
        println!(
            "The device listener and the claim endpoint listen on {}: other machines on that \
             network reach them (mutual TLS; the registration API, the console and the \
             service listener stay on 127.0.0.1). A board trusts this stack's CA only when its \
             firmware is built with it:",
            b.device_host
        );
        // Absolute: the build runs in firmware/, not here.
        let absolute = std::fs::canonicalize(b.ca).unwrap_or_else(|_| b.ca.to_path_buf());
        println!(
            "  ACORN_DEV_CA={} cargo build --release --features dev-ca   (in firmware/)",
            absolute.display()
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// SIGINT and SIGTERM, watched from the moment this is made.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

fn stop_signals() -> Result<StopSignals> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok(StopSignals {
        interrupt: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        terminate: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
    })
}

impl StopSignals {
    /// Waits for SIGINT or SIGTERM.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
