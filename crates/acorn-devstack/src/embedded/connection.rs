//! One client connection: the TLS handshake, the CONNECT, then one loop over what the client
//! sends, what the router queued for it, its keepalive and a takeover.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck, SubAck, UnsubAck};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::router::{Message, Refusal, Rights, SessionKey, Signal};
use super::{Listener, Shared};

/// How a connection ended.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT: no last will.
    Clean,
    /// Anything else: the last will is published.
    Unclean(String),
    /// Another connection took the session over (the router published the will already).
    TakenOver,
    /// The broker stops.
    Shutdown,
}

/// A connection before and after its CONNECT.
pub(super) struct Connection {
    listener: Listener,
    peer: SocketAddr,
    shared: Arc<Shared>,
}

impl Connection {
    pub(super) fn new(listener: Listener, peer: SocketAddr, shared: Arc<Shared>) -> Self {
        Self {
            listener,
            peer,
            shared,
        }
    }

    /// Serves the connection until it ends; `_permit` holds its place in the connection limit.
    pub(super) async fn serve(
        self,
        stream: TcpStream,
        tls: tokio_rustls::TlsAcceptor,
        _permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let limits = &self.shared.limits;
        let stream = match tokio::time::timeout(limits.connect_timeout, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::info!(peer = %self.peer, listener = ?self.listener, "TLS handshake refused: {e}");
                return;
            }
            Err(_) => {
                tracing::info!(peer = %self.peer, "no TLS handshake within {:?}", limits.connect_timeout);
                return;
            }
        };
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first());
        let name = leaf.and_then(|leaf| common_name(leaf));
        // Only device certificates are revoked by the device CRLs.
        let revocation_key = leaf
            .filter(|_| self.listener == Listener::Device)
            .and_then(|leaf| super::Revoked::key_of(leaf));
        let (reader, writer) = tokio::io::split(stream);
        let mut io = Io {
            reader,
            writer,
            buf: BytesMut::with_capacity(4096),
            out: BytesMut::with_capacity(4096),
            max_packet: limits.max_packet_size,
            write_timeout: limits.write_timeout,
        };
        self.session(&mut io, name, revocation_key).await;
        let _ = io.shutdown().await;
    }

    /// The CONNECT and then the session.
    async fn session<S: AsyncRead + AsyncWrite>(
        self,
        io: &mut Io<S>,
        name: Option<String>,
        revocation_key: Option<super::RevocationKey>,
    ) {
        let limits = &self.shared.limits;
        use ConnectReturnCode::{NotAuthorized, RefusedProtocolVersion};
        let connect = match tokio::time::timeout(limits.connect_timeout, io.read()).await {
            Err(_) => return self.log_end(None, &End::Unclean("no CONNECT in time".into())),
            Ok(Err(CodecError::InvalidProtocolLevel(level))) => {
                let why = format!("MQTT protocol level {level}: only 4 (3.1.1) is served");
                return self.log_end(None, &refuse(io, RefusedProtocolVersion, why).await);
            }
            Ok(Err(e)) => return self.log_end(None, &End::Unclean(e.to_string())),
            Ok(Ok(Packet::Connect(connect))) => connect,
            Ok(Ok(other)) => {
                let why = format!("first packet {other:?}, not CONNECT");
                return self.log_end(None, &End::Unclean(why));
            }
        };
        if connect.protocol != rumqttc::mqttbytes::Protocol::V4 {
            let why = "not MQTT 3.1.1".to_owned();
            return self.log_end(None, &refuse(io, RefusedProtocolVersion, why).await);
        }
        let Some(name) = name else {
            let why = "the client certificate has no common name".to_owned();
            return self.log_end(None, &refuse(io, NotAuthorized, why).await);
        };
        // A claim connection names itself (`claim:<device id>`); its certificate must be a
        // claim certificate (every claim device shares it).
        let name = if self.listener == Listener::Claim {
            if !name.starts_with(acorn_mqtt::topics::CLAIM_CLIENT_PREFIX) {
                let why = format!("certificate name {name:?} is not a claim certificate");
                return self.log_end(Some(&name), &refuse(io, NotAuthorized, why).await);
            }
            connect.client_id.clone()
        } else {
            name
        };
        let local = self.shared.local_provisioning.as_ref();
        let Some(rights) = Rights::of(self.listener, &name, local) else {
            let what = match self.listener {
                Listener::Device => "device id",
                Listener::Service => "service identity",
                Listener::Claim => "claim client id (claim:<device id>)",
            };
            let why = format!("certificate name {name:?} is not a {what}");
            return self.log_end(Some(&name), &refuse(io, NotAuthorized, why).await);
        };
        let will = match connect.last_will {
            Some(will) if !rights.may_publish(&will.topic) => {
                let why = format!("last will topic {:?} is not allowed", will.topic);
                return self.log_end(Some(&name), &refuse(io, NotAuthorized, why).await);
            }
            Some(will) => Some(Message {
                topic: will.topic,
                payload: will.message,
                qos: cap_qos(will.qos),
            }),
            None => None,
        };
        let key: SessionKey = (self.listener, name.clone());
        let signal = Arc::new(Signal::default());
        let accepted = match self.shared.router.lock() {
            Ok(mut router) => router.connect(
                &key,
                connect.clean_session,
                rights.clone(),
                will,
                Arc::clone(&signal),
            ),
            Err(_) => Err(Refusal::TooManySessions),
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(Refusal::TooManySessions) => {
                let why = "session limit reached".to_owned();
                let end = refuse(io, ConnectReturnCode::ServiceUnavailable, why).await;
                return self.log_end(Some(&name), &end);
            }
        };
        tracing::debug!(
            client = %name,
            listener = ?self.listener,
            clean_session = connect.clean_session,
            session_present = accepted.session_present,
            keep_alive = connect.keep_alive,
            "client connected"
        );
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let end = match io
            .send(&connack(
                ConnectReturnCode::Success,
                accepted.session_present,
            ))
            .await
        {
            Ok(()) => {
                let mut session = Session {
                    key: &key,
                    conn: accepted.conn,
                    rights: &rights,
                    shared: &self.shared,
                    revocation_key,
                };
                session.run(io, &signal, keep_alive).await
            }
            Err(e) => End::Unclean(e),
        };
        if let Ok(mut router) = self.shared.router.lock() {
            match end {
                // No wills when the broker stops: their readers are closing too.
                End::Clean | End::Shutdown => router.disconnect(&key, accepted.conn, true),
                End::Unclean(_) => router.disconnect(&key, accepted.conn, false),
                End::TakenOver => {}
            }
        }
        self.log_end(Some(&name), &end);
    }

    fn log_end(&self, name: Option<&str>, end: &End) {
        let client = name.unwrap_or("?");
        match end {
            End::Clean => tracing::debug!(client, "client disconnected"),
            End::TakenOver => tracing::info!(client, "connection taken over by a new one"),
            End::Shutdown => tracing::debug!(client, "closed: the broker stops"),
            End::Unclean(why) => tracing::info!(
                client,
                peer = %self.peer,
                listener = ?self.listener,
                "connection closed: {why}"
            ),
        }
    }
}

/// A connected session's loop.
struct Session<'a> {
    key: &'a SessionKey,
    conn: u64,
    rights: &'a Rights,
    shared: &'a Shared,
    /// How the CRLs would name the device certificate, watched against newly installed ones.
    revocation_key: Option<super::RevocationKey>,
}

impl Session<'_> {
    async fn run<S: AsyncRead + AsyncWrite>(
        &mut self,
        io: &mut Io<S>,
        signal: &Signal,
        keep_alive: Option<Duration>,
    ) -> End {
        let mut shutdown = self.shared.shutdown.clone();
        let mut revoked = self.shared.revoked.clone();
        // A CRL installed between the handshake and now counts too.
        revoked.mark_changed();
        let mut last_heard = Instant::now();
        loop {
            // Whatever the router queued for this client.
            let Some(publishes) = self.router(|r| r.drain(self.key, self.conn)).flatten() else {
                return End::TakenOver;
            };
            for publish in publishes {
                io.queue(&Packet::Publish(publish));
            }
            if let Err(e) = io.flush().await {
                return End::Unclean(e);
            }
            let deadline = keep_alive.map(|k| last_heard + k);
            tokio::select! {
                _ = super::stopping(&mut shutdown) => return End::Shutdown,
                changed = revoked.changed(), if self.revocation_key.is_some() => match changed {
                    // The broker is going away; stop watching.
                    Err(_) => self.revocation_key = None,
                    Ok(()) => {
                        let set = revoked.borrow_and_update();
                        if self.revocation_key.as_ref().is_some_and(|key| set.contains(key)) {
                            return End::Unclean("certificate revoked".into());
                        }
                    }
                },
                _ = signal.notified() => {
                    if signal.kicked() {
                        return End::TakenOver;
                    }
                }
                _ = sleep_until(deadline) => {
                    return End::Unclean(format!(
                        "keepalive expired (nothing heard for {:?})",
                        keep_alive.unwrap_or_default()
                    ));
                }
                read = io.fill() => {
                    if let Err(e) = read {
                        return End::Unclean(e);
                    }
                    last_heard = Instant::now();
                    loop {
                        match io.parse() {
                            Ok(Some(packet)) => {
                                if let Some(end) = self.handle(io, packet) {
                                    let _ = io.flush().await;
                                    return end;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return End::Unclean(format!("bad packet: {e}")),
                        }
                    }
                }
            }
        }
    }

    /// Handles one packet from the client, queueing the answers; `Some` ends the connection.
    fn handle<S>(&mut self, io: &mut Io<S>, packet: Packet) -> Option<End> {
        match packet {
            Packet::Publish(publish) => {
                if publish.qos == QoS::ExactlyOnce {
                    return Some(End::Unclean(
                        "QoS 2 PUBLISH (not supported, as on AWS IoT Core)".into(),
                    ));
                }
                if let Err(e) = acorn_mqtt::limits::check_topic(&publish.topic) {
                    return Some(End::Unclean(format!("PUBLISH topic refused: {e}")));
                }
                if self.rights.may_publish(&publish.topic) {
                    let message = Message {
                        topic: publish.topic,
                        payload: publish.payload,
                        qos: publish.qos,
                    };
                    if let Some(routed) = self.router(|r| r.route(&message)) {
                        if routed.dropped > 0 {
                            tracing::warn!(
                                topic = %message.topic,
                                sessions = routed.dropped,
                                "message dropped for sessions whose queue is full"
                            );
                        }
                    }
                } else {
                    tracing::info!(
                        client = %self.key.1,
                        topic = %publish.topic,
                        "denied PUBLISH (acknowledged and dropped)"
                    );
                }
                if publish.qos == QoS::AtLeastOnce {
                    io.queue(&Packet::PubAck(PubAck::new(publish.pkid)));
                }
            }
            Packet::PubAck(ack) => {
                self.router(|r| r.acknowledge(self.key, self.conn, ack.pkid));
            }
            Packet::Subscribe(subscribe) => {
                let codes = subscribe
                    .filters
                    .iter()
                    .map(|f| {
                        self.router(|r| r.subscribe(self.key, self.conn, &f.path, f.qos))
                            .unwrap_or(rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure)
                    })
                    .collect::<Vec<_>>();
                for (filter, code) in subscribe.filters.iter().zip(&codes) {
                    if *code == rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure {
                        tracing::info!(client = %self.key.1, filter = %filter.path, "SUBSCRIBE refused");
                    }
                }
                io.queue(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)));
            }
            Packet::Unsubscribe(unsubscribe) => {
                for filter in &unsubscribe.topics {
                    self.router(|r| r.unsubscribe(self.key, self.conn, filter));
                }
                io.queue(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)));
            }
            Packet::PingReq => io.queue(&Packet::PingResp),
            Packet::Disconnect => return Some(End::Clean),
            other => {
                return Some(End::Unclean(format!(
                    "unexpected packet from a client: {other:?}"
                )))
            }
        }
        None
    }

    /// Runs `f` on the router; `None` if a thread panicked while holding it.
    fn router<T>(&self, f: impl FnOnce(&mut super::router::Router) -> T) -> Option<T> {
        self.shared.router.lock().ok().map(|mut r| f(&mut r))
    }
}

/// The stream and its buffers: packets are framed from `buf` with rumqttc's MQTT 3.1.1 codec,
/// answers collected in `out` and written together.
struct Io<S> {
    reader: tokio::io::ReadHalf<S>,
    writer: tokio::io::WriteHalf<S>,
    buf: BytesMut,
    out: BytesMut,
    max_packet: usize,
    write_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite> Io<S> {
    /// Reads one whole packet (for the CONNECT).
    async fn read(&mut self) -> Result<Packet, CodecError> {
        loop {
            if let Some(packet) = self.parse()? {
                return Ok(packet);
            }
            self.fill()
                .await
                .map_err(|e| CodecError::Io(std::io::Error::other(e)))?;
        }
    }

    /// Reads more bytes (cancel safe: nothing is lost when another branch wins a select).
    async fn fill(&mut self) -> Result<(), String> {
        match self.reader.read_buf(&mut self.buf).await {
            Ok(0) => Err("connection closed by the client without DISCONNECT".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// Sends one packet now.
    async fn send(&mut self, packet: &Packet) -> Result<(), String> {
        self.queue(packet);
        self.flush().await
    }

    /// Writes everything queued, bounded by the write timeout.
    async fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = self.out.split();
        let write = async {
            self.writer.write_all(&out).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err(format!(
                "the client read nothing for {:?}",
                self.write_timeout
            )),
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.writer.shutdown().await
    }
}

impl<S> Io<S> {
    /// The next whole packet in the buffer, if there is one.
    fn parse(&mut self) -> Result<Option<Packet>, CodecError> {
        match Packet::read(&mut self.buf, self.max_packet) {
            Ok(packet) => Ok(Some(packet)),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Queues a packet to write at the next flush.
    fn queue(&mut self, packet: &Packet) {
        // Packets the broker makes are within MQTT's size limit: their payloads came in
        // through `max_packet`, which is far below it.
        let _ = packet.write(&mut self.out, usize::MAX);
    }
}

/// Answers a CONNECT with a refusal.
async fn refuse<S: AsyncRead + AsyncWrite>(
    io: &mut Io<S>,
    code: ConnectReturnCode,
    why: String,
) -> End {
    let _ = io.send(&connack(code, false)).await;
    End::Unclean(format!("CONNECT refused ({code:?}): {why}"))
}

fn connack(code: ConnectReturnCode, session_present: bool) -> Packet {
    Packet::ConnAck(ConnAck::new(code, session_present))
}

/// QoS 2 is not served: a QoS 2 will is published at QoS 1.
fn cap_qos(qos: QoS) -> QoS {
    if qos == QoS::ExactlyOnce {
        QoS::AtLeastOnce
    } else {
        qos
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The subject common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
