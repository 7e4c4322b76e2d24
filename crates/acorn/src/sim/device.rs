//! One simulated device: the device core (`acorn_device::Device`, with its session policy,
//! backoff, durable-queue semantics and `pressId`s; presses kept in RAM) driven by a lean
//! MQTT 3.1.1 client over one tokio-rustls stream, all in one tokio task.
//!
//! The client is what the device core asks of a transport and nothing more: it opens TCP and
//! TLS with the run's shared rustls parts and the device's own certificate, writes CONNECT
//! with the core's keepalive and last will, maps packet ids to the core's tags, acknowledges
//! inbound QoS 1 messages, keeps the connection alive with PINGREQ, and reports everything
//! back; it never reconnects or re-sends on its own (the core does, with backoff). No thread,
//! no channel, no second task per device.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acorn_device::{
    Action, Connect, Device, DeviceConfig, MemoryPresses, MemorySettings, Notice, Now,
    PressOutcome, Tag, TransportEvent,
};
use acorn_mqtt::{ConnectionStatus, DisconnectCause};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect as ConnectPacket, ConnectReturnCode, LastWill, Packet, PubAck,
    Publish as PublishPacket, Subscribe, SubscribeFilter, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::identities::DeviceIdentity;
use super::ledger::Ledger;
use super::workload::Workload;

/// Reported as `firmwareVersion`.
pub const FIRMWARE: &str = concat!("acorn-sim-", env!("CARGO_PKG_VERSION"));
/// Bound of one write (a stalled network must not hold a device forever).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest inbound packet (AWS IoT's payload limit and a topic).
const MAX_PACKET: usize = 131_072 + 512;
/// Buttons a device cycles through (each has its own cooldown).
const BUTTONS: [&str; 3] = ["rf-5a3c", "rf-77e1", "rf-0b42"];

/// What every device of a run shares.
pub struct DeviceEnv {
    /// The accounting.
    pub ledger: Arc<Ledger>,
    /// The address devices connect to (the broker, or the fault proxy in front of it).
    pub addr: SocketAddr,
    /// The name the broker's certificate must carry.
    pub server_name: ServerName<'static>,
    /// The shared TLS parts.
    pub tls: TlsParts,
    /// When and how often devices press.
    pub workload: Workload,
    /// Turns true when presses stop (the run's duration is over).
    pub stop_pressing: watch::Receiver<bool>,
    /// Turns true when devices shut down (`offline`, DISCONNECT).
    pub shutdown: watch::Receiver<bool>,
    /// Which devices are connected now (the observer sends commands to these).
    pub online: Arc<Vec<AtomicBool>>,
}

/// The rustls parts every device shares: the crypto provider, the server verifier (the
/// roots), the protocol versions and ALPN. Each device adds only its own certificate and key.
#[derive(Clone)]
pub struct TlsParts {
    /// The `ring` provider.
    pub provider: Arc<rustls::crypto::CryptoProvider>,
    /// The broker's verifier (roots and hostname check).
    pub verifier: Arc<rustls::client::WebPkiServerVerifier>,
    /// Offer ALPN `x-amzn-mqtt-ca` (AWS IoT Core on port 443).
    pub alpn: bool,
}

impl TlsParts {
    /// The parts for brokers whose certificates chain to `roots`.
    pub fn new(roots: &acorn_transport::TrustRoots, alpn: bool) -> anyhow::Result<Self> {
        let provider = acorn_transport::tls::provider();
        let store = Arc::new(roots.root_store()?);
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                .build()?;
        Ok(Self {
            provider,
            verifier,
            alpn,
        })
    }

    /// A device's client configuration: the shared parts and its identity; no session
    /// resumption (each connect is a full mutual-TLS handshake, as on the chip).
    pub fn config(&self, identity: &DeviceIdentity) -> anyhow::Result<Arc<ClientConfig>> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_webpki_verifier(self.verifier.clone())
            .with_client_cert_resolver(Arc::new(DeviceCert(identity.key.clone())));
        config.resumption = rustls::client::Resumption::disabled();
        if self.alpn {
            config.alpn_protocols = vec![acorn_transport::tls::AWS_IOT_ALPN.to_vec()];
        }
        Ok(Arc::new(config))
    }
}

/// A device's certificate and key, for every handshake of its connections.
#[derive(Debug)]
struct DeviceCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for DeviceCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// What one device did, for the report.
#[derive(Debug, Clone, Default)]
pub struct DeviceSummary {
    /// Monotonic ms (since the run's start) of each CONNECT attempt.
    pub attempts_ms: Vec<u64>,
    /// CONNACKs accepted.
    pub connects: u32,
    /// Connected when the shutdown began.
    pub connected_at_end: bool,
    /// The device could not start (its configuration was refused).
    pub failed: Option<String>,
}

/// A small, fast random source for the session's jitter (SplitMix64): one u64 of state.
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
}

impl rand::RngCore for SplitMix {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TlsStream<TcpStream>, String>> + Send>>;

/// One open connection.
struct Conn {
    stream: TlsStream<TcpStream>,
    /// CONNACK accepted.
    up: bool,
    /// Packet id → the core's tag, for PUBACKs.
    tags: Vec<(u16, Tag)>,
    next_pkid: u16,
    last_sent: Instant,
    ping_outstanding: bool,
    keep_alive: Duration,
}

impl Conn {
    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }
}

struct SimDevice {
    index: u32,
    core: Device<SplitMix, MemorySettings, MemoryPresses>,
    env: Arc<DeviceEnv>,
    config: Arc<ClientConfig>,
    connecting: Option<Connecting>,
    attempt_started: Instant,
    keep_alive: Duration,
    conn: Option<Conn>,
    buf: BytesMut,
    next_press: Option<Instant>,
    presses: u32,
    rng: SplitMix,
    connected: bool,
    stopping: bool,
    last_mono: u64,
    summary: DeviceSummary,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Runs device `index` until the run shuts it down; returns what it did.
pub async fn run(index: u32, identity: DeviceIdentity, env: Arc<DeviceEnv>) -> DeviceSummary {
    let seed = u64::from(index).wrapping_mul(0x2545_F491_4F6C_DD1D) ^ unix_ms();
    let built = (|| {
        let mut config = DeviceConfig::new(&identity.device_id, FIRMWARE)?;
        // Three buttons: a small cooldown table.
        config.cooldown_entries = 4;
        let core = Device::with_press_store(
            config,
            MemorySettings::default(),
            MemoryPresses::default(),
            SplitMix::new(seed),
        )?;
        Ok::<_, anyhow::Error>(core)
    })();
    let tls = env.tls.config(&identity);
    let (core, config) = match (built, tls) {
        (Ok(core), Ok(config)) => (core, config),
        (Err(e), _) | (_, Err(e)) => {
            env.ledger.errors.fetch_add(1, Ordering::Relaxed);
            return DeviceSummary {
                failed: Some(format!("{}: {e:#}", identity.device_id)),
                ..DeviceSummary::default()
            };
        }
    };
    drop(identity);
    let mut rng = SplitMix::new(seed ^ 0x5EED);
    let next_press = Some(env.workload.first_press(Instant::now(), &mut rng));
    let mut device = SimDevice {
        index,
        core,
        env,
        config,
        connecting: None,
        attempt_started: Instant::now(),
        keep_alive: Duration::from_secs(60),
        conn: None,
        buf: BytesMut::new(),
        next_press,
        presses: 0,
        rng,
        connected: false,
        stopping: false,
        last_mono: 0,
        summary: DeviceSummary::default(),
    };
    device.run().await;
    device.summary
}

async fn read_some(conn: &mut Option<Conn>, buf: &mut BytesMut) -> std::io::Result<usize> {
    match conn {
        Some(c) => {
            if buf.capacity() - buf.len() < 256 {
                buf.reserve(1024);
            }
            c.stream.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}

async fn connecting(fut: &mut Option<Connecting>) -> Result<TlsStream<TcpStream>, String> {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl SimDevice {
    /// The time of an input to the core (remembered: a CONNECT the core asks for is dated by
    /// the input that made it ask, the time its one-per-second floor counts from).
    fn now(&mut self) -> Now {
        let mono = u64::try_from(self.env.ledger.start().elapsed().as_millis()).unwrap_or(0);
        self.last_mono = mono;
        Now::new(mono, unix_ms())
    }

    async fn run(&mut self) {
        let mut stop_pressing = self.env.stop_pressing.clone();
        let mut shutdown = self.env.shutdown.clone();
        let now = self.now();
        self.core.start(now);
        loop {
            if self.carry_out().await.is_break() {
                break;
            }
            let wake = self
                .core
                .poll_timeout()
                .map(|at| self.env.ledger.start() + Duration::from_millis(at));
            let ping_at = self
                .conn
                .as_ref()
                .filter(|c| c.up)
                .map(|c| c.last_sent + c.keep_alive);
            tokio::select! {
                result = connecting(&mut self.connecting) => {
                    self.connecting = None;
                    self.on_opened(result).await;
                }
                read = read_some(&mut self.conn, &mut self.buf) => self.on_read(read).await,
                _ = sleep_until_opt(wake) => {
                    let now = self.now();
                    self.core.tick(now);
                }
                _ = sleep_until_opt(self.next_press) => self.press(),
                _ = sleep_until_opt(ping_at) => self.ping_due().await,
                changed = stop_pressing.changed(), if self.next_press.is_some() => {
                    if changed.is_err() || *stop_pressing.borrow() {
                        self.next_press = None;
                    }
                }
                changed = shutdown.changed(), if !self.stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.stopping = true;
                        self.next_press = None;
                        self.summary.connected_at_end = self.connected;
                        let now = self.now();
                        self.core.shutdown(now);
                    }
                }
            }
        }
        self.drop_conn();
    }

    fn press(&mut self) {
        let now = self.now();
        let button = BUTTONS[self.presses as usize % BUTTONS.len()];
        self.presses = self.presses.wrapping_add(1);
        let battery = Some(100 - (self.presses % 100) as u8);
        match self.core.press(now, button, battery) {
            Ok(PressOutcome::Queued(id)) => self.env.ledger.pressed(self.index, id),
            Ok(PressOutcome::CooledDown) => {}
            Err(_) => {
                self.env.ledger.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.next_press = Some(self.env.workload.next_press(
            Instant::now(),
            self.env.ledger.start(),
            &mut self.rng,
        ));
    }

    async fn carry_out(&mut self) -> ControlFlow<()> {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Connect(connect) => self.connect(connect),
                Action::Subscribe(filters) => {
                    let Some(conn) = self.conn.as_mut() else {
                        continue;
                    };
                    let mut subscribe = Subscribe::new_many(
                        filters
                            .into_iter()
                            .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce)),
                    );
                    subscribe.pkid = conn.pkid();
                    self.send(Packet::Subscribe(subscribe)).await;
                }
                Action::Publish(publish) => {
                    let Some(conn) = self.conn.as_mut().filter(|c| c.up) else {
                        continue;
                    };
                    let pkid = conn.pkid();
                    conn.tags.retain(|(id, _)| *id != pkid);
                    conn.tags.push((pkid, publish.tag));
                    let mut packet =
                        PublishPacket::new(publish.topic, QoS::AtLeastOnce, publish.payload);
                    packet.pkid = pkid;
                    packet.dup = publish.retransmit;
                    self.send(Packet::Publish(packet)).await;
                }
                Action::Disconnect => self.close().await,
                Action::Notice(notice) => self.notice(notice),
                Action::ShutdownComplete => return ControlFlow::Break(()),
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn notice(&mut self, notice: Notice) {
        let ledger = &self.env.ledger;
        match notice {
            Notice::PressDelivered { press_id } => ledger.acked(self.index, press_id),
            Notice::Status(ConnectionStatus::Connected) => {}
            Notice::Rejected { .. }
            | Notice::Dropped { .. }
            | Notice::ReplyNotSent { .. }
            | Notice::PressDropped { .. }
            | Notice::SubscribeRefused => {
                ledger.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn connect(&mut self, connect: Connect) {
        self.drop_conn();
        self.summary.attempts_ms.push(self.last_mono);
        self.env.ledger.attempts.fetch_add(1, Ordering::Relaxed);
        self.attempt_started = Instant::now();
        self.keep_alive = Duration::from_secs(connect.keep_alive_secs.into());
        let (addr, name, config) = (
            self.env.addr,
            self.env.server_name.clone(),
            self.config.clone(),
        );
        let mut packet = ConnectPacket::new(connect.client_id);
        packet.keep_alive = connect.keep_alive_secs;
        packet.clean_session = connect.clean_session;
        packet.last_will = Some(LastWill::new(
            connect.will.topic,
            connect.will.payload,
            QoS::AtLeastOnce,
            connect.will.retain,
        ));
        self.connecting = Some(Box::pin(async move {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("TCP connect to {addr} failed: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let mut stream = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
            let mut out = BytesMut::with_capacity(256);
            Packet::Connect(packet)
                .write(&mut out, MAX_PACKET)
                .map_err(|e| format!("CONNECT: {e:?}"))?;
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("sending CONNECT to {addr}: {e}"))?;
            stream
                .flush()
                .await
                .map_err(|e| format!("sending CONNECT to {addr}: {e}"))?;
            Ok(stream)
        }));
    }

    async fn on_opened(&mut self, result: Result<TlsStream<TcpStream>, String>) {
        match result {
            Ok(stream) => {
                self.buf = BytesMut::with_capacity(512);
                self.conn = Some(Conn {
                    stream,
                    up: false,
                    tags: Vec::new(),
                    next_pkid: 0,
                    last_sent: Instant::now(),
                    ping_outstanding: false,
                    keep_alive: self.keep_alive,
                });
            }
            Err(diagnosis) => {
                self.env
                    .ledger
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                let now = self.now();
                self.core
                    .transport(now, TransportEvent::ConnectFailed { diagnosis });
            }
        }
    }

    async fn on_read(&mut self, read: std::io::Result<usize>) {
        match read {
            Ok(0) => self.lost(
                DisconnectCause::Broker,
                "the broker closed the connection".to_owned(),
            ),
            Ok(_) => loop {
                match Packet::read(&mut self.buf, MAX_PACKET) {
                    Ok(packet) => {
                        self.on_packet(packet).await;
                        if self.conn.is_none() {
                            return;
                        }
                    }
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                    Err(e) => {
                        self.lost(
                            DisconnectCause::Network,
                            format!("the broker sent a malformed packet: {e:?}"),
                        );
                        return;
                    }
                }
            },
            Err(e) => self.lost(
                DisconnectCause::Network,
                format!("the connection failed: {e}"),
            ),
        }
        if self.buf.is_empty() && self.buf.capacity() > 8192 {
            self.buf = BytesMut::with_capacity(512);
        }
    }

    async fn on_packet(&mut self, packet: Packet) {
        let now = self.now();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match packet {
            Packet::ConnAck(ConnAck {
                code,
                session_present,
            }) => {
                if code == ConnectReturnCode::Success {
                    conn.up = true;
                    let ledger = &self.env.ledger;
                    ledger.connects.fetch_add(1, Ordering::Relaxed);
                    ledger.connect_took(
                        u64::try_from(self.attempt_started.elapsed().as_micros()).unwrap_or(0),
                    );
                    self.summary.connects += 1;
                    self.set_connected(true);
                    self.core
                        .transport(now, TransportEvent::ConnAck { session_present });
                } else {
                    let code = match code {
                        ConnectReturnCode::RefusedProtocolVersion => 1,
                        ConnectReturnCode::BadClientId => 2,
                        ConnectReturnCode::ServiceUnavailable => 3,
                        ConnectReturnCode::BadUserNamePassword => 4,
                        _ => 5,
                    };
                    self.env
                        .ledger
                        .connect_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.conn = None;
                    self.core
                        .transport(now, TransportEvent::ConnectRefused { code });
                }
            }
            Packet::PubAck(PubAck { pkid }) => {
                let event = match conn.tags.iter().position(|(id, _)| *id == pkid) {
                    Some(at) => TransportEvent::PubAck(conn.tags.swap_remove(at).1),
                    None => TransportEvent::Activity,
                };
                self.core.transport(now, event);
            }
            Packet::SubAck(ack) => {
                let granted = !ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure));
                self.core.transport(now, TransportEvent::SubAck { granted });
            }
            Packet::PingResp => {
                conn.ping_outstanding = false;
                self.core.transport(now, TransportEvent::PingResponse);
            }
            Packet::Publish(publish) => {
                let ack = (publish.qos != QoS::AtMostOnce).then_some(publish.pkid);
                self.core.transport(
                    now,
                    TransportEvent::Message {
                        topic: &publish.topic,
                        payload: &publish.payload,
                    },
                );
                if let Some(pkid) = ack {
                    self.send(Packet::PubAck(PubAck::new(pkid))).await;
                }
            }
            _ => self.core.transport(now, TransportEvent::Activity),
        }
    }

    async fn ping_due(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.ping_outstanding {
            // A whole keepalive without an answer: the core drops the connection.
            self.drop_conn();
            let now = self.now();
            self.core.transport(now, TransportEvent::PingTimeout);
        } else {
            conn.ping_outstanding = true;
            self.send(Packet::PingReq).await;
        }
    }

    /// Writes one packet (bounded); a failure ends the connection.
    async fn send(&mut self, packet: Packet) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut out = BytesMut::with_capacity(packet.size() + 8);
        if packet.write(&mut out, MAX_PACKET).is_err() {
            self.env.ledger.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let write = async {
            conn.stream.write_all(&out).await?;
            conn.stream.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => conn.last_sent = Instant::now(),
            Ok(Err(e)) => self.lost(DisconnectCause::Network, format!("write failed: {e}")),
            Err(_) => self.lost(
                DisconnectCause::Network,
                format!("a write took longer than {WRITE_TIMEOUT:?}"),
            ),
        }
    }

    /// The connection ended on its own: tell the core.
    fn lost(&mut self, cause: DisconnectCause, diagnosis: String) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let was_up = conn.up;
        drop(conn);
        self.set_connected(false);
        let now = self.now();
        if was_up {
            self.env.ledger.disconnects.fetch_add(1, Ordering::Relaxed);
            self.core
                .transport(now, TransportEvent::Disconnected { cause, diagnosis });
        } else {
            self.env
                .ledger
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
            self.core
                .transport(now, TransportEvent::ConnectFailed { diagnosis });
        }
    }

    /// The core asked to close: DISCONNECT when up (bounded), then drop.
    async fn close(&mut self) {
        self.connecting = None;
        if self.conn.as_ref().is_some_and(|c| c.up) {
            let mut out = BytesMut::with_capacity(2);
            let _ = Packet::Disconnect.write(&mut out, MAX_PACKET);
            if let Some(conn) = self.conn.as_mut() {
                let write = async {
                    conn.stream.write_all(&out).await?;
                    conn.stream.shutdown().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            }
            self.env.ledger.disconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.drop_conn();
    }

    fn drop_conn(&mut self) {
        self.connecting = None;
        self.conn = None;
        self.buf = BytesMut::new();
        self.set_connected(false);
    }

    fn set_connected(&mut self, up: bool) {
        if self.connected == up {
            return;
        }
        self.connected = up;
        if up {
            self.env.ledger.connected.fetch_add(1, Ordering::Relaxed);
        } else {
            self.env.ledger.connected.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(flag) = self.env.online.get(self.index as usize) {
            flag.store(up, Ordering::Relaxed);
        }
    }
}
