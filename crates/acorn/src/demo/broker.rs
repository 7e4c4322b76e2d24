//! The demo's MQTT broker: acorn-devstack's embedded broker ([`acorn_devstack::embedded`]) on
//! 127.0.0.1, in this process, with TLS that requires a client certificate and two listeners
//! as in `acorn dev up`: the device listener trusts the device CA, checks the backend's CRL
//! and gives each device its own topics only (`acorn_mqtt::DEVICE_POLICY`, and its own topics
//! of AWS IoT's provisioning API for certificate rotation), the service listener trusts only
//! the service CA.

use std::path::Path;

use acorn_devstack::broker::LocalProvisioning;
use acorn_devstack::embedded::{EmbeddedBroker, EmbeddedConfig};
use anyhow::{Context, Result};

/// The two listeners: each a port and the one CA its clients' certificates must chain to.
pub struct Listeners<'a> {
    /// Device listener port.
    pub device_port: u16,
    /// The device CA.
    pub device_ca: &'a Path,
    /// The device CA's CRL (PEM), written by the backend.
    pub device_crl: &'a Path,
    /// Service listener port.
    pub service_port: u16,
    /// The service CA.
    pub service_ca: &'a Path,
    /// AWS IoT's provisioning API served by the backend's service identity.
    pub local_provisioning: LocalProvisioning,
}

/// Starts the broker on the current tokio runtime with the server certificate and key and the
/// two listeners; returns once both ports accept connections. It runs until it is stopped or
/// dropped.
pub async fn start(listeners: Listeners<'_>, cert: &Path, key: &Path) -> Result<EmbeddedBroker> {
    let mut config = EmbeddedConfig::from_pem_files(listeners.device_ca, cert, key)
        .context("the broker's certificates")?;
    config.device_port = listeners.device_port;
    config.device_crls =
        EmbeddedConfig::crls_from_pem_file(listeners.device_crl).context("the device CRL")?;
    config.service_port = listeners.service_port;
    config.service_roots =
        Some(EmbeddedConfig::roots_from_pem_file(listeners.service_ca).context("the service CA")?);
    config.local_provisioning = Some(listeners.local_provisioning);
    EmbeddedBroker::start(config)
        .await
        .context("cannot start the embedded MQTT broker")
}
