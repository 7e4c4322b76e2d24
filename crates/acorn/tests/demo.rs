//! `acorn demo`: one process runs the CA, the embedded broker (client certificates required),
//! the backend and simulated devices; it exits 0 with a summary showing every device
//! registered, connected and acknowledged, and one device's certificate rotated mid-run with
//! none of its presses lost and its old certificate refused by the broker afterwards.

// Its HTTP client only.
#[allow(dead_code)]
mod devstack;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demos of this file run one at a time: each starts a broker, a backend and devices, and
/// on a 2-core machine two at once only measure the scheduler.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `acorn demo ARGS` with a bound; returns (exit code, stdout, stderr).
fn demo(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_acorn"))
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start acorn demo");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("acorn demo did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

#[test]
fn demo_with_three_devices_exits_0_with_a_complete_summary() {
    let _serial = serial();
    let (code, out, err) = demo(&["--devices", "3", "--duration", "5s"]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("registered 3/3, connected 3/3"),
        "stdout:\n{out}"
    );
    assert!(out.contains("result: OK"), "{out}");
    // The broker refused a certificate from another CA.
    assert!(
        out.contains("a client with a self-signed certificate is refused"),
        "{out}"
    );
    // Each device row: registered, connected, presses sent = acked = received > 0, settings
    // and command applied, no errors; the first device rotated its certificate once.
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("acorn-demo-"))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 10, "{row}");
        assert_eq!(&cols[1..3], ["yes", "yes"], "{row}");
        let n: Vec<u32> = cols[3..].iter().map(|c| c.parse().expect(row)).collect();
        let (sent, acked, received, settings, commands, rotations, errors) =
            (n[0], n[1], n[2], n[3], n[4], n[5], n[6]);
        assert!(sent > 0, "{row}");
        assert_eq!(acked, sent, "{row}");
        assert_eq!(received, sent, "{row}");
        assert!(settings >= 1 && commands >= 1 && errors == 0, "{row}");
        let rotating = cols[0] == "acorn-demo-01";
        assert_eq!(rotations, u32::from(rotating), "{row}");
    }
    assert!(out.contains("certificates rotated 1,"), "{out}");
    // The rotation's steps, in order, and presses after it.
    let line_of = |what: &str| {
        out.lines()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}`:\n{out}"))
    };
    let steps = [
        "acorn-demo-01  certificate rotation started",
        "acorn-demo-01 reports: certificate rotation started",
        "acorn-demo-01  trial connection with the new certificate accepted",
        "acorn-demo-01  certificate rotation committed",
        "acorn-demo-01 reports: certificate rotation committed, now on certificate",
        "installed in the broker: revoked certificates are refused",
        "acorn-demo-01  a connection with the old certificate",
    ];
    let at: Vec<usize> = steps.iter().map(|s| line_of(s)).collect();
    // The device's own steps are in order; the cloud's lines (its view of the device's
    // answers) race them.
    for pair in [0, 2, 3, 5, 6].windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            at[a] < at[b],
            "`{}` before `{}`:\n{out}",
            steps[a],
            steps[b]
        );
    }
    let refused = &out.lines().nth(at[6]).unwrap_or_default();
    assert!(refused.contains("is refused (step tls)"), "{refused}");
    assert!(
        out.lines()
            .skip(at[3])
            .any(|l| l.contains("acorn-demo-01") && l.contains("acknowledged by the broker")),
        "no press acknowledged after the rotation:\n{out}"
    );
    // The live log shows the whole flow for every device.
    for i in 1..=3 {
        let id = format!("acorn-demo-0{i}");
        for what in [
            "registered: P-256 key made on the device",
            "connected over mutual TLS",
            "settings applied and saved in NVS",
            "answered command `get-status`",
            "press #1 acknowledged",
        ] {
            assert!(
                out.lines().any(|l| l.contains(&id) && l.contains(what)),
                "no `{what}` for {id}:\n{out}"
            );
        }
    }
}

#[test]
fn demo_refuses_bad_arguments() {
    let (code, _, err) = demo(&["--devices", "0"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = demo(&["--duration", "soon"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a duration"), "{err}");
}

#[test]
fn demo_with_duration_0_runs_until_sigint() {
    let _serial = serial();
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_acorn"))
        .args(["demo", "--devices", "2", "--duration", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start acorn demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Wait (bounded) until both devices had a press acknowledged, applied the settings and
    // answered the command, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    let mut done = std::collections::HashSet::new();
    let wanted = [
        "press #1 acknowledged",
        "settings applied",
        "answered command `get-status`",
    ];
    while done.len() < 2 * wanted.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                for (i, what) in wanted.iter().enumerate() {
                    if line.contains(what) {
                        let device = line
                            .split(']')
                            .nth(1)
                            .and_then(|rest| rest.split_whitespace().next())
                            .unwrap_or("")
                            .to_owned();
                        done.insert((device, i));
                    }
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the devices did not finish their work:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    // The printed one-time link opens the web console once; the devices are on it.
    let link = seen
        .iter()
        .find_map(|l| {
            l.contains("web console at")
                .then(|| l.split_whitespace().last())
        })
        .flatten()
        .unwrap_or_else(|| panic!("no console link:\n{}", seen.join("\n")))
        .to_owned();
    let (status, head) = get(&link, None);
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    assert_eq!(get(&link, None).0, 401, "the link works once");
    let base = link.split("/login").next().expect("base");
    let (status, page) = get(&format!("{base}/"), Some(&cookie));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("acorn-demo-01") && page.contains("acorn-demo-02"));

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("acorn demo did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = lines.try_iter().collect();
    assert_eq!(status.code(), Some(0), "{}", rest.join("\n"));
    assert!(
        rest.iter()
            .any(|l| l.contains("registered 2/2, connected 2/2")),
        "{}",
        rest.join("\n")
    );
}

/// `GET url` (plain `http://host:port/path`) with an optional cookie; status and head.
fn get(url: &str, cookie: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    let (status, head, body) =
        devstack::request(&format!("http://{host}"), "GET", path, &headers, "");
    (status, format!("{head}\r\n\r\n{body}"))
}
