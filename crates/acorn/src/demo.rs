//! `acorn demo`: the whole system on one machine, in one process, with nothing installed
//! beyond the Rust toolchain: a local CA, an embedded MQTT broker that requires and verifies
//! client certificates and keeps each device to its own topics (acorn-devstack's), the
//! registration backend, a cloud client, and N simulated devices that register with a CSR, keep
//! their identity in their own NVS image, connect over mutual TLS, publish status and button
//! presses, and apply a settings update and a command. Halfway through the run the first
//! device rotates its certificate over AWS IoT's provisioning MQTT API (answered by the
//! backend on the broker) and keeps pressing; the backend revokes the old certificate and the
//! broker refuses it from then on.

mod broker;
mod cloud;
mod log;
mod sim;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acorn_backend::{Backend, BackendConfig, CrlEvent, CrlHook};
use acorn_devstack::broker::{free_port, LocalProvisioning};
use acorn_devstack::embedded::{CrlInstaller, EmbeddedConfig};
use acorn_transport::{
    ping, BrokerTarget, ClientIdentity, PingOptions, SecretString, SessionOptions, TrustRoots,
};
use anyhow::{Context, Result};
use tokio::sync::watch;

use self::log::DemoLog;
use secrecy::ExposeSecret as _;

/// Options of `acorn demo`.
#[derive(clap::Args)]
pub struct Args {
    /// How many simulated devices to run (1-100).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    devices: u16,
    /// How long to run once started (`10s`, `500ms`, `2m`); `0` runs until Ctrl-C.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    duration: Duration,
    /// Time between two presses of one device.
    #[arg(long, default_value = "1s", value_parser = crate::cli::parse_positive_duration)]
    press_every: Duration,
}

/// Runs the demo.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.press_every < Duration::from_millis(100) {
        anyhow::bail!("--press-every must be at least 100ms");
    }
    crate::cli::init_logs("error", false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ok = runtime.block_on(demo(args))?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn demo(args: Args) -> Result<bool> {
    let log = DemoLog::new();
    let dir = tempfile::Builder::new()
        .prefix("acorn-demo-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    log.line(
        "demo",
        format!("working directory {}", dir.path().display()),
    );

    // 1. CA + registration backend (the CA and server certificate are made on first start).
    let port = free_port().context("no free port for the broker")?;
    let service_port = free_port().context("no free port for the broker")?;
    let console = acorn_console::Console::new();
    let mut config = BackendConfig::new(dir.path().join("backend"));
    config.iot_endpoint = format!("localhost:{port}");
    // The web console follows the devices through the broker's service listener.
    config.service_endpoint = Some(format!("localhost:{service_port}"));
    config.console = Some(console.mount());
    // The broker starts after the backend (it needs the CA, server certificate and CRL); the
    // backend's CRL hook reaches it through this slot.
    let crl_slot: Arc<Mutex<Option<CrlInstaller>>> = Arc::default();
    let (crl_installed, crl_rx) = watch::channel(0u64);
    config.crl_hook = Some(crl_hook(Arc::clone(&crl_slot), crl_installed, log.clone()));
    let backend = Backend::start(config)
        .await
        .context("cannot start the registration backend")?;
    let paths = backend.paths().clone();
    log.line(
        "ca",
        format!("local CA (ECDSA P-256) ready: {}", paths.ca_cert.display()),
    );
    log.line(
        "backend",
        format!("registration API at {}", backend.base_url()),
    );
    // A one-time link: the admin key stays out of the terminal, and the link dies with the run.
    log.line(
        "console",
        format!(
            "web console at {}/ ; sign in once (valid for this run, 1 h at most): {}",
            backend.base_url(),
            console.sign_in_link(&backend.base_url(), Duration::from_secs(3600))
        ),
    );

    // 2. The broker: TLS on localhost, client certificates required, devices checked against
    // the device CA and the cloud (a service identity) on its own listener against the
    // service CA.
    let backend_id = acorn_mqtt::service_client_id("backend")?;
    let listeners = broker::Listeners {
        device_port: port,
        device_ca: &paths.ca_cert,
        device_crl: &paths.crl,
        service_port,
        service_ca: &paths.service_ca_cert,
        local_provisioning: LocalProvisioning {
            template: acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE.to_owned(),
            responder: backend_id.clone(),
        },
    };
    let broker = broker::start(listeners, &paths.server_cert, &paths.server_key).await?;
    if let Ok(mut slot) = crl_slot.lock() {
        *slot = Some(broker.crl_installer());
    }
    log.line(
        "broker",
        format!("embedded broker on localhost:{port} (devices) and :{service_port} (services): MQTT 3.1.1 over TLS, client certificate required and verified against the device CA (and its CRL) or the service CA; each device reaches its own topics only"),
    );
    let roots = TrustRoots::from_pem(backend.ca_certificate_pem(), "ca.pem")
        .context("the demo CA certificate")?;

    // The backend on MQTT: it answers the devices' certificate requests (rotation).
    let responder = start_responder(&backend, &backend_id, service_port, roots.clone())?;
    log.line(
        "backend",
        format!("connected to the broker as `{backend_id}`: answers AWS IoT's provisioning MQTT API (CreateCertificateFromCsr, RegisterThing) on each device's own topics acorn-local/<id>/…"),
    );

    // 3. Proof that the broker checks certificates: a self-signed one is refused.
    refuse_stranger(&log, port, roots.clone()).await;

    // 4. The cloud side on MQTT.
    let (stop_tx, stop_rx) = watch::channel(false);
    let cloud_identity = backend
        .issue_service_identity("cloud")
        .context("cannot issue the cloud client's service identity")?;
    let cloud = cloud::Cloud::start(
        cloud_identity,
        service_port,
        roots.clone(),
        log.clone(),
        stop_rx.clone(),
    )
    .await?;

    // 5. The devices, each with a token of its own.
    let n = usize::from(args.devices);
    // One rotation per run: the first device, halfway through (5 s in when running until
    // Ctrl-C).
    let rotate_after = if args.duration.is_zero() {
        Duration::from_secs(5)
    } else {
        args.duration / 2
    };
    let mut tasks = Vec::with_capacity(n);
    for i in 1..=n {
        let device_id = format!("acorn-demo-{i:02}");
        let token = backend
            .mint_token(600)
            .await
            .context("cannot mint a registration token")?;
        log.tally(&device_id, |_| {});
        let config = sim::SimConfig {
            image: dir.path().join(format!("{device_id}.nvs.bin")),
            device_id,
            backend_url: backend.base_url(),
            token: SecretString::from(token.token.expose_secret().to_owned()),
            port,
            roots: roots.clone(),
            rotation_ca: backend.ca_certificate_pem().as_bytes().to_vec(),
            rotate: (i == 1).then(|| sim::RotatePlan {
                after: rotate_after,
                crl_installed: crl_rx.clone(),
            }),
            press_every: args.press_every,
            offset: args.press_every.mul_f64(i as f64 / (n as f64 + 1.0)),
        };
        tasks.push(tokio::spawn(sim::run(config, log.clone(), stop_rx.clone())));
    }

    // 6. Run for the duration, or until Ctrl-C.
    if args.duration.is_zero() {
        log.line("demo", "running until Ctrl-C");
        wait_for_signal().await;
    } else {
        log.line(
            "demo",
            format!("running for {:?} (Ctrl-C stops early)", args.duration),
        );
        tokio::select! {
            _ = tokio::time::sleep(args.duration) => {}
            _ = wait_for_signal() => {}
        }
    }
    log.line("demo", "stopping: devices publish offline and disconnect");
    let _ = stop_tx.send(true);
    for task in tasks {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(15), task).await {
            log.line("demo", format!("a device did not stop in time: {e}"));
        }
    }
    cloud.stop().await;
    responder.stop().await;
    broker.stop().await;
    if let Err(e) = backend.shutdown().await {
        log.line("backend", format!("shutdown: {e}"));
    }
    Ok(log.summary(n))
}

/// The backend's MQTT link (its service identity on the service listener): the dev stack's
/// responder for AWS IoT's provisioning MQTT API, which also carries the admin API's
/// `POST /v1/devices/{id}/rotate`.
fn start_responder(
    backend: &acorn_backend::BackendHandle,
    client_id: &str,
    service_port: u16,
    roots: TrustRoots,
) -> Result<crate::dev::local_iot::Responder> {
    let issued = backend
        .issue_service_identity("backend")
        .context("cannot issue the backend's service identity")?;
    let mut options = service_session(&issued, service_port, roots, client_id);
    // A reconnect keeps the subscriptions' queued requests.
    options.clean_session = false;
    let iot = backend.local_iot(acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE)?;
    let (responder, sink) = crate::dev::local_iot::Responder::start(iot, &options, None)?;
    backend.set_command_sink(sink);
    Ok(responder)
}

/// MQTT settings of a service identity (`client_id` = its certificate's name) on the broker's
/// service listener at `port`.
fn service_session(
    issued: &acorn_backend::IssuedKeyPair,
    port: u16,
    roots: TrustRoots,
    client_id: &str,
) -> SessionOptions {
    let identity = ClientIdentity::new(
        issued.certificate.pem.clone(),
        SecretString::from(issued.private_key_pem.expose_secret().to_owned()),
    );
    SessionOptions::new(
        BrokerTarget::new("localhost", port),
        identity,
        roots,
        client_id,
        env!("CARGO_PKG_VERSION"),
    )
}

/// After each CRL the backend writes (a revocation), the broker takes it for every new
/// handshake; `installed` gets its number. Before the broker runs there is nothing to do: it
/// reads the CRL file when it starts.
fn crl_hook(
    slot: Arc<Mutex<Option<CrlInstaller>>>,
    installed: watch::Sender<u64>,
    log: DemoLog,
) -> CrlHook {
    Arc::new(move |event: &CrlEvent| {
        let Some(installer) = slot.lock().map_err(|e| e.to_string())?.clone() else {
            return Ok(());
        };
        let crls =
            EmbeddedConfig::crls_from_pem_file(&event.crl_path).map_err(|e| e.to_string())?;
        installer.install(crls).map_err(|e| e.to_string())?;
        log.line(
            "backend",
            format!(
                "CRL #{} published (a certificate revoked) and installed in the broker: revoked certificates are refused from the next handshake on, and their open connections closed",
                event.crl_number
            ),
        );
        installed.send_replace(event.crl_number);
        Ok(())
    })
}

/// Tries the broker with a self-signed certificate (no CA the broker knows signed it) and logs
/// the plain-language refusal.
async fn refuse_stranger(log: &DemoLog, port: u16, roots: TrustRoots) {
    let stranger = rcgen::KeyPair::generate().and_then(|key| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "intruder");
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    });
    let (cert_pem, key_pem) = match stranger {
        Ok(pair) => pair,
        Err(e) => {
            log.line(
                "check",
                format!("skipped the stranger-certificate check: {e}"),
            );
            return;
        }
    };
    let identity = ClientIdentity::new(cert_pem, SecretString::from(key_pem));
    let mut options = PingOptions::new(
        BrokerTarget::new("localhost", port),
        identity,
        roots,
        "intruder",
        env!("CARGO_PKG_VERSION"),
    );
    options.step_timeout = Duration::from_secs(5);
    match ping(&options).await {
        Ok(_) => log.line(
            "check",
            "WARNING: the broker accepted a certificate no known CA signed",
        ),
        Err(failure) => log.line(
            "check",
            format!(
                "a client with a self-signed certificate is refused (step {}): {}",
                failure.step.name(),
                failure.diagnosis
            ),
        ),
    }
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
