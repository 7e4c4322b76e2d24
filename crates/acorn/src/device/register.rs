//! `acorn device register`: the device side of registration on a host — a key made here and a
//! CSR sent (or the backend's key), the answer checked and stored in the NVS image; with
//! `--connect`, the device then runs.

use std::path::PathBuf;
use std::process::ExitCode;

use acorn_register::{
    register as register_device, HostNetwork, ImageTarget, KeyOrigin, KeyType, RegistrationOptions,
    DEFAULT_IMAGE_SIZE,
};
use acorn_transport::{ExposeSecret as _, SecretString};
use anyhow::{bail, Context, Result};

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
    crate::cli::init_logs("info", false);
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => SecretString::from(token.trim().to_owned()),
        (None, Some(path)) => SecretString::from(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => bail!("give the registration token with --token-file FILE or ACORN_TOKEN"),
    };
    if token.expose_secret().is_empty() {
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
