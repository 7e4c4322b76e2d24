//! Chaos for local targets: a plan of faults (broker kill -9 and restart, and network faults
//! through the proxy), carried out at their times, each recorded for the report.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use acorn_devstack::broker::{Broker, BrokerConfig};
use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::observer::Control;
use super::proxy::{Condition, Proxy};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill[:DOWN]`: the broker is killed with SIGKILL and started again after DOWN
    /// (default 2 s) on the same ports, with nothing persisted.
    Kill {
        /// How long the broker stays down.
        down: Duration,
    },
    /// `reset`: every connection through the proxy is reset (RST).
    Reset,
    /// `latency:D`: every chunk is delayed by D.
    Latency(Duration),
    /// `stall`: open connections carry nothing.
    Stall,
    /// `blackhole`: nothing passes, not even new connections.
    Blackhole,
    /// `bandwidth:BYTES`: all connections together carry BYTES per second (`k` = 1000).
    Bandwidth(u64),
    /// `observer-away`: the observer disconnects cleanly and comes back after FOR.
    ObserverAway,
}

/// A fault at a time, for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The fault.
    pub fault: Fault,
    /// When, from the start of the load.
    pub at: Duration,
    /// For how long (conditions and the observer's absence; ignored by kill and reset).
    pub lasts: Duration,
}

impl Fault {
    /// The fault's name in plans and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Reset => "reset",
            Fault::Latency(_) => "latency",
            Fault::Stall => "stall",
            Fault::Blackhole => "blackhole",
            Fault::Bandwidth(_) => "bandwidth",
            Fault::ObserverAway => "observer-away",
        }
    }

    /// Whether it needs the proxy in front of the broker.
    pub fn needs_proxy(&self) -> bool {
        !matches!(self, Fault::Kill { .. } | Fault::ObserverAway)
    }
}

/// Parses a plan: `KIND[:ARG]@AT[+FOR]`, comma-separated, e.g.
/// `kill@10s,latency:200ms@20s+5s,stall@30s+3s,reset@40s,observer-away@5s+4s`.
pub fn parse_plan(text: &str) -> Result<Vec<Step>> {
    let dur = |s: &str| crate::cli::parse_duration(s).map_err(anyhow::Error::msg);
    let mut steps = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (what, when) = item
            .split_once('@')
            .with_context(|| format!("chaos step {item:?}: expected KIND[:ARG]@AT[+FOR]"))?;
        let (at, lasts) = match when.split_once('+') {
            Some((at, lasts)) => (dur(at)?, dur(lasts)?),
            None => (dur(when)?, Duration::ZERO),
        };
        let (kind, arg) = match what.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (what, None),
        };
        let fault = match (kind, arg) {
            ("kill", None) => Fault::Kill {
                down: Duration::from_secs(2),
            },
            ("kill", Some(a)) => Fault::Kill { down: dur(a)? },
            ("reset", None) => Fault::Reset,
            ("latency", Some(a)) => Fault::Latency(dur(a)?),
            ("stall", None) => Fault::Stall,
            ("blackhole", None) => Fault::Blackhole,
            ("bandwidth", Some(a)) => {
                let (n, scale) = match a.strip_suffix(['k', 'K']) {
                    Some(n) => (n, 1000),
                    None => (a, 1),
                };
                let n: u64 = n
                    .parse()
                    .with_context(|| format!("chaos step {item:?}: bandwidth in bytes/s"))?;
                Fault::Bandwidth((n * scale).max(1))
            }
            ("observer-away", None) => Fault::ObserverAway,
            _ => bail!(
                "chaos step {item:?}: unknown fault (kill[:DOWN], reset, latency:D, stall, \
                 blackhole, bandwidth:BYTES, observer-away)"
            ),
        };
        let needs_time = matches!(
            fault,
            Fault::Latency(_)
                | Fault::Stall
                | Fault::Blackhole
                | Fault::Bandwidth(_)
                | Fault::ObserverAway
        );
        if needs_time && lasts.is_zero() {
            bail!("chaos step {item:?}: say how long it lasts, e.g. {kind}@{when}+3s");
        }
        steps.push(Step { fault, at, lasts });
    }
    steps.sort_by_key(|s| s.at);
    Ok(steps)
}

/// The default plan of `--chaos` for a run of `duration`: 3 broker kills and every kind of
/// network fault, spread over the run.
pub fn default_plan(duration: Duration) -> Vec<Step> {
    let at = |f: f64| duration.mul_f64(f);
    let lasts = |f: f64| duration.mul_f64(f).max(Duration::from_secs(1));
    vec![
        Step {
            fault: Fault::Latency(Duration::from_millis(100)),
            at: at(0.10),
            lasts: lasts(0.06),
        },
        Step {
            fault: Fault::Kill {
                down: Duration::from_secs(2),
            },
            at: at(0.20),
            lasts: Duration::ZERO,
        },
        Step {
            fault: Fault::Stall,
            at: at(0.36),
            lasts: lasts(0.05),
        },
        Step {
            fault: Fault::Reset,
            at: at(0.46),
            lasts: Duration::ZERO,
        },
        Step {
            fault: Fault::Kill {
                down: Duration::from_secs(2),
            },
            at: at(0.56),
            lasts: Duration::ZERO,
        },
        Step {
            fault: Fault::Blackhole,
            at: at(0.68),
            lasts: lasts(0.04),
        },
        Step {
            fault: Fault::Bandwidth(50_000),
            at: at(0.76),
            lasts: lasts(0.04),
        },
        Step {
            fault: Fault::Kill {
                down: Duration::from_secs(2),
            },
            at: at(0.84),
            lasts: Duration::ZERO,
        },
    ]
}

/// A fault as it happened.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRecord {
    /// Seconds from the start of the load.
    pub at_seconds: f64,
    /// The fault's name.
    pub kind: String,
    /// What was done, in plain language.
    pub detail: String,
}

/// The simulator's own broker, which chaos kills and restarts.
pub struct LocalBroker {
    config: BrokerConfig,
    broker: Mutex<Option<Broker>>,
}

impl LocalBroker {
    /// Starts mosquitto with `config` (on a blocking thread).
    pub async fn start(mut config: BrokerConfig) -> Result<Arc<Self>> {
        let start_config = config.clone();
        let broker = tokio::task::spawn_blocking(move || Broker::start(start_config))
            .await?
            .context("cannot start mosquitto")?;
        config.port = Some(broker.port());
        config.service_port = broker.service_port();
        Ok(Arc::new(Self {
            config,
            broker: Mutex::new(Some(broker)),
        }))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Broker>> {
        self.broker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device listener's port.
    pub fn port(&self) -> u16 {
        self.config.port.unwrap_or_default()
    }

    /// The service listener's port.
    pub fn service_port(&self) -> u16 {
        self.config.service_port.unwrap_or_default()
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.slot().as_ref().and_then(Broker::pid)
    }

    /// kill -9 (waits for the process to be gone).
    pub async fn kill(self: &Arc<Self>) {
        let broker = self.slot().take();
        if let Some(b) = broker {
            let _ = tokio::task::spawn_blocking(move || b.stop()).await;
        }
    }

    /// Starts it again on the same ports (bounded by mosquitto's start-up timeout).
    pub async fn restart(self: &Arc<Self>) -> Result<()> {
        let config = self.config.clone();
        let broker = tokio::task::spawn_blocking(move || Broker::start(config))
            .await?
            .context("cannot restart mosquitto")?;
        *self.slot() = Some(broker);
        Ok(())
    }

    /// Stops it for good.
    pub async fn stop(self: &Arc<Self>) {
        self.kill().await;
    }
}

/// What chaos acts on.
pub struct Targets {
    /// The broker.
    pub broker: Arc<LocalBroker>,
    /// The proxy in front of it.
    pub proxy: Option<Arc<Proxy>>,
    /// The observer's controls.
    pub observer: Option<(mpsc::Sender<Control>, watch::Receiver<u64>)>,
}

/// Carries out `plan` from `start` until it is done or `stop` turns true (the fault under
/// way is finished first); the network is left clear and the gate open.
pub async fn run(
    plan: Vec<Step>,
    start: Instant,
    targets: Targets,
    records: Arc<Mutex<Vec<FaultRecord>>>,
    mut stop: watch::Receiver<bool>,
) {
    let record = |kind: &str, detail: String| {
        let at_seconds = start.elapsed().as_secs_f64();
        tracing::info!("chaos at {at_seconds:.1}s: {detail}");
        records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(FaultRecord {
                at_seconds: (at_seconds * 1000.0).round() / 1000.0,
                kind: kind.to_owned(),
                detail,
            });
    };
    for step in plan {
        tokio::select! {
            _ = tokio::time::sleep_until(start + step.at) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let name = step.fault.name();
        match step.fault {
            Fault::Kill { down } => {
                if let Some(proxy) = &targets.proxy {
                    proxy.set_open(false);
                }
                let pid = targets.broker.pid().unwrap_or_default();
                let seen = targets
                    .observer
                    .as_ref()
                    .map(|(_, s)| *s.borrow())
                    .unwrap_or_default();
                targets.broker.kill().await;
                record(
                    name,
                    format!("broker (pid {pid}) killed with SIGKILL; down for {down:?}"),
                );
                tokio::time::sleep(down).await;
                if let Err(e) = targets.broker.restart().await {
                    record(name, format!("broker restart failed: {e:#}"));
                    break;
                }
                // Devices reach the new broker only once the observer (standing for the
                // cloud's rule, which AWS IoT never loses) listens again.
                if let Some((_, subscribed)) = &targets.observer {
                    let mut subscribed = subscribed.clone();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        subscribed.wait_for(|n| *n > seen),
                    )
                    .await;
                }
                if let Some(proxy) = &targets.proxy {
                    proxy.set_open(true);
                }
                record(
                    "restart",
                    format!(
                        "broker restarted on port {}, nothing persisted; devices let through",
                        targets.broker.port()
                    ),
                );
            }
            Fault::Reset => {
                if let Some(proxy) = &targets.proxy {
                    proxy.reset_all();
                }
                record(name, "every device connection reset (RST)".to_owned());
            }
            Fault::ObserverAway => {
                if let Some((control, _)) = &targets.observer {
                    let _ = control.send(Control::Away(step.lasts)).await;
                }
                record(
                    name,
                    format!(
                        "observer disconnected cleanly (session kept) for {:?}",
                        step.lasts
                    ),
                );
            }
            condition => {
                let (condition, what) = match condition {
                    Fault::Latency(d) => (Condition::Latency(d), format!("{d:?} added latency")),
                    Fault::Stall => (Condition::Stall, "connections stalled".to_owned()),
                    Fault::Blackhole => (Condition::Blackhole, "network blackholed".to_owned()),
                    Fault::Bandwidth(b) => (
                        Condition::Bandwidth(b),
                        format!("bandwidth capped at {b} bytes/s"),
                    ),
                    _ => continue,
                };
                if let Some(proxy) = &targets.proxy {
                    proxy.set(condition);
                    record(name, format!("{what} for {:?}", step.lasts));
                    tokio::time::sleep(step.lasts).await;
                    proxy.set(Condition::Clear);
                    record("clear", format!("{what}: over"));
                }
            }
        }
    }
    if let Some(proxy) = &targets.proxy {
        proxy.set(Condition::Clear);
        proxy.set_open(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_explain_mistakes() {
        let plan =
            parse_plan("stall@30s+3s, kill@10s, latency:200ms@20s+5s,bandwidth:50k@1m+2s,reset@5")
                .unwrap();
        assert_eq!(plan.len(), 5);
        assert_eq!(plan[0].fault, Fault::Reset);
        assert_eq!(
            plan[1].fault,
            Fault::Kill {
                down: Duration::from_secs(2)
            }
        );
        assert_eq!(plan[2].fault, Fault::Latency(Duration::from_millis(200)));
        assert_eq!(plan[4].fault, Fault::Bandwidth(50_000));
        assert_eq!(plan[4].at, Duration::from_secs(60));
        assert!(parse_plan("stall@3s")
            .unwrap_err()
            .to_string()
            .contains("how long"));
        assert!(parse_plan("melt@3s")
            .unwrap_err()
            .to_string()
            .contains("unknown"));
        assert!(parse_plan("kill").is_err());
        let default = default_plan(Duration::from_secs(60));
        assert_eq!(
            default
                .iter()
                .filter(|s| matches!(s.fault, Fault::Kill { .. }))
                .count(),
            3
        );
    }
}
