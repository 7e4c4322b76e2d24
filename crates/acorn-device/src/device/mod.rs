//! The device state machine: [`Device`].

mod heartbeat;
mod ledger;
#[cfg(feature = "rotation")]
#[path = "rotate_full.rs"]
mod rotate;
#[cfg(not(feature = "rotation"))]
#[path = "rotate_off.rs"]
mod rotate;
mod status;

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;

use acorn_mqtt::{
    Action as SessionAction, ButtonPressMessage, ConnectionStatus, DeviceSettings, DeviceStatus,
    Event, PublishId, Session, Stats, Topics,
};
use rand_core::RngCore;

use crate::config::{CertificateFacts, DeviceConfig, HostFacts};
use crate::cooldown::Cooldown;
use crate::io::{Action, Connect, Now, PressOutcome, Publish, Tag, TransportEvent};
use crate::notice::Notice;
use crate::presses::{MemoryPresses, PressStore};
use crate::store::SettingsStore;
use crate::Error;

use heartbeat::HeartbeatClock;
use ledger::Ledger;
use rotate::Rotator;

/// Where the device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Taking presses, answering requests, reconnecting.
    Running,
    /// `offline` sent; waiting (until `deadline`) for its PUBACK. Nothing new is sent.
    Stopping { deadline: u64 },
    /// Done: [`Action::ShutdownComplete`] was emitted; every input is ignored.
    Stopped,
}

/// A snapshot of the device, for a `status` command or a console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The device id.
    pub device_id: String,
    /// The connection status.
    pub status: ConnectionStatus,
    /// Session counters.
    pub stats: Stats,
    /// The settings in effect.
    pub settings: DeviceSettings,
    /// How long the connection has been up, when connected.
    pub connected_for_ms: Option<u64>,
    /// Milliseconds since [`Device::start`].
    pub uptime_ms: u64,
}

/// The Acorn Pups device application as a sans-IO state machine.
///
/// `R` is the random source of the session's backoff jitter (the chip's hardware RNG, or
/// `StdRng` on Linux); `S` keeps the settings ([`SettingsStore`]); `Q` keeps the presses until
/// their PUBACK ([`PressStore`]: an NVS partition of its own on a device, RAM by default). See
/// the crate docs for the driver loop.
#[derive(Debug)]
pub struct Device<R, S, Q = MemoryPresses> {
    session: Session<R>,
    store: S,
    presses: Q,
    ledger: Ledger,
    heartbeat: HeartbeatClock,
    rotator: Rotator,
    host: HostFacts,
    topics: Topics,
    firmware_version: String,
    certificate: CertificateFacts,
    settings: DeviceSettings,
    settings_warning: Option<String>,
    cooldown: Cooldown,
    offline_ack_timeout_ms: u64,
    reconnect_reply_timeout_ms: u64,
    actions: VecDeque<Action>,
    phase: Phase,
    /// Latest monotonic time seen (inputs earlier than it count as it).
    mono_ms: u64,
    /// Wall clock of the latest input, for message timestamps.
    unix_ms: u64,
    started_at: Option<u64>,
    /// A `reconnect` command waits for its reply's PUBACK (or this deadline).
    reconnect_after: Option<(PublishId, u64)>,
    /// Connected, `online` not yet sent.
    online_pending: bool,
    /// A SUBSCRIBE is awaiting its SUBACK.
    subscribing: bool,
    /// While stopping: the connection is gone, so the `offline` PUBACK cannot come.
    offline_lost: bool,
}

impl<R: RngCore, S: SettingsStore> Device<R, S> {
    /// Checks `config`, loads the settings from `store` (the defaults when none are stored or
    /// they cannot be read: see [`Device::settings_warning`]) and makes the session, with the
    /// presses kept in RAM ([`MemoryPresses`]). Nothing happens until [`Device::start`].
    pub fn new(config: DeviceConfig, store: S, rng: R) -> Result<Self, Error> {
        Self::with_press_store(config, store, MemoryPresses::default(), rng)
    }
}

impl<R: RngCore, S: SettingsStore, Q: PressStore> Device<R, S, Q> {
    /// Like [`Device::new`], with the presses kept in `presses` (the durable queue): its
    /// presses from before this start are delivered first, oldest first (see
    /// [`Device::recovered_presses`]); problems reading it are in
    /// [`Device::press_queue_warnings`].
    pub fn with_press_store(
        config: DeviceConfig,
        mut store: S,
        mut presses: Q,
        mut rng: R,
    ) -> Result<Self, Error> {
        let topics = config.validate()?;
        let ledger = Ledger::open(&mut presses, &config, rng.next_u32());
        let session = Session::new(config.session, rng)?;
        let (settings, settings_warning) = match store.load() {
            Ok(Some(settings)) => (settings, None),
            Ok(None) => (DeviceSettings::default(), None),
            Err(e) => (
                DeviceSettings::default(),
                Some(format!("{e}; using the defaults")),
            ),
        };
        Ok(Self {
            session,
            store,
            presses,
            ledger,
            heartbeat: HeartbeatClock::new(config.heartbeat_override_ms),
            rotator: Rotator::new(config.rotation),
            host: HostFacts::default(),
            topics,
            firmware_version: config.firmware_version,
            certificate: config.certificate,
            settings,
            settings_warning,
            cooldown: Cooldown::new(config.cooldown_entries),
            offline_ack_timeout_ms: config.offline_ack_timeout_ms,
            reconnect_reply_timeout_ms: config.reconnect_reply_timeout_ms,
            actions: VecDeque::new(),
            phase: Phase::Running,
            mono_ms: 0,
            unix_ms: 0,
            started_at: None,
            reconnect_after: None,
            online_pending: false,
            subscribing: false,
            offline_lost: false,
        })
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Starts connecting (the first [`Action::Connect`] follows at once). Uptime counts from
    /// here. Ignored once started, and after shutdown.
    pub fn start(&mut self, now: Now) {
        if self.phase != Phase::Running || self.started_at.is_some() {
            return;
        }
        self.observe(now);
        self.started_at = Some(self.mono_ms);
        if self.ledger.recovered() > 0 {
            self.notice(Notice::PressesRecovered {
                count: self.ledger.recovered(),
            });
        }
        self.session.handle(self.mono_ms, Event::Start);
        self.feed_presses();
        self.pump();
    }

    /// A press of button `button` (its RF id), with the button's battery level in percent
    /// when known. A press of the same button within the `cooldownMs` setting of its last
    /// reported press is not reported ([`PressOutcome::CooledDown`]); any other gets a
    /// `pressId`, is written to the press store before this returns, and is sent at QoS 1 in
    /// order, now or after the next connect (or the next start); it leaves the store once its
    /// PUBACK arrives. A full queue drops its oldest press ([`Notice::PressDropped`], counted
    /// as `droppedPresses`): the button is never refused.
    ///
    /// Errors: an empty or too long button id, a battery level over 100, or a device that is
    /// shutting down ([`Error::Stopped`]).
    pub fn press(
        &mut self,
        now: Now,
        button: &str,
        battery: Option<u8>,
    ) -> Result<PressOutcome, Error> {
        if self.phase != Phase::Running {
            return Err(Error::Stopped);
        }
        self.observe(now);
        let cooldown_ms = self.settings.cooldown_ms;
        if self
            .cooldown
            .is_cooling(button, self.mono_ms, u64::from(cooldown_ms))
        {
            self.notice(Notice::PressCooledDown {
                button: button.into(),
                cooldown_ms,
            });
            return Ok(PressOutcome::CooledDown);
        }
        // Checked as the message will be built, before anything is stored.
        ButtonPressMessage::new(self.topics.device_id(), button, self.unix_ms, battery)?;
        let id = self.enqueue_press(button, battery);
        self.cooldown
            .record(button, self.mono_ms, u64::from(cooldown_ms));
        self.pump();
        Ok(PressOutcome::Queued(id))
    }

    /// Something the transport reported. Ignored after shutdown.
    pub fn transport(&mut self, now: Now, event: TransportEvent<'_>) {
        if self.phase == Phase::Stopped {
            return;
        }
        self.observe(now);
        let t = self.mono_ms;
        match event {
            TransportEvent::ConnAck { session_present } => {
                self.heartbeat.connected(t);
                self.session.handle(t, Event::ConnAck { session_present });
            }
            TransportEvent::ConnectRefused { code } => {
                self.rotation_connection_failed(acorn_mqtt::connack_meaning(code));
                self.session.handle(t, Event::ConnectRefused { code });
            }
            TransportEvent::ConnectFailed { diagnosis } => {
                self.rotation_connection_failed(&diagnosis);
                self.session.handle(t, Event::ConnectFailed { diagnosis });
            }
            TransportEvent::CredentialsRefused { diagnosis } => {
                self.rotation_connection_failed(&diagnosis);
                self.session
                    .handle(t, Event::CredentialsRefused { diagnosis });
            }
            TransportEvent::Disconnected { cause, diagnosis } => {
                if matches!(self.phase, Phase::Stopping { .. }) {
                    self.offline_lost = true;
                }
                self.rotation_connection_failed(&diagnosis);
                self.session
                    .handle(t, Event::Disconnected { cause, diagnosis });
            }
            TransportEvent::PingResponse => self.session.handle(t, Event::PingResponse),
            TransportEvent::PingTimeout => self.session.handle(t, Event::PingTimeout),
            TransportEvent::PubAck(Tag::Message(id)) => {
                self.session.handle(t, Event::PublishAcked(id));
            }
            TransportEvent::PubAck(Tag::Offline)
                if matches!(self.phase, Phase::Stopping { .. }) =>
            {
                self.drain_session();
                self.finish(Some(Notice::OfflineDelivered));
                return;
            }
            TransportEvent::PubAck(_) | TransportEvent::Activity => {
                self.session.handle(t, Event::MessageReceived);
            }
            TransportEvent::SubAck { granted }
                if !self.subscribing && self.rotator.takes_suback() =>
            {
                self.session.handle(t, Event::MessageReceived);
                self.rotation_suback(granted);
            }
            TransportEvent::SubAck { granted } => {
                if !granted {
                    self.notice(Notice::SubscribeRefused);
                }
                self.subscribing = false;
                self.session.handle(t, Event::SubscribeAcked { granted });
            }
            TransportEvent::Message { topic, payload } => {
                self.session.handle(t, Event::MessageReceived);
                if !self.rotation_message(topic, payload) {
                    self.on_inbound(topic, payload);
                }
            }
        }
        self.pump();
    }

    /// Time passed: call it once [`Device::poll_timeout`] is reached (earlier is harmless).
    pub fn tick(&mut self, now: Now) {
        self.observe(now);
        match self.phase {
            Phase::Running => {
                if self
                    .reconnect_after
                    .is_some_and(|(_, deadline)| self.mono_ms >= deadline)
                {
                    self.reconnect_after = None;
                    self.notice(Notice::Reconnecting);
                    self.session.handle(self.mono_ms, Event::Reconnect);
                }
                self.session.handle(self.mono_ms, Event::Tick);
                self.pump();
                self.rotation_tick();
                self.beat_if_due();
                self.pump();
            }
            Phase::Stopping { deadline } if self.mono_ms >= deadline => {
                self.finish(Some(Notice::OfflineNotAcknowledged));
            }
            Phase::Stopping { .. } | Phase::Stopped => {}
        }
    }

    /// Begins a clean shutdown: when connected, an `offline` status is sent and its PUBACK
    /// awaited (at most `offline_ack_timeout_ms`, 3 s by default; keep calling
    /// [`Device::transport`] and [`Device::tick`]); then the session stops, the connection is
    /// closed ([`Action::Disconnect`]) and [`Action::ShutdownComplete`] ends it. Nothing else
    /// is sent meanwhile: no press, reply or reconnect. Calling it again does nothing.
    pub fn shutdown(&mut self, now: Now) {
        if self.phase != Phase::Running {
            return;
        }
        self.observe(now);
        self.notice(Notice::ShuttingDown);
        if *self.session.status() == ConnectionStatus::Connected {
            self.publish_presence(DeviceStatus::Offline, Tag::Offline);
            self.phase = Phase::Stopping {
                deadline: self.mono_ms.saturating_add(self.offline_ack_timeout_ms),
            };
            self.offline_lost = false;
            self.pump();
        } else {
            self.finish(None);
        }
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next action to carry out, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Takes every pending action, oldest first.
    pub fn drain_actions(&mut self) -> impl Iterator<Item = Action> + '_ {
        self.actions.drain(..)
    }

    /// The monotonic time (ms) at which to call [`Device::tick`]; `None` when no timer runs
    /// (before start, after shutdown).
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Running => {
                let reconnect = self.reconnect_after.map(|(_, deadline)| deadline);
                [
                    self.session.poll_timeout(),
                    reconnect,
                    self.heartbeat.due_at(),
                    self.rotator.next_timer(),
                ]
                .into_iter()
                .flatten()
                .min()
            }
            Phase::Stopping { deadline } => Some(deadline),
            Phase::Stopped => None,
        }
    }

    // ----- state --------------------------------------------------------------------------

    /// The device id.
    pub fn device_id(&self) -> &str {
        self.topics.device_id()
    }

    /// The device's four topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The firmware version reported in status messages.
    pub fn firmware_version(&self) -> &str {
        &self.firmware_version
    }

    /// The settings in effect.
    pub fn settings(&self) -> DeviceSettings {
        self.settings
    }

    /// Why the stored settings were not used at construction (they could not be read), if so.
    pub fn settings_warning(&self) -> Option<&str> {
        self.settings_warning.as_deref()
    }

    /// The settings store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The settings store, to change what it holds outside the device (e.g. a factory
    /// reset); the settings in effect change only through updates or a new [`Device`].
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Ends the device and gives its settings store back (e.g. the NVS partition, to hand
    /// on after a shutdown).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The connection status.
    pub fn status(&self) -> &ConnectionStatus {
        self.session.status()
    }

    /// Session counters, with the current queue and in-flight sizes.
    pub fn stats(&self) -> Stats {
        self.session.stats()
    }

    /// The session (read-only: its configuration, status and counters).
    pub fn session(&self) -> &Session<R> {
        &self.session
    }

    /// What the driver said about the certificate.
    pub fn certificate(&self) -> &CertificateFacts {
        &self.certificate
    }

    /// Whole days the certificate has left at wall-clock time `unix_ms`, when known.
    pub fn certificate_days_left(&self, unix_ms: u64) -> Option<i64> {
        self.certificate.days_left(unix_ms)
    }

    /// Buttons remembered for the cooldown (at most `cooldown_entries`).
    pub fn remembered_buttons(&self) -> usize {
        self.cooldown.len()
    }

    /// Presses waiting for their PUBACK (in the press store), oldest first.
    pub fn queued_presses(&self) -> impl Iterator<Item = &crate::QueuedPress> + '_ {
        self.ledger.pending()
    }

    /// How many presses from before this start the press store held.
    pub fn recovered_presses(&self) -> usize {
        self.ledger.recovered()
    }

    /// Presses dropped because the queue was full, over the device's life.
    pub fn dropped_presses(&self) -> u32 {
        self.ledger.dropped()
    }

    /// What went wrong reading the press store at construction (unreadable store or
    /// records), if anything.
    pub fn press_queue_warnings(&self) -> &[String] {
        self.ledger.warnings()
    }

    /// The press store.
    pub fn press_store(&self) -> &Q {
        &self.presses
    }

    /// Ends the device and gives its stores back (settings, presses).
    pub fn into_stores(self) -> (S, Q) {
        (self.store, self.presses)
    }

    /// What the driver last said about the host (free heap or RSS, Wi-Fi signal, reset
    /// reason), sent in heartbeats.
    pub fn set_host_facts(&mut self, facts: HostFacts) {
        self.host = facts;
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.phase != Phase::Running
    }

    /// Whether shutdown is over ([`Action::ShutdownComplete`] was emitted).
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// The status, counters and settings at `now`.
    pub fn snapshot(&self, now: Now) -> Snapshot {
        let mono = now.mono_ms.max(self.mono_ms);
        Snapshot {
            device_id: self.topics.device_id().into(),
            status: self.session.status().clone(),
            stats: self.session.stats(),
            settings: self.settings,
            connected_for_ms: self.session.connected_for_ms(mono),
            uptime_ms: self.started_at.map_or(0, |t| mono.saturating_sub(t)),
        }
    }

    // ----- internals ----------------------------------------------------------------------

    fn observe(&mut self, now: Now) {
        self.mono_ms = self.mono_ms.max(now.mono_ms);
        self.unix_ms = now.unix_ms;
    }

    fn uptime_ms(&self) -> u64 {
        self.started_at
            .map_or(0, |t| self.mono_ms.saturating_sub(t))
    }

    /// Queues an action after everything the session asked for so far.
    fn emit(&mut self, action: Action) {
        self.drain_session();
        self.actions.push_back(action);
    }

    fn notice(&mut self, notice: Notice) {
        self.emit(Action::Notice(notice));
    }

    /// Carries the session's actions over, in order; then, while stopping, ends the shutdown
    /// if the connection is gone; then announces `online` once the device can receive (its
    /// subscriptions acknowledged, or kept by the broker), so that a backend that reacts to
    /// `online` with a command never races the SUBSCRIBE.
    fn pump(&mut self) {
        self.drain_session();
        if matches!(self.phase, Phase::Stopping { .. }) && self.offline_lost {
            self.finish(Some(Notice::OfflineNotAcknowledged));
        }
        if self.phase == Phase::Running
            && self.online_pending
            && !self.subscribing
            && *self.session.status() == ConnectionStatus::Connected
        {
            self.online_pending = false;
            self.publish_presence(DeviceStatus::Online, Tag::Online);
            let interval = self.heartbeat_interval_ms();
            self.heartbeat.schedule(self.mono_ms, interval);
            self.rotation_online();
            // What the rotation queued goes out in this same turn.
            self.drain_session();
        }
    }

    fn drain_session(&mut self) {
        while let Some(action) = self.session.poll_action() {
            match self.phase {
                Phase::Running => self.act(action),
                _ => self.act_stopping(action),
            }
        }
    }

    fn act(&mut self, action: SessionAction) {
        match action {
            SessionAction::Connect { attempt } => {
                self.online_pending = false;
                self.subscribing = false;
                self.heartbeat.connecting(self.mono_ms);
                let config = self.session.config();
                let connect = Connect {
                    attempt,
                    client_id: config.client_id.clone(),
                    keep_alive_secs: config.keep_alive_secs,
                    clean_session: false,
                    will: self.last_will(self.unix_ms),
                };
                self.actions.push_back(Action::Connect(connect));
            }
            SessionAction::Subscribe(filters) => {
                self.subscribing = true;
                self.actions.push_back(Action::Subscribe(filters));
            }
            SessionAction::Publish(p) => self.actions.push_back(Action::Publish(Publish {
                tag: Tag::Message(p.id),
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retransmit: p.retransmit,
            })),
            SessionAction::Disconnect => self.actions.push_back(Action::Disconnect),
            SessionAction::WaitUntil(at) => {
                let in_ms = at.saturating_sub(self.mono_ms);
                self.actions
                    .push_back(Action::Notice(Notice::NextAttempt { in_ms }));
            }
            SessionAction::ReportStatus(status) => {
                if status == ConnectionStatus::Connected {
                    self.online_pending = true;
                } else {
                    // The connection a `reconnect` command wanted to drop is gone already.
                    self.reconnect_after = None;
                    self.online_pending = false;
                    self.heartbeat.disconnected();
                    self.rotator.connection_lost();
                }
                self.actions
                    .push_back(Action::Notice(Notice::Status(status)));
            }
            SessionAction::Delivered(id) if self.ledger.is_handed(id) => self.press_delivered(id),
            SessionAction::Delivered(id) => {
                self.actions
                    .push_back(Action::Notice(Notice::Delivered(id)));
                if self
                    .reconnect_after
                    .is_some_and(|(pending, _)| pending == id)
                {
                    self.reconnect_after = None;
                    self.actions.push_back(Action::Notice(Notice::Reconnecting));
                    // Its actions follow in this same loop.
                    self.session.handle(self.mono_ms, Event::Reconnect);
                }
            }
            SessionAction::Dropped { id, reason } if self.ledger.is_handed(id) => {
                self.press_withdrawn(id, reason);
            }
            SessionAction::Dropped { id, reason } => self
                .actions
                .push_back(Action::Notice(Notice::Dropped { id, reason })),
            SessionAction::Health(report) => self
                .actions
                .push_back(Action::Notice(Notice::Health(report))),
        }
    }

    /// While stopping only bookkeeping goes out (no reconnect, no new publish); once stopped,
    /// the session's final DISCONNECT too.
    fn act_stopping(&mut self, action: SessionAction) {
        match action {
            SessionAction::Disconnect => {
                if matches!(self.phase, Phase::Stopping { .. }) {
                    // The session dropped the connection (e.g. a silent broker).
                    self.offline_lost = true;
                }
                self.actions.push_back(Action::Disconnect);
            }
            SessionAction::ReportStatus(status) => {
                if status != ConnectionStatus::Connected {
                    self.offline_lost = true;
                }
                self.actions
                    .push_back(Action::Notice(Notice::Status(status)));
            }
            // A press acknowledged while stopping leaves the store (none is handed over now).
            SessionAction::Delivered(id) if self.ledger.is_handed(id) => self.press_delivered(id),
            SessionAction::Delivered(id) => self
                .actions
                .push_back(Action::Notice(Notice::Delivered(id))),
            SessionAction::Dropped { id, reason } => self
                .actions
                .push_back(Action::Notice(Notice::Dropped { id, reason })),
            _ => {}
        }
    }

    /// Stops the session (its DISCONNECT goes out) and ends the shutdown.
    fn finish(&mut self, outcome: Option<Notice>) {
        self.drain_session();
        if let Some(notice) = outcome {
            self.actions.push_back(Action::Notice(notice));
        }
        self.phase = Phase::Stopped;
        self.reconnect_after = None;
        self.online_pending = false;
        self.session.handle(self.mono_ms, Event::Stop);
        self.drain_session();
        self.actions.push_back(Action::ShutdownComplete);
    }
}
