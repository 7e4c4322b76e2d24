//! Benchmark of the device runtime, printed as Markdown:
//!
//! 1. `acorn device ping` (the CLI process: load the identity from an NVS image, DNS, TCP,
//!    TLS, CONNECT, SUBSCRIBE, one QoS 1 PUBLISH, DISCONNECT) against `mosquitto_pub -q 1`
//!    (connect, the same publish, disconnect) on one local mosquitto with the same
//!    certificates and the same status message: median wall and CPU time (user + system,
//!    from bash's `time`, millisecond resolution) of N runs each;
//! 2. press-to-PUBACK latency (p50, p99, max) of 1000 presses on a connected device runtime,
//!    paced at 80/s (under AWS IoT's 100 publishes/s, which the session enforces);
//! 3. resident memory (VmRSS, VmHWM) of a connected `acorn device run`, idle and after 200
//!    presses.
//!
//! `cargo build --release -p acorn && cargo run --release -p acorn-agent --example device_bench [-- N]`
//! (`ACORN_BIN` overrides the path of the `acorn` binary, default `target/release/acorn`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acorn_agent::device::{DeviceEvent, PressOutcome};
use acorn_agent::{Device, DeviceImage, DeviceOptions};
use acorn_devstack::broker::{Broker, BrokerConfig};
use acorn_transport::{BrokerTarget, TrustRoots};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const DEVICE: &str = "device-a";

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10);
    let acorn = acorn_bin()?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let image = setup(dir)?;
    let broker = Broker::start(BrokerConfig::new(
        dir.join("broker"),
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))?;
    let port = broker.port();
    let broker_arg = format!("localhost:{port}");
    let ca = dir.join("ca.pem").display().to_string();
    let image_arg = image.display().to_string();

    println!("### Device runtime (loopback, mosquitto 2.0, mutual TLS, P-256 certificates)\n");
    // 1. ping vs mosquitto_pub.
    let payload = String::from_utf8(
        acorn_mqtt::DeviceStatusMessage::new(
            DEVICE,
            1_795_884_127_123,
            acorn_mqtt::DeviceStatus::Online,
            acorn_agent::device::AGENT_VERSION,
        )
        .to_json()?,
    )?;
    let ping_cmd: Vec<String> = [
        acorn.display().to_string(),
        "device".into(),
        "ping".into(),
        "--image".into(),
        image_arg.clone(),
        "--broker".into(),
        broker_arg.clone(),
        "--ca".into(),
        ca.clone(),
    ]
    .into();
    let pub_cmd: Vec<String> = [
        "mosquitto_pub",
        "-h",
        "localhost",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-i",
        DEVICE,
        "-t",
        &format!("acorn-pups/status/{DEVICE}"),
        "-m",
        &payload,
        "--cafile",
        &ca,
        "--cert",
        &dir.join("device.pem").display().to_string(),
        "--key",
        &dir.join("device.key").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Warm up the page cache of both binaries.
    timed(&ping_cmd)?;
    timed(&pub_cmd)?;
    let mut rows = Vec::new();
    for (name, cmd) in [
        ("`acorn device ping`", &ping_cmd),
        ("`mosquitto_pub -q 1`", &pub_cmd),
    ] {
        let mut walls = Vec::with_capacity(n);
        let mut cpus = Vec::with_capacity(n);
        for _ in 0..n {
            let (wall, cpu) = timed(cmd)?;
            walls.push(wall);
            cpus.push(cpu);
        }
        rows.push((name, median(&mut walls), median(&mut cpus)));
    }
    println!("Connect + one QoS 1 publish + disconnect, {n} runs each (medians):\n");
    println!("| client | wall | CPU (user+sys) |");
    println!("|---|---:|---:|");
    for (name, wall, cpu) in &rows {
        println!("| {name} | {} | {} |", whole_ms(*wall), whole_ms(*cpu));
    }
    if let [(_, acorn_wall, _), (_, pub_wall, _)] = rows.as_slice() {
        println!(
            "\n`acorn device ping` / `mosquitto_pub` wall time: {:.2}× (it also loads and validates the identity from the NVS image and does a SUBSCRIBE/SUBACK round trip)\n",
            acorn_wall.as_secs_f64() / pub_wall.as_secs_f64().max(1e-9)
        );
    }

    // 2. press-to-PUBACK latency on a connected runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (p50, p99, max, count) = runtime.block_on(press_latency(&image, port, dir))?;
    println!("Press-to-PUBACK latency on a connected device runtime ({count} presses, 80/s):\n");
    println!("| p50 | p99 | max |");
    println!("|---:|---:|---:|");
    println!("| {} | {} | {} |\n", ms(p50), ms(p99), ms(max));

    // 3. resident memory of `acorn device run`.
    let (idle, busy) = memory(&acorn, &image_arg, &broker_arg, &ca)?;
    println!("Resident memory of a connected `acorn device run` (from /proc/PID/status):\n");
    println!("| when | VmRSS | VmHWM |");
    println!("|---|---:|---:|");
    println!("| connected, idle | {} KiB | {} KiB |", idle.0, idle.1);
    println!("| after 200 presses | {} KiB | {} KiB |", busy.0, busy.1);
    broker.stop()?;
    Ok(())
}

fn acorn_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("ACORN_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/acorn"),
    };
    if !path.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release -p acorn` first (or set ACORN_BIN)",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// A CA, a server certificate, the device's certificate and key (files) and its NVS image.
fn setup(dir: &Path) -> Result<PathBuf> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "Bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let leaf = |cn: &str, sans: Vec<String>| -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        Ok((params.signed_by(&key, &ca)?.pem(), key.serialize_pem()))
    };
    let (server, server_key) = leaf("broker", vec!["localhost".into()])?;
    let (device, device_key) = leaf(DEVICE, vec![])?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("server.pem"), server)?;
    std::fs::write(dir.join("server.key"), server_key)?;
    std::fs::write(dir.join("device.pem"), &device)?;
    std::fs::write(dir.join("device.key"), &device_key)?;
    let path = dir.join("device.bin");
    let mut image = DeviceImage::create(&path, 0x6000, None)?;
    image.provision(
        &acorn_certs::DeviceCertificates {
            device_certificate: device.into_bytes(),
            private_key: acorn_certs::PrivateKey::new(device_key.into_bytes()),
            iot_endpoint: "localhost".into(),
            device_id: DEVICE.into(),
        },
        acorn_agent::device_image::unix_now(),
    )?;
    Ok(path)
}

/// Runs `cmd` under bash's `time`: (wall, user + system CPU), millisecond resolution.
fn timed(cmd: &[String]) -> Result<(Duration, Duration)> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"TIMEFORMAT="%3R %3U %3S"; { time "$@" >/dev/null 2>&1; } 2>&1"#)
        .arg("bench")
        .args(cmd)
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let fields: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("bash time output {text:?}: {e}"))?;
    let [wall, user, sys] = fields.as_slice() else {
        return Err(format!("unexpected bash time output {text:?}").into());
    };
    Ok((
        Duration::from_secs_f64(*wall),
        Duration::from_secs_f64(user + sys),
    ))
}

async fn press_latency(
    image: &Path,
    port: u16,
    dir: &Path,
) -> Result<(Duration, Duration, Duration, usize)> {
    let mut options = DeviceOptions::new(image);
    options.broker = Some(BrokerTarget::new("localhost", port));
    options.roots = TrustRoots::from_pem_file(&dir.join("ca.pem"))?;
    let handle = Device::open(options)?.spawn();
    let mut events = handle.events();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await?? {
            DeviceEvent::Status(acorn_mqtt::ConnectionStatus::Connected) => break,
            _ => continue,
        }
    }
    let mut latencies = Vec::with_capacity(1000);
    let mut ticker = tokio::time::interval(Duration::from_micros(12_500));
    for i in 0..1000 {
        ticker.tick().await;
        let start = Instant::now();
        let PressOutcome::Queued(id) = handle.press(&format!("b{i}"), Some(90)).await? else {
            return Err("a distinct button was cooled down".into());
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await?? {
                DeviceEvent::PressDelivered(d) if d == id => break,
                _ => continue,
            }
        }
        latencies.push(start.elapsed());
    }
    handle.shutdown().await?;
    let slowest = latencies
        .iter()
        .enumerate()
        .max_by_key(|(_, d)| **d)
        .map_or(0, |(i, _)| i);
    eprintln!("(slowest press: #{slowest}, counting from 0)");
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Ok((at(0.5), at(0.99), at(1.0), latencies.len()))
}

/// (VmRSS, VmHWM) in KiB of a connected `acorn device run`: idle, then after 200 presses.
fn memory(acorn: &Path, image: &str, broker: &str, ca: &str) -> Result<((u64, u64), (u64, u64))> {
    let mut child = Command::new(acorn)
        .args([
            "device", "run", "--image", image, "--broker", broker, "--ca", ca,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if line.contains("status=\"connected\"") || line.contains(" connected") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| "acorn device run did not connect within 10 s")?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = vm(child.id())?;
    {
        let stdin = child.stdin.as_mut().ok_or("no stdin")?;
        for i in 0..200 {
            writeln!(stdin, "press m{i} 50")?;
            std::thread::sleep(Duration::from_millis(12));
        }
        stdin.flush()?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let busy = vm(child.id())?;
    let _ = child.stdin.take().map(|mut s| writeln!(s, "quit"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok((idle, busy))
}

fn vm(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or(format!("{name} missing"))?;
        Ok(line.split_whitespace().nth(1).ok_or("bad line")?.parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// bash's `time` has millisecond resolution.
fn whole_ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
