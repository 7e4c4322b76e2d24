//! `acorn sim` against a real mosquitto over mutual TLS on 127.0.0.1 (started by the
//! simulator on free ports, with certificates made at run time): delivery accounting under
//! chaos (broker kill -9 and restart, proxy faults), a loss the accounting must report, and
//! the reports (JSON against its schema, the HTML page rendered by headless Chromium).
//!
//! Device counts stay modest so the suite stays quick; the large figures come from
//! `bench/sim.sh` (docs/benchmarks.md). Nothing here asserts a duration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `acorn` binary under test.
fn acorn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_acorn"))
}

/// Runs a command (output to files, so a full pipe never blocks it), killed after `limit`.
fn run_bounded(mut cmd: Command, dir: &Path, limit: Duration) -> Output {
    let out = std::fs::File::create(dir.join("stdout.txt")).unwrap();
    let err = std::fs::File::create(dir.join("stderr.txt")).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn acorn");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(dir.join("stdout.txt")).unwrap_or_default(),
        stderr: std::fs::read(dir.join("stderr.txt")).unwrap_or_default(),
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `acorn sim ARGS --json DIR/report.json`; returns the output and the report.
fn sim(dir: &Path, args: &[&str], limit: Duration) -> (Output, Value) {
    let json = dir.join("report.json");
    let mut cmd = acorn();
    cmd.arg("sim")
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--dir")
        .arg(dir.join("broker"));
    let out = run_bounded(cmd, dir, limit);
    let report = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}", text(&out)));
    (out, serde_json::from_str(&report).unwrap())
}

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas/sim-report.json")
}

/// Checks the report against docs/schemas/sim-report.json (itself checked against the draft
/// 2020-12 meta-schema).
fn check_schema(report: &Value) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap();
    jsonschema::draft202012::meta::validate(&schema).expect("a valid 2020-12 schema");
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the report does not validate: {errors:#?}"
    );
}

fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

fn is_press_id(s: &str) -> bool {
    s.len() == 15
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn two_hundred_devices_lose_nothing_through_three_broker_kills_and_proxy_faults() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = sim(
        dir.path(),
        &[
            "--devices",
            "200",
            "--duration",
            "100s",
            "--ramp",
            "200",
            "--press-every",
            "2s",
            "--commands-every",
            "500ms",
            // Three kills; between them every kind of network fault. A connection must stay
            // up 30 s before the session forgets its failures, so the kills are spaced that
            // far apart: closer, devices climb the backoff towards its 60 s cap and the run
            // would have to wait for them (the policy at work, not a fault).
            "--chaos-plan",
            "kill:1s@8s,latency:100ms@14s+2s,stall@18s+2s,bandwidth:20k@22s+3s,\
             kill:1s@45s,reset@56s,blackhole@62s+2s,kill:1s@95s",
            "--drain",
            "90s",
        ],
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", text(&out));
    check_schema(&report);
    let all = text(&out);
    // Three kills and every kind of network fault happened.
    let faults = report["faults"].as_array().unwrap();
    let kinds: Vec<&str> = faults.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "kill").count(), 3, "{all}");
    for kind in ["reset", "stall", "blackhole", "latency", "bandwidth"] {
        assert!(kinds.contains(&kind), "{kind} missing: {all}");
    }
    // Every acknowledged press reached the cloud; nothing unknown arrived.
    assert!(n(&report, "acked") > 0, "{all}");
    assert_eq!(n(&report, "lost"), 0, "{all}");
    assert_eq!(report["lostPresses"], Value::Array(vec![]), "{all}");
    assert_eq!(n(&report, "unexpected"), 0, "{all}");
    assert!(n(&report, "received") >= n(&report, "acked") - n(&report, "lost"));
    // Duplicates (a PUBACK lost to a reset or a kill, the press sent again with DUP) are
    // counted by their pressId.
    let duplicated = report["duplicatedPresses"].as_array().unwrap();
    assert_eq!(duplicated.len() as u64, n(&report, "duplicated"));
    for d in duplicated {
        assert!(is_press_id(d["pressId"].as_str().unwrap()), "{d}");
        assert!(d["copies"].as_u64().unwrap() >= 2, "{d}");
        assert!(d["deviceId"].as_str().unwrap().starts_with("sim-"), "{d}");
    }
    // Every device came back after every kill, and no device ever sent two CONNECTs closer
    // than the session's floor (1 s; the jittered backoff only adds to it).
    assert_eq!(n(&report, "connected"), 200, "{all}");
    let reconnects = &report["reconnects"];
    assert_eq!(reconnects["devicesReconnected"], 200, "{all}");
    assert!(
        reconnects["minConnectsPerDevice"].as_u64().unwrap() >= 4,
        "a device missed a kill: {all}"
    );
    assert!(
        reconnects["minConnectGapMs"].as_u64().unwrap() >= 1000,
        "{all}"
    );
    // The cloud side's commands and settings updates were answered.
    assert!(n(&report, "commandsAnswered") > 0, "{all}");
}

#[test]
fn the_accounting_reports_presses_a_broker_without_persistence_lost() {
    // The observer leaves (its persistent session keeps its presses at the broker), the
    // broker (persistence off) is killed and restarted: what it held for the observer is
    // gone, although every one of those presses was acknowledged to its device.
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = sim(
        dir.path(),
        &[
            "--devices",
            "20",
            "--duration",
            "14s",
            "--ramp",
            "0",
            "--press-every",
            "500ms",
            "--commands-every",
            "0",
            "--chaos-plan",
            "observer-away@3s+5s,kill:1s@5s",
            "--drain",
            "15s",
            "--fail-on-loss",
        ],
        Duration::from_secs(120),
    );
    let all = text(&out);
    check_schema(&report);
    assert_eq!(out.status.code(), Some(1), "--fail-on-loss: {all}");
    let lost = n(&report, "lost");
    assert!(lost > 0, "{all}");
    let named = report["lostPresses"].as_array().unwrap();
    assert_eq!(named.len() as u64, lost.min(1000));
    for press in named {
        let id = press["pressId"].as_str().unwrap();
        assert!(is_press_id(id), "{press}");
        assert_eq!(press["copies"], 0);
        // Named on the terminal too.
        assert!(
            all.contains(id) || named.len() > 20,
            "{id} not named: {all}"
        );
    }
    // Presses after the observer came back were received: the loss is the broker's alone.
    assert!(n(&report, "received") > 0, "{all}");
    assert!(n(&report, "acked") >= lost, "{all}");
}

#[test]
fn the_html_report_renders_its_plots_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let (out, report) = sim(
        dir.path(),
        &[
            "--devices",
            "10",
            "--duration",
            "8s",
            "--ramp",
            "0",
            "--press-every",
            "500ms",
            "--chaos-plan",
            "reset@3s",
            "--report",
            html.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    assert!(out.status.success(), "{}", text(&out));
    check_schema(&report);
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 5, "five plots");
    assert!(
        !page.contains("<script"),
        "no script: the page is self-contained"
    );
    // Headless Chromium takes a screenshot of the page.
    let png = dir.path().join("report.png");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1400,2400",
    ])
    .arg(format!("--screenshot={}", png.display()))
    .arg(format!("file://{}", html.display()));
    let shot = run_bounded(cmd, dir.path(), Duration::from_secs(90));
    assert!(
        png.exists(),
        "no screenshot (apt-get install chromium): {}",
        text(&shot)
    );
    // The plots are drawn: their blue lines and bars and the green "received" line are on
    // the screenshot (text alone is black and grey).
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let (mut blue, mut green) = (0usize, 0usize);
    for px in buf[..info.buffer_size()].chunks(channels) {
        let (r, g, b) = (px[0], px[1], px[2]);
        if b > 200 && r < 170 && g < 170 {
            blue += 1;
        }
        if g > 100 && r < 80 && b < 80 {
            green += 1;
        }
    }
    assert!(blue > 2000, "blue pixels {blue}: the plots did not render");
    assert!(
        green > 50,
        "green pixels {green}: the presses plot did not render"
    );
}
