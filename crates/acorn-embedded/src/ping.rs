//! `ping`: one timed pass through every step of a device connection over this transport:
//! TCP (DNS included) → TLS 1.3 → CONNECT/CONNACK → SUBSCRIBE/SUBACK → PUBLISH (QoS 1)/PUBACK
//! → DISCONNECT, each bounded by a timeout. Inbound PUBLISH packets (commands queued in a
//! persistent session) are not acknowledged, so the broker keeps them for the device.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::future::Future;

use embassy_futures::select::{select, Either};
use embedded_io_async::{Read, Write};
use embedded_tls::TlsConnection;
use rand_core::{CryptoRng, RngCore};

use crate::codec::{self, InPacket, PacketReader, ReadError, MQTT_RX_BUFFER};
use crate::diagnosis::{DiagnoseEmbedded, Diagnosis, Step, EARLIEST_PLAUSIBLE_UNIX_TIME};
use crate::duplex::Duplex;
use crate::identity::TlsIdentity;
use crate::tls::{self, Provider, AWS_ALPN, TLS_READ_BUFFER, TLS_WRITE_BUFFER};
use crate::transport::{Clock, Connector, Target};
use crate::verify::TrustAnchors;

/// What to ping with.
#[derive(Debug, Clone)]
pub struct PingOptions {
    /// Where to connect.
    pub target: Target,
    /// MQTT client id (= device id).
    pub client_id: String,
    /// Topic filters subscribed (default the device's settings and commands topics, so the
    /// persistent session a ping leaves is the device's own).
    pub subscribe_topics: Vec<String>,
    /// Topic of the QoS 1 publish (default `acorn-pups/status/{client_id}`).
    pub publish_topic: String,
    /// Payload of the QoS 1 publish.
    pub payload: Vec<u8>,
    /// Bound of each step, ms (default 30 s).
    pub step_timeout_ms: u64,
    /// Keepalive sent in CONNECT, s (default 60).
    pub keep_alive_secs: u16,
}

impl PingOptions {
    /// Defaults for device `client_id`: subscribe to its settings and commands topics, publish `payload` on
    /// its status topic at QoS 1.
    pub fn new(target: Target, client_id: &str, payload: Vec<u8>) -> Self {
        PingOptions {
            target,
            subscribe_topics: acorn_mqtt::topics::device_subscription_filters(client_id).to_vec(),
            publish_topic: alloc::format!(
                "{}/{client_id}",
                acorn_mqtt::topics::TOPIC_DEVICE_STATUS
            ),
            client_id: client_id.to_string(),
            payload,
            step_timeout_ms: 30_000,
            keep_alive_secs: 60,
        }
    }
}

/// The time of every step of a successful ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingReport {
    /// Each step and its duration in ms, in order: tcp (DNS included), tls, connack, suback,
    /// puback, disconnect.
    pub steps: Vec<(Step, u64)>,
    /// Sum of all steps, ms.
    pub total_ms: u64,
    /// Negotiated TLS version (always TLS 1.3 on this transport).
    pub tls_version: &'static str,
    /// Negotiated cipher suite (the only one offered).
    pub cipher_suite: &'static str,
    /// CONNACK's session-present flag.
    pub session_present: bool,
}

/// A failed ping: the failing step, why, and the steps completed before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingFailure {
    /// The failing step.
    pub step: Step,
    /// What went wrong.
    pub diagnosis: Diagnosis,
    /// Steps completed, with their durations in ms.
    pub completed: Vec<(Step, u64)>,
}

impl core::fmt::Display for PingFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} failed: {}", self.step, self.diagnosis)
    }
}

impl core::error::Error for PingFailure {}

struct Run<'k, K> {
    clock: &'k K,
    timeout: u64,
    completed: Vec<(Step, u64)>,
}

impl<K: Clock> Run<'_, K> {
    fn fail(&self, running: Step, diagnosis: Diagnosis) -> PingFailure {
        PingFailure {
            step: diagnosis.step(running),
            diagnosis,
            completed: self.completed.clone(),
        }
    }

    async fn step<T, F>(&mut self, step: Step, fut: F) -> Result<T, PingFailure>
    where
        F: Future<Output = Result<T, Diagnosis>>,
    {
        let start = self.clock.now_ms();
        let deadline = start.saturating_add(self.timeout);
        match select(fut, self.clock.sleep_until(deadline)).await {
            Either::First(Ok(value)) => {
                self.completed
                    .push((step, self.clock.now_ms().saturating_sub(start)));
                Ok(value)
            }
            Either::First(Err(d)) => Err(self.fail(step, d)),
            Either::Second(()) => Err(self.fail(
                step,
                Diagnosis::Timeout {
                    step,
                    after_ms: self.timeout,
                },
            )),
        }
    }
}

async fn send<W>(w: &mut W, bytes: &[u8], step: Step) -> Result<(), Diagnosis>
where
    W: Write + embedded_io::ErrorType<Error = embedded_tls::TlsError>,
{
    w.write_all(bytes)
        .await
        .map_err(|e| Diagnosis::from_tls(&e, step))?;
    w.flush().await.map_err(|e| Diagnosis::from_tls(&e, step))
}

async fn receive<R>(
    r: &mut R,
    packets: &mut PacketReader<'_>,
    step: Step,
) -> Result<InPacket, Diagnosis>
where
    R: Read + embedded_io::ErrorType<Error = embedded_tls::TlsError>,
{
    packets.next(r).await.map_err(|e| match e {
        ReadError::Closed => Diagnosis::ClosedByBroker { step },
        ReadError::Io(e) => Diagnosis::from_tls(&e, step),
        ReadError::Codec(e) => Diagnosis::ProtocolError(e.to_string()),
    })
}

/// Runs a ping over `connector` with `identity`, trusting `anchors`. Never panics; every step
/// is bounded by `options.step_timeout_ms`.
pub async fn ping<C: Connector, K: Clock, G: RngCore + CryptoRng>(
    connector: &mut C,
    clock: &K,
    rng: G,
    identity: &TlsIdentity,
    anchors: &TrustAnchors,
    options: &PingOptions,
) -> Result<PingReport, PingFailure> {
    let start = clock.now_ms();
    let mut run = Run {
        clock,
        timeout: options.step_timeout_ms,
        completed: Vec::with_capacity(6),
    };
    let unix = match clock.unix_secs() {
        Some(t) if t >= EARLIEST_PLAUSIBLE_UNIX_TIME => t,
        other => return Err(run.fail(Step::Tls, Diagnosis::ClockNotSynced { now_unix: other })),
    };
    let target = &options.target;
    let (reader, writer) = run
        .step(Step::Tcp, async {
            connector
                .connect(&target.host, target.port)
                .await
                .map_err(|(_, d)| d)
        })
        .await?;
    let duplex = Duplex::new(reader, writer);
    let mut read_buf = alloc::vec![0u8; TLS_READ_BUFFER];
    let mut write_buf = alloc::vec![0u8; TLS_WRITE_BUFFER];
    let mut tls_conn: TlsConnection<'_, &Duplex<C::Reader<'_>, C::Writer<'_>>, tls::CipherSuite> =
        TlsConnection::new(&duplex, &mut read_buf, &mut write_buf);
    let alpn: [&[u8]; 1] = [AWS_ALPN];
    let config = tls::tls_config(target.tls_name(), target.alpn.then_some(&alpn[..]));
    let mut provider = Provider::new(rng, identity, anchors, target.tls_name(), unix);
    run.step(
        Step::Tls,
        tls::handshake(&mut tls_conn, &config, &mut provider),
    )
    .await?;

    let mut rx = alloc::vec![0u8; MQTT_RX_BUFFER];
    let mut packets = PacketReader::new(&mut rx);
    let connect = codec::connect(&options.client_id, options.keep_alive_secs, false, None)
        .map_err(|e| run.fail(Step::Config, Diagnosis::BadConfiguration(e.to_string())))?;
    let session_present = run
        .step(Step::Connack, async {
            send(&mut tls_conn, &connect, Step::Connack).await?;
            match receive(&mut tls_conn, &mut packets, Step::Connack).await? {
                InPacket::ConnAck {
                    session_present,
                    code: 0,
                } => Ok(session_present),
                InPacket::ConnAck { code, .. } => Err(Diagnosis::BrokerRefused { code }),
                other => Err(Diagnosis::ProtocolError(alloc::format!(
                    "expected CONNACK, got {other:?}"
                ))),
            }
        })
        .await?;
    let filters = options.subscribe_topics.clone();
    run.step(Step::Suback, async {
        let bytes = codec::subscribe(1, &filters)
            .map_err(|e| Diagnosis::BadConfiguration(e.to_string()))?;
        send(&mut tls_conn, &bytes, Step::Suback).await?;
        loop {
            match receive(&mut tls_conn, &mut packets, Step::Suback).await? {
                InPacket::SubAck { pid: 1, granted } => {
                    return if granted {
                        Ok(())
                    } else {
                        Err(Diagnosis::SubscriptionRefused {
                            topic: filters.join(", "),
                        })
                    }
                }
                InPacket::Publish { .. } | InPacket::Oversized { .. } => continue,
                other => {
                    return Err(Diagnosis::ProtocolError(alloc::format!(
                        "expected SUBACK, got {other:?}"
                    )))
                }
            }
        }
    })
    .await?;
    run.step(Step::Puback, async {
        let bytes = codec::publish(&options.publish_topic, &options.payload, Some(2), false)
            .map_err(|e| Diagnosis::BadConfiguration(e.to_string()))?;
        send(&mut tls_conn, &bytes, Step::Puback).await?;
        loop {
            match receive(&mut tls_conn, &mut packets, Step::Puback).await? {
                InPacket::PubAck(2) => return Ok(()),
                InPacket::Publish { .. } | InPacket::Oversized { .. } => continue,
                other => {
                    return Err(Diagnosis::ProtocolError(alloc::format!(
                        "expected PUBACK, got {other:?}"
                    )))
                }
            }
        }
    })
    .await?;
    run.step(Step::Disconnect, async {
        send(&mut tls_conn, &codec::disconnect(), Step::Disconnect).await
    })
    .await?;
    // close_notify, best effort.
    let _ = tls_conn.close().await;
    Ok(PingReport {
        total_ms: clock.now_ms().saturating_sub(start),
        steps: run.completed,
        tls_version: "TLSv1_3",
        cipher_suite: "TLS13_AES_128_GCM_SHA256",
        session_present,
    })
}
