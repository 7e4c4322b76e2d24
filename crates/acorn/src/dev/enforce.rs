//! Carrying out the registration service's CRL events on the local broker: every new CRL is
//! installed (mosquitto re-reads it), and a revocation also ends the device's live connection
//! at once and tells the fleet it is offline.
//!
//! mosquitto checks the CRL only at the TLS handshake, so a revoked device's open connection
//! would live on. It is closed by MQTT session takeover: a connection with the same client id
//! (a certificate from the service CA whose CN is the device id, made for this one use, with
//! no rights on the service listener) makes the broker drop the device's connection and,
//! with a clean session, its queued commands. mosquitto 2.0 then sends the device's own last
//! will (`offline`); the backend's service identity follows it with an `offline` status that
//! says why (`certificate revoked`). See docs/decisions.md.

use std::time::Duration;

use acorn_backend::{CrlEvent, IssuedKeyPair, KeyType, LocalCa, Revocation};
use acorn_devstack::broker::Broker;
use acorn_mqtt::{DeviceStatus, DeviceStatusMessage, Topics};
use acorn_transport::rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use acorn_transport::{BrokerTarget, ClientIdentity, SecretString, SessionOptions, TrustRoots};
use secrecy::ExposeSecret as _;

/// How long each MQTT step of an enforcement may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// The pieces the CRL hook needs, available once the broker runs.
pub struct Enforcer {
    /// The running broker.
    pub broker: Broker,
    /// The service CA, for takeover certificates.
    pub service_ca: LocalCa,
    /// The backend's own service identity (`service:backend`).
    pub backend_identity: IssuedKeyPair,
    /// Roots the broker's server certificate chains to.
    pub roots: TrustRoots,
}

impl Enforcer {
    /// Installs the new CRL in the broker; for a revocation, also ends the device's live
    /// connection and publishes its `offline` status. Runs on a blocking thread of the
    /// runtime (the backend calls its CRL hook there).
    pub fn on_crl(&self, event: &CrlEvent) -> Result<(), String> {
        self.broker
            .install_crl(&event.crl_path)
            .map_err(|e| format!("the broker did not take the new CRL: {e}"))?;
        let Some(revoked) = &event.revoked else {
            return Ok(());
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| format!("no async runtime for the takeover: {e}"))?;
        runtime.block_on(self.end_session(revoked))?;
        tracing::info!(device_id = %revoked.device_id, "revoked device's live connection closed; offline status published");
        Ok(())
    }

    async fn end_session(&self, revoked: &Revocation) -> Result<(), String> {
        let takeover = self
            .service_ca
            .issue_with_new_key(&revoked.device_id, KeyType::P256)
            .map_err(|e| format!("cannot make the takeover certificate: {e}"))?;
        // Connecting with the device's client id is what closes its connection.
        let (client, mut events) = self.connect(&takeover, &revoked.device_id)?;
        wait_for(&mut events, "CONNACK of the takeover", |p| {
            matches!(p, Packet::ConnAck(_))
        })
        .await?;
        let _ = client.disconnect().await;
        drain(&mut events).await;

        let backend_id = acorn_mqtt::service_client_id("backend").map_err(|e| e.to_string())?;
        let (client, mut events) = self.connect(&self.backend_identity, &backend_id)?;
        wait_for(&mut events, "CONNACK of the backend", |p| {
            matches!(p, Packet::ConnAck(_))
        })
        .await?;
        let topics = Topics::new(&revoked.device_id).map_err(|e| e.to_string())?;
        let mut status = DeviceStatusMessage::new(
            &revoked.device_id,
            now_ms(),
            DeviceStatus::Offline,
            &revoked.firmware_version,
        );
        status.error = Some("certificate revoked".to_owned());
        let payload = status.to_json().map_err(|e| e.to_string())?;
        client
            .publish(topics.status(), QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| format!("cannot publish the offline status: {e}"))?;
        wait_for(&mut events, "PUBACK of the offline status", |p| {
            matches!(p, Packet::PubAck(_))
        })
        .await?;
        let _ = client.disconnect().await;
        drain(&mut events).await;
        Ok(())
    }

    fn connect(
        &self,
        identity: &IssuedKeyPair,
        client_id: &str,
    ) -> Result<(AsyncClient, EventLoop), String> {
        self.service_session(identity, client_id)?
            .connect()
            .map_err(|e| e.to_string())
    }

    /// Session options for `identity` (from the service CA) on the broker's service listener.
    pub fn service_session(
        &self,
        identity: &IssuedKeyPair,
        client_id: &str,
    ) -> Result<SessionOptions, String> {
        let port = self
            .broker
            .service_port()
            .ok_or("the broker has no service listener")?;
        Ok(self.service_session_at(identity, client_id, port))
    }

    /// Session options for `identity` on a service listener at `port` of localhost whose
    /// server certificate chains to the backend's CA (mosquitto's, or the claim endpoint's).
    pub fn service_session_at(
        &self,
        identity: &IssuedKeyPair,
        client_id: &str,
        port: u16,
    ) -> SessionOptions {
        let identity = ClientIdentity::new(
            identity.certificate.pem.clone(),
            SecretString::from(identity.private_key_pem.expose_secret().to_owned()),
        );
        let mut options = SessionOptions::new(
            BrokerTarget::new("localhost", port),
            identity,
            self.roots.clone(),
            client_id,
            env!("CARGO_PKG_VERSION"),
        );
        options.clean_session = true;
        options.network_timeout = STEP_TIMEOUT;
        options
    }
}

/// Polls `events` until a packet `wanted` accepts arrives (bounded by [`STEP_TIMEOUT`]).
async fn wait_for(
    events: &mut EventLoop,
    what: &str,
    wanted: impl Fn(&Packet) -> bool,
) -> Result<(), String> {
    let found = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) if wanted(&packet) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("{what}: {e}")),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| Err(format!("no {what} within {STEP_TIMEOUT:?}")))
}

/// Lets the event loop send a queued DISCONNECT (bounded).
async fn drain(events: &mut EventLoop) {
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while events.poll().await.is_ok() {}
    })
    .await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
