//! The cloud-side observer: a service identity (never a device) subscribed to every device's
//! presses and status with a persistent session, counting each press by device and `pressId`
//! in the ledger, and pushing commands and settings updates to online devices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use acorn_mqtt::{TOPIC_BUTTON_PRESS, TOPIC_COMMANDS, TOPIC_DEVICE_STATUS, TOPIC_SETTINGS};
use acorn_transport::rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use acorn_transport::{BrokerTarget, SessionOptions};
use anyhow::{Context, Result};
use rand::RngCore as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::device::SplitMix;
use super::identities::ObserverIdentity;
use super::ledger::Ledger;

/// What the observer is asked to do while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// Disconnect cleanly (the broker keeps the session and queues presses for it) and come
    /// back after this long.
    Away(Duration),
}

/// A running observer.
pub struct Observer {
    /// Counts SUBACKs: after a broker restart, the observer listens again once it grows.
    pub subscribed: watch::Receiver<u64>,
    /// Sends [`Control`]s.
    pub control: mpsc::Sender<Control>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What the observer needs.
pub struct ObserverSetup {
    /// Identity and broker.
    pub identity: ObserverIdentity,
    /// The accounting.
    pub ledger: Arc<Ledger>,
    /// Device id → index in the run.
    pub names: Arc<HashMap<String, u32>>,
    /// Device ids by index.
    pub ids: Arc<Vec<String>>,
    /// Which devices are online.
    pub online: Arc<Vec<AtomicBool>>,
    /// Send a command or settings update to a random online device this often (`None`: never).
    pub commands_every: Option<Duration>,
}

#[derive(serde::Deserialize)]
struct PressFields<'a> {
    #[serde(rename = "pressId", borrow)]
    press_id: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct ReplyFields<'a> {
    #[serde(rename = "requestId", borrow)]
    request_id: Option<&'a str>,
}

fn session(identity: &ObserverIdentity) -> SessionOptions {
    let mut options = SessionOptions::new(
        BrokerTarget::new(identity.broker.0.clone(), identity.broker.1),
        identity.identity.clone(),
        identity.roots.clone(),
        identity.client_id.clone(),
        env!("CARGO_PKG_VERSION"),
    );
    // A persistent session: presses published while it is away wait for it at the broker.
    options.clean_session = false;
    options.channel_capacity = 1024;
    options
}

impl Observer {
    /// Connects, subscribes, and returns once the first SUBACK arrived (bounded: 30 s).
    pub async fn start(setup: ObserverSetup) -> Result<Self> {
        let options = session(&setup.identity);
        let (client, eventloop) = options.connect().context("the observer's settings")?;
        let (subscribed_tx, mut subscribed) = watch::channel(0u64);
        let (control, control_rx) = mpsc::channel(8);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            options,
            client,
            eventloop,
            setup,
            subscribed_tx,
            control_rx,
            stop_rx,
        ));
        let first = tokio::time::timeout(Duration::from_secs(30), subscribed.wait_for(|n| *n > 0))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        if !first {
            task.abort();
            anyhow::bail!(
                "the observer could not connect and subscribe within 30 s (see the log above)"
            );
        }
        Ok(Self {
            subscribed,
            control,
            stop,
            task,
        })
    }

    /// Stops (DISCONNECT, bounded).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(3), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Polls the event loop in a task of its own (a poll is never cancelled halfway) until the
/// receiver is gone or the observer disconnected; after an error it waits a little (the
/// broker is down or restarting) and polls again, which reconnects.
fn drive(mut eventloop: EventLoop) -> (mpsc::Receiver<Result<Event, String>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(4096);
    let task = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            let done = matches!(event, Ok(Event::Outgoing(Outgoing::Disconnect)));
            if tx.send(event.map_err(|e| e.to_string())).await.is_err() || done {
                return;
            }
            if failed {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    (rx, task)
}

fn subscribe(client: &AsyncClient) {
    for filter in [
        format!("{TOPIC_BUTTON_PRESS}/+"),
        format!("{TOPIC_DEVICE_STATUS}/+"),
    ] {
        if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
            tracing::warn!("observer subscribe: {e}");
        }
    }
}

async fn run(
    options: SessionOptions,
    mut client: AsyncClient,
    eventloop: EventLoop,
    setup: ObserverSetup,
    subscribed: watch::Sender<u64>,
    mut control: mpsc::Receiver<Control>,
    mut stop: watch::Receiver<bool>,
) {
    let ledger = setup.ledger.clone();
    let press_prefix = format!("{TOPIC_BUTTON_PRESS}/");
    let status_prefix = format!("{TOPIC_DEVICE_STATUS}/");
    let mut rng = SplitMix::new(0x0B5E_47E5);
    let mut commands = setup
        .commands_every
        .map(|every| tokio::time::interval(every.max(Duration::from_millis(10))));
    let mut sent_commands = 0u64;
    let mut subacks_wanted = 0usize;
    let mut back_at: Option<tokio::time::Instant> = None;
    let (mut events, mut driver) = drive(eventloop);
    loop {
        tokio::select! {
            Some(event) = events.recv(), if back_at.is_none() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(session_present = ack.session_present, "observer connected");
                    if ack.session_present {
                        subscribed.send_modify(|n| *n += 1);
                    } else {
                        subacks_wanted = 2;
                        subscribe(&client);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    tracing::info!(?ack, "observer subscribed");
                    subacks_wanted = subacks_wanted.saturating_sub(1);
                    if subacks_wanted == 0 {
                        subscribed.send_modify(|n| *n += 1);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(device) = p.topic.strip_prefix(&press_prefix) {
                        let id = serde_json::from_slice::<PressFields>(&p.payload)
                            .ok()
                            .and_then(|f| f.press_id.and_then(acorn_device::PressId::parse));
                        match (setup.names.get(device), id) {
                            (Some(&index), Some(id)) => ledger.received(index, id),
                            _ => {
                                ledger.unexpected.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    } else if p.topic.starts_with(&status_prefix) {
                        let answered = serde_json::from_slice::<ReplyFields>(&p.payload)
                            .ok()
                            .and_then(|f| f.request_id)
                            .is_some_and(|r| r.starts_with("sim-"));
                        if answered {
                            ledger.commands_answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if *stop.borrow() {
                        return;
                    }
                    // The broker is down or restarting: the driver polls again shortly, which
                    // reconnects.
                    tracing::debug!("observer connection: {e}");
                }
            },
            _ = async {
                match back_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                back_at = None;
                match options.connect() {
                    Ok((c, e)) => {
                        client = c;
                        driver.abort();
                        (events, driver) = drive(e);
                    }
                    Err(e) => tracing::warn!("observer: {e}"),
                }
            }
            Some(Control::Away(away)) = control.recv() => {
                // A clean DISCONNECT: the broker keeps the persistent session.
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut driver).await;
                driver.abort();
                back_at = Some(tokio::time::Instant::now() + away);
            }
            _ = async {
                match commands.as_mut() {
                    Some(i) => { i.tick().await; }
                    None => std::future::pending().await,
                }
            }, if back_at.is_none() => {
                let n = setup.online.len();
                if n == 0 {
                    continue;
                }
                // A few random draws for an online device (bounded).
                let pick = (0..16)
                    .map(|_| (rng.next_u64() % n as u64) as usize)
                    .find(|&i| setup.online[i].load(Ordering::Relaxed));
                if let Some(i) = pick {
                    sent_commands += 1;
                    let id = &setup.ids[i];
                    let (topic, payload) = if sent_commands % 2 == 0 {
                        (
                            format!("{TOPIC_SETTINGS}/{id}"),
                            format!(r#"{{"requestId":"sim-{sent_commands}","ledBrightness":{}}}"#, sent_commands % 101),
                        )
                    } else {
                        (
                            format!("{TOPIC_COMMANDS}/{id}"),
                            format!(r#"{{"requestId":"sim-{sent_commands}","command":"get-status"}}"#),
                        )
                    };
                    if client.try_publish(topic, QoS::AtLeastOnce, false, payload).is_ok() {
                        ledger.commands_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = client.try_disconnect();
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut driver).await;
                    driver.abort();
                    return;
                }
            }
        }
    }
}
