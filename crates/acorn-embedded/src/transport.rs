//! The connection driver: carries out `acorn_mqtt::Session` actions over TLS + MQTT and
//! reports what happens back to the session as events. It has no reconnect logic of its own:
//! the session decides when to connect, when to give up on a connection and what to (re)send.
//!
//! The platform gives three things: a [`Connector`] (DNS + TCP: embassy-net on the chip,
//! tokio on Linux), a [`Clock`] (monotonic milliseconds, the synced wall clock, sleeping) and
//! a cryptographic random source. The application (presses, settings, commands) plugs in
//! through [`Application`]: it is told what happens ([`Notice`]) and may publish through the
//! session; it hands over requests ([`Request`]) when it has them.
//!
//! While connected, one read of the next MQTT packet is always pending and is never
//! cancelled (embedded-tls reads are not cancel-safe); writes go through the other half of
//! the split TLS connection meanwhile, so a press is sent at once even while the broker is
//! silent.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::pin;

use acorn_mqtt::{Action, DisconnectCause, Event, PublishId, PublishRequest, QoS, Session};
use embassy_futures::select::{select, select3, Either, Either3};
use embedded_io_async::{Read, Write};
use embedded_tls::TlsConnection;
use rand_core::{CryptoRng, RngCore};

use crate::codec::{self, InPacket, PacketReader, ReadError, MQTT_RX_BUFFER};
use crate::diagnosis::{Diagnosis, Step, EARLIEST_PLAUSIBLE_UNIX_TIME};
use crate::duplex::Duplex;
use crate::identity::TlsIdentity;
use crate::tls::{self, Provider, AWS_ALPN, TLS_READ_BUFFER, TLS_WRITE_BUFFER};
use crate::verify::TrustAnchors;

/// Opens TCP connections (DNS included). The halves may borrow the connector (an embassy-net
/// socket and its buffers live in it); one connection at a time.
pub trait Connector {
    /// The read half of a connection.
    type Reader<'c>: Read
    where
        Self: 'c;
    /// The write half of a connection.
    type Writer<'c>: Write
    where
        Self: 'c;
    /// Resolves `host` and connects to `port`; on failure, the step that failed
    /// ([`Step::Dns`] or [`Step::Tcp`]) and why.
    #[allow(clippy::type_complexity)]
    fn connect<'c>(
        &'c mut self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<(Self::Reader<'c>, Self::Writer<'c>), (Step, Diagnosis)>>;
}

/// Time, as the platform keeps it.
pub trait Clock {
    /// Monotonic milliseconds (the session's time).
    fn now_ms(&self) -> u64;
    /// Seconds since 1970 from a synced clock (SNTP), `None` while not synced.
    fn unix_secs(&self) -> Option<u64>;
    /// Sleeps until [`Clock::now_ms`] reaches `at_ms` (returns at once if it has).
    fn sleep_until(&self, at_ms: u64) -> impl Future<Output = ()>;
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name (or IPv4 address) to connect to.
    pub host: String,
    /// TCP port (8883, or 443 with ALPN).
    pub port: u16,
    /// The name the server certificate must carry and that is sent as SNI; `None` = `host`.
    pub server_name: Option<String>,
    /// Offer ALPN `x-amzn-mqtt-ca` (AWS IoT Core on port 443).
    pub alpn: bool,
}

impl Target {
    /// `host:port`, no ALPN.
    pub fn new(host: &str, port: u16) -> Self {
        Target {
            host: host.to_string(),
            port,
            server_name: None,
            alpn: false,
        }
    }

    /// The name verified in the server certificate.
    pub fn tls_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.host)
    }
}

/// The transport's buffers, allocated once (no allocation per connection for them):
/// [`TLS_READ_BUFFER`] + [`TLS_WRITE_BUFFER`] + [`MQTT_RX_BUFFER`] = 24,832 bytes.
pub struct Buffers {
    tls_read: Box<[u8]>,
    tls_write: Box<[u8]>,
    mqtt_rx: Box<[u8]>,
}

impl Buffers {
    /// Allocates the buffers.
    pub fn new() -> Self {
        Buffers {
            tls_read: vec![0u8; TLS_READ_BUFFER].into_boxed_slice(),
            tls_write: vec![0u8; TLS_WRITE_BUFFER].into_boxed_slice(),
            mqtt_rx: vec![0u8; MQTT_RX_BUFFER].into_boxed_slice(),
        }
    }

    /// Total bytes held.
    pub fn len(&self) -> usize {
        self.tls_read.len() + self.tls_write.len() + self.mqtt_rx.len()
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Self::new()
    }
}

/// What happened, for the application.
#[derive(Debug)]
pub enum Notice<'a> {
    /// CONNACK accepted.
    Connected {
        /// The broker kept our session (subscriptions still in place).
        session_present: bool,
    },
    /// SUBACK received.
    Subscribed {
        /// Every subscription was granted.
        granted: bool,
    },
    /// A message arrived (already acknowledged to the broker).
    Message {
        /// Its topic.
        topic: &'a str,
        /// Its payload.
        payload: &'a [u8],
    },
    /// A message larger than the receive buffer arrived: acknowledged and skipped.
    Oversized {
        /// Its topic, when readable.
        topic: Option<&'a str>,
        /// Its size in bytes.
        len: usize,
    },
    /// The session asked for something only the application can do: `ReportStatus`,
    /// `Health`, `Delivered`, `Dropped`, `WaitUntil`.
    Action(&'a Action),
    /// A connect attempt failed or a connection ended: why, in plain language.
    Failure(&'a Diagnosis),
    /// The session refused a publish request.
    PublishRefused(&'a acorn_mqtt::Error),
}

/// What the application asks of the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Publish (QoS 1 requests are queued by the session while offline).
    Publish(PublishRequest),
    /// Drop the connection and connect again (the `reconnect` command).
    Reconnect,
    /// Disconnect and stop: [`Transport::run`] returns.
    Stop,
}

/// The application on top of the transport: the seam where the device core plugs in.
pub trait Application<R: RngCore> {
    /// The next request. Must be cancel-safe: it is raced against the network and timers
    /// and dropped when they win (a channel receive is).
    fn next_request(&mut self) -> impl Future<Output = Request>;
    /// Something happened at `now_ms`; the application may call `session.publish`.
    fn notice(&mut self, now_ms: u64, notice: Notice<'_>, session: &mut Session<R>);
}

/// Connection settings beside the session's own configuration.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Where to connect.
    pub target: Target,
    /// The last will (topic, payload), published by the broker at QoS 1 when the device
    /// vanishes: the `offline` status.
    pub will: Option<(String, Vec<u8>)>,
    /// How long a PINGRESP may take before the connection is taken as dead, ms.
    pub ping_timeout_ms: u64,
}

impl TransportConfig {
    /// Settings for `target` with no last will and a 10 s ping timeout.
    pub fn new(target: Target) -> Self {
        TransportConfig {
            target,
            will: None,
            ping_timeout_ms: 10_000,
        }
    }
}

/// How a connection ended.
enum End {
    /// The transport is closed; the session knows.
    Closed,
    /// The session asked for a new connection at once.
    ConnectAgain,
    /// The application asked to stop.
    Stopped,
}

/// The transport: one device's connections, one at a time.
pub struct Transport<'a, C, K, G> {
    connector: C,
    clock: K,
    rng: G,
    identity: &'a TlsIdentity,
    anchors: &'a TrustAnchors,
    config: TransportConfig,
    buffers: &'a mut Buffers,
    stopping: bool,
}

/// Per-connection MQTT state.
struct Link {
    /// MQTT packet id → the session's id, for QoS 1 publishes in flight.
    in_flight: Vec<(u16, PublishId)>,
    next_pid: u16,
    connacked: bool,
    last_sent_ms: u64,
    ping_sent_ms: Option<u64>,
    keep_alive_ms: u64,
    subscriptions: Vec<(u16, Vec<String>)>,
}

impl Link {
    fn pid(&mut self) -> u16 {
        let pid = self.next_pid;
        self.next_pid = if self.next_pid == u16::MAX {
            1
        } else {
            self.next_pid + 1
        };
        pid
    }
}

async fn sleep_opt<K: Clock>(clock: &K, at: Option<u64>) {
    match at {
        Some(t) => clock.sleep_until(t).await,
        None => core::future::pending().await,
    }
}

async fn send<W: Write>(writer: &mut W, bytes: &[u8]) -> Result<(), Diagnosis>
where
    W::Error: embedded_io::Error,
{
    writer
        .write_all(bytes)
        .await
        .map_err(|e| io_diagnosis(&e))?;
    writer.flush().await.map_err(|e| io_diagnosis(&e))
}

fn io_diagnosis<E: embedded_io::Error>(e: &E) -> Diagnosis {
    crate::diagnosis::from_io_kind(e.kind(), Step::Connack)
}

fn tls_io_diagnosis(e: &embedded_tls::TlsError, step: Step) -> Diagnosis {
    Diagnosis::from_tls(e, step)
}

impl<'a, C, K, G> Transport<'a, C, K, G>
where
    C: Connector,
    K: Clock,
    G: RngCore + CryptoRng,
{
    /// A transport for `identity`, trusting `anchors`, with its buffers.
    pub fn new(
        connector: C,
        clock: K,
        rng: G,
        identity: &'a TlsIdentity,
        anchors: &'a TrustAnchors,
        config: TransportConfig,
        buffers: &'a mut Buffers,
    ) -> Self {
        Transport {
            connector,
            clock,
            rng,
            identity,
            anchors,
            config,
            buffers,
            stopping: false,
        }
    }

    /// The clock.
    pub fn clock(&self) -> &K {
        &self.clock
    }

    /// Drives `session` until the application asks to [`Request::Stop`] and the session has
    /// nothing left to do. Sends `Event::Start` first if the session is idle.
    pub async fn run<R: RngCore, A: Application<R>>(
        &mut self,
        session: &mut Session<R>,
        app: &mut A,
    ) {
        self.stopping = false;
        session.handle(self.clock.now_ms(), Event::Start);
        loop {
            while let Some(action) = session.poll_action() {
                let now = self.clock.now_ms();
                match action {
                    Action::Connect { .. } => {
                        let mut end = self.connection(session, app).await;
                        while matches!(end, End::ConnectAgain) {
                            end = self.connection(session, app).await;
                        }
                        if matches!(end, End::Stopped) {
                            self.stopping = true;
                        }
                    }
                    // Nothing is connected: nothing to send or close.
                    Action::Subscribe(_) | Action::Publish(_) | Action::Disconnect => {}
                    other => app.notice(now, Notice::Action(&other), session),
                }
            }
            if self.stopping && session.poll_action().is_none() {
                return;
            }
            let deadline = session.poll_timeout();
            let waited = select(sleep_opt(&self.clock, deadline), app.next_request()).await;
            let now = self.clock.now_ms();
            match waited {
                Either::First(()) => session.handle(now, Event::Tick),
                Either::Second(request) => self.request(now, request, session, app),
            }
        }
    }

    fn request<R: RngCore, A: Application<R>>(
        &mut self,
        now: u64,
        request: Request,
        session: &mut Session<R>,
        app: &mut A,
    ) {
        match request {
            Request::Publish(p) => {
                if let Err(e) = session.publish(now, p) {
                    app.notice(now, Notice::PublishRefused(&e), session);
                }
            }
            Request::Reconnect => session.handle(now, Event::Reconnect),
            Request::Stop => {
                self.stopping = true;
                session.handle(now, Event::Stop);
            }
        }
    }

    /// One connection, from TCP connect to its end.
    async fn connection<R: RngCore, A: Application<R>>(
        &mut self,
        session: &mut Session<R>,
        app: &mut A,
    ) -> End {
        // Never connect on unchecked dates.
        let unix = match self.clock.unix_secs() {
            Some(t) if t >= EARLIEST_PLAUSIBLE_UNIX_TIME => t,
            other => {
                connect_failed(
                    &self.clock,
                    Diagnosis::ClockNotSynced { now_unix: other },
                    session,
                    app,
                );
                return End::Closed;
            }
        };
        let target = self.config.target.clone();
        let deadline = session.poll_timeout();
        let connected = select(
            self.connector.connect(&target.host, target.port),
            sleep_opt(&self.clock, deadline),
        )
        .await;
        let (reader, writer) = match connected {
            Either::First(Ok(halves)) => halves,
            Either::First(Err((_, diagnosis))) => {
                connect_failed(&self.clock, diagnosis, session, app);
                return End::Closed;
            }
            Either::Second(()) => {
                // The session's connect timeout: it fails the attempt itself.
                session.handle(self.clock.now_ms(), Event::Tick);
                return End::Closed;
            }
        };
        let duplex = Duplex::new(reader, writer);
        let bufs = &mut *self.buffers;
        let mut tls_conn: TlsConnection<
            '_,
            &Duplex<C::Reader<'_>, C::Writer<'_>>,
            tls::CipherSuite,
        > = TlsConnection::new(&duplex, &mut bufs.tls_read, &mut bufs.tls_write);
        let alpn: [&[u8]; 1] = [AWS_ALPN];
        let tls_config = tls::tls_config(target.tls_name(), target.alpn.then_some(&alpn[..]));
        let mut provider = Provider::new(
            &mut self.rng,
            self.identity,
            self.anchors,
            target.tls_name(),
            unix,
        );
        let shook = select(
            tls::handshake(&mut tls_conn, &tls_config, &mut provider),
            sleep_opt(&self.clock, session.poll_timeout()),
        )
        .await;
        match shook {
            Either::First(Ok(())) => {}
            Either::First(Err(diagnosis)) => {
                connect_failed(&self.clock, diagnosis, session, app);
                return End::Closed;
            }
            Either::Second(()) => {
                session.handle(self.clock.now_ms(), Event::Tick);
                return End::Closed;
            }
        }
        drop(provider);

        let (mut reader, mut writer) = tls_conn.split();
        let keep_alive_secs = session.config().keep_alive_secs;
        let mut link = Link {
            in_flight: Vec::new(),
            next_pid: 1,
            connacked: false,
            last_sent_ms: self.clock.now_ms(),
            ping_sent_ms: None,
            keep_alive_ms: u64::from(keep_alive_secs) * 1000,
            subscriptions: Vec::new(),
        };
        let will = self
            .config
            .will
            .as_ref()
            .map(|(t, p)| (t.as_str(), p.as_slice()));
        let connect = codec::connect(&session.config().client_id, keep_alive_secs, false, will);
        let sent = match connect {
            Ok(bytes) => send(&mut writer, &bytes).await,
            Err(e) => Err(Diagnosis::BadConfiguration(e.to_string())),
        };
        if let Err(diagnosis) = sent {
            connect_failed(&self.clock, diagnosis, session, app);
            return End::Closed;
        }

        let mut packets = PacketReader::new(&mut bufs.mqtt_rx);
        let ping_timeout = self.config.ping_timeout_ms;
        let clock = &self.clock;
        let stopping = &mut self.stopping;
        loop {
            let read = pin!(packets.next(&mut reader));
            let mut read = read;
            let result = loop {
                match carry_out(clock, session, app, &mut writer, &mut link).await {
                    Ok(None) => {}
                    Ok(Some(end)) => return end,
                    Err(diagnosis) => {
                        lost(
                            clock,
                            session,
                            app,
                            &link,
                            DisconnectCause::Network,
                            diagnosis,
                        );
                        return End::Closed;
                    }
                }
                if *stopping && session.poll_timeout().is_none() && link.in_flight.is_empty() {
                    return End::Stopped;
                }
                let keepalive_at = match link.ping_sent_ms {
                    Some(sent) => sent.saturating_add(ping_timeout),
                    None => link.last_sent_ms.saturating_add(link.keep_alive_ms),
                };
                let deadline = match session.poll_timeout() {
                    Some(t) => t.min(keepalive_at),
                    None => keepalive_at,
                };
                match select3(&mut read, clock.sleep_until(deadline), app.next_request()).await {
                    Either3::First(result) => break result,
                    Either3::Second(()) => {
                        let now = clock.now_ms();
                        if let Some(sent) = link.ping_sent_ms {
                            if now >= sent.saturating_add(ping_timeout) {
                                link.ping_sent_ms = None;
                                session.handle(now, Event::PingTimeout);
                                continue;
                            }
                        } else if link.connacked
                            && now >= link.last_sent_ms.saturating_add(link.keep_alive_ms)
                        {
                            if let Err(d) = send(&mut writer, &codec::pingreq()).await {
                                lost(clock, session, app, &link, DisconnectCause::Network, d);
                                return End::Closed;
                            }
                            link.last_sent_ms = now;
                            link.ping_sent_ms = Some(now);
                        }
                        session.handle(now, Event::Tick);
                    }
                    Either3::Third(request) => {
                        let now = clock.now_ms();
                        match request {
                            Request::Publish(p) => {
                                if let Err(e) = session.publish(now, p) {
                                    app.notice(now, Notice::PublishRefused(&e), session);
                                }
                            }
                            Request::Reconnect => session.handle(now, Event::Reconnect),
                            Request::Stop => {
                                *stopping = true;
                                session.handle(now, Event::Stop);
                            }
                        }
                    }
                }
            };
            let now = clock.now_ms();
            let packet = match result {
                Ok(packet) => packet,
                Err(err) => {
                    let step = if link.connacked {
                        Step::Connack
                    } else {
                        Step::Tls
                    };
                    let (cause, diagnosis) = match err {
                        ReadError::Closed => (
                            DisconnectCause::Broker,
                            Diagnosis::ClosedByBroker {
                                step: Step::Connack,
                            },
                        ),
                        ReadError::Io(e) => (DisconnectCause::Network, tls_io_diagnosis(&e, step)),
                        ReadError::Codec(e) => (
                            DisconnectCause::Broker,
                            Diagnosis::ProtocolError(e.to_string()),
                        ),
                    };
                    let cause = match diagnosis {
                        Diagnosis::ClosedByBroker { .. } => DisconnectCause::Broker,
                        _ => cause,
                    };
                    lost(clock, session, app, &link, cause, diagnosis);
                    return End::Closed;
                }
            };
            match packet {
                InPacket::ConnAck {
                    session_present,
                    code: 0,
                } => {
                    link.connacked = true;
                    session.handle(now, Event::ConnAck { session_present });
                    app.notice(now, Notice::Connected { session_present }, session);
                }
                InPacket::ConnAck { code, .. } => {
                    let d = Diagnosis::BrokerRefused { code };
                    app.notice(now, Notice::Failure(&d), session);
                    session.handle(now, Event::ConnectRefused { code });
                    return End::Closed;
                }
                InPacket::PubAck(pid) => {
                    if let Some(pos) = link.in_flight.iter().position(|(p, _)| *p == pid) {
                        let (_, id) = link.in_flight.remove(pos);
                        session.handle(now, Event::PublishAcked(id));
                    } else {
                        session.handle(now, Event::MessageReceived);
                    }
                }
                InPacket::SubAck { pid, granted } => {
                    link.subscriptions.retain(|(p, _)| *p != pid);
                    session.handle(now, Event::SubscribeAcked { granted });
                    app.notice(now, Notice::Subscribed { granted }, session);
                }
                InPacket::Publish {
                    topic,
                    payload,
                    pid,
                    qos,
                } => {
                    session.handle(now, Event::MessageReceived);
                    if let (Some(pid), 1) = (pid, qos) {
                        if let Ok(ack) = codec::puback(pid) {
                            if let Err(d) = send(&mut writer, &ack).await {
                                lost(clock, session, app, &link, DisconnectCause::Network, d);
                                return End::Closed;
                            }
                            link.last_sent_ms = now;
                        }
                    }
                    app.notice(
                        now,
                        Notice::Message {
                            topic: &topic,
                            payload: &payload,
                        },
                        session,
                    );
                }
                InPacket::Oversized { topic, pid, len } => {
                    session.handle(now, Event::MessageReceived);
                    if let Some(pid) = pid {
                        if let Ok(ack) = codec::puback(pid) {
                            if let Err(d) = send(&mut writer, &ack).await {
                                lost(clock, session, app, &link, DisconnectCause::Network, d);
                                return End::Closed;
                            }
                        }
                    }
                    app.notice(
                        now,
                        Notice::Oversized {
                            topic: topic.as_deref(),
                            len,
                        },
                        session,
                    );
                }
                InPacket::PingResp => {
                    link.ping_sent_ms = None;
                    session.handle(now, Event::PingResponse);
                }
                InPacket::UnsubAck(_) => session.handle(now, Event::MessageReceived),
            }
        }
    }
}

/// Reports a failed connect attempt to the application and the session.
fn connect_failed<K: Clock, R: RngCore, A: Application<R>>(
    clock: &K,
    diagnosis: Diagnosis,
    session: &mut Session<R>,
    app: &mut A,
) {
    let now = clock.now_ms();
    app.notice(now, Notice::Failure(&diagnosis), session);
    let event = if diagnosis.is_credentials_refused() {
        Event::CredentialsRefused {
            diagnosis: diagnosis.to_string(),
        }
    } else {
        Event::ConnectFailed {
            diagnosis: diagnosis.to_string(),
        }
    };
    session.handle(now, event);
}

/// Reports a lost connection (or a failed connect, before the CONNACK).
fn lost<K: Clock, R: RngCore, A: Application<R>>(
    clock: &K,
    session: &mut Session<R>,
    app: &mut A,
    link: &Link,
    cause: DisconnectCause,
    diagnosis: Diagnosis,
) {
    let now = clock.now_ms();
    app.notice(now, Notice::Failure(&diagnosis), session);
    let event = if link.connacked {
        Event::Disconnected {
            cause,
            diagnosis: diagnosis.to_string(),
        }
    } else if diagnosis.is_credentials_refused() {
        Event::CredentialsRefused {
            diagnosis: diagnosis.to_string(),
        }
    } else {
        Event::ConnectFailed {
            diagnosis: diagnosis.to_string(),
        }
    };
    session.handle(now, event);
}

/// Carries out the session's pending actions on a live connection. `Ok(Some(end))` when the
/// connection must end; `Err` when a write failed.
async fn carry_out<K: Clock, R: RngCore, A: Application<R>, W: Write>(
    clock: &K,
    session: &mut Session<R>,
    app: &mut A,
    writer: &mut W,
    link: &mut Link,
) -> Result<Option<End>, Diagnosis> {
    while let Some(action) = session.poll_action() {
        let now = clock.now_ms();
        match action {
            Action::Connect { .. } => return Ok(Some(End::ConnectAgain)),
            Action::Subscribe(filters) => {
                let pid = link.pid();
                let bytes = codec::subscribe(pid, &filters)
                    .map_err(|e| Diagnosis::BadConfiguration(e.to_string()))?;
                send(writer, &bytes).await?;
                link.subscriptions.push((pid, filters));
                link.last_sent_ms = now;
            }
            Action::Publish(p) => {
                let pid = match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(link.pid()),
                };
                let bytes = match codec::publish(&p.topic, &p.payload, pid, p.retransmit) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        let d = Diagnosis::ProtocolError(e.to_string());
                        app.notice(now, Notice::Failure(&d), session);
                        continue;
                    }
                };
                send(writer, &bytes).await?;
                if let Some(pid) = pid {
                    link.in_flight.retain(|(p, _)| *p != pid);
                    link.in_flight.push((pid, p.id));
                }
                link.last_sent_ms = now;
            }
            Action::Disconnect => {
                // Best effort: the session has already moved on.
                let _ = send(writer, &codec::disconnect()).await;
                return Ok(Some(End::Closed));
            }
            other => app.notice(now, Notice::Action(&other), session),
        }
    }
    Ok(None)
}
