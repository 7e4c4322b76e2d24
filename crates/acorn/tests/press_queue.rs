//! The durable press queue and the heartbeat of `acorn device run`, as processes against a
//! real mosquitto over TLS (test-time certificates, the AWS IoT-like ACL):
//!
//! - presses made while the broker is down survive a `kill -9`: after a restart every one
//!   arrives, in order, with its original `pressId` and timestamp (both transports);
//! - a full queue drops its oldest presses, and the next heartbeat counts them;
//! - heartbeats come at the `--heartbeat` cadence with their fields, and a settings update
//!   changes the cadence live;
//! - every message the subscriber sees (presses, presence, replies, heartbeats, and the
//!   settings and commands the test sends) validates against `docs/schemas`.

mod schema_check;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acorn_device::{PressStore as _, QueuedPress};
use acorn_nvs::{MemFlash, Mode, Nvs};
use acorn_test_support::mqtt::{device_image, Client, Env};
use acorn_transport::rumqttc::{self, Event, Packet};
use schema_check::{Kind, Schemas};
use serde_json::{json, Value};

/// Bound of every wait (reconnects after a broker outage wait out a jittered backoff).
const WAIT: Duration = Duration::from_secs(40);

/// A running `acorn device run` whose output is collected line by line.
struct Agent {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    reader: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let thread = std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            sink.lock().unwrap().push(line);
        }
    });
    (lines, thread)
}

impl Agent {
    fn start(args: &[String]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_acorn"))
            .args(["device", "run"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start acorn");
        let (stdout, out_thread) = collect(child.stdout.take().unwrap());
        let (stderr, err_thread) = collect(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
            readers: vec![out_thread, err_thread],
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Waits (bounded) until `count` lines of stdout (or stderr) contain `needle`; those lines.
    async fn wait_lines(&self, stderr: bool, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines: Vec<String> = {
                let stream = if stderr { &self.stderr } else { &self.stdout };
                stream
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|l| l.contains(needle))
                    .cloned()
                    .collect()
            };
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{count} lines with '{needle}' expected, {} seen:\n{}",
                lines.len(),
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, as a crash or a power cut would end it; waits for the process to go.
    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), None, "killed by a signal");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// `quit` on stdin; waits (bounded) for a clean exit.
    fn quit(&mut self) {
        self.send("quit");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0), "{}", self.output());
                break;
            }
            assert!(Instant::now() < deadline, "acorn did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message the backend saw, already checked against its schema.
#[derive(Debug, Clone)]
struct Seen {
    topic: String,
    json: Value,
}

impl Seen {
    fn is_press(&self) -> bool {
        self.topic.starts_with("acorn-pups/button-press/")
    }

    fn is_heartbeat(&self) -> bool {
        self.topic.starts_with("acorn-pups/status/") && self.json.get("uptimeMs").is_some()
    }

    fn unix_ms(&self) -> u64 {
        acorn_mqtt::parse_timestamp(self.json["timestamp"].as_str().unwrap()).unwrap()
    }
}

/// The backend (the service identity on the broker's service listener), subscribed to
/// everything under `acorn-pups/`: every message it sees, the test's own settings and
/// commands included, is checked against `docs/schemas`.
struct Backend {
    client: Client,
    schemas: Schemas,
    seen: Vec<Seen>,
}

impl Backend {
    async fn start(env: &Env) -> Self {
        Self {
            client: env.backend("acorn-pups/#").await,
            schemas: Schemas::load(),
            seen: Vec::new(),
        }
    }

    /// The next message (bounded), validated and recorded.
    async fn next(&mut self, what: &str) -> Seen {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.client.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out waiting for {what}; seen: {:#?}",
                        self.seen.iter().map(|s| &s.json).collect::<Vec<_>>()
                    )
                })
                .expect("backend event loop ended");
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let json = self.schemas.check_payload(&p.topic, &p.payload);
                    let seen = Seen {
                        topic: p.topic.clone(),
                        json,
                    };
                    self.seen.push(seen.clone());
                    return seen;
                }
                Ok(_) => {}
                Err(e) => panic!("backend connection failed: {e}"),
            }
        }
    }

    /// The next message satisfying `pred` (bounded).
    async fn wait(&mut self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        loop {
            let seen = self.next(what).await;
            if pred(&seen) {
                return seen;
            }
        }
    }

    /// Publishes a settings update or command after checking it against its schema (it comes
    /// back through the subscription and is checked again there).
    async fn send(&mut self, topic: &str, message: Value) {
        let kind = Kind::of_topic(topic).expect("an acorn-pups topic");
        self.schemas.check(kind, &message);
        self.client
            .client
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                message.to_string().into_bytes(),
            )
            .await
            .unwrap();
    }
}

/// A device image for `id` in `env`'s directory, and the arguments of `acorn device run` for
/// it (the test CA, `localhost:port`) plus `extra`.
fn device(env: &Env, id: &str, port: u16, extra: &[&str]) -> (PathBuf, Vec<String>) {
    let (image, _) = device_image(env.dir.path(), &env.ca, id);
    let mut args: Vec<String> = [
        "--image",
        &image.display().to_string(),
        "--broker",
        &format!("localhost:{port}"),
        "--ca",
        &env.dir.path().join("ca.pem").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    (image, args)
}

/// What a queue image holds, read from a copy (never written).
fn stored_queue(path: &Path) -> (Vec<QueuedPress>, u32) {
    let bytes = std::fs::read(path).unwrap();
    let size = u32::try_from(bytes.len()).unwrap();
    let mut nvs = Nvs::open_with(MemFlash::from_bytes(bytes), 0, size, None, Mode::ReadOnly)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stored = nvs.load().unwrap();
    assert!(stored.discarded.is_empty(), "{:?}", stored.discarded);
    (stored.presses, stored.dropped)
}

/// `acorn nvs dump [--json] IMAGE`.
fn nvs_dump(image: &Path, json: bool) -> String {
    let mut args = vec!["nvs".to_owned(), "dump".to_owned()];
    if json {
        args.push("--json".into());
    }
    args.push(image.display().to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_acorn"))
        .args(&args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The `pressId` of a console line: a JSON answer on stdout (`"pressId":"…"`, default
/// transport) or the core's notice on stderr (`…, pressId …`, embedded transport).
fn press_id_of(line: &str) -> String {
    match serde_json::from_str::<Value>(line) {
        Ok(answer) => answer["pressId"].as_str().unwrap().to_owned(),
        Err(_) => line
            .rsplit_once("pressId ")
            .unwrap_or_else(|| panic!("no pressId in {line}"))
            .1
            .trim()
            .to_owned(),
    }
}

/// Presses made while the broker is down survive a `kill -9` and all arrive after the
/// restart, in order, with their original `pressId` and timestamp.
async fn presses_survive_kill_9(transport: &str, id: &str) {
    const PRESSES: usize = 12; // more than the 8 the session holds at once
    let mut env = Env::start();
    let port = env.broker.port();
    env.kill_broker(); // nothing listens on the port now
    let (image, args) = device(
        &env,
        id,
        port,
        &["--transport", transport, "--heartbeat", "1s"],
    );
    let queue_image = image.with_extension("queue.bin");

    let mut agent = Agent::start(&args);
    let embedded = transport == "embedded";
    for i in 0..PRESSES {
        agent.send(&format!("press rf-{i:02} {}", 40 + i));
    }
    // The console answers each press once it is in the queue image.
    let (stderr, needle) = if embedded {
        (true, "button press queued: rf-")
    } else {
        (false, r#""queued":true"#)
    };
    let answers = agent.wait_lines(stderr, needle, PRESSES).await;
    let ids: Vec<String> = answers.iter().map(|l| press_id_of(l)).collect();
    let before_kill = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    agent.kill_9();

    // Every answered press is in the queue image, in press order.
    let (stored, dropped) = stored_queue(&queue_image);
    assert_eq!(dropped, 0);
    let stored_ids: Vec<String> = stored.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(stored_ids, ids, "{}", agent.output());
    // `acorn nvs dump` shows the queue readably.
    let dump = nvs_dump(&queue_image, false);
    assert!(
        dump.contains(&format!(
            "{PRESSES} presses waiting for delivery, 0 dropped"
        )),
        "{dump}"
    );
    assert!(
        dump.contains(&format!("oldest  pressId {}", ids[0])),
        "{dump}"
    );
    assert!(
        dump.contains(&format!("newest  pressId {}", ids[PRESSES - 1])),
        "{dump}"
    );
    assert!(dump.contains("button rf-00  battery 40 %"), "{dump}");
    let dump: Value = serde_json::from_str(&nvs_dump(&queue_image, true)).unwrap();
    assert_eq!(dump["pressQueue"]["count"], PRESSES);
    assert_eq!(dump["pressQueue"]["oldest"]["pressId"], ids[0].as_str());
    assert_eq!(
        dump["pressQueue"]["oldest"]["timestamp"],
        acorn_mqtt::format_timestamp(stored[0].unix_ms)
    );

    // Broker up, a subscriber, the device again.
    env.start_broker_again();
    let mut backend = Backend::start(&env).await;
    let mut agent = Agent::start(&args);
    let note = format!("{PRESSES} queued presses from before the restart");
    let start_line = &agent.wait_lines(false, &note, 1).await[0];
    let start_line: Value = serde_json::from_str(start_line).unwrap();
    assert_eq!(start_line["recoveredPresses"], PRESSES);

    // Every press arrives, in order, as it was made; duplicates (QoS 1 allows them) carry
    // the same pressId and are the same message.
    let by_id: HashMap<String, &QueuedPress> =
        stored.iter().map(|p| (p.id.to_string(), p)).collect();
    let mut first_seen: Vec<String> = Vec::new();
    let mut payloads: HashMap<String, Value> = HashMap::new();
    while first_seen.len() < PRESSES {
        let press = backend.wait("the queued presses", Seen::is_press).await;
        let press_id = press.json["pressId"].as_str().unwrap().to_owned();
        let original = by_id
            .get(&press_id)
            .unwrap_or_else(|| panic!("a press that was never made: {}", press.json));
        assert_eq!(press.json["deviceId"], id);
        assert_eq!(press.json["buttonRfId"], original.button.as_str());
        assert_eq!(press.json["batteryLevel"], json!(original.battery));
        assert_eq!(
            press.json["timestamp"],
            acorn_mqtt::format_timestamp(original.unix_ms),
            "the press keeps the time it was made"
        );
        assert!(press.unix_ms() <= before_kill, "{}", press.json);
        match payloads.get(&press_id) {
            Some(earlier) => assert_eq!(earlier, &press.json, "a duplicate is the same press"),
            None => {
                payloads.insert(press_id.clone(), press.json.clone());
                first_seen.push(press_id);
            }
        }
    }
    assert_eq!(first_seen, ids, "in press order");
    // Then the queue is empty: the heartbeat says so, and so does the image.
    backend
        .wait("a heartbeat with an empty queue", |s| {
            s.is_heartbeat() && s.json["queuedPresses"] == 0
        })
        .await;
    agent.quit();
    assert!(stored_queue(&queue_image).0.is_empty());
    let dump = nvs_dump(&queue_image, false);
    assert!(
        dump.contains("0 presses waiting for delivery, 0 dropped"),
        "{dump}"
    );
    let output = agent.output();
    assert!(!output.contains("panicked"), "{output}");
}

#[tokio::test]
async fn kill_9_with_presses_queued_while_the_broker_is_down_loses_none() {
    presses_survive_kill_9("rustls", "dev-kill").await;
}

#[tokio::test]
async fn kill_9_on_the_embedded_transport_loses_no_press_either() {
    presses_survive_kill_9("embedded", "dev-kill-emb").await;
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_the_next_heartbeat_counts_them() {
    const CAPACITY: usize = 5;
    const EXTRA: usize = 3;
    let mut env = Env::start();
    let port = env.broker.port();
    env.kill_broker();
    let (image, args) = device(
        &env,
        "dev-full",
        port,
        &[
            "--queue-capacity",
            &CAPACITY.to_string(),
            "--heartbeat",
            "1s",
        ],
    );
    let mut agent = Agent::start(&args);
    for i in 0..CAPACITY + EXTRA {
        agent.send(&format!("press rf-{i} 77"));
    }
    let answers = agent
        .wait_lines(false, r#""queued":true"#, CAPACITY + EXTRA)
        .await;
    let ids: Vec<String> = answers.iter().map(|l| press_id_of(l)).collect();
    // Never refused: every press was answered; the three oldest were dropped, in words.
    let dropped_lines = agent.wait_lines(true, "press queue full", EXTRA).await;
    for (line, id) in dropped_lines.iter().zip(&ids) {
        assert!(line.contains(id.as_str()), "{line}");
    }
    let queue_image = image.with_extension("queue.bin");
    let (stored, dropped) = stored_queue(&queue_image);
    assert_eq!(dropped, EXTRA as u32);
    let stored_ids: Vec<String> = stored.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(stored_ids, ids[EXTRA..]);

    // Broker up: the device reconnects by itself (after its backoff).
    env.start_broker_again();
    let mut backend = Backend::start(&env).await;
    let heartbeat = backend
        .wait("the first heartbeat", Seen::is_heartbeat)
        .await;
    assert_eq!(
        heartbeat.json["droppedPresses"], EXTRA,
        "{}",
        heartbeat.json
    );
    backend
        .wait("a heartbeat with an empty queue", |s| {
            s.is_heartbeat() && s.json["queuedPresses"] == 0
        })
        .await;
    // The newest five arrived, in order; the oldest three never did.
    let presses: Vec<String> = backend
        .seen
        .iter()
        .filter(|s| s.is_press())
        .map(|s| s.json["pressId"].as_str().unwrap().to_owned())
        .collect();
    let mut unique = presses.clone();
    unique.dedup();
    assert_eq!(unique, ids[EXTRA..], "{presses:?}");
    let buttons: Vec<&str> = backend
        .seen
        .iter()
        .filter(|s| s.is_press())
        .map(|s| s.json["buttonRfId"].as_str().unwrap())
        .collect();
    for never in ["rf-0", "rf-1", "rf-2"] {
        assert!(!buttons.contains(&never), "{buttons:?}");
    }
    agent.send("status");
    let status: Value =
        serde_json::from_str(&agent.wait_lines(false, "droppedPresses", 1).await[0]).unwrap();
    assert_eq!(status["droppedPresses"], EXTRA);
    assert_eq!(status["queuedPresses"], 0);
    agent.quit();
    let dump = nvs_dump(&queue_image, false);
    assert!(
        dump.contains("0 presses waiting for delivery, 3 dropped (queue full)"),
        "{dump}"
    );
}

#[tokio::test]
async fn heartbeats_come_at_the_cadence_with_their_fields_and_a_settings_update_changes_it() {
    let env = Env::start();
    let mut backend = Backend::start(&env).await;
    let (_, args) = device(&env, "dev-beat", env.broker.port(), &["--heartbeat", "1s"]);
    let mut agent = Agent::start(&args);
    let status = "acorn-pups/status/dev-beat";
    backend
        .wait("online", |s| {
            s.topic == status && s.json["status"] == "online"
        })
        .await;
    let online_at = Instant::now();

    // At least two heartbeats within 5 s, each at least 0.8 s after the one before (as the
    // device measures it: uptimeMs).
    let mut beats = Vec::new();
    while beats.len() < 3 {
        beats.push(backend.wait("a heartbeat", Seen::is_heartbeat).await);
        if beats.len() == 2 {
            assert!(online_at.elapsed() < Duration::from_secs(5), "{beats:?}");
        }
    }
    for pair in beats.windows(2) {
        let gap =
            pair[1].json["uptimeMs"].as_u64().unwrap() - pair[0].json["uptimeMs"].as_u64().unwrap();
        assert!(gap >= 800, "heartbeats {gap} ms apart: {pair:?}");
    }
    let beat = &beats[0].json;
    for field in [
        "uptimeMs",
        "rssBytes",
        "certificateDaysLeft",
        "queuedPresses",
        "droppedPresses",
        "reconnects",
        "connectMs",
    ] {
        assert!(beat.get(field).is_some(), "{field} missing: {beat}");
    }
    assert_eq!(beat["status"], "online");
    assert_eq!(beat["queuedPresses"], 0);
    assert_eq!(beat["droppedPresses"], 0);
    assert_eq!(beat["reconnects"], 0);
    assert!(beat["rssBytes"].as_u64().unwrap() > 1 << 20, "{beat}");
    assert!(
        beat["certificateDaysLeft"].as_i64().unwrap() > 365,
        "{beat}"
    );
    // The firmware's fields are not made up on Linux; nothing failed, so no reason.
    for field in [
        "freeHeapBytes",
        "wifiRssiDbm",
        "resetReason",
        "lastDisconnectReason",
    ] {
        assert!(beat.get(field).is_none(), "{field}: {beat}");
    }

    // A press and commands: their messages and replies validate too.
    agent.send("press rf-beat 12");
    backend.wait("the press", Seen::is_press).await;
    backend
        .send(
            "acorn-pups/commands/dev-beat",
            json!({"requestId":"c-1","command":"get-status"}),
        )
        .await;
    let reply = backend
        .wait("the get-status reply", |s| {
            s.topic == status && s.json["requestId"] == "c-1"
        })
        .await;
    assert_eq!(reply.json["settings"]["heartbeatSeconds"], 300);
    backend
        .send(
            "acorn-pups/commands/dev-beat",
            json!({"requestId":"c-2","command":"ping"}),
        )
        .await;
    backend
        .wait("the ping reply", |s| {
            s.topic == status && s.json["requestId"] == "c-2"
        })
        .await;

    // heartbeatSeconds 3: applied at once (it replaces --heartbeat), the next heartbeats
    // 3 s apart.
    backend
        .send(
            "acorn-pups/settings/dev-beat",
            json!({"requestId":"s-1","heartbeatSeconds":3}),
        )
        .await;
    let reply = backend
        .wait("the settings reply", |s| {
            s.topic == status && s.json["requestId"] == "s-1"
        })
        .await;
    assert_eq!(reply.json["result"], "ok");
    assert_eq!(reply.json["settings"]["heartbeatSeconds"], 3);
    let applied_at = reply.unix_ms();
    let mut after = Vec::new();
    while after.len() < 2 {
        let beat = backend.wait("a heartbeat", Seen::is_heartbeat).await;
        if beat.unix_ms() > applied_at {
            after.push(beat);
        }
    }
    assert!(
        after[0].unix_ms() - applied_at >= 2500,
        "first heartbeat {} ms after the update",
        after[0].unix_ms() - applied_at
    );
    let gap =
        after[1].json["uptimeMs"].as_u64().unwrap() - after[0].json["uptimeMs"].as_u64().unwrap();
    assert!(gap >= 2500, "heartbeats {gap} ms apart after the update");
    agent.quit();
    backend
        .wait("offline", |s| {
            s.topic == status && s.json["status"] == "offline"
        })
        .await;
    // Every message seen validated, of every kind.
    for kind in ["button-press", "status", "settings", "commands"] {
        assert!(
            backend
                .seen
                .iter()
                .any(|s| s.topic.split('/').nth(1) == Some(kind)),
            "no {kind} message seen"
        );
    }
}

#[test]
fn nvs_dump_shows_a_queue_image_readably() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.bin");
    let mut queue = acorn_agent::QueueImage::open_or_create(&path, None).unwrap();
    let nvs = queue.nvs_mut();
    nvs.save_boot(0x0a3f1c).unwrap();
    for (seq, button, battery) in [
        (0, "rf-a", Some(5)),
        (1, "rf-b", None),
        (7, "rf-c", Some(100)),
    ] {
        nvs.append(&QueuedPress {
            id: acorn_device::PressId::new(0x0a3f1c, seq),
            unix_ms: 1_795_884_127_123 + u64::from(seq),
            button: button.into(),
            battery,
        })
        .unwrap();
    }
    nvs.save_dropped(2).unwrap();
    // A record the device cannot read (it would erase it at its next start).
    let ns = nvs.namespace(acorn_device::PRESS_NAMESPACE).unwrap();
    nvs.set_str(ns, "00a3f1c00000009", "zz").unwrap();
    drop(queue);

    let text = nvs_dump(&path, false);
    for expected in [
        "press queue (namespace press_queue): 3 presses waiting for delivery, 2 dropped (queue full), boot number 671516",
        "  oldest  pressId 00a3f1c00000000  2026-11-28T16:42:07.123Z  button rf-a  battery 5 %",
        "  newest  pressId 00a3f1c00000007  2026-11-28T16:42:07.130Z  button rf-c  battery 100 %",
        "  unreadable: press queue record \"00a3f1c00000009\" is unreadable",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    let json: Value = serde_json::from_str(&nvs_dump(&path, true)).unwrap();
    let queue = &json["pressQueue"];
    assert_eq!(queue["count"], 3);
    assert_eq!(queue["dropped"], 2);
    assert_eq!(queue["boot"], 0x0a3f1c);
    assert_eq!(
        queue["newest"],
        json!({"pressId":"00a3f1c00000007","timestamp":"2026-11-28T16:42:07.130Z","buttonRfId":"rf-c","batteryLevel":100})
    );
    assert_eq!(queue["oldest"]["batteryLevel"], 5);
    assert_eq!(queue["unreadable"].as_array().unwrap().len(), 1);
    // An image without the namespace has no queue summary.
    let plain = dir.path().join("plain.bin");
    drop(acorn_agent::DeviceImage::create(&plain, 0x6000, None).unwrap());
    assert!(!nvs_dump(&plain, false).contains("press queue"));
    assert!(nvs_dump(&plain, true).contains("\"entries\""));
    assert!(!nvs_dump(&plain, true).contains("pressQueue"));
}
