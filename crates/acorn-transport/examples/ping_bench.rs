//! Benchmark: `ping` (connect + SUBSCRIBE + one QoS 1 publish + disconnect over mutual TLS)
//! against `mosquitto_pub -q 1` doing connect + the same publish + disconnect, on one local
//! mosquitto with the same certificates and message.
//!
//! `cargo run --release -p acorn-agent --example ping_bench [-- N]` (default N = 10) prints
//! wall-time medians and CPU time per run: in-process ping, ping as a fresh process (this
//! example's `once` mode), and mosquitto_pub.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use acorn_devstack::broker::{Broker, BrokerConfig};
use acorn_transport::{ping, BrokerTarget, ClientIdentity, PingOptions, SecretString, TrustRoots};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("once") {
        return once(&args[2..]);
    }
    let n: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(10);
    bench(n)
}

/// `once DIR PORT`: one ping with the files in DIR, as a separate process.
fn once(args: &[String]) -> Result<()> {
    let [dir, port] = args else {
        return Err("usage: once DIR PORT".into());
    };
    let dir = Path::new(dir);
    let options = options(dir, port.parse()?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(ping(&options))
        .map_err(|f| f.to_string())?;
    Ok(())
}

fn options(dir: &Path, port: u16) -> Result<PingOptions> {
    let identity = ClientIdentity::new(
        std::fs::read_to_string(dir.join("device.pem"))?,
        SecretString::from(std::fs::read_to_string(dir.join("device.key"))?),
    );
    let roots = TrustRoots::from_pem_file(&dir.join("ca.pem"))?;
    let mut options = PingOptions::new(
        BrokerTarget::new("localhost", port),
        identity,
        roots,
        "device-a",
        "1.0.0",
    );
    options.payload = std::fs::read(dir.join("payload.json"))?;
    Ok(options)
}

fn bench(n: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
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
    let (device, device_key) = leaf("device-a", vec![])?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("server.pem"), server)?;
    std::fs::write(dir.join("server.key"), server_key)?;
    std::fs::write(dir.join("device.pem"), device)?;
    std::fs::write(dir.join("device.key"), device_key)?;
    let payload = acorn_transport::presence::status_json(
        "device-a",
        acorn_mqtt::DeviceStatus::Online,
        "1.0.0",
    );
    std::fs::write(dir.join("payload.json"), &payload)?;
    let broker = Broker::start(BrokerConfig::new(
        dir.join("broker"),
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ))?;
    let port = broker.port();
    let options = options(dir, port)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut in_process = Vec::with_capacity(n);
    let mut steps = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let report = runtime
            .block_on(ping(&options))
            .map_err(|f| f.to_string())?;
        in_process.push(start.elapsed());
        steps.push(report.steps);
    }
    let exe = std::env::current_exe()?;
    let dir_arg = dir.display().to_string();
    let port_arg = port.to_string();
    let (ping_proc, ping_cpu) = run_n(n, || {
        let mut c = Command::new(&exe);
        c.args(["once", &dir_arg, &port_arg]);
        c
    })?;
    let payload_text = String::from_utf8(payload)?;
    let (pub_proc, pub_cpu) = run_n(n, || {
        let mut c = Command::new("mosquitto_pub");
        c.args([
            "-h",
            "localhost",
            "-p",
            &port_arg,
            "-q",
            "1",
            "-i",
            "device-a",
        ])
        .args(["-t", "acorn-pups/status/device-a", "-m", &payload_text])
        .arg("--cafile")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join("device.pem"))
        .arg("--key")
        .arg(dir.join("device.key"));
        c
    })?;
    println!(
        "runs: {n} each, loopback, mosquitto 2.0 with mutual TLS (TLS 1.3, P-256 certificates)"
    );
    println!(
        "ping in-process      median wall {:>9.3?}",
        median(&mut in_process)
    );
    println!(
        "ping as a process    median wall {:>9.3?}  cpu/run {:>9.3?}",
        median(&mut ping_proc.clone()),
        ping_cpu
    );
    println!(
        "mosquitto_pub -q 1   median wall {:>9.3?}  cpu/run {:>9.3?}",
        median(&mut pub_proc.clone()),
        pub_cpu
    );
    for step in [
        acorn_transport::Step::Dns,
        acorn_transport::Step::Tcp,
        acorn_transport::Step::Tls,
        acorn_transport::Step::Connack,
        acorn_transport::Step::Suback,
        acorn_transport::Step::Puback,
        acorn_transport::Step::Disconnect,
    ] {
        let mut d: Vec<Duration> = steps
            .iter()
            .filter_map(|s| s.iter().find(|(k, _)| *k == step).map(|(_, d)| *d))
            .collect();
        println!("  step {:<10} median {:>9.3?}", step.name(), median(&mut d));
    }
    broker.stop()?;
    Ok(())
}

/// Runs a command `n` times; returns wall times and CPU time (user + system) per run.
fn run_n(n: usize, make: impl Fn() -> Command) -> Result<(Vec<Duration>, Duration)> {
    let mut walls = Vec::with_capacity(n);
    let cpu_before = children_cpu()?;
    for _ in 0..n {
        let start = Instant::now();
        let status = make().status()?;
        walls.push(start.elapsed());
        if !status.success() {
            return Err(format!("command failed: {status}").into());
        }
    }
    let cpu = children_cpu()?.saturating_sub(cpu_before);
    Ok((walls, cpu / u32::try_from(n.max(1))?))
}

/// User + system CPU time of waited-for children (`cutime + cstime` of /proc/self/stat).
fn children_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(')').ok_or("bad /proc/self/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: field 3 is index 0, so cutime (16) and cstime (17) are 13 and 14.
    let ticks: u64 = fields.get(13).ok_or("short stat")?.parse::<u64>()?
        + fields.get(14).ok_or("short stat")?.parse::<u64>()?;
    let hz = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?;
    let hz: u64 = hz.trim().parse()?;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz.max(1)))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
