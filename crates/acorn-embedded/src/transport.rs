//! The connection driver: carries out the orders of a connection policy over TLS + MQTT and
//! reports what happens back to it as events. It has no reconnect logic of its own: the
//! policy decides when to connect, when to give up on a connection and what to (re)send.
//!
//! The platform gives three things: a [`Connector`] (DNS + TCP: embassy-net on the chip,
//! tokio on Linux), a [`Clock`] (monotonic milliseconds, the synced wall clock, sleeping) and
//! a cryptographic random source. The policy plugs in through [`Driver`] ([`Transport::drive`]):
//!
//! - an `acorn_mqtt::Session` with an [`Application`] on top ([`Transport::run`]): the
//!   application is told what happens ([`Notice`]) and may publish through the session; it
//!   hands over requests ([`Request`]) when it has them ([`crate::app::BasicDevice`]);
//! - the device core, `acorn_device::Device`, which owns its session (feature `device`:
//!   [`crate::device::DeviceDriver`]).
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
use crate::diagnosis::{DiagnoseEmbedded, Diagnosis, Step, EARLIEST_PLAUSIBLE_UNIX_TIME};
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

/// A connector lent out: the firmware registers and then runs MQTT over the same socket.
impl<C: Connector> Connector for &mut C {
    type Reader<'c>
        = C::Reader<'c>
    where
        Self: 'c;
    type Writer<'c>
        = C::Writer<'c>
    where
        Self: 'c;

    fn connect<'c>(
        &'c mut self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = Result<(Self::Reader<'c>, Self::Writer<'c>), (Step, Diagnosis)>> {
        (**self).connect(host, port)
    }
}

/// Time, as the platform keeps it.
pub trait Clock {
    /// Monotonic milliseconds (the session's time).
    fn now_ms(&self) -> u64;
    /// Seconds since 1970 from a synced clock (SNTP), `None` while not synced.
    fn unix_secs(&self) -> Option<u64>;
    /// Milliseconds since 1970 from a synced clock, `None` while not synced (message
    /// timestamps). By default [`Clock::unix_secs`] × 1000.
    fn unix_ms(&self) -> Option<u64> {
        self.unix_secs().map(|s| s.saturating_mul(1000))
    }
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

/// The time of an input: the monotonic clock (every timer) and the synced wall clock (message
/// timestamps; 0 while the clock is not synced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    /// Monotonic milliseconds ([`Clock::now_ms`]).
    pub mono_ms: u64,
    /// Unix milliseconds ([`Clock::unix_ms`]), 0 while not synced.
    pub unix_ms: u64,
}

impl Time {
    fn of<K: Clock>(clock: &K) -> Self {
        Time {
            mono_ms: clock.now_ms(),
            unix_ms: clock.unix_ms().unwrap_or(0),
        }
    }
}

/// Open a connection and send CONNECT with these parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOrder {
    /// The MQTT client id.
    pub client_id: String,
    /// Keepalive, seconds (the transport sends PINGREQ when it has been silent that long).
    pub keep_alive_secs: u16,
    /// MQTT clean-session flag.
    pub clean_session: bool,
    /// The last will (topic, payload; QoS 1, not retained); `None` = [`TransportConfig::will`].
    pub will: Option<(String, Vec<u8>)>,
}

/// Send a PUBLISH; at QoS 1 its PUBACK is reported with `tag` ([`LinkEvent::PubAck`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutPublish<T> {
    /// Reported back with the PUBACK.
    pub tag: T,
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS 0 or 1.
    pub qos: QoS,
    /// A re-send from an earlier connection: the MQTT DUP flag.
    pub retransmit: bool,
}

/// What the policy asks the transport to do on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order<T> {
    /// Close any open connection, connect (DNS, TCP, TLS) and send CONNECT.
    Connect(ConnectOrder),
    /// SUBSCRIBE to these filters at QoS 1.
    Subscribe(Vec<String>),
    /// PUBLISH (dropped when nothing is connected: the policy re-sends after a connect).
    Publish(OutPublish<T>),
    /// Send DISCONNECT (when connected) and close.
    Disconnect,
}

/// What happened on the network, for the policy.
#[derive(Debug)]
pub enum LinkEvent<'a, T> {
    /// CONNACK accepted.
    ConnAck {
        /// The broker kept the session (subscriptions still in place).
        session_present: bool,
    },
    /// CONNACK refused with this MQTT 3.1.1 return code.
    ConnectRefused {
        /// The return code (1..=5).
        code: u8,
        /// In plain language.
        diagnosis: &'a Diagnosis,
    },
    /// The attempt failed before a CONNACK (DNS, TCP, TLS, the CONNECT write); see
    /// [`Diagnosis::is_credentials_refused`] for a certificate the broker refuses for good.
    ConnectFailed(&'a Diagnosis),
    /// An established connection ended.
    Disconnected {
        /// Who ended it.
        cause: DisconnectCause,
        /// Why, in plain language.
        diagnosis: &'a Diagnosis,
    },
    /// PINGRESP received.
    PingResponse,
    /// No PINGRESP within [`TransportConfig::ping_timeout_ms`]: the policy drops the connection.
    PingTimeout,
    /// The PUBACK of a QoS 1 publish.
    PubAck(T),
    /// Another packet from the broker (an unknown PUBACK, an UNSUBACK): broker activity.
    Activity,
    /// SUBACK received.
    SubAck {
        /// Every filter was granted.
        granted: bool,
    },
    /// A PUBLISH arrived (already acknowledged at QoS 1).
    Message {
        /// Its topic.
        topic: &'a str,
        /// Its payload.
        payload: &'a [u8],
    },
    /// A PUBLISH larger than the receive buffer arrived: acknowledged and skipped.
    Oversized {
        /// Its topic, when readable.
        topic: Option<&'a str>,
        /// Its size in bytes.
        len: usize,
    },
    /// A publish could not be encoded (it is skipped); informational.
    Failure(&'a Diagnosis),
}

/// The policy that drives a [`Transport`]: it gives orders ([`Order`]), is told what happens
/// ([`LinkEvent`]), owns the timers ([`Driver::poll_timeout`]) and takes inputs from the
/// application (presses, stop). [`Transport::run`] drives an `acorn_mqtt::Session` with an
/// [`Application`]; the `device` feature drives `acorn_device::Device`.
pub trait Driver {
    /// What a QoS 1 publish's PUBACK is reported with.
    type Tag: Copy + PartialEq;
    /// What the application hands over (a press, a stop request).
    type Input;
    /// Begins (the first [`Order::Connect`] follows).
    fn start(&mut self, now: Time);
    /// The next order, oldest first; anything that is not for the network (status changes,
    /// health reports) the driver handles itself meanwhile.
    fn poll_order(&mut self, now: Time) -> Option<Order<Self::Tag>>;
    /// When to call [`Driver::tick`] (monotonic ms).
    fn poll_timeout(&self) -> Option<u64>;
    /// Time passed ([`Driver::poll_timeout`] was reached).
    fn tick(&mut self, now: Time);
    /// Something happened on the network.
    fn event(&mut self, now: Time, event: LinkEvent<'_, Self::Tag>);
    /// The next input. Must be cancel-safe: it is raced against the network and timers and
    /// dropped when they win (a channel receive is).
    fn next_input(&mut self) -> impl Future<Output = Self::Input>;
    /// An input arrived.
    fn input(&mut self, now: Time, input: Self::Input);
    /// Done: [`Transport::drive`] returns once no order is left.
    fn is_finished(&self) -> bool;
    /// The identity to connect with instead of the transport's own (a rotation's candidate
    /// on trial, or the identity it committed); `None` (the default) = the transport's.
    fn identity(&self) -> Option<&TlsIdentity> {
        None
    }
}

/// [`Driver`] for an `acorn_mqtt::Session` with an [`Application`] on top.
struct SessionDriver<'s, R, A> {
    session: &'s mut Session<R>,
    app: &'s mut A,
    stopping: bool,
}

impl<R: RngCore, A: Application<R>> Driver for SessionDriver<'_, R, A> {
    type Tag = PublishId;
    type Input = Request;

    fn start(&mut self, now: Time) {
        self.stopping = false;
        self.session.handle(now.mono_ms, Event::Start);
    }

    fn poll_order(&mut self, now: Time) -> Option<Order<PublishId>> {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect { .. } => {
                    let config = self.session.config();
                    return Some(Order::Connect(ConnectOrder {
                        client_id: config.client_id.clone(),
                        keep_alive_secs: config.keep_alive_secs,
                        clean_session: false,
                        will: None,
                    }));
                }
                Action::Subscribe(filters) => return Some(Order::Subscribe(filters)),
                Action::Publish(p) => {
                    return Some(Order::Publish(OutPublish {
                        tag: p.id,
                        topic: p.topic,
                        payload: p.payload,
                        qos: p.qos,
                        retransmit: p.retransmit,
                    }))
                }
                Action::Disconnect => return Some(Order::Disconnect),
                other => self
                    .app
                    .notice(now.mono_ms, Notice::Action(&other), self.session),
            }
        }
        None
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.session.poll_timeout()
    }

    fn tick(&mut self, now: Time) {
        self.session.handle(now.mono_ms, Event::Tick);
    }

    fn event(&mut self, now: Time, event: LinkEvent<'_, PublishId>) {
        let t = now.mono_ms;
        match event {
            LinkEvent::ConnAck { session_present } => {
                self.session.handle(t, Event::ConnAck { session_present });
                self.app
                    .notice(t, Notice::Connected { session_present }, self.session);
            }
            LinkEvent::ConnectRefused { code, diagnosis } => {
                self.app.notice(t, Notice::Failure(diagnosis), self.session);
                self.session.handle(t, Event::ConnectRefused { code });
            }
            LinkEvent::ConnectFailed(diagnosis) => {
                self.app.notice(t, Notice::Failure(diagnosis), self.session);
                let diagnosis_text = diagnosis.to_string();
                let event = if diagnosis.is_credentials_refused() {
                    Event::CredentialsRefused {
                        diagnosis: diagnosis_text,
                    }
                } else {
                    Event::ConnectFailed {
                        diagnosis: diagnosis_text,
                    }
                };
                self.session.handle(t, event);
            }
            LinkEvent::Disconnected { cause, diagnosis } => {
                self.app.notice(t, Notice::Failure(diagnosis), self.session);
                self.session.handle(
                    t,
                    Event::Disconnected {
                        cause,
                        diagnosis: diagnosis.to_string(),
                    },
                );
            }
            LinkEvent::PingResponse => self.session.handle(t, Event::PingResponse),
            LinkEvent::PingTimeout => self.session.handle(t, Event::PingTimeout),
            LinkEvent::PubAck(id) => self.session.handle(t, Event::PublishAcked(id)),
            LinkEvent::Activity => self.session.handle(t, Event::MessageReceived),
            LinkEvent::SubAck { granted } => {
                self.session.handle(t, Event::SubscribeAcked { granted });
                self.app
                    .notice(t, Notice::Subscribed { granted }, self.session);
            }
            LinkEvent::Message { topic, payload } => {
                self.session.handle(t, Event::MessageReceived);
                self.app
                    .notice(t, Notice::Message { topic, payload }, self.session);
            }
            LinkEvent::Oversized { topic, len } => {
                self.session.handle(t, Event::MessageReceived);
                self.app
                    .notice(t, Notice::Oversized { topic, len }, self.session);
            }
            LinkEvent::Failure(diagnosis) => {
                self.app.notice(t, Notice::Failure(diagnosis), self.session)
            }
        }
    }

    fn next_input(&mut self) -> impl Future<Output = Request> {
        self.app.next_request()
    }

    fn input(&mut self, now: Time, request: Request) {
        let t = now.mono_ms;
        match request {
            Request::Publish(p) => {
                if let Err(e) = self.session.publish(t, p) {
                    self.app.notice(t, Notice::PublishRefused(&e), self.session);
                }
            }
            Request::Reconnect => self.session.handle(t, Event::Reconnect),
            Request::Stop => {
                self.stopping = true;
                self.session.handle(t, Event::Stop);
            }
        }
    }

    fn is_finished(&self) -> bool {
        self.stopping && self.session.poll_timeout().is_none()
    }
}

/// How a connection ended.
enum End {
    /// The transport is closed; the policy knows.
    Closed,
    /// The policy asked for a new connection at once.
    ConnectAgain(ConnectOrder),
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
}

/// Per-connection MQTT state.
struct Link<T> {
    /// MQTT packet id → the policy's tag, for QoS 1 publishes in flight.
    in_flight: Vec<(u16, T)>,
    next_pid: u16,
    connacked: bool,
    last_sent_ms: u64,
    ping_sent_ms: Option<u64>,
    keep_alive_ms: u64,
}

impl<T> Link<T> {
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
        }
    }

    /// The clock.
    pub fn clock(&self) -> &K {
        &self.clock
    }

    /// Drives `session` until the application asks to [`Request::Stop`] and the session has
    /// nothing left to do. Sends `Event::Start` first.
    pub async fn run<R: RngCore, A: Application<R>>(
        &mut self,
        session: &mut Session<R>,
        app: &mut A,
    ) {
        let mut driver = SessionDriver {
            session,
            app,
            stopping: false,
        };
        self.drive(&mut driver).await;
    }

    /// Carries out `driver`'s orders until it is finished ([`Driver::is_finished`]) and has
    /// no order left. Calls [`Driver::start`] first.
    pub async fn drive<D: Driver>(&mut self, driver: &mut D) {
        driver.start(Time::of(&self.clock));
        loop {
            while let Some(order) = driver.poll_order(Time::of(&self.clock)) {
                // Nothing is connected: only a connect means anything.
                let Order::Connect(connect) = order else {
                    continue;
                };
                let mut end = self.connection(driver, connect).await;
                while let End::ConnectAgain(connect) = end {
                    end = self.connection(driver, connect).await;
                }
            }
            if driver.is_finished() {
                return;
            }
            let deadline = driver.poll_timeout();
            let waited = select(sleep_opt(&self.clock, deadline), driver.next_input()).await;
            let now = Time::of(&self.clock);
            match waited {
                Either::First(()) => driver.tick(now),
                Either::Second(input) => driver.input(now, input),
            }
        }
    }

    /// One connection, from TCP connect to its end.
    async fn connection<D: Driver>(&mut self, driver: &mut D, order: ConnectOrder) -> End {
        // Never connect on unchecked dates.
        let unix = match self.clock.unix_secs() {
            Some(t) if t >= EARLIEST_PLAUSIBLE_UNIX_TIME => t,
            other => {
                let d = Diagnosis::ClockNotSynced { now_unix: other };
                driver.event(Time::of(&self.clock), LinkEvent::ConnectFailed(&d));
                return End::Closed;
            }
        };
        let target = self.config.target.clone();
        let deadline = driver.poll_timeout();
        let connected = select(
            self.connector.connect(&target.host, target.port),
            sleep_opt(&self.clock, deadline),
        )
        .await;
        let (reader, writer) = match connected {
            Either::First(Ok(halves)) => halves,
            Either::First(Err((_, diagnosis))) => {
                driver.event(Time::of(&self.clock), LinkEvent::ConnectFailed(&diagnosis));
                return End::Closed;
            }
            Either::Second(()) => {
                // The policy's connect timeout: it fails the attempt itself.
                driver.tick(Time::of(&self.clock));
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
        // Cloned so that the driver can be told what happens meanwhile; only while a
        // rotation's identity is in use.
        let rotated = driver.identity().cloned();
        let identity = rotated.as_ref().unwrap_or(self.identity);
        let mut provider = Provider::new(
            &mut self.rng,
            identity,
            self.anchors,
            target.tls_name(),
            unix,
        );
        let shook = select(
            tls::handshake(&mut tls_conn, &tls_config, &mut provider),
            sleep_opt(&self.clock, driver.poll_timeout()),
        )
        .await;
        match shook {
            Either::First(Ok(())) => {}
            Either::First(Err(diagnosis)) => {
                driver.event(Time::of(&self.clock), LinkEvent::ConnectFailed(&diagnosis));
                return End::Closed;
            }
            Either::Second(()) => {
                driver.tick(Time::of(&self.clock));
                return End::Closed;
            }
        }
        drop(provider);

        let (mut reader, mut writer) = tls_conn.split();
        let mut link = Link {
            in_flight: Vec::new(),
            next_pid: 1,
            connacked: false,
            last_sent_ms: self.clock.now_ms(),
            ping_sent_ms: None,
            keep_alive_ms: u64::from(order.keep_alive_secs) * 1000,
        };
        let will = order
            .will
            .as_ref()
            .or(self.config.will.as_ref())
            .map(|(t, p)| (t.as_str(), p.as_slice()));
        let connect = codec::connect(
            &order.client_id,
            order.keep_alive_secs,
            order.clean_session,
            will,
        );
        let sent = match connect {
            Ok(bytes) => send(&mut writer, &bytes).await,
            Err(e) => Err(Diagnosis::BadConfiguration(e.to_string())),
        };
        if let Err(diagnosis) = sent {
            driver.event(Time::of(&self.clock), LinkEvent::ConnectFailed(&diagnosis));
            return End::Closed;
        }

        let mut packets = PacketReader::new(&mut bufs.mqtt_rx);
        let ping_timeout = self.config.ping_timeout_ms;
        let clock = &self.clock;
        loop {
            let read = pin!(packets.next(&mut reader));
            let mut read = read;
            let result = loop {
                match carry_out(clock, driver, &mut writer, &mut link).await {
                    Ok(None) => {}
                    Ok(Some(end)) => return end,
                    Err(diagnosis) => {
                        lost(clock, driver, &link, DisconnectCause::Network, diagnosis);
                        return End::Closed;
                    }
                }
                if driver.is_finished() && link.in_flight.is_empty() {
                    return End::Closed;
                }
                let keepalive_at = match link.ping_sent_ms {
                    Some(sent) => sent.saturating_add(ping_timeout),
                    None => link.last_sent_ms.saturating_add(link.keep_alive_ms),
                };
                let deadline = match driver.poll_timeout() {
                    Some(t) => t.min(keepalive_at),
                    None => keepalive_at,
                };
                match select3(&mut read, clock.sleep_until(deadline), driver.next_input()).await {
                    Either3::First(result) => break result,
                    Either3::Second(()) => {
                        let now = Time::of(clock);
                        if let Some(sent) = link.ping_sent_ms {
                            if now.mono_ms >= sent.saturating_add(ping_timeout) {
                                link.ping_sent_ms = None;
                                driver.event(now, LinkEvent::PingTimeout);
                                continue;
                            }
                        } else if link.connacked
                            && now.mono_ms >= link.last_sent_ms.saturating_add(link.keep_alive_ms)
                        {
                            if let Err(d) = send(&mut writer, &codec::pingreq()).await {
                                lost(clock, driver, &link, DisconnectCause::Network, d);
                                return End::Closed;
                            }
                            link.last_sent_ms = now.mono_ms;
                            link.ping_sent_ms = Some(now.mono_ms);
                        }
                        driver.tick(now);
                    }
                    Either3::Third(input) => driver.input(Time::of(clock), input),
                }
            };
            let now = Time::of(clock);
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
                    lost(clock, driver, &link, cause, diagnosis);
                    return End::Closed;
                }
            };
            match packet {
                InPacket::ConnAck {
                    session_present,
                    code: 0,
                } => {
                    link.connacked = true;
                    driver.event(now, LinkEvent::ConnAck { session_present });
                }
                InPacket::ConnAck { code, .. } => {
                    let diagnosis = Diagnosis::BrokerRefused { code };
                    driver.event(
                        now,
                        LinkEvent::ConnectRefused {
                            code,
                            diagnosis: &diagnosis,
                        },
                    );
                    return End::Closed;
                }
                InPacket::PubAck(pid) => {
                    if let Some(pos) = link.in_flight.iter().position(|(p, _)| *p == pid) {
                        let (_, tag) = link.in_flight.remove(pos);
                        driver.event(now, LinkEvent::PubAck(tag));
                    } else {
                        driver.event(now, LinkEvent::Activity);
                    }
                }
                InPacket::SubAck { granted, .. } => {
                    driver.event(now, LinkEvent::SubAck { granted });
                }
                InPacket::Publish {
                    topic,
                    payload,
                    pid,
                    qos,
                } => {
                    if let (Some(pid), 1) = (pid, qos) {
                        if let Ok(ack) = codec::puback(pid) {
                            if let Err(d) = send(&mut writer, &ack).await {
                                lost(clock, driver, &link, DisconnectCause::Network, d);
                                return End::Closed;
                            }
                            link.last_sent_ms = now.mono_ms;
                        }
                    }
                    driver.event(
                        now,
                        LinkEvent::Message {
                            topic: &topic,
                            payload: &payload,
                        },
                    );
                }
                InPacket::Oversized { topic, pid, len } => {
                    if let Some(pid) = pid {
                        if let Ok(ack) = codec::puback(pid) {
                            if let Err(d) = send(&mut writer, &ack).await {
                                lost(clock, driver, &link, DisconnectCause::Network, d);
                                return End::Closed;
                            }
                        }
                    }
                    driver.event(
                        now,
                        LinkEvent::Oversized {
                            topic: topic.as_deref(),
                            len,
                        },
                    );
                }
                InPacket::PingResp => {
                    link.ping_sent_ms = None;
                    driver.event(now, LinkEvent::PingResponse);
                }
                InPacket::UnsubAck(_) => driver.event(now, LinkEvent::Activity),
            }
        }
    }
}

/// Reports a lost connection (or a failed connect, before the CONNACK).
fn lost<K: Clock, D: Driver>(
    clock: &K,
    driver: &mut D,
    link: &Link<D::Tag>,
    cause: DisconnectCause,
    diagnosis: Diagnosis,
) {
    let now = Time::of(clock);
    if link.connacked {
        driver.event(
            now,
            LinkEvent::Disconnected {
                cause,
                diagnosis: &diagnosis,
            },
        );
    } else {
        driver.event(now, LinkEvent::ConnectFailed(&diagnosis));
    }
}

/// Carries out the policy's pending orders on a live connection. `Ok(Some(end))` when the
/// connection must end; `Err` when a write failed.
async fn carry_out<K: Clock, D: Driver, W: Write>(
    clock: &K,
    driver: &mut D,
    writer: &mut W,
    link: &mut Link<D::Tag>,
) -> Result<Option<End>, Diagnosis> {
    while let Some(order) = driver.poll_order(Time::of(clock)) {
        let now = clock.now_ms();
        match order {
            Order::Connect(connect) => return Ok(Some(End::ConnectAgain(connect))),
            Order::Subscribe(filters) => {
                let pid = link.pid();
                let bytes = codec::subscribe(pid, &filters)
                    .map_err(|e| Diagnosis::BadConfiguration(e.to_string()))?;
                send(writer, &bytes).await?;
                link.last_sent_ms = now;
            }
            Order::Publish(p) => {
                let pid = match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(link.pid()),
                };
                let bytes = match codec::publish(&p.topic, &p.payload, pid, p.retransmit) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        let d = Diagnosis::ProtocolError(e.to_string());
                        driver.event(Time::of(clock), LinkEvent::Failure(&d));
                        continue;
                    }
                };
                send(writer, &bytes).await?;
                if let Some(pid) = pid {
                    link.in_flight.retain(|(p, _)| *p != pid);
                    link.in_flight.push((pid, p.tag));
                }
                link.last_sent_ms = now;
            }
            Order::Disconnect => {
                // Best effort: the policy has already moved on.
                let _ = send(writer, &codec::disconnect()).await;
                return Ok(Some(End::Closed));
            }
        }
    }
    Ok(None)
}
