//! The long-running connection: rumqttc 0.25 [`MqttOptions`] and [`EventLoop`] set up for a
//! device (MQTT 3.1.1, persistent session, last will `offline`, keepalive 60 s, network
//! timeout 30 s, TCP_NODELAY, our rustls configuration).
//!
//! The caller drives the event loop (`eventloop.poll().await`) and feeds its results to the
//! session policy; failures are explained by [`Diagnosis::from_connection_error`].

use std::time::Duration;

use rumqttc::{
    AsyncClient, EventLoop, LastWill, MqttOptions, NetworkOptions, QoS, TlsConfiguration, Transport,
};

use crate::diagnosis::{DiagnoseHost, Diagnosis};
use crate::error::ConfigError;
use crate::identity::{BrokerTarget, ClientIdentity};
use crate::presence::{status_json, status_topic};
use crate::roots::TrustRoots;
use crate::tls::{client_config, TlsVersions};

/// Largest packet sent: AWS IoT Core's 128 KB payload plus topic and headers (rumqttc's
/// default is 10 KB).
pub const MAX_OUTGOING_PACKET: usize = 128 * 1024 + 1024;
/// Largest packet read. Twice AWS's payload limit, so that an oversized settings update or
/// command from another broker is still read and answered with an error instead of ending
/// the connection (with a persistent session the broker would send it again at every
/// reconnect).
pub const MAX_INCOMING_PACKET: usize = 256 * 1024 + 1024;

/// Settings of a device session. [`SessionOptions::new`] fills in the seed's values.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Where to connect. `server_name`, if set, must equal `host` (rumqttc verifies the name
    /// it connects to).
    pub target: BrokerTarget,
    /// The device identity.
    pub identity: ClientIdentity,
    /// Roots the broker's certificate must chain to.
    pub roots: TrustRoots,
    /// MQTT client id (= device id).
    pub client_id: String,
    /// TLS versions offered.
    pub tls_versions: TlsVersions,
    /// MQTT keepalive (default 60 s).
    pub keep_alive: Duration,
    /// Bound of connect (TCP + TLS + CONNACK) and of each flush (default 30 s).
    pub network_timeout: Duration,
    /// Clean session (default false: persistent session).
    pub clean_session: bool,
    /// Last will topic (default `acorn-pups/status/{client_id}`); empty: no last will (a claim
    /// connection, whose rights hold no status topic).
    pub will_topic: String,
    /// Last will payload (default a status JSON with `status: offline`).
    pub will_payload: Vec<u8>,
    /// Capacity of the request channel between [`AsyncClient`] and the [`EventLoop`].
    pub channel_capacity: usize,
}

impl SessionOptions {
    /// The seed's settings for device `client_id` with firmware `firmware_version`.
    pub fn new(
        target: BrokerTarget,
        identity: ClientIdentity,
        roots: TrustRoots,
        client_id: impl Into<String>,
        firmware_version: &str,
    ) -> Self {
        let client_id = client_id.into();
        Self {
            target,
            identity,
            roots,
            will_topic: status_topic(&client_id),
            will_payload: status_json(
                &client_id,
                acorn_mqtt::DeviceStatus::Offline,
                firmware_version,
            ),
            client_id,
            tls_versions: TlsVersions::default(),
            keep_alive: Duration::from_secs(60),
            network_timeout: Duration::from_secs(30),
            clean_session: false,
            channel_capacity: 64,
        }
    }

    /// `host:port`, as used in diagnoses.
    pub fn address(&self) -> String {
        format!("{}:{}", self.target.host, self.target.port)
    }

    /// rumqttc options: TLS with our rustls config (checks the key locally), last will,
    /// keepalive, clean session.
    pub fn mqtt_options(&self) -> Result<MqttOptions, ConfigError> {
        if let Some(name) = &self.target.server_name {
            if name != &self.target.host {
                return Err(ConfigError::ServerNameMustEqualHost {
                    host: self.target.host.clone(),
                    server_name: name.clone(),
                });
            }
        }
        // Fails early on names rustls cannot verify.
        self.target.server_name()?;
        let config = client_config(
            &self.identity,
            &self.roots,
            self.target.alpn,
            self.tls_versions,
        )?;
        let mut options = MqttOptions::new(
            self.client_id.clone(),
            self.target.host.clone(),
            self.target.port,
        );
        options
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)))
            .set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_request_channel_capacity(self.channel_capacity)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        if !self.will_topic.is_empty() {
            options.set_last_will(LastWill::new(
                self.will_topic.clone(),
                self.will_payload.clone(),
                QoS::AtLeastOnce,
                false,
            ));
        }
        Ok(options)
    }

    /// Network options: TCP_NODELAY and the network timeout (whole seconds, at least 1).
    pub fn network_options(&self) -> NetworkOptions {
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(self.network_timeout.as_secs().max(1));
        network
    }

    /// Creates the client and its event loop. Nothing connects until the loop is polled.
    pub fn connect(&self) -> Result<(AsyncClient, EventLoop), ConfigError> {
        let (client, mut eventloop) = AsyncClient::new(self.mqtt_options()?, self.channel_capacity);
        eventloop.set_network_options(self.network_options());
        Ok((client, eventloop))
    }

    /// Explains an event loop error for this session's broker.
    pub fn diagnose(&self, err: &rumqttc::ConnectionError) -> Diagnosis {
        Diagnosis::from_connection_error(err, &self.address())
    }
}
