//! `acorn dev up`: starts the backend and mosquitto, prints a token; a device registers
//! against it with `acorn device register` and connects with `acorn device ping`; SIGINT stops
//! both processes cleanly.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn acorn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_acorn"))
}

/// Runs a command with a bound on its run time.
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The running `dev up` and its stdout lines.
struct DevUp {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl DevUp {
    fn start(dir: &Path) -> Self {
        let mut child = acorn()
            .args([
                "dev",
                "up",
                "--backend-port",
                "0",
                "--mqtt-port",
                "0",
                "--dir",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start acorn dev up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines (bounded) until one starts with `prefix` (after trimming); returns it.
    fn line_starting(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        if let Some(l) = self
            .seen
            .iter()
            .find(|l| l.trim_start().starts_with(prefix))
        {
            return l.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.trim_start().starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!("no `{prefix}` line; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The second word of the line starting with `prefix`.
    fn value(&mut self, prefix: &str) -> String {
        let line = self.line_starting(prefix);
        line.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no value in {line}"))
            .to_owned()
    }
}

impl Drop for DevUp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn dev_up_serves_a_registration_and_stops_on_sigint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut up = DevUp::start(&tmp.path().join("stack"));
    let backend = up.value("backend:");
    let token = up.value("token:");
    let ca = up.value("CA:");
    let broker_line = up.line_starting("broker:");
    let port: u16 = broker_line
        .split("mqtts://localhost:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {broker_line}"));
    let mosquitto_pid: u32 = broker_line
        .split("mosquitto pid ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {broker_line}"));
    assert!(process_exists(mosquitto_pid));

    // A device registers with the printed token (key made here, CSR sent)...
    let image = tmp.path().join("acorn-0001.nvs.bin");
    let mut register = acorn();
    register
        .args([
            "device",
            "register",
            "--device-id",
            "acorn-0001",
            "--backend",
        ])
        .arg(&backend)
        .arg("--token")
        .arg(&token)
        .arg("--image")
        .arg(&image);
    let out = run_bounded(register);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("registered acorn-0001 (key made here, only a CSR sent)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("endpoint: localhost:{port}")),
        "{stdout}"
    );

    // ...and connects over mutual TLS to the dev stack's mosquitto.
    let mut ping = acorn();
    ping.args(["device", "ping", "--image"])
        .arg(&image)
        .arg("--broker")
        .arg(format!("localhost:{port}"))
        .arg("--ca")
        .arg(&ca);
    let out = run_bounded(ping);
    assert!(out.status.success(), "{}", text(&out));

    // The token was single-use: a second device is refused with the backend's message.
    let mut again = acorn();
    again
        .args([
            "device",
            "register",
            "--device-id",
            "acorn-0002",
            "--backend",
        ])
        .arg(&backend)
        .arg("--token")
        .arg(&token)
        .arg("--image")
        .arg(tmp.path().join("acorn-0002.nvs.bin"));
    let out = run_bounded(again);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 409, token_used"), "{stderr}");
    assert!(stderr.contains("single-use"), "{stderr}");

    // Ctrl-C: both stop, exit 0.
    let pid = up.child.id().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(status) = up.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "dev up did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    up.line_starting("stopped");
    assert!(!process_exists(mosquitto_pid), "mosquitto still runs");
}

#[test]
fn dev_up_without_mosquitto_says_how_to_install_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("stack");
    let mut cmd = acorn();
    cmd.env("ACORN_MOSQUITTO", tmp.path().join("no-such-mosquitto"))
        .args([
            "dev",
            "up",
            "--backend-port",
            "0",
            "--mqtt-port",
            "0",
            "--dir",
        ])
        .arg(&dir);
    let out = run_bounded(cmd);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apt-get install mosquitto"), "{stderr}");
    assert!(!dir.exists(), "nothing is made without a broker");
}

#[test]
fn register_with_connect_goes_on_as_device_run() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut up = DevUp::start(&tmp.path().join("stack"));
    let backend = up.value("backend:");
    let token = up.value("token:");
    let image = tmp.path().join("acorn-0003.nvs.bin");
    let mut child = acorn()
        .args([
            "device",
            "register",
            "--device-id",
            "acorn-0003",
            "--connect",
        ])
        .args(["--key-type", "rsa2048", "--server-keygen", "--backend"])
        .arg(&backend)
        .arg("--token")
        .arg(&token)
        .arg("--image")
        .arg(&image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start register --connect");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Ask for the status until the device reports itself connected (bounded).
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let connected = loop {
        assert!(
            Instant::now() < deadline,
            "never connected:\n{}",
            seen.join("\n")
        );
        let _ = writeln!(stdin, "status");
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(300)) {
            if line.contains(r#""status":"connected""#) {
                break line;
            }
            seen.push(line);
        }
    };
    assert!(
        connected.contains(r#""deviceId":"acorn-0003""#),
        "{connected}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("registered acorn-0003 (key made by the backend)")),
        "{}",
        seen.join("\n")
    );
    assert!(Path::new(&format!("{}.ca.pem", image.display())).exists());
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("register --connect did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
}

/// Sends SIGINT and waits (bounded) for a clean exit.
fn interrupt(up: &mut DevUp) {
    let pid = up.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = up.child.try_wait().expect("try_wait") {
            assert!(status.success(), "{status:?}");
            return;
        }
        assert!(Instant::now() < deadline, "dev up did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn dev_up_makes_its_ca_once_and_reuses_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("stack");
    let mut first = DevUp::start(&dir);
    let ca_path = first.value("CA:");
    let token1 = first.value("token:");
    let ca = std::fs::read(&ca_path).expect("ca.pem");
    let admin = std::fs::read(dir.join("backend/admin.key")).expect("admin.key");
    interrupt(&mut first);

    let mut second = DevUp::start(&dir);
    let token2 = second.value("token:");
    assert_ne!(token1, token2, "a fresh token at every start");
    assert_eq!(std::fs::read(&ca_path).expect("ca.pem"), ca, "same CA");
    assert_eq!(
        std::fs::read(dir.join("backend/admin.key")).expect("admin.key"),
        admin,
        "same admin key"
    );
    interrupt(&mut second);
}
