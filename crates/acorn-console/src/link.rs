//! The console's link to the broker: the service identity `service:console` (from the
//! backend's service CA, on the broker's service listener), subscribed to every device's
//! status and presses, and publishing the settings updates and commands the pages send.
//! It reconnects with backoff until the backend stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use acorn_backend::Admin;
use acorn_mqtt::{
    ButtonPressMessage, DeviceStatusMessage, TOPIC_BUTTON_PRESS, TOPIC_DEVICE_STATUS,
};
use acorn_transport::rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use acorn_transport::{BrokerTarget, ClientIdentity, SessionOptions, TrustRoots};
use secrecy::{ExposeSecret as _, SecretString};

use crate::fleet::{now_ms, Fleet};

/// The console's service name (its client id is `service:console`).
pub const SERVICE_NAME: &str = "console";

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Publishes to devices while the link is up.
#[derive(Default)]
pub struct Link {
    client: Mutex<Option<AsyncClient>>,
}

impl Link {
    /// Publishes `payload` at QoS 1 to `topic`; an error in words when the link is down.
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        let client = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("the console is not connected to the broker (see the service's log)")?;
        tokio::time::timeout(
            Duration::from_secs(5),
            client.publish(topic, QoS::AtLeastOnce, false, payload),
        )
        .await
        .map_err(|_| "the broker link is busy; try again".to_owned())?
        .map_err(|e| format!("the broker link is closing: {e}"))
    }

    fn set(&self, client: Option<AsyncClient>) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = client;
    }
}

/// Runs the link until the backend stops. Without a service endpoint there is no broker to
/// reach: the console then shows the registry alone.
pub async fn run(admin: Admin, fleet: Arc<Fleet>, link: Arc<Link>) {
    let Some(endpoint) = admin.service_endpoint().map(str::to_owned) else {
        tracing::info!("console: no broker service endpoint configured; live state is off");
        return;
    };
    let Some(options) = options(&admin, &endpoint) else {
        return;
    };
    let stopping = admin.clone();
    tokio::select! {
        _ = stopping.stopping() => {}
        _ = connect_forever(&admin, &options, &fleet, &link) => {}
    }
    link.set(None);
    fleet.set_linked(false);
}

fn options(admin: &Admin, endpoint: &str) -> Option<SessionOptions> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .or_else(|| {
            tracing::error!(%endpoint, "console: the service endpoint is not host:port");
            None
        })?;
    let issued = admin
        .issue_service_identity(SERVICE_NAME)
        .map_err(|e| tracing::error!(error = %e, "console: no service identity"))
        .ok()?;
    let roots = TrustRoots::from_pem(admin.ca_certificate_pem(), "the backend's CA")
        .map_err(|e| tracing::error!(error = %e, "console: the CA certificate"))
        .ok()?;
    let identity = ClientIdentity::new(
        issued.certificate.pem.clone(),
        SecretString::from(issued.private_key_pem.expose_secret().to_owned()),
    );
    let client_id = acorn_mqtt::service_client_id(SERVICE_NAME).ok()?;
    let mut options = SessionOptions::new(
        BrokerTarget::new(host, port),
        identity,
        roots,
        client_id,
        env!("CARGO_PKG_VERSION"),
    );
    // Nothing to catch up on: the pages show what arrives while they are open.
    options.clean_session = true;
    options.channel_capacity = 256;
    Some(options)
}

async fn connect_forever(admin: &Admin, options: &SessionOptions, fleet: &Fleet, link: &Link) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match options.connect() {
            Ok((client, eventloop)) => {
                if serve(admin, options, client, eventloop, fleet, link).await {
                    backoff = Duration::from_millis(250);
                }
            }
            Err(e) => tracing::error!(error = %e, "console: broker link settings"),
        }
        link.set(None);
        fleet.set_linked(false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection, until it fails; `true` if it got as far as its CONNACK.
async fn serve(
    admin: &Admin,
    options: &SessionOptions,
    client: AsyncClient,
    mut eventloop: EventLoop,
    fleet: &Fleet,
    link: &Link,
) -> bool {
    let mut connected = false;
    loop {
        let event = match eventloop.poll().await {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(diagnosis = %options.diagnose(&e), "console: broker link down");
                return connected;
            }
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                connected = true;
                for filter in [
                    format!("{TOPIC_DEVICE_STATUS}/+"),
                    format!("{TOPIC_BUTTON_PRESS}/+"),
                ] {
                    let _ = client.try_subscribe(filter, QoS::AtLeastOnce);
                }
            }
            Event::Incoming(Packet::SubAck(_)) if !fleet.linked() => {
                fleet.set_linked(true);
                link.set(Some(client.clone()));
                tracing::info!("console: linked to the broker as service:console");
                probe(admin, &client).await;
            }
            Event::Incoming(Packet::Publish(p)) => record(fleet, &p.topic, &p.payload),
            _ => {}
        }
    }
}

/// Status messages are not retained, so devices online before the link subscribed are
/// asked: each active device gets a `get-status`, and those online answer.
async fn probe(admin: &Admin, client: &AsyncClient) {
    let Ok(devices) = admin.devices().await else {
        return;
    };
    for device in devices
        .iter()
        .filter(|d| d.status == acorn_backend::registry::RegistrationStatus::Active)
    {
        let command = serde_json::json!({
            "requestId": format!("console-probe-{}", hex::encode(rand::random::<[u8; 4]>())),
            "command": "get-status",
        });
        let Ok(topics) = acorn_mqtt::Topics::new(&device.device_id) else {
            continue;
        };
        let _ = client.try_publish(
            topics.commands(),
            QoS::AtLeastOnce,
            false,
            command.to_string(),
        );
    }
}

/// Files one message under the device its topic names. A message whose body names another
/// device, or that does not parse, is dropped (the broker's ACL lets a device write only its
/// own topics, so the topic is the trustworthy name).
fn record(fleet: &Fleet, topic: &str, payload: &[u8]) {
    let now = now_ms();
    if let Some(id) = topic.strip_prefix(&format!("{TOPIC_DEVICE_STATUS}/")) {
        match DeviceStatusMessage::from_json(topic, payload) {
            Ok(m) if m.device_id == id => fleet.status(m, now),
            Ok(_) => tracing::warn!(%topic, "console: status naming another device dropped"),
            Err(e) => tracing::warn!(%topic, error = %e, "console: unreadable status dropped"),
        }
    } else if let Some(id) = topic.strip_prefix(&format!("{TOPIC_BUTTON_PRESS}/")) {
        match ButtonPressMessage::from_json(topic, payload) {
            Ok(m) if m.device_id == id => fleet.press(m, now),
            Ok(_) => tracing::warn!(%topic, "console: press naming another device dropped"),
            Err(e) => tracing::warn!(%topic, error = %e, "console: unreadable press dropped"),
        }
    }
}
