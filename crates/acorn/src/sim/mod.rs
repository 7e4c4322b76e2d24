//! `acorn sim`: a fleet of simulated devices on one machine, each with its own identity and
//! its own mutual-TLS MQTT connection, speaking the device protocol through the same device
//! core as the agent and the firmware; a cloud-side observer that accounts for every press by
//! `pressId`; optional chaos (broker kill -9 and restart, network faults through a proxy); a
//! closing table, a JSON report and an HTML report with plots.

mod chaos;
mod device;
mod identities;
mod ledger;
mod observer;
mod proxy;
mod report;
mod workload;

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acorn_devstack::broker::BrokerConfig;
use acorn_transport::{ClientIdentity, SecretString, TrustRoots};
use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use tokio::time::Instant;

use self::device::{DeviceEnv, DeviceSummary, TlsParts};
use self::identities::{Fleet, ObserverIdentity};
use self::ledger::Ledger;
use self::report::{Report, Sample};
pub use self::workload::Profile;

/// The observer's client id and certificate CN on the local broker.
pub const OBSERVER_ID: &str = "service:observer";

/// Options of `acorn sim`.
#[derive(clap::Args)]
pub struct Args {
    /// How many devices to simulate.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    devices: u32,
    /// How long the load runs once the ramp starts (`30s`, `2m`).
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_positive_duration)]
    duration: Duration,
    /// Devices started per second (0: all at once).
    #[arg(long, default_value_t = 200)]
    ramp: u32,
    /// Time between two presses of one device (`1h` for an idle fleet).
    #[arg(long, default_value = "5s", value_parser = crate::cli::parse_positive_duration)]
    press_every: Duration,
    /// How presses are spread over the run.
    #[arg(long, value_enum, default_value = "steady")]
    profile: Profile,
    /// The cloud side sends a command or a settings update to a random online device this
    /// often (`0`: never).
    #[arg(long, default_value = "1s", value_parser = crate::cli::parse_duration)]
    commands_every: Duration,
    /// After the load: how long to wait for acknowledged presses to reach the observer.
    #[arg(long, default_value = "15s", value_parser = crate::cli::parse_duration)]
    drain: Duration,
    /// Faults during the run (local broker only): 3 broker kills and restarts and every
    /// network fault of the proxy, spread over the run.
    #[arg(long)]
    chaos: bool,
    /// Faults of your own instead: `KIND[:ARG]@AT[+FOR],...` with kill[:DOWN], reset,
    /// latency:D, stall, blackhole, bandwidth:BYTES, observer-away (e.g.
    /// `kill@10s,stall@20s+3s`).
    #[arg(long, value_name = "PLAN")]
    chaos_plan: Option<String>,
    /// Register the devices with this registration backend (`acorn dev up`'s) instead of a
    /// local CA; the broker and its CA come from the registration answers.
    #[arg(long, value_name = "URL", requires = "admin_key")]
    backend: Option<String>,
    /// The backend's admin key file (`acorn-dev/admin.key`).
    #[arg(long, value_name = "FILE")]
    admin_key: Option<PathBuf>,
    /// Use the certificate/key pairs in DIR (e.g. issued by AWS IoT Core; file name = thing
    /// name) against `--endpoint`.
    #[arg(
        long,
        value_name = "DIR",
        requires = "endpoint",
        conflicts_with = "backend"
    )]
    identities: Option<PathBuf>,
    /// The broker of `--identities`: `HOST[:PORT]` (AWS IoT: `<prefix>-ats.iot.<region>.amazonaws.com`).
    #[arg(long, value_name = "HOST")]
    endpoint: Option<String>,
    /// CA file of `--endpoint` (default: Amazon's roots).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The observer's certificate for `--identities` (a thing whose policy may subscribe to
    /// `acorn-pups/#`); without it nothing is observed and `received`/`lost` are not measured.
    #[arg(long, value_name = "FILE", requires = "observer_key")]
    observer_cert: Option<PathBuf>,
    /// The observer's private key.
    #[arg(long, value_name = "FILE")]
    observer_key: Option<PathBuf>,
    /// The observer's client id (its thing name).
    #[arg(long, default_value = "acorn-sim-observer")]
    observer_id: String,
    /// Write the report as JSON (schema: docs/schemas/sim-report.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report with plots.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Where the local broker keeps its files (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Exit 1 when a press was lost (acknowledged, never received).
    #[arg(long)]
    fail_on_loss: bool,
}

/// Runs `acorn sim`.
pub fn run(args: Args) -> Result<ExitCode> {
    crate::cli::init_logs("warn", false);
    let plan = match (&args.chaos_plan, args.chaos) {
        (Some(text), _) => chaos::parse_plan(text)?,
        (None, true) => chaos::default_plan(args.duration),
        (None, false) => Vec::new(),
    };
    if !plan.is_empty() && (args.backend.is_some() || args.identities.is_some()) {
        bail!("--chaos needs the simulator's own broker (it kills and restarts it): leave out --backend and --identities");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(simulate(&args, plan))?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report.html()?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("HTML report: {}", path.display());
    }
    Ok(if args.fail_on_loss && report.lost > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Raises the soft open-files limit to the hard one (a connection is a file); says so.
pub fn raise_open_files(needed: u64) -> u64 {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if limit < needed {
        eprintln!(
            "warning: the open-files limit is {limit}, below the {needed} this load needs \
             (raise the hard limit: `ulimit -Hn`, or LimitNOFILE= in a systemd unit)"
        );
    }
    limit
}

/// Resident memory of this process now and at its peak (VmRSS, VmHWM), bytes.
pub fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Target {
    fleet: Fleet,
    broker: Option<Arc<chaos::LocalBroker>>,
    description: String,
    _dir: Option<tempfile::TempDir>,
}

async fn local_target(args: &Args, prefix: &str) -> Result<Target> {
    let (dir_path, tmp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("acorn-sim-")
                .tempdir()
                .context("cannot make a temporary directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let pki = identities::LocalPki::new(&dir_path)?;
    let n = args.devices as usize;
    eprintln!("making {n} device identities (local CA, ECDSA P-256)...");
    let devices = pki.devices(prefix, n, &|done| {
        if done % 2000 == 0 && done > 0 {
            eprintln!("  {done}/{n} identities");
        }
    })?;
    let mut config = BrokerConfig::new(
        &dir_path,
        &pki.files.ca,
        &pki.files.server_cert,
        &pki.files.server_key,
    );
    config.service_ca_file = Some(pki.files.service_ca.clone());
    config.service_identities = vec![OBSERVER_ID.to_owned()];
    config.quiet_log = true;
    config.max_connections = Some(args.devices + 100);
    config.max_queued_messages = Some(0);
    let broker = chaos::LocalBroker::start(config).await?;
    let roots = pki.roots()?;
    let observer = ObserverIdentity {
        client_id: OBSERVER_ID.to_owned(),
        identity: pki.observer()?,
        broker: ("localhost".to_owned(), broker.service_port()),
        roots: roots.clone(),
    };
    Ok(Target {
        description: format!(
            "local mosquitto (pid {}) on 127.0.0.1:{}, service listener :{}",
            broker.pid().unwrap_or_default(),
            broker.port(),
            broker.service_port()
        ),
        fleet: Fleet {
            devices,
            roots,
            broker: ("localhost".to_owned(), broker.port()),
            observer: Some(observer),
        },
        broker: Some(broker),
        _dir: tmp,
    })
}

async fn target(args: &Args, prefix: &str) -> Result<Target> {
    if let Some(base) = &args.backend {
        let key_path = args
            .admin_key
            .as_ref()
            .context("--backend needs --admin-key")?;
        let key = std::fs::read_to_string(key_path)
            .with_context(|| format!("cannot read the admin key {}", key_path.display()))?;
        let n = args.devices as usize;
        eprintln!(
            "registering {n} devices with {base} (key and CSR made here, as a device does)..."
        );
        let fleet = identities::from_backend(base, key.trim(), prefix, n, |done| {
            eprintln!("  registered {done}/{n}");
        })
        .await?;
        return Ok(Target {
            description: format!(
                "backend {base}: broker {}:{} from the registration answers",
                fleet.broker.0, fleet.broker.1
            ),
            fleet,
            broker: None,
            _dir: None,
        });
    }
    if let Some(dir) = &args.identities {
        let endpoint = args
            .endpoint
            .as_deref()
            .context("--identities needs --endpoint")?;
        let devices = identities::from_dir(dir, args.devices as usize)?;
        let roots = match &args.ca {
            Some(path) => TrustRoots::from_pem_file(path).context("--ca")?,
            None => TrustRoots::Amazon,
        };
        let broker = identities::host_port(endpoint, 8883)?;
        let observer = match (&args.observer_cert, &args.observer_key) {
            (Some(cert), Some(key)) => Some(ObserverIdentity {
                client_id: args.observer_id.clone(),
                identity: ClientIdentity::new(
                    std::fs::read_to_string(cert)
                        .with_context(|| format!("cannot read {}", cert.display()))?,
                    SecretString::from(
                        std::fs::read_to_string(key)
                            .with_context(|| format!("cannot read {}", key.display()))?,
                    ),
                ),
                broker: broker.clone(),
                roots: roots.clone(),
            }),
            _ => None,
        };
        return Ok(Target {
            description: format!(
                "{}:{} with the identities of {}",
                broker.0,
                broker.1,
                dir.display()
            ),
            fleet: Fleet {
                devices,
                roots,
                broker,
                observer,
            },
            broker: None,
            _dir: None,
        });
    }
    local_target(args, prefix).await
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}:{port}"))?
        .find(SocketAddr::is_ipv4)
        .or_else(|| (host, port).to_socket_addrs().ok()?.next())
        .with_context(|| format!("{host}:{port} has no address"))
}

async fn simulate(args: &Args, plan: Vec<chaos::Step>) -> Result<Report> {
    let n = args.devices as usize;
    raise_open_files(args.devices as u64 + 256);
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xFF_FFFF);
    let prefix = format!("sim-{run_id}");
    let mut target = target(args, &prefix).await?;
    eprintln!("target: {}", target.description);
    let ids: Arc<Vec<String>> = Arc::new(
        target
            .fleet
            .devices
            .iter()
            .map(|d| d.device_id.clone())
            .collect(),
    );
    let names: Arc<HashMap<String, u32>> = Arc::new(
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect(),
    );
    let ledger = Arc::new(Ledger::new());
    let online: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());

    // The observer first: it must listen before any press is made.
    let observer = match target.fleet.observer.take() {
        Some(identity) => Some(
            observer::Observer::start(observer::ObserverSetup {
                identity,
                ledger: ledger.clone(),
                names: names.clone(),
                ids: ids.clone(),
                online: online.clone(),
                commands_every: (!args.commands_every.is_zero()).then_some(args.commands_every),
            })
            .await?,
        ),
        None => {
            eprintln!("no observer: presses are counted as sent and acknowledged only");
            None
        }
    };

    // The proxy, when a fault needs it.
    let upstream = resolve(&target.fleet.broker.0, target.fleet.broker.1)?;
    let proxy = if plan.iter().any(|s| s.fault.needs_proxy()) || !plan.is_empty() {
        let p = proxy::Proxy::start(upstream)
            .await
            .context("cannot start the fault proxy")?;
        eprintln!("fault proxy on {} in front of {upstream}", p.addr());
        Some(Arc::new(p))
    } else {
        None
    };
    let alpn = target.fleet.broker.1 == 443;
    let (stop_pressing_tx, stop_pressing) = watch::channel(false);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let env = Arc::new(DeviceEnv {
        ledger: ledger.clone(),
        addr: proxy.as_ref().map(|p| p.addr()).unwrap_or(upstream),
        server_name: rustls::pki_types::ServerName::try_from(target.fleet.broker.0.clone())
            .context("the broker's host name")?,
        tls: TlsParts::new(&target.fleet.roots, alpn)?,
        workload: workload::Workload {
            press_every: args.press_every,
            profile: args.profile,
            duration: args.duration,
        },
        stop_pressing,
        shutdown,
        online: online.clone(),
    });

    let (rss_before, _) = memory();
    let start = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let all_connected: Arc<Mutex<Option<(f64, u64)>>> = Arc::new(Mutex::new(None));
    let sampler = tokio::spawn(sample(
        start,
        n,
        ledger.clone(),
        samples.clone(),
        all_connected.clone(),
    ));

    // Chaos.
    let faults = Arc::new(Mutex::new(Vec::new()));
    let (chaos_stop_tx, chaos_stop) = watch::channel(false);
    let chaos_task = match (&target.broker, plan.is_empty()) {
        (Some(broker), false) => Some(tokio::spawn(chaos::run(
            plan,
            start,
            chaos::Targets {
                broker: broker.clone(),
                proxy: proxy.clone(),
                observer: observer
                    .as_ref()
                    .map(|o| (o.control.clone(), o.subscribed.clone())),
            },
            faults.clone(),
            chaos_stop,
        ))),
        _ => None,
    };

    // The ramp.
    let mut tasks: Vec<tokio::task::JoinHandle<DeviceSummary>> = Vec::with_capacity(n);
    let devices = std::mem::take(&mut target.fleet.devices);
    let deadline = start + args.duration;
    let mut ramp = tokio::time::interval(Duration::from_millis(10));
    let mut due = 0.0f64;
    let mut pending = devices.into_iter().enumerate();
    let mut left = n;
    while left > 0 && Instant::now() < deadline {
        ramp.tick().await;
        due += if args.ramp == 0 {
            n as f64
        } else {
            f64::from(args.ramp) / 100.0
        };
        while due >= 1.0 && left > 0 {
            due -= 1.0;
            left -= 1;
            if let Some((i, identity)) = pending.next() {
                tasks.push(tokio::spawn(device::run(i as u32, identity, env.clone())));
            }
        }
    }
    let ramp_seconds = start.elapsed().as_secs_f64();
    drop(pending);

    // The load runs for its duration.
    tokio::time::sleep_until(deadline).await;
    let _ = stop_pressing_tx.send(true);
    let _ = chaos_stop_tx.send(true);
    if let Some(task) = chaos_task {
        let _ = task.await;
    }
    // Drain: wait (bounded) for every press to be acknowledged and received.
    let drain_until = Instant::now() + args.drain;
    while Instant::now() < drain_until {
        let waiting = if observer.is_some() {
            ledger.outstanding()
        } else {
            ledger.sent.load(Ordering::Relaxed) - ledger.acked.load(Ordering::Relaxed)
        };
        // Devices still coming back from the last fault are waited for too.
        let away = n as u64 - ledger.connected.load(Ordering::Relaxed).min(n as u64);
        if waiting == 0 && away == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load_seconds = start.elapsed().as_secs_f64();
    let connected_at_end = ledger.connected.load(Ordering::Relaxed);
    let tally = ledger.tally(&ids);
    let (_, peak_rss) = memory();

    // Shut down: devices say offline and disconnect (bounded).
    let _ = shutdown_tx.send(true);
    let mut summaries = Vec::with_capacity(tasks.len());
    let shutdown_deadline = Instant::now() + Duration::from_secs(15);
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(shutdown_deadline, task).await {
            Ok(Ok(summary)) => summaries.push(summary),
            Ok(Err(_)) => summaries.push(DeviceSummary::default()),
            Err(_) => {
                abort.abort();
                summaries.push(DeviceSummary::default());
            }
        }
    }
    sampler.abort();
    if let Some(why) = summaries.iter().find_map(|s| s.failed.as_ref()) {
        let failed = summaries.iter().filter(|s| s.failed.is_some()).count();
        eprintln!("{failed} devices could not start; the first: {why}");
    }
    if let Some(o) = observer {
        o.stop().await;
    }
    if let Some(p) = proxy {
        if let Ok(p) = Arc::try_unwrap(p) {
            p.stop();
        }
    }
    if let Some(b) = &target.broker {
        b.stop().await;
    }

    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let faults = faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let all_connected = *all_connected.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Report::build(report::Inputs {
        args,
        target: target.description.clone(),
        observed: target.broker.is_some() || args.backend.is_some() || args.observer_cert.is_some(),
        ledger: &ledger,
        tally,
        ids: &ids,
        summaries: &summaries,
        samples,
        faults,
        connected_at_end,
        ramp_seconds,
        load_seconds,
        rss_before,
        all_connected,
        peak_rss,
    }))
}

/// Samples the counters every second (for the plots) and shows live progress on stderr.
async fn sample(
    start: Instant,
    n: usize,
    ledger: Arc<Ledger>,
    samples: Arc<Mutex<Vec<Sample>>>,
    all_connected: Arc<Mutex<Option<(f64, u64)>>>,
) {
    let terminal = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Sample::default();
    loop {
        tick.tick().await;
        let t = start.elapsed().as_secs_f64();
        let now = Sample {
            t: (t * 1000.0).round() / 1000.0,
            connected: ledger.connected.load(Ordering::Relaxed),
            connects: ledger.connects.load(Ordering::Relaxed),
            sent: ledger.sent.load(Ordering::Relaxed),
            acked: ledger.acked.load(Ordering::Relaxed),
            received: ledger.received_copies.load(Ordering::Relaxed),
            errors: ledger.errors.load(Ordering::Relaxed)
                + ledger.connect_failures.load(Ordering::Relaxed),
        };
        if now.connected as usize >= n {
            let mut slot = all_connected.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some((t, memory().0));
            }
        }
        let dt = (now.t - last.t).max(0.001);
        let line = format!(
            "[{:>5.0}s] connected {}/{n}  connects/s {:.0}  presses/s {:.0} sent {:.0} received  acked-not-received {}  errors {}",
            t,
            now.connected,
            (now.connects - last.connects) as f64 / dt,
            (now.sent - last.sent) as f64 / dt,
            (now.received - last.received) as f64 / dt,
            ledger.acked_not_received(),
            now.errors,
        );
        if terminal {
            eprint!("\r{line}\x1b[K");
        } else if (t as u64) % 5 == 0 {
            eprintln!("{line}");
        }
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now.clone());
        last = now;
    }
}
