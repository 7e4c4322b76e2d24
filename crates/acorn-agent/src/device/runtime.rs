//! The runtime task: a thin driver of the device core. One loop carries out the core's
//! actions over rumqttc, and feeds it connection events, requests and timer ticks; what the
//! device does (presses, `online`, settings, commands, replies, heartbeats, shutdown) is the
//! core's; the runtime only tells it the host's resident memory before each tick.

use std::ops::ControlFlow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acorn_device::{Action, Connect, HostFacts, Level, Notice, Now, TransportEvent};
use acorn_mqtt::{DisconnectCause, QoS};
use rumqttc::{ConnectionError, MqttOptions, NetworkOptions, Outgoing, Packet, StateError};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::link::{Link, LinkEvent, CLOSE_TIMEOUT};
use super::{press_queue, Core, Device, DeviceEvent, Request};
use acorn_transport::{ClientCertRejection, DiagnoseHost, Diagnosis};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn qos(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
    }
}

/// The event a notice is forwarded as, if any.
fn device_event(notice: &Notice) -> Option<DeviceEvent> {
    Some(match notice {
        Notice::Status(status) => DeviceEvent::Status(status.clone()),
        Notice::Delivered(id) => DeviceEvent::Delivered(*id),
        Notice::PressDelivered { press_id } => DeviceEvent::PressDelivered(*press_id),
        Notice::PressDropped { press_id, .. } => DeviceEvent::PressDropped(*press_id),
        Notice::PressNotStored { press_id, reason } => DeviceEvent::PressNotStored {
            press_id: *press_id,
            reason: reason.clone(),
        },
        Notice::HeartbeatSent { queued_presses } => DeviceEvent::HeartbeatSent {
            queued_presses: *queued_presses,
        },
        Notice::RotationCommitted { certificate_id } => DeviceEvent::RotationEnded {
            committed: true,
            detail: certificate_id.clone(),
        },
        Notice::RotationRolledBack { reason } | Notice::RotationFailed { reason } => {
            DeviceEvent::RotationEnded {
                committed: false,
                detail: reason.clone(),
            }
        }
        Notice::Dropped { id, reason } => DeviceEvent::Dropped {
            id: *id,
            reason: *reason,
        },
        Notice::SettingsApplied { settings, .. } => DeviceEvent::SettingsApplied(*settings),
        Notice::Answered {
            command,
            request_id,
        } => DeviceEvent::Answered {
            command: (*command).to_owned(),
            request_id: request_id.clone(),
        },
        Notice::Rejected { reason, .. } => DeviceEvent::Rejected {
            reason: reason.clone(),
        },
        Notice::Health(report) => DeviceEvent::Health(report.clone()),
        _ => return None,
    })
}

/// What the heartbeat reports of this host: the resident memory of this process (`VmRSS` of
/// `/proc/self/status`; none where there is no such file).
pub fn host_facts() -> HostFacts {
    let mut facts = HostFacts::default();
    facts.rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| rss_bytes(&status));
    facts
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes (the kernel gives kB).
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kb: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then(|| kb.saturating_mul(1024))
}

pub(super) struct Runtime {
    pub(super) device: Core,
    start: Instant,
    pub(super) mqtt: MqttOptions,
    pub(super) session_options: acorn_transport::SessionOptions,
    pub(super) rotation: super::rotate::RotationDriver,
    network: NetworkOptions,
    capacity: usize,
    address: String,
    link: Option<Link>,
    generation: u64,
    link_tx: mpsc::UnboundedSender<LinkEvent>,
    link_rx: mpsc::UnboundedReceiver<LinkEvent>,
    closing: Vec<JoinHandle<()>>,
    events: broadcast::Sender<DeviceEvent>,
}

impl Runtime {
    pub(super) fn new(device: Device, events: broadcast::Sender<DeviceEvent>) -> Self {
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        for note in device.warnings() {
            warn!(device = %device.device_id(), "{note}");
        }
        Self {
            network: device.session_options.network_options(),
            capacity: device.session_options.channel_capacity,
            address: device.session_options.address(),
            mqtt: device.mqtt_options,
            session_options: device.session_options,
            rotation: device.rotation,
            device: device.core,
            start: Instant::now(),
            link: None,
            generation: 0,
            link_tx,
            link_rx,
            closing: Vec::new(),
            events,
        }
    }

    pub(super) fn now(&self) -> Now {
        let mono = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Now::new(mono, unix_ms())
    }

    pub(super) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        info!(device = %self.device.device_id(), broker = %self.address, "device starting");
        let now = self.now();
        self.device.start(now);
        let mut requests_open = true;
        while self.carry_out().is_continue() {
            let wake = match self.device.poll_timeout() {
                Some(at) => self.start + Duration::from_millis(at),
                None => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                Some(event) = self.link_rx.recv() => self.on_link_event(event),
                request = requests.recv(), if requests_open => match request {
                    Some(Request::Press { button, battery, reply }) => {
                        let now = self.now();
                        let outcome = self.device.press(now, &button, battery);
                        let _ = reply.send(outcome.map_err(Into::into));
                    }
                    Some(Request::Snapshot { reply }) => {
                        let _ = reply.send(self.device.snapshot(self.now()));
                    }
                    Some(Request::PressQueue { reply }) => {
                        let _ = reply.send(press_queue(&self.device));
                    }
                    Some(Request::Rotate { reply }) => {
                        let now = self.now();
                        let _ = reply.send(self.device.rotate(now));
                    }
                    Some(Request::Shutdown) => self.device.shutdown(self.now()),
                    None => {
                        requests_open = false;
                        self.device.shutdown(self.now());
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    self.device.set_host_facts(host_facts());
                    self.device.tick(self.now());
                }
            }
        }
        if let Some(link) = self.link.take() {
            self.closing.push(link.close());
        }
        for handle in self.closing.drain(..) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, handle).await;
        }
        info!("disconnected; device stopped");
    }

    /// Carries out the core's pending actions, in order; `Break` once shutdown is complete.
    fn carry_out(&mut self) -> ControlFlow<()> {
        while let Some(action) = self.device.poll_action() {
            self.act(action)?;
        }
        ControlFlow::Continue(())
    }

    fn act(&mut self, action: Action) -> ControlFlow<()> {
        match action {
            Action::Connect(connect) => self.connect(connect),
            Action::Subscribe(filters) => {
                debug!(?filters, "subscribing (the broker has no session for us)");
                // No link: the core already knows the connection is gone.
                if let Some(link) = self.link.as_mut() {
                    if let Err(e) = link.subscribe(&filters) {
                        self.transport_stuck(&e);
                    }
                }
            }
            Action::Publish(publish) => {
                debug!(topic = %publish.topic, tag = ?publish.tag, resend = publish.retransmit, bytes = publish.payload.len(), "publish");
                // No link: dropped; the session sends its messages again after the next connect.
                if let Some(link) = self.link.as_mut() {
                    let result = link.publish(
                        &publish.topic,
                        qos(publish.qos),
                        publish.payload,
                        publish.tag,
                    );
                    if let Err(e) = result {
                        self.transport_stuck(&e);
                    }
                }
            }
            Action::Disconnect => {
                if let Some(link) = self.link.take() {
                    debug!("closing the connection");
                    self.closing.push(link.close());
                }
                self.closing.retain(|h| !h.is_finished());
            }
            Action::Notice(notice) => self.notice(&notice),
            Action::ShutdownComplete => return ControlFlow::Break(()),
            Action::Rotation(request) => self.rotation_step(request),
            // A newer core's action this runtime does not know: nothing to carry out.
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// Opens a new connection (closing any other) with the core's CONNECT parameters.
    fn connect(&mut self, connect: Connect) {
        if let Some(old) = self.link.take() {
            self.closing.push(old.close());
        }
        self.generation += 1;
        info!(broker = %self.address, attempt = connect.attempt, "connecting");
        let will = connect.will;
        let mut options = self.mqtt.clone();
        options
            .set_keep_alive(Duration::from_secs(connect.keep_alive_secs.into()))
            .set_clean_session(connect.clean_session)
            .set_last_will(rumqttc::LastWill::new(
                will.topic,
                will.payload,
                qos(will.qos),
                will.retain,
            ));
        self.link = Some(Link::open(
            self.generation,
            options,
            self.network.clone(),
            self.capacity,
            self.link_tx.clone(),
        ));
    }

    /// Logs a notice at its level and forwards it to the event subscribers.
    fn notice(&self, notice: &Notice) {
        match notice.level() {
            Level::Debug => debug!("{notice}"),
            Level::Info => info!("{notice}"),
            Level::Warn => warn!("{notice}"),
        }
        if let Some(event) = device_event(notice) {
            // No subscriber is fine.
            let _ = self.events.send(event);
        }
    }

    /// rumqttc's request channel refused a request: treat the connection as lost.
    fn transport_stuck(&mut self, why: &str) {
        warn!("the MQTT client did not take a request ({why}); dropping the connection");
        if let Some(link) = self.link.take() {
            self.closing.push(link.close());
        }
        let now = self.now();
        self.device.transport(
            now,
            TransportEvent::Disconnected {
                cause: DisconnectCause::Network,
                diagnosis: format!("the MQTT client did not take a request ({why})"),
            },
        );
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        let now = self.now();
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.generation != event.generation {
            return;
        }
        match event.event {
            Ok(rumqttc::Event::Incoming(packet)) => match packet {
                Packet::ConnAck(ack) => {
                    link.connected = true;
                    debug!(session_present = ack.session_present, "CONNACK");
                    self.device.transport(
                        now,
                        TransportEvent::ConnAck {
                            session_present: ack.session_present,
                        },
                    );
                }
                Packet::PubAck(ack) => {
                    let event = match link.on_puback(ack.pkid) {
                        Some(tag) => TransportEvent::PubAck(tag),
                        None => TransportEvent::Activity,
                    };
                    self.device.transport(now, event);
                }
                Packet::SubAck(ack) => {
                    let granted = !ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    self.device
                        .transport(now, TransportEvent::SubAck { granted });
                }
                Packet::PingResp => self.device.transport(now, TransportEvent::PingResponse),
                Packet::Publish(publish) => self.device.transport(
                    now,
                    TransportEvent::Message {
                        topic: &publish.topic,
                        payload: &publish.payload,
                    },
                ),
                _ => {}
            },
            Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => link.on_outgoing_publish(pkid),
            Ok(rumqttc::Event::Outgoing(_)) => {}
            Err(err) => self.on_link_error(&err),
        }
    }

    /// The connection's event loop failed (and ended): tells the core what happened, in
    /// plain language.
    fn on_link_error(&mut self, err: &ConnectionError) {
        let Some(link) = self.link.take() else {
            return;
        };
        let connected = link.connected;
        // The task has ended (it stops at its first error).
        drop(link);
        let diagnosis = Diagnosis::from_connection_error(err, &self.address);
        let event = if connected {
            if matches!(err, ConnectionError::MqttState(StateError::AwaitPingResp)) {
                warn!("the broker did not answer the keepalive ping");
                TransportEvent::PingTimeout
            } else {
                // The core's status notice (logged as a warning) carries the diagnosis.
                let (cause, diagnosis) = match diagnosis {
                    Diagnosis::ClosedByBroker { .. } => (
                        DisconnectCause::Broker,
                        "it gave no reason (a broker restart, another connection with this \
                         client id, or on AWS IoT an action the device policy forbids)"
                            .to_owned(),
                    ),
                    other => (DisconnectCause::Network, other.to_string()),
                };
                TransportEvent::Disconnected { cause, diagnosis }
            }
        } else if let Diagnosis::BrokerRefused { code } = diagnosis {
            TransportEvent::ConnectRefused { code }
        } else if diagnosis == Diagnosis::ClientCertificateRejected(ClientCertRejection::Revoked) {
            TransportEvent::CredentialsRefused {
                diagnosis: diagnosis.to_string(),
            }
        } else {
            TransportEvent::ConnectFailed {
                diagnosis: diagnosis.to_string(),
            }
        };
        let now = self.now();
        self.device.transport(now, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "Name:\tacorn\nVmPeak:\t  20000 kB\nVmRSS:\t    8612 kB\nThreads:\t2\n";
        assert_eq!(rss_bytes(status), Some(8612 * 1024));
        assert_eq!(rss_bytes("VmRSS: lots"), None);
        assert_eq!(rss_bytes("Name: x"), None);
        // This process has some resident memory.
        assert!(host_facts().rss_bytes.is_some_and(|b| b > 0));
    }
}
