//! `acorn dev up`: starts the backend and mosquitto, prints a token; a device registers
//! against it with `acorn device register` and connects with `acorn device ping`; SIGINT stops
//! both processes cleanly.

#[path = "dev_up/attack.rs"]
mod attack;
#[path = "dev_up/claim.rs"]
mod claim;
mod devstack;
#[path = "dev_up/lan.rs"]
mod lan;
#[path = "dev_up/rotation.rs"]
mod rotation;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use devstack::{acorn, process_exists, run_bounded, text, DevUp, WAIT};

#[test]
fn dev_up_serves_a_registration_and_stops_on_sigint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut up = DevUp::start(&tmp.path().join("stack"));
    let backend = up.value("backend:");
    let token_file = up.value("token:");
    let token = std::fs::read_to_string(&token_file).expect("token file");
    // The banner names the token's file; the token itself is printed nowhere.
    up.line_starting("Register and run a device:");
    up.line_starting("acorn device run");
    for line in &up.stdout.seen {
        assert!(!line.contains(token.trim()), "the token is printed: {line}");
    }
    let ca = up.value("CA:");
    let broker_line = up.line_starting("broker:");
    assert!(broker_line.contains("mqtts://localhost:"), "{broker_line}");
    let port = up.port("broker:");
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
        .arg("--token-file")
        .arg(&token_file)
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

    // The token was single-use: a second device is refused with the backend's message
    // (the token given through the environment this time).
    let mut again = acorn();
    again
        .env("ACORN_TOKEN", token.trim())
        .args([
            "device",
            "register",
            "--device-id",
            "acorn-0002",
            "--backend",
        ])
        .arg(&backend)
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
    let token = std::fs::read_to_string(up.value("token:")).expect("token file");
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
        .arg(token.trim())
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

#[test]
fn dev_up_makes_its_ca_once_and_reuses_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("stack");
    let mut first = DevUp::start(&dir);
    let ca_path = first.value("CA:");
    let token1 = std::fs::read_to_string(first.value("token:")).expect("token");
    let ca = std::fs::read(&ca_path).expect("ca.pem");
    let admin = std::fs::read(dir.join("backend/admin.key")).expect("admin.key");
    first.interrupt();

    let mut second = DevUp::start(&dir);
    let token2 = std::fs::read_to_string(second.value("token:")).expect("token");
    assert_ne!(token1, token2, "a fresh token at every start");
    assert_eq!(std::fs::read(&ca_path).expect("ca.pem"), ca, "same CA");
    assert_eq!(
        std::fs::read(dir.join("backend/admin.key")).expect("admin.key"),
        admin,
        "same admin key"
    );
    second.interrupt();
}

#[test]
fn dev_up_killed_with_sigkill_leaves_no_broker_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut up = DevUp::start(&tmp.path().join("stack"));
    let broker_line = up.line_starting("broker:");
    let mosquitto_pid: u32 = broker_line
        .split("mosquitto pid ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {broker_line}"));
    assert!(process_exists(mosquitto_pid));
    // mosquitto does not run as root even when dev up does.
    let status = std::fs::read_to_string(format!("/proc/{mosquitto_pid}/status")).expect("status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("uid");
    assert_ne!(uid, "0", "mosquitto runs as root");
    let pid = up.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill")
        .success());
    let _ = up.child.wait();
    let deadline = Instant::now() + Duration::from_secs(2);
    while process_exists(mosquitto_pid) {
        // A zombie is gone for every purpose but a /proc entry until its parent reaps it.
        let state =
            std::fs::read_to_string(format!("/proc/{mosquitto_pid}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(Instant::now() < deadline, "mosquitto outlived dev up");
        std::thread::sleep(Duration::from_millis(20));
    }
}
