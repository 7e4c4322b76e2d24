//! The dev stack tried as an attacker would, against real `acorn dev up` processes (real
//! mosquitto, real HTTP). MQTT checks use mosquitto's own clients as independent peers, and
//! look at what a subscriber actually receives (a denied publish is still acknowledged and a
//! denied subscription still granted under MQTT 3.1.1).

use std::io::Write as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::devstack::{
    acorn, http, pem_files, publish, run_bounded, text, DevUp, Lines, PemFiles, Subscriber, WAIT,
};

/// A running dev stack with what the tests need to talk to it.
pub(super) struct Stack {
    pub(super) up: DevUp,
    pub(super) backend: String,
    pub(super) admin: String,
    pub(super) device_port: u16,
    pub(super) service_port: u16,
    pub(super) ca: PathBuf,
    pub(super) work: PathBuf,
}

impl Stack {
    pub(super) fn start(tmp: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut up = DevUp::start_with(&tmp.join("stack"), extra, env);
        let backend = up.backend();
        let admin = up.admin_key();
        let device_port = up.port("broker:");
        let service_port = up.port("services:");
        let ca = PathBuf::from(up.value("CA:"));
        let work = tmp.join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        Self {
            up,
            backend,
            admin,
            device_port,
            service_port,
            ca,
            work,
        }
    }

    /// Mints a token through the admin API (optionally bound, as JSON fields); returns it.
    pub(super) fn token(&self, binding: &str) -> String {
        let body = format!("{{\"ttlSeconds\": 600{binding}}}");
        let (status, v) = http(
            "POST",
            &self.backend,
            "/v1/tokens",
            Some(&self.admin),
            Some(&body),
        );
        assert_eq!(status, 201, "{v}");
        let v: serde_json::Value = serde_json::from_str(&v).expect("json");
        v["tokens"][0]["token"].as_str().expect("token").to_owned()
    }

    /// A token in a 0600 file, for `--token-file`.
    pub(super) fn token_file(&self, name: &str, binding: &str) -> PathBuf {
        let path = self.work.join(format!("{name}.token"));
        let mut f = std::fs::File::create(&path).expect("token file");
        f.write_all(self.token(binding).as_bytes()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// `acorn device register` of `id` with `flags`; returns the image path.
    pub(super) fn register(&self, id: &str, flags: &[&str]) -> PathBuf {
        let image = self.work.join(format!("{id}.nvs.bin"));
        let mut cmd = acorn();
        cmd.args([
            "device",
            "register",
            "--device-id",
            id,
            "--backend",
            &self.backend,
        ])
        .arg("--token-file")
        .arg(self.token_file(id, ""))
        .arg("--image")
        .arg(&image)
        .args(flags);
        let out = run_bounded(cmd);
        assert!(
            out.status.success(),
            "register {id} {flags:?}: {}",
            text(&out)
        );
        image
    }

    /// The identity in `image` as PEM files for mosquitto's clients.
    pub(super) fn pem_files_of(&self, image: &Path, name: &str) -> PemFiles {
        let get = |key: &str, out: &Path, secret: bool| {
            let mut cmd = acorn();
            cmd.args(["nvs", "get", "--namespace", "mqtt_certs", "--key", key])
                .arg(image)
                .arg("--out")
                .arg(out);
            if secret {
                cmd.arg("--show-secrets");
            }
            let result = run_bounded(cmd);
            assert!(result.status.success(), "nvs get {key}: {}", text(&result));
            let text = std::fs::read(out).expect("value");
            String::from_utf8_lossy(&text)
                .trim_end_matches('\0')
                .to_owned()
        };
        let cert = get(
            "device_cert",
            &self.work.join(format!("{name}.raw-crt")),
            false,
        );
        let key = get(
            "private_key",
            &self.work.join(format!("{name}.raw-key")),
            true,
        );
        pem_files(&self.work, name, &cert, &key, &self.ca)
    }

    /// A service identity from the admin API, as PEM files.
    pub(super) fn service(&self, name: &str) -> (String, PemFiles) {
        let body = format!("{{\"name\": \"{name}\"}}");
        let (status, v) = http(
            "POST",
            &self.backend,
            "/v1/service-identities",
            Some(&self.admin),
            Some(&body),
        );
        assert_eq!(status, 201, "{v}");
        let v: serde_json::Value = serde_json::from_str(&v).expect("json");
        let files = pem_files(
            &self.work,
            &format!("service-{name}"),
            v["certificatePem"].as_str().expect("cert"),
            v["privateKeyPem"].as_str().expect("key"),
            &self.ca,
        );
        (v["clientId"].as_str().expect("client id").to_owned(), files)
    }

    /// `acorn device run` of `image`, pressing every `press_every` if given.
    pub(super) fn run_device(&self, image: &Path, press_every: Option<&str>) -> Device {
        self.run_device_with(image, press_every, &[])
    }

    /// `acorn device run` of `image` with extra flags.
    pub(super) fn run_device_with(
        &self,
        image: &Path,
        press_every: Option<&str>,
        extra: &[&str],
    ) -> Device {
        let mut cmd = acorn();
        cmd.args(["device", "run", "--image"])
            .arg(image)
            .args(["--broker", &format!("localhost:{}", self.device_port)])
            .arg("--ca")
            .arg(&self.ca)
            .args(extra);
        if let Some(every) = press_every {
            cmd.args(["--press-every", every]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("device run");
        let stdout = Lines::spawn(child.stdout.take().expect("stdout"));
        let stderr = Lines::spawn(child.stderr.take().expect("stderr"));
        Device {
            child,
            stdout,
            stderr,
        }
    }
}

/// A running `acorn device run`.
pub(super) struct Device {
    child: Child,
    pub(super) stdout: Lines,
    pub(super) stderr: Lines,
}

impl Device {
    /// Asks for the status (bounded) until `wanted` accepts it; returns the status JSON.
    pub(super) fn status_until(
        &mut self,
        limit: Duration,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            let stdin = self.child.stdin.as_mut().expect("stdin");
            let _ = writeln!(stdin, "status");
            if let Some(line) = self.stdout.wait_for(Duration::from_millis(300), |l| {
                l.contains("\"connects\"") && !l.is_empty()
            }) {
                self.stdout.seen.retain(|l| l != &line);
                last = serde_json::from_str(&line).expect("status json");
                if wanted(&last) {
                    return last;
                }
            }
        }
        panic!(
            "status never matched; last {last}\nstderr:\n{}",
            self.stderr.drain().join("\n")
        );
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn connected(status: &serde_json::Value) -> bool {
    status["status"] == "connected"
}

#[test]
fn attack_no_registration_path_reaches_another_devices_topics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stack = Stack::start(tmp.path(), &[], &[]);
    let (observer_id, observer) = stack.service("observer");
    let (cloud_id, cloud) = stack.service("cloud");
    let mut watch = Subscriber::start(
        stack.service_port,
        &observer,
        &observer_id,
        &["acorn-pups/#"],
    );

    let victim_image = stack.register("victim", &[]);
    let mut victim = stack.run_device(&victim_image, Some("300ms"));
    victim.status_until(WAIT, connected);

    // One attacker per registration path, and one named like the old privileged identity.
    let paths: [(&str, &[&str]); 5] = [
        ("atk-csr-p256", &[]),
        ("atk-csr-rsa", &["--key-type", "rsa2048"]),
        ("atk-keygen-p256", &["--server-keygen"]),
        (
            "atk-keygen-rsa",
            &["--server-keygen", "--key-type", "rsa2048"],
        ),
        ("backend", &[]),
    ];
    for (id, flags) in paths {
        let files = stack.pem_files_of(&stack.register(id, flags), id);
        let mut spy = Subscriber::start(
            stack.device_port,
            &files,
            id,
            &[
                "acorn-pups/button-press/victim",
                "acorn-pups/status/victim",
                "acorn-pups/settings/victim",
                "acorn-pups/commands/victim",
                "acorn-pups/button-press/+",
                "acorn-pups/status/+",
                "#",
            ],
        );
        let evil_command = format!(r#"{{"requestId":"evil-{id}","command":"get-status"}}"#);
        let evil_settings = format!(r#"{{"requestId":"evil-{id}","soundVolume":1}}"#);
        let spoof = format!(
            r#"{{"deviceId":"victim","timestamp":"2026-12-01T00:00:00.000Z","status":"offline","firmwareVersion":"evil-{id}"}}"#
        );
        for (topic, payload) in [
            ("acorn-pups/commands/victim", evil_command.as_str()),
            ("acorn-pups/settings/victim", evil_settings.as_str()),
            ("acorn-pups/status/victim", spoof.as_str()),
            ("acorn-pups/button-press/victim", spoof.as_str()),
        ] {
            // Accepted at the MQTT level (a PUBACK), dropped by the broker's ACL.
            let out = publish(stack.device_port, &files, id, topic, payload);
            assert!(out.status.success(), "{}", text(&out));
        }
        // Control: the attacker's identity works on its own topic.
        let own = format!(
            r#"{{"deviceId":"{id}","buttonRfId":"own-{id}","timestamp":"2026-12-01T00:00:00.000Z"}}"#
        );
        let own_topic = format!("acorn-pups/button-press/{id}");
        let out = publish(stack.device_port, &files, id, &own_topic, &own);
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            watch
                .lines
                .wait_for(WAIT, |l| l.contains(&format!("own-{id}")))
                .is_some(),
            "{id}: the attacker's own press never arrived"
        );
        // Control: the cloud's command reaches the victim, which answers.
        let ok = format!(r#"{{"requestId":"cloud-{id}","command":"get-status"}}"#);
        let out = publish(
            stack.service_port,
            &cloud,
            &cloud_id,
            "acorn-pups/commands/victim",
            &ok,
        );
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            watch
                .lines
                .wait_for(WAIT, |l| l.starts_with("acorn-pups/status/victim")
                    && l.contains(&format!("cloud-{id}")))
                .is_some(),
            "{id}: the victim never answered the cloud"
        );
        // The victim's presses flow (the spy subscribed to them the whole time).
        let presses_before = count(&mut watch, "acorn-pups/button-press/victim ");
        let deadline = Instant::now() + WAIT;
        while count(&mut watch, "acorn-pups/button-press/victim ") <= presses_before {
            assert!(Instant::now() < deadline, "the victim's presses stopped");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The spy got nothing at all, and nothing the attacker sent reached anyone.
        let spied = spy.messages();
        assert!(spied.is_empty(), "{id} received: {spied:?}");
        let leaked: Vec<String> = watch
            .messages()
            .into_iter()
            .filter(|l| l.contains(&format!("evil-{id}")))
            .collect();
        assert!(leaked.is_empty(), "{id} reached: {leaked:?}");
    }
}

fn count(sub: &mut Subscriber, prefix: &str) -> usize {
    sub.messages()
        .iter()
        .filter(|l| l.starts_with(prefix))
        .count()
}

#[test]
fn attack_reserved_and_foreign_ids_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stack = Stack::start(tmp.path(), &[], &[]);
    for id in ["service:backend", "service:observer", "acorn.01", "a/b"] {
        let body = format!(
            r#"{{"deviceId":"{id}","serialNumber":"SN-1","macAddress":"02:00:00:00:00:01","firmwareVersion":"1.0.0","keyType":"p256"}}"#
        );
        let (status, v) = http(
            "POST",
            &stack.backend,
            "/v1/devices/register",
            Some(&stack.token("")),
            Some(&body),
        );
        assert_eq!(status, 400, "{id}: {v}");
        assert!(v.contains("invalid_device_id"), "{id}: {v}");
    }
    // A token bound to one device id registers only that device.
    let bound = stack.token(r#", "deviceId": "acorn-bound""#);
    let token_file = stack.work.join("bound.token");
    std::fs::write(&token_file, &bound).expect("token file");
    for (id, ok) in [("acorn-squatter", false), ("acorn-bound", true)] {
        let mut cmd = acorn();
        cmd.args([
            "device",
            "register",
            "--device-id",
            id,
            "--backend",
            &stack.backend,
        ])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--image")
        .arg(stack.work.join(format!("{id}.bin")));
        let out = run_bounded(cmd);
        assert_eq!(out.status.success(), ok, "{id}: {}", text(&out));
        if !ok {
            assert!(text(&out).contains("token_bound"), "{}", text(&out));
        }
    }
}

#[test]
fn attack_revocation_ends_the_live_session_within_5_s() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stack = Stack::start(tmp.path(), &[], &[]);
    let (observer_id, observer) = stack.service("observer");
    let (cloud_id, cloud) = stack.service("cloud");
    let mut watch = Subscriber::start(
        stack.service_port,
        &observer,
        &observer_id,
        &["acorn-pups/status/+"],
    );
    let mut victim = stack.run_device(&stack.register("victim", &[]), None);
    let mut bystander = stack.run_device(&stack.register("bystander", &[]), None);
    victim.status_until(WAIT, connected);
    bystander.status_until(WAIT, connected);
    let ask = |request_id: &str| {
        let command = format!(r#"{{"requestId":"{request_id}","command":"get-status"}}"#);
        let out = publish(
            stack.service_port,
            &cloud,
            &cloud_id,
            "acorn-pups/commands/victim",
            &command,
        );
        assert!(out.status.success(), "{}", text(&out));
    };
    ask("before-revoke");
    assert!(watch
        .lines
        .wait_for(WAIT, |l| l.contains("before-revoke"))
        .is_some());

    let started = Instant::now();
    let (status, v) = http(
        "POST",
        &stack.backend,
        "/v1/devices/victim/revoke",
        Some(&stack.admin),
        None,
    );
    assert_eq!(status, 200, "{v}");
    let offline = watch
        .lines
        .wait_for(Duration::from_secs(5), |l| {
            l.starts_with("acorn-pups/status/victim") && l.contains("certificate revoked")
        })
        .unwrap_or_else(|| panic!("no offline status within 5 s: {:?}", watch.lines.seen));
    assert!(offline.contains(r#""status":"offline""#), "{offline}");
    assert!(
        started.elapsed() <= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The device's live connection is gone: it no longer answers commands.
    ask("after-revoke");
    let answered = watch
        .lines
        .wait_for(Duration::from_secs(3), |l| l.contains("after-revoke"));
    assert!(
        answered.is_none(),
        "a revoked device answered: {answered:?}"
    );
    // Its agent says why in plain words and backs off to the slow cadence.
    let status = victim.status_until(WAIT, |s| {
        s["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("revoked"))
    });
    let line = status["status"].as_str().unwrap_or_default().to_owned();
    assert!(line.contains("slow cadence"), "{status}");
    // The other device was never dropped.
    let other = bystander.status_until(WAIT, connected);
    assert_eq!(other["connects"], 1, "{other}");
    assert_eq!(other["failures"], 0, "{other}");
}

#[test]
fn attack_the_crl_never_lapses_and_a_lapse_would_be_noticed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Each CRL lives 3 s and is renewed every second.
    let stack = Stack::start(tmp.path(), &["--crl-lifetime", "3"], &[]);
    let image = stack.register("pinger", &[]);
    let ping = || {
        let mut cmd = acorn();
        cmd.args(["device", "ping", "--image"])
            .arg(&image)
            .args(["--broker", &format!("localhost:{}", stack.device_port)])
            .arg("--ca")
            .arg(&stack.ca);
        run_bounded(cmd)
    };
    // Over four lifetimes, every connection is accepted.
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(12) {
        let out = ping();
        assert!(
            out.status.success(),
            "ping {pings} at {:?}: {}",
            started.elapsed(),
            text(&out)
        );
        pings += 1;
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(pings >= 6);
    // Control: freeze the dev stack's renewals (SIGSTOP; mosquitto runs on) past the CRL's
    // lifetime: the broker now refuses everyone, which is what the renewals prevent.
    let pid = stack.up.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill")
        .success());
    std::thread::sleep(Duration::from_secs(4));
    let refused = ping();
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .expect("kill")
        .success());
    assert!(
        !refused.status.success(),
        "a lapsed CRL was accepted: {}",
        text(&refused)
    );
    // Renewals resume: connections are accepted again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ping();
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", text(&out));
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn attack_slow_clients_and_token_floods_cost_little() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut stack = Stack::start(tmp.path(), &[], &[]);
    // Slow loris: 20 connections that never finish their headers are dropped within 10 s.
    let addr = stack.backend.trim_start_matches("http://").to_owned();
    let lorises: Vec<_> = (0..20)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                s.write_all(b"POST /v1/devices/register HTTP/1.1\r\nHost: x\r\n")
                    .expect("partial");
                s.set_read_timeout(Some(Duration::from_secs(15)))
                    .expect("timeout");
                let started = Instant::now();
                let mut buf = [0u8; 256];
                let _ = std::io::Read::read(&mut s, &mut buf);
                started.elapsed()
            })
        })
        .collect();
    for loris in lorises {
        let held = loris.join().expect("thread");
        assert!(
            held <= Duration::from_secs(10),
            "a slow client held on for {held:?}"
        );
    }
    // Twelve parallel server-keygen requests on one token cost at most one RSA key.
    let token = stack.token("");
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let (backend, token) = (stack.backend.clone(), token.clone());
            std::thread::spawn(move || {
                let body = format!(
                    r#"{{"deviceId":"flood-{i}","serialNumber":"SN-1","macAddress":"02:00:00:00:00:01","firmwareVersion":"1.0.0","keyType":"rsa2048"}}"#
                );
                http("POST", &backend, "/v1/devices/register", Some(&token), Some(&body)).0
            })
        })
        .collect();
    let statuses: Vec<u16> = racers
        .into_iter()
        .map(|r| r.join().expect("thread"))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [201, 409].contains(s)),
        "{statuses:?}"
    );
    stack
        .up
        .stderr
        .wait_for(WAIT, |l| l.contains("device registered"))
        .expect("the registration is logged");
    let keygens = stack
        .up
        .stderr
        .drain()
        .iter()
        .filter(|l| l.contains("generating the device's key pair"))
        .count();
    assert_eq!(keygens, 1, "{}", stack.up.stderr.seen.join("\n"));
    let refusals = stack
        .up
        .stderr
        .seen
        .iter()
        .filter(|l| l.contains("registration refused"))
        .count();
    assert_eq!(refusals, 11, "each refusal is logged with its reason");
}

#[test]
fn attack_files_are_private_and_logs_hold_no_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut stack = Stack::start(tmp.path(), &[], &[("RUST_LOG", "trace")]);
    let token = stack.token("");
    let body = r#"{"deviceId":"traced","serialNumber":"SN-1","macAddress":"02:00:00:00:00:01","firmwareVersion":"1.0.0","keyType":"p256"}"#;
    let (status, answer) = http(
        "POST",
        &stack.backend,
        "/v1/devices/register",
        Some(&token),
        Some(body),
    );
    assert_eq!(status, 201, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let key = answer["privateKeyPem"].as_str().expect("key");
    let key_body = key.lines().nth(1).expect("a base64 line");
    let (_, service) = http(
        "POST",
        &stack.backend,
        "/v1/service-identities",
        Some(&stack.admin),
        Some(r#"{"name": "observer"}"#),
    );
    let service: serde_json::Value = serde_json::from_str(&service).expect("json");
    let service_key = service["privateKeyPem"].as_str().expect("key");
    stack
        .up
        .stderr
        .wait_for(WAIT, |l| l.contains("service identity issued"))
        .expect("logged");
    let first_token = std::fs::read_to_string(stack.up.dir.join("first-token")).expect("token");
    let logs = stack.up.stderr.drain().join("\n");
    assert!(logs.contains("device registered"), "{logs}");
    for (what, secret) in [
        ("registration token", token.as_str()),
        ("first token", first_token.trim()),
        ("admin key", stack.admin.as_str()),
        ("device key", key_body),
        ("service key", service_key.lines().nth(1).expect("line")),
    ] {
        assert!(!logs.contains(secret), "the {what} is in the logs");
    }
    assert!(
        !logs.contains("PRIVATE KEY"),
        "a private key is in the logs"
    );

    let dir = &stack.up.dir;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    for secret in [
        "first-token",
        "backend/admin.key",
        "backend/ca.key",
        "backend/server.key",
        "backend/service-ca/ca.key",
    ] {
        assert_eq!(mode(&dir.join(secret)), 0o600, "{secret}");
    }
    for private_dir in ["", "backend", "backend/service-ca"] {
        assert_eq!(mode(&dir.join(private_dir)), 0o700, "{private_dir:?}");
    }
}
