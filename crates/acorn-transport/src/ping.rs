//! `ping`: one timed pass through every step of a device connection.
//!
//! DNS → TCP → TLS → CONNECT/CONNACK → SUBSCRIBE/SUBACK → PUBLISH (QoS 1)/PUBACK →
//! DISCONNECT, each step timed and bounded by the network timeout, with no waiting beyond
//! what the broker needs to answer. It runs directly on tokio-rustls and rumqttc's MQTT 3.1.1
//! codec (not rumqttc's event loop) so that every step can be timed on its own.
//!
//! Inbound PUBLISH packets (commands queued in a persistent session) are not acknowledged,
//! so the broker keeps them for the real device.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::diagnosis::{connack_code, DiagnoseHost, Diagnosis, Step};
use crate::identity::{BrokerTarget, ClientIdentity};
use crate::presence::{status_json, status_topic};
use crate::roots::TrustRoots;
use crate::tls::{client_config, TlsVersions};

/// Largest packet accepted from the broker: AWS IoT's 128 KB payload plus headers.
const MAX_INCOMING_PACKET: usize = 128 * 1024 + 1024;

/// What to ping with. [`PingOptions::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct PingOptions {
    /// Where to connect.
    pub target: BrokerTarget,
    /// The device identity.
    pub identity: ClientIdentity,
    /// Roots the broker's certificate must chain to.
    pub roots: TrustRoots,
    /// MQTT client id (= device id = certificate CN on the Acorn policy).
    pub client_id: String,
    /// TLS versions offered (default 1.2 and 1.3).
    pub tls_versions: TlsVersions,
    /// Bound of each step (default 30 s, the seed's network timeout).
    pub step_timeout: Duration,
    /// MQTT keepalive sent in CONNECT (default 60 s).
    pub keep_alive: Duration,
    /// Clean session flag (default false: the device's persistent session is kept).
    pub clean_session: bool,
    /// Topic filters subscribed (default the device's: `acorn-pups/settings/{client_id}` and
    /// `acorn-pups/commands/{client_id}`, so the persistent session a ping leaves is the
    /// device's own).
    pub subscribe_topics: Vec<String>,
    /// Topic of the QoS 1 publish (default `acorn-pups/status/{client_id}`).
    pub publish_topic: String,
    /// Payload of the QoS 1 publish (default an `online` status JSON).
    pub payload: Vec<u8>,
}

impl PingOptions {
    /// Defaults for device `client_id`: subscribe to its settings and commands topics, publish an `online`
    /// status with firmware version `firmware_version` at QoS 1.
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
            subscribe_topics: acorn_mqtt::topics::device_subscription_filters(&client_id).to_vec(),
            publish_topic: status_topic(&client_id),
            payload: status_json(
                &client_id,
                acorn_mqtt::DeviceStatus::Online,
                firmware_version,
            ),
            client_id,
            tls_versions: TlsVersions::default(),
            step_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(60),
            clean_session: false,
        }
    }
}

/// The time of every step of a successful ping, and what was negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingReport {
    /// Address connected to.
    pub peer: SocketAddr,
    /// Time of each step, in order: dns, tcp, tls, connack, suback, puback, disconnect.
    pub steps: Vec<(Step, Duration)>,
    /// Sum of all steps (wall time, including local configuration).
    pub total: Duration,
    /// Negotiated TLS version (e.g. `TLSv1_3`).
    pub tls_version: String,
    /// Negotiated cipher suite.
    pub cipher_suite: String,
    /// Negotiated ALPN protocol, if any.
    pub alpn: Option<String>,
    /// CONNACK's session-present flag.
    pub session_present: bool,
}

impl PingReport {
    /// The duration of `step`, if it ran.
    pub fn step(&self, step: Step) -> Option<Duration> {
        self.steps.iter().find(|(s, _)| *s == step).map(|(_, d)| *d)
    }
}

/// A failed ping: the step that failed, why, and the steps that completed before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingFailure {
    /// The failing step ([`Diagnosis::step`] of the step that was running).
    pub step: Step,
    /// What went wrong.
    pub diagnosis: Diagnosis,
    /// Steps that completed, with their durations.
    pub completed: Vec<(Step, Duration)>,
}

impl core::fmt::Display for PingFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} failed: {}", self.step, self.diagnosis)
    }
}

impl std::error::Error for PingFailure {}

struct Run {
    completed: Vec<(Step, Duration)>,
    timeout: Duration,
    address: String,
}

impl Run {
    fn fail(&self, running: Step, diagnosis: Diagnosis) -> PingFailure {
        PingFailure {
            step: diagnosis.step(running),
            diagnosis,
            completed: self.completed.clone(),
        }
    }

    /// Runs one step under the timeout, recording its duration on success.
    async fn step<T, F>(&mut self, step: Step, fut: F) -> Result<T, PingFailure>
    where
        F: core::future::Future<Output = Result<T, Diagnosis>>,
    {
        let start = Instant::now();
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => {
                self.completed.push((step, start.elapsed()));
                Ok(value)
            }
            Ok(Err(diagnosis)) => Err(self.fail(step, diagnosis)),
            Err(_) => Err(self.fail(
                step,
                Diagnosis::Timeout {
                    step,
                    after_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                },
            )),
        }
    }
}

/// Runs a ping. Never panics; every step is bounded by `options.step_timeout`.
pub async fn ping(options: &PingOptions) -> Result<PingReport, PingFailure> {
    let start = Instant::now();
    let target = &options.target;
    let mut run = Run {
        completed: Vec::with_capacity(7),
        timeout: options.step_timeout,
        address: format!("{}:{}", target.host, target.port),
    };
    // Local checks first: a key that does not match its certificate never reaches the wire.
    let config = client_config(
        &options.identity,
        &options.roots,
        target.alpn,
        options.tls_versions,
    )
    .map_err(|e| run.fail(Step::Config, Diagnosis::from(&e)))?;
    let server_name = target
        .server_name()
        .map_err(|e| run.fail(Step::Config, Diagnosis::from(&e)))?;

    let host = target.host.clone();
    let port = target.port;
    let addrs: Vec<SocketAddr> = run
        .step(Step::Dns, async {
            let found = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| Diagnosis::DnsFailure {
                    host: host.clone(),
                    detail: e.to_string(),
                })?;
            let addrs: Vec<SocketAddr> = found.collect();
            if addrs.is_empty() {
                return Err(Diagnosis::DnsFailure {
                    host: host.clone(),
                    detail: "no address".to_owned(),
                });
            }
            Ok(addrs)
        })
        .await?;

    let address = run.address.clone();
    let tcp = run
        .step(Step::Tcp, async {
            let mut last = None;
            for addr in &addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        stream
                            .set_nodelay(true)
                            .map_err(|e| Diagnosis::NetworkError {
                                detail: e.to_string(),
                            })?;
                        quickack(&stream);
                        return Ok(stream);
                    }
                    Err(e) => last = Some(Diagnosis::from_io(&e, Step::Tcp, &address)),
                }
            }
            Err(last.unwrap_or(Diagnosis::NetworkError {
                detail: "no address to connect to".to_owned(),
            }))
        })
        .await?;
    let peer = match tcp.peer_addr() {
        Ok(peer) => peer,
        Err(e) => return Err(run.fail(Step::Tcp, Diagnosis::from_io(&e, Step::Tcp, &run.address))),
    };

    let connector = TlsConnector::from(Arc::clone(&config));
    let mut tls = run
        .step(Step::Tls, async {
            connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| Diagnosis::from_io(&e, Step::Tls, &address))
        })
        .await?;
    let (tls_version, cipher_suite, alpn) = {
        let (_, conn) = tls.get_ref();
        (
            conn.protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            conn.negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            conn.alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        )
    };

    let mut buf = BytesMut::with_capacity(4096);
    let mut connect = Connect::new(options.client_id.clone());
    connect.keep_alive = u16::try_from(options.keep_alive.as_secs()).unwrap_or(u16::MAX);
    connect.clean_session = options.clean_session;
    let session_present = run
        .step(Step::Connack, async {
            send(&mut tls, &Packet::Connect(connect), &address, Step::Connack).await?;
            match receive(&mut tls, &mut buf, &address, Step::Connack).await? {
                Packet::ConnAck(ack) => {
                    let code = connack_code(ack.code);
                    if code != 0 {
                        return Err(Diagnosis::BrokerRefused { code });
                    }
                    Ok(ack.session_present)
                }
                other => Err(Diagnosis::ProtocolError(format!(
                    "expected CONNACK, got {}",
                    packet_name(&other)
                ))),
            }
        })
        .await?;

    let topic = options.subscribe_topics.join(", ");
    run.step(Step::Suback, async {
        let mut subscribe =
            Subscribe::new_many(options.subscribe_topics.iter().map(|t| {
                rumqttc::mqttbytes::v4::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce)
            }));
        subscribe.pkid = 1;
        send(
            &mut tls,
            &Packet::Subscribe(subscribe),
            &address,
            Step::Suback,
        )
        .await?;
        loop {
            match receive(&mut tls, &mut buf, &address, Step::Suback).await? {
                Packet::SubAck(ack) if ack.pkid == 1 => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure));
                    return if refused {
                        Err(Diagnosis::SubscriptionRefused { topic })
                    } else {
                        Ok(())
                    };
                }
                // Queued commands for the device: leave them unacknowledged.
                Packet::Publish(_) => continue,
                other => {
                    return Err(Diagnosis::ProtocolError(format!(
                        "expected SUBACK, got {}",
                        packet_name(&other)
                    )))
                }
            }
        }
    })
    .await?;

    let mut publish = Publish::new(
        options.publish_topic.clone(),
        QoS::AtLeastOnce,
        options.payload.clone(),
    );
    publish.pkid = 2;
    run.step(Step::Puback, async {
        send(&mut tls, &Packet::Publish(publish), &address, Step::Puback).await?;
        loop {
            match receive(&mut tls, &mut buf, &address, Step::Puback).await? {
                Packet::PubAck(ack) if ack.pkid == 2 => return Ok(()),
                Packet::Publish(_) => continue,
                other => {
                    return Err(Diagnosis::ProtocolError(format!(
                        "expected PUBACK, got {}",
                        packet_name(&other)
                    )))
                }
            }
        }
    })
    .await?;

    run.step(Step::Disconnect, async {
        send(&mut tls, &Packet::Disconnect, &address, Step::Disconnect).await?;
        // Sends close_notify and the TCP FIN; we do not wait for the broker's close.
        tls.shutdown()
            .await
            .map_err(|e| Diagnosis::from_io(&e, Step::Disconnect, &address))
    })
    .await?;

    Ok(PingReport {
        peer,
        steps: run.completed,
        total: start.elapsed(),
        tls_version,
        cipher_suite,
        alpn,
        session_present,
    })
}

async fn send(
    tls: &mut TlsStream<TcpStream>,
    packet: &Packet,
    address: &str,
    step: Step,
) -> Result<(), Diagnosis> {
    let mut out = BytesMut::with_capacity(packet.size() + 8);
    packet.write(&mut out, usize::MAX).map_err(|e| {
        Diagnosis::ProtocolError(format!("cannot encode {}: {e}", packet_name(packet)))
    })?;
    tls.write_all(&out)
        .await
        .map_err(|e| Diagnosis::from_io(&e, step, address))?;
    tls.flush()
        .await
        .map_err(|e| Diagnosis::from_io(&e, step, address))
}

async fn receive(
    tls: &mut TlsStream<TcpStream>,
    buf: &mut BytesMut,
    address: &str,
    step: Step,
) -> Result<Packet, Diagnosis> {
    loop {
        match Packet::read(buf, MAX_INCOMING_PACKET) {
            Ok(packet) => return Ok(packet),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(Diagnosis::ProtocolError(e.to_string())),
        }
        buf.reserve(4096);
        quickack(tls.get_ref().0);
        let n = tls
            .read_buf(buf)
            .await
            .map_err(|e| Diagnosis::from_io(&e, step, address))?;
        if n == 0 {
            return Err(Diagnosis::ClosedByBroker { step });
        }
    }
}

/// Asks the kernel to acknowledge received segments at once (Linux `TCP_QUICKACK`; it resets
/// itself, hence before every read). Brokers that do not set TCP_NODELAY (mosquitto's
/// default) hold a small reply under Nagle's algorithm until their previous segment is
/// acknowledged: after a TLS 1.3 handshake that previous segment is the session tickets, and
/// a delayed ACK would stall the CONNACK by ~40 ms.
fn quickack(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}
