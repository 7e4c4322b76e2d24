//! One MQTT connection: a rumqttc event loop in its own task, polled until its first error, so
//! rumqttc never reconnects on its own (the session decides when, with backoff and jitter).
//!
//! Every event is tagged with the connection's generation; events of a connection the runtime
//! has closed are ignored. rumqttc assigns packet ids; publishes are sent in order through one
//! channel and rumqttc reports each as `Outgoing::Publish(pkid)` in that order, so a FIFO of
//! what was sent maps packet ids back to the device core's [`Tag`]s.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use acorn_device::Tag;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, QoS,
    SubscribeFilter,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a graceful close may take (DISCONNECT flushed) before the task is aborted.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// An event of connection `generation`.
pub struct LinkEvent {
    /// Which connection.
    pub generation: u64,
    /// What rumqttc reported.
    pub event: Result<Event, ConnectionError>,
}

/// A live connection.
pub struct Link {
    /// Its generation.
    pub generation: u64,
    client: AsyncClient,
    task: JoinHandle<()>,
    /// CONNACK received.
    pub connected: bool,
    sent: VecDeque<Tag>,
    acks: HashMap<u16, Tag>,
}

impl Link {
    /// Starts connecting: spawns the event loop task.
    pub fn open(
        generation: u64,
        options: MqttOptions,
        network: NetworkOptions,
        capacity: usize,
        events: mpsc::UnboundedSender<LinkEvent>,
    ) -> Self {
        let (client, mut eventloop) = AsyncClient::new(options, capacity);
        eventloop.set_network_options(network);
        let task = tokio::spawn(drive(generation, eventloop, events));
        Self {
            generation,
            client,
            task,
            connected: false,
            sent: VecDeque::new(),
            acks: HashMap::new(),
        }
    }

    /// Queues a publish; `Err` when rumqttc's request channel is full or closed.
    pub fn publish(
        &mut self,
        topic: &str,
        qos: QoS,
        payload: Vec<u8>,
        tag: Tag,
    ) -> Result<(), String> {
        self.client
            .try_publish(topic, qos, false, payload)
            .map_err(|e| e.to_string())?;
        self.sent.push_back(tag);
        Ok(())
    }

    /// Queues a SUBSCRIBE of `filters` at QoS 1.
    pub fn subscribe(&mut self, filters: &[String]) -> Result<(), String> {
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.client
            .try_subscribe_many(filters)
            .map_err(|e| e.to_string())
    }

    /// rumqttc sent a PUBLISH with this packet id (0 for QoS 0).
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if let Some(tag) = self.sent.pop_front() {
            if pkid != 0 {
                self.acks.insert(pkid, tag);
            }
        }
    }

    /// A PUBACK arrived: what it acknowledges.
    pub fn on_puback(&mut self, pkid: u16) -> Option<Tag> {
        self.acks.remove(&pkid)
    }

    /// Closes the connection: DISCONNECT when it is up (the task ends once it is flushed, or
    /// is aborted after [`CLOSE_TIMEOUT`]), at once otherwise. Returns a handle that finishes
    /// when the connection is gone.
    pub fn close(self) -> JoinHandle<()> {
        let Link {
            client,
            mut task,
            connected,
            ..
        } = self;
        if connected && client.try_disconnect().is_ok() {
            tokio::spawn(async move {
                if tokio::time::timeout(CLOSE_TIMEOUT, &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
            })
        } else {
            task.abort();
            task
        }
    }
}

/// Polls the event loop until its first error or until DISCONNECT has been sent.
async fn drive(
    generation: u64,
    mut eventloop: EventLoop,
    events: mpsc::UnboundedSender<LinkEvent>,
) {
    loop {
        let event = eventloop.poll().await;
        let end = matches!(event, Err(_) | Ok(Event::Outgoing(Outgoing::Disconnect)));
        if events.send(LinkEvent { generation, event }).is_err() || end {
            return;
        }
    }
}
