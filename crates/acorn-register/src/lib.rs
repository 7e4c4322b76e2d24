//! Device registration: the seed's "Device Registration Flow" on a host, against the
//! registration backend (`acorn-backend`, `docs/backend.md`).
//!
//! [`register`] runs the steps in order:
//! 1. **join the network** ([`NetworkJoin`]: Wi-Fi on an ESP32; [`HostNetwork`], a no-op, here);
//! 2. **check the image**: a valid identity for this device already in the NVS image ends the
//!    flow (nothing is sent); one for another device is an error;
//! 3. **make the key pair on the device** (P-256 by default, or RSA-2048) and a CSR with
//!    subject `CN=<device id>` — or, with `server_keygen`, ask the backend for a key pair (the
//!    AWS `CreateKeysAndCertificate` flow);
//! 4. **register** over HTTP(S) with the one-time token; network errors and 5xx are retried
//!    with full-jitter backoff ([`RetryPolicy`]), a 4xx stops with the backend's message;
//! 5. **validate the answer**: the certificate is for this device, matches the key, chains to
//!    the returned CA (not for an AWS IoT endpoint, whose issuing CA AWS does not publish), its
//!    id is its SHA-256, and the endpoint is acceptable;
//! 6. **store** it through the certificate store into the NVS image (power-cut safe).
//!
//! ```no_run
//! use acorn_register::{register, HostNetwork, ImageTarget, RegistrationOptions};
//! use acorn_transport::SecretString;
//! # async fn run() -> Result<(), acorn_register::RegistrationError> {
//! let options = RegistrationOptions::new(
//!     "http://127.0.0.1:8080",
//!     SecretString::from("ff8ba695..."),
//!     "acorn-0001",
//! );
//! let done = register(&options, &ImageTarget::new("acorn-0001.nvs.bin"), &mut HostNetwork).await?;
//! println!("certificate {} for {}", done.certificate_id, done.endpoint_host);
//! # Ok(()) }
//! ```

mod answer;
pub mod claim;
mod error;
mod http;
mod keys;
mod target;

use std::time::{SystemTime, UNIX_EPOCH};

pub use error::RegistrationError;
pub use http::RetryPolicy;
pub use keys::{make_device_key, DeviceKey, KeyType};
pub use target::{ImageTarget, DEFAULT_IMAGE_SIZE};

use acorn_transport::SecretString;
use secrecy::ExposeSecret as _;

/// The first step of the flow: get onto the network. On an ESP32 this connects Wi-Fi with the
/// stored credentials; on a host the network is already there.
pub trait NetworkJoin {
    /// The step's name in logs and errors (e.g. `wifi`).
    fn name(&self) -> &str;
    /// Joins the network, or says why not.
    fn join(&mut self) -> Result<(), String>;
}

/// The host's network: nothing to join.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostNetwork;

impl NetworkJoin for HostNetwork {
    fn name(&self) -> &str {
        "wifi (host: already online)"
    }

    fn join(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// What to register and where.
#[derive(Debug, Clone)]
pub struct RegistrationOptions {
    /// Base URL of the backend, e.g. `http://127.0.0.1:8080`.
    pub backend_url: String,
    /// The one-time registration token.
    pub token: SecretString,
    /// The device id (`[A-Za-z0-9_-]{1,128}`): certificate CN and MQTT client id.
    pub device_id: String,
    /// Serial number (`[A-Za-z0-9-]{1,64}`); default derived from the device id.
    pub serial_number: String,
    /// MAC address `AA:BB:CC:DD:EE:FF`; default a locally administered one derived from the id.
    pub mac_address: String,
    /// Firmware version reported to the backend.
    pub firmware_version: String,
    /// Key type to make (on the device, or on the backend with `server_keygen`).
    pub key_type: KeyType,
    /// Let the backend make the key pair (no CSR); the key then crosses the network.
    pub server_keygen: bool,
    /// Extra trust root (PEM) for an HTTPS backend with a local CA.
    pub backend_ca_pem: Option<String>,
    /// Accept any DNS name as MQTT endpoint, not only AWS IoT ones (local stacks).
    pub allow_custom_endpoint: bool,
    /// Retries of network errors and 5xx.
    pub retry: RetryPolicy,
}

impl RegistrationOptions {
    /// Options with a P-256 key made on the device, serial and MAC derived from the device id,
    /// firmware version of this crate, custom endpoints allowed and the default retry policy.
    pub fn new(
        backend_url: impl Into<String>,
        token: SecretString,
        device_id: impl Into<String>,
    ) -> Self {
        let device_id = device_id.into();
        let (serial_number, mac_address) = derived_serial_and_mac(&device_id);
        Self {
            backend_url: backend_url.into(),
            token,
            device_id,
            serial_number,
            mac_address,
            firmware_version: env!("CARGO_PKG_VERSION").to_owned(),
            key_type: KeyType::P256,
            server_keygen: false,
            backend_ca_pem: None,
            allow_custom_endpoint: true,
            retry: RetryPolicy::default(),
        }
    }
}

/// A serial `SN-<12 hex>` and a locally administered unicast MAC `02:..`, both from a hash of
/// the device id (stable across runs, distinct per id).
pub fn derived_serial_and_mac(device_id: &str) -> (String, String) {
    // FNV-1a 64: stable, no extra dependency; not a security function.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let bytes = h.to_be_bytes();
    let serial = format!("SN-{:012X}", h >> 16);
    let mac = format!(
        "02:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
        bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]
    );
    (serial, mac)
}

/// Who made the private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Made on the device; only a CSR was sent.
    Device,
    /// Made by the backend and sent back.
    Backend,
}

/// The result of [`register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The device id.
    pub device_id: String,
    /// Whether the image already held a valid identity for this device (nothing was sent).
    pub already_registered: bool,
    /// SHA-256 of the certificate (AWS IoT certificate id); empty when already registered.
    pub certificate_id: String,
    /// The MQTT host stored in the image.
    pub endpoint_host: String,
    /// The port the backend gave with the endpoint (`localhost:8883`), if any.
    pub endpoint_port: Option<u16>,
    /// The CA certificate the backend returned (for a local broker's trust roots).
    pub ca_certificate_pem: Option<String>,
    /// Who made the key (`None` when already registered).
    pub key_origin: Option<KeyOrigin>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the registration flow (see the module docs) and stores the identity in `image`.
pub async fn register(
    options: &RegistrationOptions,
    image: &ImageTarget,
    network: &mut (dyn NetworkJoin + Send),
) -> Result<Registration, RegistrationError> {
    let id = options.device_id.as_str();
    if !acorn_certs::is_valid_device_id(id) {
        return Err(RegistrationError::Config(format!(
            "device id `{id}` must be 1-128 of A-Z a-z 0-9 _ -"
        )));
    }
    if options.token.expose_secret().trim().is_empty() {
        return Err(RegistrationError::Config(
            "the registration token is empty; mint one with POST /v1/tokens".into(),
        ));
    }
    let client = http::Client::new(
        &options.backend_url,
        options.backend_ca_pem.as_deref(),
        options.retry,
    )?;

    // 1. Network.
    let step = network.name().to_owned();
    tracing::info!(device_id = id, step = %step, "step 1: join the network");
    network
        .join()
        .map_err(|detail| RegistrationError::Network { step, detail })?;

    // 2. Existing identity.
    tracing::info!(device_id = id, image = %image.path.display(), "step 2: check the NVS image");
    let now = unix_now();
    let image_check = image.clone();
    let stored = tokio::task::spawn_blocking(move || image_check.stored_device(now))
        .await
        .map_err(|e| RegistrationError::Config(format!("image task failed: {e}")))??;
    match stored {
        Some(stored) if stored == id => {
            let certs = image.load(now)?;
            tracing::info!(
                device_id = id,
                "already registered: the image holds a valid identity"
            );
            return Ok(Registration {
                device_id: stored,
                already_registered: true,
                certificate_id: String::new(),
                endpoint_host: certs.iot_endpoint.clone(),
                endpoint_port: None,
                ca_certificate_pem: None,
                key_origin: None,
            });
        }
        Some(stored) => {
            return Err(RegistrationError::OtherDevice {
                path: image.path.clone(),
                stored,
                requested: id.to_owned(),
            })
        }
        None => {}
    }

    // 3. Key pair and CSR (or none: the backend makes the key).
    let device_key = if options.server_keygen {
        tracing::info!(
            device_id = id,
            key_type = options.key_type.label(),
            "step 3: the backend will make the key pair"
        );
        None
    } else {
        tracing::info!(
            device_id = id,
            key_type = options.key_type.label(),
            "step 3: make the key pair and CSR on the device"
        );
        let (owned_id, key_type) = (id.to_owned(), options.key_type);
        Some(
            tokio::task::spawn_blocking(move || make_device_key(&owned_id, key_type))
                .await
                .map_err(|e| RegistrationError::Config(format!("key task failed: {e}")))??,
        )
    };

    // 4. Register.
    tracing::info!(device_id = id, backend = %options.backend_url, "step 4: register with the backend");
    let body = acorn_api::RegisterRequest {
        device_id: id.to_owned(),
        serial_number: options.serial_number.clone(),
        mac_address: options.mac_address.clone(),
        firmware_version: options.firmware_version.clone(),
        csr: device_key.as_ref().map(|k| k.csr_pem.clone()),
        key_type: options
            .server_keygen
            .then(|| options.key_type.api_name().to_owned()),
    };
    let answer = client.register(&options.token, &body).await?;

    // 5. Validate.
    tracing::info!(device_id = id, "step 5: validate the certificate");
    let key_origin = if device_key.is_some() {
        KeyOrigin::Device
    } else {
        KeyOrigin::Backend
    };
    let checked = answer::check(
        answer,
        id,
        device_key.map(|k| k.private_key_pem),
        options.allow_custom_endpoint,
        unix_now(),
    )?;

    // 6. Store.
    tracing::info!(device_id = id, image = %image.path.display(), "step 6: store the identity in NVS");
    let image_store = image.clone();
    let allow_custom = options.allow_custom_endpoint;
    let certs = checked.certs;
    let now = unix_now();
    tokio::task::spawn_blocking(move || image_store.store(&certs, now, allow_custom))
        .await
        .map_err(|e| RegistrationError::Config(format!("store task failed: {e}")))??;
    tracing::info!(device_id = id, certificate_id = %checked.certificate_id, "registered");
    Ok(Registration {
        device_id: id.to_owned(),
        already_registered: false,
        certificate_id: checked.certificate_id,
        endpoint_host: checked.endpoint_host,
        endpoint_port: checked.endpoint_port,
        ca_certificate_pem: Some(checked.ca_certificate_pem),
        key_origin: Some(key_origin),
    })
}
