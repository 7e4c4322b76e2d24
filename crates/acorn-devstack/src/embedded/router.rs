//! The broker's state: sessions, their subscriptions and queues, and routing. Pure data behind
//! one mutex, never held across an `.await`; the connection tasks carry out the I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Publish, SubscribeReasonCode};
use rumqttc::mqttbytes::{matches, QoS};
use tokio::sync::Notify;

use acorn_mqtt::provisioning::{local_prefix, ProvisioningTopics};

use super::{Limits, Listener};
use crate::broker::{LocalProvisioning, SERVICE_TOPICS};

/// A session is named by its listener and client id: the two listeners are separate name
/// spaces, so a certificate from one CA can never take over a session of the other's.
pub(crate) type SessionKey = (Listener, String);

/// What a client may do, decided once at CONNECT from its listener and certificate name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rights {
    /// A device (device listener): [`acorn_mqtt::DEVICE_POLICY`] on its own id, and with
    /// local provisioning its own six topics of AWS IoT's provisioning API
    /// ([`LocalProvisioning::device_patterns`]: publish its two requests, receive its four
    /// answers).
    Device {
        /// Its device id (certificate CN).
        id: String,
        /// Its provisioning topics under `acorn-local/<id>/`, when local provisioning is on.
        provisioning: Option<Box<ProvisioningTopics>>,
    },
    /// A device provisioning itself by claim (claim listener, client id
    /// `claim:<device id>`): its own six topics of the provisioning API under
    /// `acorn-claim/<client id>/`, nothing else.
    Claim {
        /// Its provisioning topics.
        provisioning: Box<ProvisioningTopics>,
    },
    /// A service identity (service listener): all of [`SERVICE_TOPICS`]; the local
    /// provisioning responder also [`LocalProvisioning::RESPONDER_TOPICS`] and
    /// [`LocalProvisioning::CLAIM_RESPONDER_TOPICS`].
    Service {
        /// Whether it is [`LocalProvisioning::responder`].
        responder: bool,
    },
}

impl Rights {
    /// The rights of a client named `name` on `listener`; `None` when the name is not one
    /// that listener takes (a device id, a `service:` identity).
    pub(crate) fn of(
        listener: Listener,
        name: &str,
        local: Option<&LocalProvisioning>,
    ) -> Option<Self> {
        match listener {
            Listener::Device => {
                acorn_mqtt::check_device_id(name).ok()?;
                // The template is checked at start, and an id is at most 128 bytes, so the
                // topics are always made; a failure only means no provisioning rights.
                let provisioning = local.and_then(|local| {
                    ProvisioningTopics::new(&local_prefix(name), &local.template)
                        .ok()
                        .map(Box::new)
                });
                Some(Rights::Device {
                    id: name.to_owned(),
                    provisioning,
                })
            }
            Listener::Claim => {
                acorn_mqtt::topics::device_of_claim_client(name)?;
                let prefix = acorn_mqtt::provisioning::local_claim_prefix(name);
                let provisioning = ProvisioningTopics::new(&prefix, &local?.template).ok()?;
                Some(Rights::Claim {
                    provisioning: Box::new(provisioning),
                })
            }
            Listener::Service => name
                .starts_with(acorn_mqtt::SERVICE_CLIENT_PREFIX)
                .then(|| Rights::Service {
                    responder: local.is_some_and(|local| local.responder == name),
                }),
        }
    }

    /// Whether `self` may publish to `topic`.
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        self.allows(topic, acorn_mqtt::Access::Publish)
    }

    /// Whether `self` may receive a message published to `topic`.
    pub(crate) fn may_receive(&self, topic: &str) -> bool {
        self.allows(topic, acorn_mqtt::Access::Subscribe)
    }

    /// Whether `self` may subscribe to `filter`: a device only to its own topics, literally
    /// (no wildcard), as its AWS IoT policy's `topicfilter` resources; a service to any filter
    /// that cannot match outside its topic trees.
    pub(crate) fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Rights::Device { .. } | Rights::Claim { .. } => self.may_receive(filter),
            Rights::Service { .. } => self.service_trees().any(|tree| {
                let root = tree.trim_end_matches('#');
                filter.starts_with(root) && filter.len() > root.len()
            }),
        }
    }

    /// The `…/#` trees a service may use.
    fn service_trees(&self) -> impl Iterator<Item = &'static str> {
        let responder = matches!(self, Rights::Service { responder: true });
        std::iter::once(SERVICE_TOPICS)
            .chain(responder.then_some(LocalProvisioning::RESPONDER_TOPICS))
            .chain(responder.then_some(LocalProvisioning::CLAIM_RESPONDER_TOPICS))
    }

    fn allows(&self, topic: &str, access: acorn_mqtt::Access) -> bool {
        match self {
            Rights::Device { id, provisioning } => {
                acorn_mqtt::DEVICE_POLICY.iter().any(|(prefix, a)| {
                    *a == access
                        && topic
                            .strip_prefix(prefix)
                            .and_then(|rest| rest.strip_prefix('/'))
                            == Some(id.as_str())
                }) || provisioning
                    .as_deref()
                    .is_some_and(|topics| provisioning_allows(topics, topic, access))
            }
            Rights::Claim { provisioning } => provisioning_allows(provisioning, topic, access),
            Rights::Service { .. } => self.service_trees().any(|tree| matches(topic, tree)),
        }
    }
}

/// A device's own provisioning topics: it publishes the two requests and receives the four
/// answers, each literally.
fn provisioning_allows(
    topics: &ProvisioningTopics,
    topic: &str,
    access: acorn_mqtt::Access,
) -> bool {
    [&topics.create_from_csr, &topics.register]
        .into_iter()
        .any(|[request, accepted, rejected]| match access {
            acorn_mqtt::Access::Publish => topic == request,
            acorn_mqtt::Access::Subscribe => topic == accepted || topic == rejected,
        })
}

/// A message on its way to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
}

/// How a connection task is told that it lost its session (a takeover) or has messages to
/// send.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    wake: Notify,
    kicked: AtomicBool,
}

impl Signal {
    /// Waits until there is something to send or the connection was taken over.
    pub(crate) async fn notified(&self) {
        self.wake.notified().await;
    }

    /// Whether another connection took this one's session over.
    pub(crate) fn kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    fn wake(&self) {
        self.wake.notify_one();
    }

    fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The connection a session is attached to.
struct Link {
    id: u64,
    signal: Arc<Signal>,
    will: Option<Message>,
    rights: Rights,
}

struct Session {
    /// `clean_session = false`: the session outlives its connection.
    persistent: bool,
    subscriptions: BTreeMap<String, QoS>,
    /// Messages waiting to be sent, oldest first (bounded by [`Limits::max_queued_messages`]).
    outbox: VecDeque<Message>,
    /// QoS 1 messages sent and not yet acknowledged, by packet id.
    inflight: BTreeMap<u16, Message>,
    /// Send every in-flight message again (with DUP) before anything else: set when a
    /// persistent session is resumed by a new connection.
    resend: bool,
    next_pkid: u16,
    rights: Rights,
    link: Option<Link>,
}

impl Session {
    fn new(persistent: bool, rights: Rights) -> Self {
        Self {
            persistent,
            subscriptions: BTreeMap::new(),
            outbox: VecDeque::new(),
            inflight: BTreeMap::new(),
            resend: false,
            next_pkid: 0,
            rights,
            link: None,
        }
    }

    /// The next packet id (1..=65535) not in flight.
    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    fn linked(&self, conn: u64) -> bool {
        self.link.as_ref().is_some_and(|l| l.id == conn)
    }
}

/// Why a CONNECT is refused by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// [`Limits::max_sessions`] sessions exist already.
    TooManySessions,
}

/// A CONNECT accepted: the connection's id and whether an earlier session was resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) conn: u64,
    pub(crate) session_present: bool,
}

/// What routing one message did (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Routed {
    /// Sessions the message was queued for.
    pub(crate) queued: usize,
    /// Sessions whose queue was full (the message was dropped for them).
    pub(crate) dropped: usize,
}

/// The broker's state.
pub(crate) struct Router {
    limits: Limits,
    sessions: HashMap<SessionKey, Session>,
    next_conn: u64,
}

impl Router {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            sessions: HashMap::new(),
            next_conn: 0,
        }
    }

    /// Attaches a new connection to the session `key`. A connection that holds the session
    /// now is taken over: it is told to close, and its last will is published (its network
    /// connection ends without a DISCONNECT). `clean` starts a new session; otherwise an
    /// earlier one is resumed with its subscriptions, queue and in-flight messages.
    pub(crate) fn connect(
        &mut self,
        key: &SessionKey,
        clean: bool,
        rights: Rights,
        will: Option<Message>,
        signal: Arc<Signal>,
    ) -> Result<Accepted, Refusal> {
        if !self.sessions.contains_key(key) && self.sessions.len() >= self.limits.max_sessions {
            return Err(Refusal::TooManySessions);
        }
        let mut old_will = None;
        if let Some(session) = self.sessions.get_mut(key) {
            if let Some(old) = session.link.take() {
                old.signal.kick();
                old_will = old.will.map(|w| (w, old.rights));
            }
        }
        if clean {
            self.sessions.remove(key);
        }
        let session_present = self.sessions.contains_key(key);
        let session = self
            .sessions
            .entry(key.clone())
            .or_insert_with(|| Session::new(!clean, rights.clone()));
        session.persistent = !clean;
        session.rights = rights.clone();
        session.resend = !session.inflight.is_empty();
        self.next_conn += 1;
        let conn = self.next_conn;
        session.link = Some(Link {
            id: conn,
            signal: Arc::clone(&signal),
            will,
            rights,
        });
        if !session.outbox.is_empty() || session.resend {
            signal.wake();
        }
        if let Some((will, _)) = old_will {
            self.route(&will);
        }
        Ok(Accepted {
            conn,
            session_present,
        })
    }

    /// Detaches connection `conn` from its session, if it still holds it. `clean`: the client
    /// sent DISCONNECT (its will is discarded); otherwise the will is published. A session
    /// that is not persistent ends here.
    pub(crate) fn disconnect(&mut self, key: &SessionKey, conn: u64, clean: bool) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if !session.linked(conn) {
            return;
        }
        let link = session.link.take();
        // QoS 0 messages are not kept for an absent client.
        session.outbox.retain(|m| m.qos != QoS::AtMostOnce);
        if !session.persistent {
            self.sessions.remove(key);
        }
        if let Some(will) = link.and_then(|l| l.will).filter(|_| !clean) {
            self.route(&will);
        }
    }

    /// Delivers a message to every session subscribed to its topic that may receive it, at
    /// the lower of the two QoS. A session gets one copy, at the highest QoS of its matching
    /// subscriptions. An offline persistent session keeps QoS 1 messages only.
    pub(crate) fn route(&mut self, message: &Message) -> Routed {
        let mut routed = Routed::default();
        for session in self.sessions.values_mut() {
            if !session.rights.may_receive(&message.topic) {
                continue;
            }
            let granted = session
                .subscriptions
                .iter()
                .filter(|(filter, _)| matches(&message.topic, filter))
                .map(|(_, qos)| *qos)
                .max_by_key(|q| *q as u8);
            let Some(granted) = granted else { continue };
            let qos = if (granted as u8) < (message.qos as u8) {
                granted
            } else {
                message.qos
            };
            if session.link.is_none() && qos == QoS::AtMostOnce {
                continue;
            }
            if session.outbox.len() >= self.limits.max_queued_messages {
                routed.dropped += 1;
                continue;
            }
            session.outbox.push_back(Message {
                topic: message.topic.clone(),
                payload: message.payload.clone(),
                qos,
            });
            routed.queued += 1;
            if let Some(link) = &session.link {
                link.signal.wake();
            }
        }
        routed
    }

    /// Adds (or replaces) a subscription of the session held by `conn`; returns the granted
    /// QoS (at most 1), or a failure when the filter is not allowed, or when the session
    /// has [`Limits::max_subscriptions`] already.
    pub(crate) fn subscribe(
        &mut self,
        key: &SessionKey,
        conn: u64,
        filter: &str,
        qos: QoS,
    ) -> SubscribeReasonCode {
        let Some(session) = self.sessions.get_mut(key).filter(|s| s.linked(conn)) else {
            return SubscribeReasonCode::Failure;
        };
        if acorn_mqtt::limits::check_topic_filter(filter).is_err()
            || !session.rights.may_subscribe(filter)
        {
            return SubscribeReasonCode::Failure;
        }
        if !session.subscriptions.contains_key(filter)
            && session.subscriptions.len() >= self.limits.max_subscriptions
        {
            return SubscribeReasonCode::Failure;
        }
        let qos = if qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        session.subscriptions.insert(filter.to_owned(), qos);
        SubscribeReasonCode::Success(qos)
    }

    /// Removes a subscription of the session held by `conn`.
    pub(crate) fn unsubscribe(&mut self, key: &SessionKey, conn: u64, filter: &str) {
        if let Some(session) = self.sessions.get_mut(key).filter(|s| s.linked(conn)) {
            session.subscriptions.remove(filter);
        }
    }

    /// A PUBACK from the client: the message with `pkid` is delivered.
    pub(crate) fn acknowledge(&mut self, key: &SessionKey, conn: u64, pkid: u16) {
        if let Some(session) = self.sessions.get_mut(key).filter(|s| s.linked(conn)) {
            session.inflight.remove(&pkid);
        }
    }

    /// The PUBLISH packets connection `conn` should send now: first every in-flight message
    /// again (DUP) when its session was just resumed, then queued messages while fewer than
    /// [`Limits::max_inflight`] QoS 1 messages are unacknowledged. `None` when `conn` no
    /// longer holds the session.
    pub(crate) fn drain(&mut self, key: &SessionKey, conn: u64) -> Option<Vec<Publish>> {
        let session = self.sessions.get_mut(key).filter(|s| s.linked(conn))?;
        let mut out = Vec::new();
        if session.resend {
            session.resend = false;
            for (pkid, message) in &session.inflight {
                let mut publish = publish(message, *pkid);
                publish.dup = true;
                out.push(publish);
            }
        }
        while let Some(message) = session.outbox.front() {
            let pkid = if message.qos == QoS::AtMostOnce {
                0
            } else if session.inflight.len() >= self.limits.max_inflight {
                break;
            } else {
                session.pkid()
            };
            let Some(message) = session.outbox.pop_front() else {
                break;
            };
            out.push(publish(&message, pkid));
            if pkid != 0 {
                session.inflight.insert(pkid, message);
            }
        }
        Some(out)
    }

    /// How many sessions exist (connected or persistent and offline).
    #[cfg(test)]
    fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

fn publish(message: &Message, pkid: u16) -> Publish {
    let mut publish =
        Publish::from_bytes(message.topic.clone(), message.qos, message.payload.clone());
    publish.pkid = pkid;
    publish
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_queued_messages: 3,
            max_inflight: 2,
            max_sessions: 4,
            max_subscriptions: 2,
            ..Limits::default()
        }
    }

    fn device(id: &str) -> (SessionKey, Rights) {
        (
            (Listener::Device, id.to_owned()),
            Rights::of(Listener::Device, id, None).unwrap(),
        )
    }

    fn message(topic: &str, qos: QoS) -> Message {
        Message {
            topic: topic.to_owned(),
            payload: Bytes::from_static(b"x"),
            qos,
        }
    }

    #[test]
    fn device_rights_are_the_policy_on_its_own_id() {
        let rights = Rights::of(Listener::Device, "dev-1", None).unwrap();
        assert!(rights.may_publish("acorn-pups/button-press/dev-1"));
        assert!(rights.may_publish("acorn-pups/status/dev-1"));
        assert!(!rights.may_publish("acorn-pups/settings/dev-1"));
        assert!(!rights.may_publish("acorn-pups/status/dev-2"));
        assert!(!rights.may_publish("acorn-pups/status/dev-10"));
        assert!(!rights.may_publish("acorn-pups/status/xdev-1"));
        assert!(!rights.may_publish("acorn-pups/statusXdev-1"));
        assert!(rights.may_subscribe("acorn-pups/settings/dev-1"));
        assert!(rights.may_subscribe("acorn-pups/commands/dev-1"));
        assert!(!rights.may_subscribe("acorn-pups/commands/+"));
        assert!(!rights.may_subscribe("acorn-pups/#"));
        assert!(!rights.may_receive("acorn-pups/button-press/dev-1"));
    }

    fn local_provisioning() -> LocalProvisioning {
        LocalProvisioning {
            template: "acorn-pups".into(),
            responder: "service:backend".into(),
        }
    }

    #[test]
    fn device_rights_with_local_provisioning_add_its_own_six_topics_only() {
        let local = local_provisioning();
        let rights = Rights::of(Listener::Device, "dev-1", Some(&local)).unwrap();
        let own = ProvisioningTopics::new(&local_prefix("dev-1"), "acorn-pups").unwrap();
        let other = ProvisioningTopics::new(&local_prefix("dev-2"), "acorn-pups").unwrap();
        for topics in [&own.create_from_csr, &own.register] {
            let [request, accepted, rejected] = topics;
            assert!(rights.may_publish(request), "{request}");
            assert!(!rights.may_receive(request), "{request}");
            for answer in [accepted, rejected] {
                assert!(rights.may_subscribe(answer), "{answer}");
                assert!(rights.may_receive(answer), "{answer}");
                assert!(!rights.may_publish(answer), "{answer}");
            }
        }
        // Another device's topics, wildcards, AWS's own (unprefixed) topics, other templates.
        for topic in other.create_from_csr.iter().chain(&other.register) {
            assert!(!rights.may_publish(topic), "{topic}");
            assert!(!rights.may_subscribe(topic), "{topic}");
        }
        for filter in [
            "acorn-local/#",
            "acorn-local/+/$aws/certificates/create-from-csr/json/accepted",
            "acorn-local/dev-1/#",
            "acorn-local/dev-1/$aws/certificates/create-from-csr/json/+",
            "$aws/certificates/create-from-csr/json/accepted",
            "acorn-local/dev-1/$aws/provisioning-templates/other/provision/json/accepted",
        ] {
            assert!(!rights.may_subscribe(filter), "{filter}");
        }
        assert!(!rights.may_publish("$aws/certificates/create-from-csr/json"));
        // The policy is still there, and nothing of the API without the option.
        assert!(rights.may_publish("acorn-pups/status/dev-1"));
        let plain = Rights::of(Listener::Device, "dev-1", None).unwrap();
        assert!(!plain.may_publish(&own.create_from_csr[0]));
        assert!(!plain.may_subscribe(&own.create_from_csr[1]));
    }

    #[test]
    fn a_claim_connection_gets_its_own_provisioning_topics_and_nothing_else() {
        let local = local_provisioning();
        let rights = Rights::of(Listener::Claim, "claim:dev-1", Some(&local)).unwrap();
        let own = "acorn-claim/claim:dev-1/$aws/certificates/create-from-csr/json";
        assert!(rights.may_publish(own));
        assert!(rights.may_subscribe(&format!("{own}/accepted")));
        assert!(!rights.may_publish(&format!("{own}/accepted")));
        assert!(!rights.may_subscribe(
            "acorn-claim/claim:dev-2/$aws/certificates/create-from-csr/json/accepted"
        ));
        assert!(
            !rights.may_subscribe("acorn-claim/+/$aws/certificates/create-from-csr/json/accepted")
        );
        assert!(!rights.may_publish("acorn-pups/status/dev-1"));
        assert!(!rights.may_subscribe("acorn-pups/commands/dev-1"));
        assert!(!rights.may_publish("acorn-local/dev-1/$aws/certificates/create-from-csr/json"));
        // Only claim client ids, and only with local provisioning on.
        assert_eq!(Rights::of(Listener::Claim, "dev-1", Some(&local)), None);
        assert_eq!(
            Rights::of(Listener::Claim, "claim:bad:id", Some(&local)),
            None
        );
        assert_eq!(Rights::of(Listener::Claim, "claim:dev-1", None), None);
        let responder = Rights::of(Listener::Service, "service:backend", Some(&local)).unwrap();
        assert!(responder.may_subscribe("acorn-claim/+/$aws/certificates/create-from-csr/json"));
        let cloud = Rights::of(Listener::Service, "service:cloud", Some(&local)).unwrap();
        assert!(!cloud.may_subscribe("acorn-claim/#"));
    }

    #[test]
    fn only_the_responder_service_gets_the_local_provisioning_tree() {
        let local = local_provisioning();
        let responder = Rights::of(Listener::Service, "service:backend", Some(&local)).unwrap();
        let cloud = Rights::of(Listener::Service, "service:cloud", Some(&local)).unwrap();
        let request = "acorn-local/dev-1/$aws/certificates/create-from-csr/json";
        let filter = "acorn-local/+/$aws/certificates/create-from-csr/json";
        assert!(responder.may_receive(request));
        assert!(responder.may_subscribe(filter));
        assert!(responder.may_publish(&format!("{request}/accepted")));
        assert!(responder.may_subscribe("acorn-pups/status/+"));
        assert!(!responder.may_subscribe("#"));
        assert!(!responder.may_subscribe("acorn-local"));
        assert!(!cloud.may_receive(request));
        assert!(!cloud.may_subscribe(filter));
        assert!(!cloud.may_publish(&format!("{request}/accepted")));
        assert!(cloud.may_subscribe("acorn-pups/#"));
        // Names each listener refuses.
        assert_eq!(Rights::of(Listener::Service, "dev-1", Some(&local)), None);
        assert_eq!(
            Rights::of(Listener::Device, "service:backend", Some(&local)),
            None
        );
    }

    #[test]
    fn service_rights_cover_the_acorn_tree_only() {
        let rights = Rights::of(Listener::Service, "service:cloud", None).unwrap();
        assert!(rights.may_publish("acorn-pups/settings/dev-1"));
        assert!(rights.may_subscribe("acorn-pups/#"));
        assert!(rights.may_subscribe("acorn-pups/+/dev-1"));
        assert!(!rights.may_subscribe("#"));
        assert!(!rights.may_subscribe("+/status/dev-1"));
        assert!(!rights.may_subscribe("acorn-pups"));
        assert!(!rights.may_publish("other/topic"));
    }

    #[test]
    fn persistent_session_queues_qos1_while_offline_bounded_and_resends_in_flight() {
        let mut router = Router::new(limits());
        let (key, rights) = device("dev-1");
        let signal = Arc::new(Signal::default());
        let a = router
            .connect(&key, false, rights.clone(), None, signal)
            .unwrap();
        assert!(!a.session_present);
        let settings = "acorn-pups/settings/dev-1";
        assert_eq!(
            router.subscribe(&key, a.conn, settings, QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
        router.route(&message(settings, QoS::AtLeastOnce));
        let sent = router.drain(&key, a.conn).unwrap();
        assert_eq!(sent.len(), 1);
        router.disconnect(&key, a.conn, false);
        // Offline: QoS 0 is not kept, QoS 1 is, up to the bound.
        router.route(&message(settings, QoS::AtMostOnce));
        for _ in 0..4 {
            router.route(&message(settings, QoS::AtLeastOnce));
        }
        let b = router
            .connect(&key, false, rights, None, Arc::new(Signal::default()))
            .unwrap();
        assert!(b.session_present);
        let sent = router.drain(&key, b.conn).unwrap();
        // The unacknowledged one again (DUP, same id), then one more queued message: the
        // in-flight window is 2.
        assert_eq!(sent.len(), 2);
        assert!(sent[0].dup);
        assert_eq!(sent[0].pkid, 1);
        assert!(!sent[1].dup);
        router.acknowledge(&key, b.conn, 1);
        router.acknowledge(&key, b.conn, sent[1].pkid);
        assert_eq!(router.drain(&key, b.conn).unwrap().len(), 2);
        assert!(router.drain(&key, b.conn).unwrap().is_empty());
    }

    #[test]
    fn takeover_kicks_the_first_connection_and_publishes_its_will() {
        let mut router = Router::new(limits());
        let (key, rights) = device("dev-1");
        let (watcher, service) = (
            (Listener::Service, "service:w".to_owned()),
            Rights::Service { responder: false },
        );
        let w = router
            .connect(&watcher, true, service, None, Arc::new(Signal::default()))
            .unwrap();
        router.subscribe(&watcher, w.conn, "acorn-pups/status/+", QoS::AtLeastOnce);
        let first = Arc::new(Signal::default());
        let will = message("acorn-pups/status/dev-1", QoS::AtLeastOnce);
        let a = router
            .connect(&key, true, rights.clone(), Some(will), Arc::clone(&first))
            .unwrap();
        let b = router
            .connect(&key, true, rights, None, Arc::new(Signal::default()))
            .unwrap();
        assert!(first.kicked());
        assert_eq!(router.drain(&watcher, w.conn).unwrap().len(), 1);
        // The first connection's late end changes nothing.
        router.disconnect(&key, a.conn, false);
        assert!(router.drain(&key, b.conn).is_some());
        assert!(router.drain(&watcher, w.conn).unwrap().is_empty());
        // A clean session ends with its connection.
        router.disconnect(&key, b.conn, true);
        assert_eq!(router.session_count(), 1);
    }

    #[test]
    fn sessions_and_subscriptions_are_bounded() {
        let mut router = Router::new(limits());
        for i in 0..4 {
            let (key, rights) = device(&format!("dev-{i}"));
            router
                .connect(&key, false, rights, None, Arc::new(Signal::default()))
                .unwrap();
        }
        let (key, rights) = device("dev-9");
        assert_eq!(
            router.connect(&key, false, rights, None, Arc::new(Signal::default())),
            Err(Refusal::TooManySessions)
        );
        let mut router = Router::new(limits());
        let key = (Listener::Service, "service:a".to_owned());
        let a = router
            .connect(
                &key,
                true,
                Rights::Service { responder: false },
                None,
                Arc::new(Signal::default()),
            )
            .unwrap();
        for filter in ["acorn-pups/a/+", "acorn-pups/b/+"] {
            assert!(matches!(
                router.subscribe(&key, a.conn, filter, QoS::ExactlyOnce),
                SubscribeReasonCode::Success(QoS::AtLeastOnce)
            ));
        }
        assert_eq!(
            router.subscribe(&key, a.conn, "acorn-pups/c/+", QoS::AtLeastOnce),
            SubscribeReasonCode::Failure
        );
        // Overlapping subscriptions: one copy, at the highest QoS; never above the message's.
        router.unsubscribe(&key, a.conn, "acorn-pups/b/+");
        router.subscribe(&key, a.conn, "acorn-pups/a/+", QoS::AtMostOnce);
        router.subscribe(&key, a.conn, "acorn-pups/#", QoS::AtLeastOnce);
        let routed = router.route(&message("acorn-pups/a/x", QoS::AtLeastOnce));
        assert_eq!(routed.queued, 1);
        router.route(&message("acorn-pups/a/y", QoS::AtMostOnce));
        let sent = router.drain(&key, a.conn).unwrap();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].qos, QoS::AtLeastOnce);
        assert_eq!(sent[1].qos, QoS::AtMostOnce);
        // A full queue drops the message for that session and says so.
        for _ in 0..3 {
            router.route(&message("acorn-pups/a/z", QoS::AtMostOnce));
        }
        let routed = router.route(&message("acorn-pups/a/z", QoS::AtMostOnce));
        assert_eq!(
            routed,
            Routed {
                queued: 0,
                dropped: 1
            }
        );
    }
}
