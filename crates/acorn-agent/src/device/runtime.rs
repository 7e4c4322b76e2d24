//! The runtime task: one loop that carries out the session's actions, feeds it connection
//! events, requests and timer ticks, and answers inbound messages.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use acorn_mqtt::{
    parse_inbound, request_id_of, Action, ButtonPressMessage, CommandKind, CommandResult,
    ConnectionStatus, DeviceSettings, DeviceStatus, DeviceStatusMessage, DisconnectCause, Event,
    Inbound, PublishId, PublishRequest, QoS, Session,
};
use rand::rngs::StdRng;
use rumqttc::{ConnectionError, MqttOptions, NetworkOptions, Outgoing, Packet, StateError};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::link::{Link, LinkEvent, Tracked};
use super::{Device, DeviceError, DeviceEvent, PressOutcome, Request, Snapshot};
use crate::image::DeviceImage;
use acorn_transport::{ClientCertRejection, Diagnosis};

/// How long shutdown waits for the PUBACK of the `offline` status.
const OFFLINE_ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a `reconnect` command waits for the PUBACK of its reply before reconnecting.
const RECONNECT_REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Cooldown entries kept before old ones are pruned.
const COOLDOWN_ENTRIES: usize = 1024;

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

pub(super) struct Runtime {
    session: Session<StdRng>,
    start: Instant,
    image: DeviceImage<acorn_nvs::FileFlash>,
    settings: DeviceSettings,
    topics: acorn_mqtt::Topics,
    device_id: String,
    firmware_version: String,
    mqtt: MqttOptions,
    network: NetworkOptions,
    capacity: usize,
    address: String,
    link: Option<Link>,
    generation: u64,
    link_tx: mpsc::UnboundedSender<LinkEvent>,
    link_rx: mpsc::UnboundedReceiver<LinkEvent>,
    closing: Vec<JoinHandle<()>>,
    events: broadcast::Sender<DeviceEvent>,
    last_press: HashMap<String, u64>,
    /// A `reconnect` command waits for its reply's PUBACK (or this deadline).
    reconnect_after: Option<(PublishId, Instant)>,
    offline_acked: bool,
    /// Connected, `online` not yet sent.
    online_pending: bool,
    /// A SUBSCRIBE is awaiting its SUBACK.
    subscribing: bool,
}

impl Runtime {
    pub(super) fn new(device: Device, events: broadcast::Sender<DeviceEvent>) -> Self {
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        for note in device.warnings() {
            warn!(device = %device.loaded.device_id, "{note}");
        }
        Self {
            session: device.session,
            start: Instant::now(),
            settings: device.settings,
            topics: device.topics,
            device_id: device.loaded.device_id.clone(),
            firmware_version: device.firmware_version,
            network: device.session_options.network_options(),
            capacity: device.session_options.channel_capacity,
            address: device.session_options.address(),
            image: device.image,
            mqtt: device.mqtt_options,
            link: None,
            generation: 0,
            link_tx,
            link_rx,
            closing: Vec::new(),
            events,
            last_press: HashMap::new(),
            reconnect_after: None,
            offline_acked: false,
            online_pending: false,
            subscribing: false,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn emit(&self, event: DeviceEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    pub(super) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        info!(device = %self.device_id, broker = %self.address, "device starting");
        let now = self.now();
        self.session.handle(now, Event::Start);
        loop {
            self.carry_out();
            let wake = self
                .session
                .poll_timeout()
                .map(|t| self.start + Duration::from_millis(t))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let wake = match self.reconnect_after {
                Some((_, deadline)) => wake.min(deadline),
                None => wake,
            };
            tokio::select! {
                Some(event) = self.link_rx.recv() => self.on_link_event(event),
                request = requests.recv() => match request {
                    Some(Request::Press { button, battery, reply }) => {
                        let outcome = self.press(&button, battery);
                        let _ = reply.send(outcome);
                    }
                    Some(Request::Snapshot { reply }) => {
                        let _ = reply.send(self.snapshot());
                    }
                    Some(Request::Shutdown) | None => break,
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    if self.reconnect_after.is_some_and(|(_, d)| Instant::now() >= d) {
                        self.reconnect_after = None;
                        let now = self.now();
                        self.session.handle(now, Event::Reconnect);
                    }
                    let now = self.now();
                    self.session.handle(now, Event::Tick);
                }
            }
        }
        self.shutdown().await;
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            device_id: self.device_id.clone(),
            status: self.session.status().clone(),
            stats: self.session.stats(),
            settings: self.settings,
            connected_for_ms: self.session.connected_for_ms(self.now()),
        }
    }

    fn press(&mut self, button: &str, battery: Option<u8>) -> Result<PressOutcome, DeviceError> {
        let now = self.now();
        let cooldown = u64::from(self.settings.cooldown_ms);
        if let Some(&last) = self.last_press.get(button) {
            if now.saturating_sub(last) < cooldown {
                debug!(
                    button,
                    cooldown_ms = cooldown,
                    "press within the cooldown: not reported"
                );
                return Ok(PressOutcome::CooledDown);
            }
        }
        let message = ButtonPressMessage::new(&self.device_id, button, unix_ms(), battery)?;
        let payload = message.to_json()?;
        let id = self.session.publish(
            now,
            PublishRequest::qos1(self.topics.button_press(), payload),
        )?;
        if self.last_press.len() >= COOLDOWN_ENTRIES {
            self.last_press
                .retain(|_, t| now.saturating_sub(*t) < cooldown);
            if self.last_press.len() >= COOLDOWN_ENTRIES {
                // Bounded memory over a perfect cooldown: at worst a press is reported twice.
                self.last_press.clear();
            }
        }
        self.last_press.insert(button.to_owned(), now);
        info!(button, battery = ?battery, id = id.0, "button press queued");
        Ok(PressOutcome::Queued(id))
    }

    /// Carries out every pending action of the session, in order; then announces `online`
    /// once the device can receive (its subscriptions acknowledged, or kept by the broker), so
    /// a backend that reacts to `online` with a command never races the SUBSCRIBE.
    fn carry_out(&mut self) {
        while let Some(action) = self.session.poll_action() {
            self.act(action);
        }
        if self.online_pending && !self.subscribing {
            self.online_pending = false;
            self.publish_presence(DeviceStatus::Online, Tracked::Online);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Connect { attempt } => {
                if let Some(old) = self.link.take() {
                    self.closing.push(old.close());
                }
                self.generation += 1;
                self.online_pending = false;
                self.subscribing = false;
                info!(broker = %self.address, attempt, "connecting");
                self.link = Some(Link::open(
                    self.generation,
                    self.mqtt.clone(),
                    self.network.clone(),
                    self.capacity,
                    self.link_tx.clone(),
                ));
            }
            Action::Subscribe(filters) => {
                debug!(?filters, "subscribing (the broker has no session for us)");
                if let Some(link) = self.link.as_mut() {
                    match link.subscribe(&filters) {
                        Ok(()) => self.subscribing = true,
                        Err(e) => self.transport_stuck(&e),
                    }
                }
            }
            Action::Publish(publish) => {
                debug!(topic = %publish.topic, id = publish.id.0, resend = publish.retransmit, bytes = publish.payload.len(), "publish");
                let result = match self.link.as_mut() {
                    Some(link) => link.publish(
                        &publish.topic,
                        qos(publish.qos),
                        publish.payload,
                        Tracked::Session(publish.id),
                    ),
                    None => Err("no connection".to_owned()),
                };
                if let Err(e) = result {
                    self.transport_stuck(&e);
                }
            }
            Action::Disconnect => {
                if let Some(link) = self.link.take() {
                    debug!("closing the connection");
                    self.closing.push(link.close());
                }
                self.closing.retain(|h| !h.is_finished());
            }
            Action::WaitUntil(at) => {
                let wait = at.saturating_sub(self.now());
                debug!(
                    "next connect attempt in {}.{:03} s",
                    wait / 1000,
                    wait % 1000
                );
            }
            Action::ReportStatus(status) => {
                if status != ConnectionStatus::Connected {
                    // The connection a `reconnect` command wanted to drop is gone already.
                    self.reconnect_after = None;
                }
                match &status {
                    ConnectionStatus::Error(reason) => warn!(status = "error", "{reason}"),
                    ConnectionStatus::Connected => {
                        info!(status = "connected", broker = %self.address, "connected");
                        self.online_pending = true;
                    }
                    ConnectionStatus::Connecting => debug!(status = "connecting"),
                    ConnectionStatus::Disconnected => info!(status = "disconnected"),
                }
                self.emit(DeviceEvent::Status(status));
            }
            Action::Delivered(id) => {
                debug!(id = id.0, "delivered (PUBACK)");
                if self
                    .reconnect_after
                    .is_some_and(|(pending, _)| pending == id)
                {
                    self.reconnect_after = None;
                    info!("reconnecting, as the reconnect command asked");
                    let now = self.now();
                    self.session.handle(now, Event::Reconnect);
                }
                self.emit(DeviceEvent::Delivered(id));
            }
            Action::Dropped { id, reason } => {
                warn!(id = id.0, ?reason, "queued message dropped");
                self.emit(DeviceEvent::Dropped { id, reason });
            }
            Action::Health(report) => {
                let stats = &report.stats;
                info!(
                    status = %report.status,
                    healthy = report.healthy,
                    connected_for_s = report.connected_for_ms.map(|ms| ms / 1000),
                    broker_silent_s = report.broker_silent_ms.map(|ms| ms / 1000),
                    queued = stats.queued,
                    in_flight = stats.in_flight,
                    delivered = stats.delivered,
                    dropped = stats.dropped_full + stats.expired,
                    connects = stats.connects,
                    failures = stats.failures,
                    slow_retry = stats.slow_mode,
                    "health"
                );
                self.emit(DeviceEvent::Health(report));
            }
        }
    }

    /// rumqttc's request channel refused a request: treat the connection as lost.
    fn transport_stuck(&mut self, why: &str) {
        warn!("the MQTT client did not take a request ({why}); dropping the connection");
        if let Some(link) = self.link.take() {
            self.closing.push(link.close());
        }
        let now = self.now();
        self.session.handle(
            now,
            Event::Disconnected {
                cause: DisconnectCause::Network,
                diagnosis: format!("the MQTT client did not take a request ({why})"),
            },
        );
    }

    /// Sends a presence status directly (not queued: a stale presence is never re-sent).
    fn publish_presence(&mut self, status: DeviceStatus, tracked: Tracked) {
        let message =
            DeviceStatusMessage::new(&self.device_id, unix_ms(), status, &self.firmware_version);
        let Ok(payload) = message.to_json() else {
            return;
        };
        let topic = self.topics.status().to_owned();
        if let Some(link) = self.link.as_mut() {
            if let Err(e) = link.publish(&topic, rumqttc::QoS::AtLeastOnce, payload, tracked) {
                warn!("could not send the {status:?} status: {e}");
            }
        }
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        let now = self.now();
        if self.link.as_ref().map(|l| l.generation) != Some(event.generation) {
            return;
        }
        match event.event {
            Ok(rumqttc::Event::Incoming(packet)) => match packet {
                Packet::ConnAck(ack) => {
                    if let Some(link) = self.link.as_mut() {
                        link.connected = true;
                    }
                    debug!(session_present = ack.session_present, "CONNACK");
                    self.session.handle(
                        now,
                        Event::ConnAck {
                            session_present: ack.session_present,
                        },
                    );
                }
                Packet::PubAck(ack) => match self.link.as_mut().and_then(|l| l.on_puback(ack.pkid))
                {
                    Some(Tracked::Session(id)) => self.session.handle(now, Event::PublishAcked(id)),
                    Some(Tracked::Offline) => self.offline_acked = true,
                    Some(Tracked::Online) | None => {
                        self.session.handle(now, Event::MessageReceived)
                    }
                },
                Packet::SubAck(ack) => {
                    let granted = !ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    if !granted {
                        warn!("the broker refused a subscription: the device policy must allow its settings and commands topics");
                    }
                    self.subscribing = false;
                    self.session.handle(now, Event::SubscribeAcked { granted });
                }
                Packet::PingResp => self.session.handle(now, Event::PingResponse),
                Packet::Publish(publish) => {
                    self.session.handle(now, Event::MessageReceived);
                    let topic = publish.topic.clone();
                    self.on_inbound(&topic, &publish.payload);
                }
                _ => {}
            },
            Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(link) = self.link.as_mut() {
                    link.on_outgoing_publish(pkid);
                }
            }
            Ok(rumqttc::Event::Outgoing(_)) => {}
            Err(err) => self.on_link_error(&err),
        }
    }

    fn on_link_error(&mut self, err: &ConnectionError) {
        let Some(link) = self.link.take() else {
            return;
        };
        let connected = link.connected;
        // The task has ended (it stops at its first error).
        drop(link);
        let now = self.now();
        let diagnosis = Diagnosis::from_connection_error(err, &self.address);
        if connected {
            if matches!(err, ConnectionError::MqttState(StateError::AwaitPingResp)) {
                warn!("the broker did not answer the keepalive ping");
                self.session.handle(now, Event::PingTimeout);
                return;
            }
            // The session's status line (logged as a warning) carries the diagnosis.
            let (cause, text) = match diagnosis {
                Diagnosis::ClosedByBroker { .. } => (
                    DisconnectCause::Broker,
                    "it gave no reason (a broker restart, another connection with this client \
                     id, or on AWS IoT an action the device policy forbids)"
                        .to_owned(),
                ),
                other => (DisconnectCause::Network, other.to_string()),
            };
            self.session.handle(
                now,
                Event::Disconnected {
                    cause,
                    diagnosis: text,
                },
            );
        } else if let Diagnosis::BrokerRefused { code } = diagnosis {
            self.session.handle(now, Event::ConnectRefused { code });
        } else if diagnosis == Diagnosis::ClientCertificateRejected(ClientCertRejection::Revoked) {
            self.session.handle(
                now,
                Event::CredentialsRefused {
                    diagnosis: diagnosis.to_string(),
                },
            );
        } else {
            self.session.handle(
                now,
                Event::ConnectFailed {
                    diagnosis: diagnosis.to_string(),
                },
            );
        }
    }

    /// Validates and answers a settings update or command; a bad one is answered with an
    /// error status and logged, never more.
    fn on_inbound(&mut self, topic: &str, payload: &[u8]) {
        let now_unix = unix_ms();
        let reply = match parse_inbound(&self.topics, topic, payload) {
            Ok(Inbound::Settings(update)) => {
                let mut new = self.settings;
                new.apply(&update);
                match self.image.save_settings(&new) {
                    Ok(()) => {
                        self.settings = new;
                        info!(?new, request_id = ?update.request_id, "settings applied and saved");
                        self.emit(DeviceEvent::SettingsApplied(new));
                        let mut reply = DeviceStatusMessage::reply_ok(
                            &self.device_id,
                            now_unix,
                            &self.firmware_version,
                            update.request_id.as_deref(),
                            "settings",
                        );
                        reply.settings = Some(new);
                        reply
                    }
                    Err(e) => {
                        warn!("settings not applied: {e}");
                        let mut reply = DeviceStatusMessage::new(
                            &self.device_id,
                            now_unix,
                            DeviceStatus::Error,
                            &self.firmware_version,
                        );
                        reply.request_id = update.request_id.clone();
                        reply.command = Some("settings".to_owned());
                        reply.result = Some(CommandResult::Error);
                        reply.error = Some(format!("settings not applied: {e}"));
                        reply.settings = Some(self.settings);
                        reply
                    }
                }
            }
            Ok(Inbound::Command(command)) => {
                info!(command = command.command.as_str(), request_id = %command.request_id, "command");
                let mut reply = DeviceStatusMessage::reply_ok(
                    &self.device_id,
                    now_unix,
                    &self.firmware_version,
                    Some(&command.request_id),
                    command.command.as_str(),
                );
                if command.command == CommandKind::GetStatus {
                    let mut diagnostics = self.session.stats().to_diagnostics();
                    diagnostics.uptime_ms = Some(self.now());
                    diagnostics.connected_for_ms = self.session.connected_for_ms(self.now());
                    reply.settings = Some(self.settings);
                    reply.diagnostics = Some(diagnostics);
                }
                self.emit(DeviceEvent::Answered {
                    command: command.command.as_str().to_owned(),
                    request_id: command.request_id.clone(),
                });
                if command.command == CommandKind::Reconnect {
                    if let Some(id) = self.send_reply(&reply) {
                        self.reconnect_after = Some((id, Instant::now() + RECONNECT_REPLY_TIMEOUT));
                    }
                    return;
                }
                reply
            }
            Err(error) => {
                warn!(
                    topic,
                    bytes = payload.len(),
                    "rejected inbound message: {error}"
                );
                self.emit(DeviceEvent::Rejected {
                    reason: error.to_string(),
                });
                DeviceStatusMessage::rejected(
                    &self.device_id,
                    now_unix,
                    &self.firmware_version,
                    request_id_of(payload).as_deref(),
                    &error,
                )
            }
        };
        self.send_reply(&reply);
    }

    /// Queues a reply on the status topic (QoS 1).
    fn send_reply(&mut self, reply: &DeviceStatusMessage) -> Option<PublishId> {
        let payload = match reply.to_json() {
            Ok(p) => p,
            Err(e) => {
                warn!("could not encode a reply: {e}");
                return None;
            }
        };
        let now = self.now();
        match self
            .session
            .publish(now, PublishRequest::qos1(self.topics.status(), payload))
        {
            Ok(id) => Some(id),
            Err(e) => {
                warn!("could not queue a reply: {e}");
                None
            }
        }
    }

    /// Publishes `offline` when connected (waiting, bounded, for its PUBACK), stops the session
    /// and closes the connection cleanly.
    async fn shutdown(mut self) {
        info!("shutting down");
        if self.link.as_ref().is_some_and(|l| l.connected) {
            self.publish_presence(DeviceStatus::Offline, Tracked::Offline);
            let deadline = tokio::time::Instant::now() + OFFLINE_ACK_TIMEOUT;
            while !self.offline_acked && self.link.is_some() {
                match tokio::time::timeout_at(deadline, self.link_rx.recv()).await {
                    Ok(Some(event)) => self.on_link_event(event),
                    _ => break,
                }
                // Only transport bookkeeping here: no reconnect while shutting down.
                while let Some(action) = self.session.poll_action() {
                    match action {
                        Action::ReportStatus(status) => self.emit(DeviceEvent::Status(status)),
                        Action::Delivered(id) => self.emit(DeviceEvent::Delivered(id)),
                        _ => {}
                    }
                }
            }
            if self.offline_acked {
                info!("offline status delivered");
            } else {
                warn!("the offline status was not acknowledged in time");
            }
        }
        let now = self.now();
        self.session.handle(now, Event::Stop);
        while let Some(action) = self.session.poll_action() {
            if let Action::ReportStatus(status) = &action {
                self.emit(DeviceEvent::Status(status.clone()));
            }
        }
        if let Some(link) = self.link.take() {
            self.closing.push(link.close());
        }
        for handle in self.closing.drain(..) {
            let _ = tokio::time::timeout(super::link::CLOSE_TIMEOUT, handle).await;
        }
        info!("disconnected; device stopped");
    }
}
