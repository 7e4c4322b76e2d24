//! The dev stack's claim endpoint (fleet provisioning by claim): the embedded broker's claim
//! listener beside mosquitto, because mosquitto cannot give connections that share one
//! certificate client ids of their own (its `clientid_prefixes` is global) and would let one
//! claim device read another's answers. Devices present the shared claim certificate, connect
//! as `claim:<device id>` and may use only their own provisioning topics; the backend's
//! responder answers them on the endpoint's service listener.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use acorn_backend::{BackendHandle, BackendPaths};
use acorn_devstack::broker::LocalProvisioning;
use acorn_devstack::embedded::{EmbeddedBroker, EmbeddedConfig};
use anyhow::{Context, Result};
use secrecy::ExposeSecret as _;

/// File (in the dev directory) of the claim certificate.
pub const CLAIM_CERT_FILE: &str = "claim.pem";
/// File (in the dev directory, mode 0600) of the claim certificate's key.
pub const CLAIM_KEY_FILE: &str = "claim.key";
/// File (in the dev directory) of the claim CA's certificate (what the endpoint trusts).
pub const CLAIM_CA_FILE: &str = "claim-ca.pem";

/// A running claim endpoint.
pub struct ClaimEndpoint {
    broker: EmbeddedBroker,
    /// Port of the claim listener (devices).
    pub port: u16,
    /// Port of its service listener (the responder).
    pub service_port: u16,
    /// The claim certificate file.
    pub cert: PathBuf,
    /// The claim key file (0600).
    pub key: PathBuf,
}

impl ClaimEndpoint {
    /// Issues a claim certificate (`claim:dev-stack`) into `dir` and starts the endpoint on
    /// `port` (0: a free one) of `address` (default 127.0.0.1; its service listener stays
    /// there) with the backend's server certificate.
    pub async fn start(
        backend: &BackendHandle,
        paths: &BackendPaths,
        local: LocalProvisioning,
        dir: &Path,
        (address, port): (Option<Ipv4Addr>, u16),
    ) -> Result<Self> {
        let (identity, claim_ca_pem) = backend
            .issue_claim_identity("dev-stack")
            .context("cannot issue the claim certificate")?;
        let cert = dir.join(CLAIM_CERT_FILE);
        let key = dir.join(CLAIM_KEY_FILE);
        let ca = dir.join(CLAIM_CA_FILE);
        acorn_files::write_private(&key, identity.private_key_pem.expose_secret().as_bytes())
            .with_context(|| format!("cannot write {}", key.display()))?;
        std::fs::write(&cert, identity.certificate.pem.as_bytes())
            .with_context(|| format!("cannot write {}", cert.display()))?;
        std::fs::write(&ca, claim_ca_pem.as_bytes())
            .with_context(|| format!("cannot write {}", ca.display()))?;
        let mut config =
            EmbeddedConfig::from_pem_files(&paths.ca_cert, &paths.server_cert, &paths.server_key)
                .context("the claim endpoint's TLS files")?;
        config.device_listener = false;
        config.service_roots = Some(EmbeddedConfig::roots_from_pem_file(&paths.service_ca_cert)?);
        config.claim_roots = Some(EmbeddedConfig::roots_from_pem_file(&ca)?);
        config.claim_port = port;
        config.device_address = address.map(IpAddr::V4);
        config.local_provisioning = Some(local);
        let broker = EmbeddedBroker::start(config)
            .await
            .context("cannot start the claim endpoint")?;
        let port = broker
            .claim_port()
            .context("the claim listener did not start")?;
        let service_port = broker
            .service_port()
            .context("the claim endpoint's service listener did not start")?;
        Ok(Self {
            broker,
            port,
            service_port,
            cert,
            key,
        })
    }

    /// Stops the endpoint.
    pub async fn stop(self) {
        self.broker.stop().await;
    }
}
