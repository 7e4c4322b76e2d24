//! A running `acorn dev up` for the dev-stack tests, bounded command runs, a raw HTTP client
//! for the admin API, and mosquitto's own clients as independent MQTT peers.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// The `acorn` binary under test.
pub fn acorn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_acorn"))
}

/// Runs a command with a bound on its run time.
pub fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
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

/// Status, stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether a process with this pid exists.
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Lines of a child's output, read on a thread.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Lines {
    /// Reads `reader` line by line on a thread.
    pub fn spawn(reader: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `limit`) for a line that `wanted` accepts; returns it.
    pub fn wait_for(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| wanted(l)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left.min(Duration::from_millis(50)));
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// Takes every line that arrived so far without waiting.
    pub fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }
}

/// A running `acorn dev up` (killed on drop).
pub struct DevUp {
    /// The process.
    pub child: Child,
    /// Its stdout.
    pub stdout: Lines,
    /// Its stderr (the logs).
    pub stderr: Lines,
    /// Its directory.
    pub dir: PathBuf,
}

impl DevUp {
    /// Starts `acorn dev up` in `dir` on free ports, with `extra` arguments and environment.
    pub fn start_with(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = acorn()
            .args(["dev", "up", "--backend-port", "0", "--mqtt-port", "0"])
            .args(["--service-port", "0", "--claim-port", "0", "--dir"])
            .arg(dir)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start acorn dev up");
        let stdout = Lines::spawn(child.stdout.take().expect("stdout"));
        let stderr = Lines::spawn(child.stderr.take().expect("stderr"));
        Self {
            child,
            stdout,
            stderr,
            dir: dir.to_path_buf(),
        }
    }

    /// Starts `acorn dev up` in `dir` on free ports.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[], &[])
    }

    /// The banner line starting with `prefix` (after trimming).
    pub fn line_starting(&mut self, prefix: &str) -> String {
        self.stdout
            .wait_for(WAIT, |l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| {
                panic!(
                    "no `{prefix}` line; stdout:\n{}\nstderr:\n{}",
                    self.stdout.seen.join("\n"),
                    self.stderr.drain().join("\n")
                )
            })
    }

    /// The second word of the banner line starting with `prefix`.
    pub fn value(&mut self, prefix: &str) -> String {
        let line = self.line_starting(prefix);
        line.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no value in {line}"))
            .to_owned()
    }

    /// The port in the banner line starting with `prefix` (`... mqtts://HOST:PORT ...`).
    pub fn port(&mut self, prefix: &str) -> u16 {
        let line = self.line_starting(prefix);
        line.split("mqtts://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|address| address.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line}"))
    }

    /// The backend's base URL.
    pub fn backend(&mut self) -> String {
        self.value("backend:")
    }

    /// The admin key, read from its file.
    pub fn admin_key(&mut self) -> String {
        // "  admin key: PATH (Authorization: ...)"
        let line = self.line_starting("admin key:");
        let path = line.split_whitespace().nth(2).expect("admin key path");
        std::fs::read_to_string(path)
            .expect("admin key")
            .trim()
            .to_owned()
    }

    /// Sends SIGINT and waits (bounded) for a clean exit.
    pub fn interrupt(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "{status:?}");
                return;
            }
            assert!(Instant::now() < deadline, "dev up did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// One HTTP/1.1 request over a fresh connection (`Connection: close`) to `base` (plain
/// `http://host:port`); returns the status and the body.
pub fn http(
    method: &str,
    base: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let body = body.unwrap_or("");
    let mut headers = Vec::new();
    if let Some(value) = &authorization {
        headers.push(("Authorization", value.as_str()));
    }
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, _, body) = request(base, method, path, &headers, body);
    (status, body)
}

/// One HTTP/1.1 request with these header fields over a fresh connection (`Connection:
/// close`) to `base` (plain `http://host:port`); returns the status, the head (status line and
/// header fields) and the body.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect to the backend");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(text.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {answer}"));
    (status, head.to_owned(), body.to_owned())
}

/// Client certificate, key and CA files for one of mosquitto's own clients.
#[derive(Debug, Clone)]
pub struct PemFiles {
    /// The client certificate.
    pub cert: PathBuf,
    /// The client key.
    pub key: PathBuf,
    /// The CA the broker's certificate chains to.
    pub ca: PathBuf,
}

/// Writes `cert` and `key` (PEM) into `dir` as `name.crt` / `name.key` (0600).
pub fn pem_files(dir: &Path, name: &str, cert: &str, key: &str, ca: &Path) -> PemFiles {
    use std::os::unix::fs::OpenOptionsExt as _;
    let write = |path: &Path, text: &str, mode: u32| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .expect("create");
        f.write_all(text.as_bytes()).expect("write");
    };
    let files = PemFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca: ca.to_path_buf(),
    };
    write(&files.cert, cert, 0o644);
    write(&files.key, key, 0o600);
    files
}

/// A `mosquitto_sub` (an MQTT client independent of acorn) subscribed to `topics` on
/// `localhost:port` with `files`; prints `topic payload` lines. Killed on drop.
pub struct Subscriber {
    child: Child,
    /// What it printed.
    pub lines: Lines,
}

impl Subscriber {
    /// Starts the subscriber; returns once it is connected and subscribed.
    pub fn start(port: u16, files: &PemFiles, client_id: &str, topics: &[&str]) -> Self {
        // Line-buffered: a pipe would otherwise hold mosquitto_sub's lines back.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "mosquitto_sub"]);
        cmd.args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-v",
            "-d",
        ])
        .args(["-i", client_id])
        .arg("--cafile")
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key);
        for topic in topics {
            cmd.args(["-t", topic]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        let mut lines = Lines::spawn(child.stdout.take().expect("stdout"));
        // `-d` prints the SUBACK ("received SUBACK") once subscribed.
        lines
            .wait_for(WAIT, |l| l.contains("SUBACK"))
            .unwrap_or_else(|| panic!("mosquitto_sub never subscribed: {:?}", lines.seen));
        Self { child, lines }
    }

    /// Message lines (`topic payload`) received so far, without the `-d` debug lines.
    pub fn messages(&mut self) -> Vec<String> {
        self.lines
            .drain()
            .iter()
            .filter(|l| l.starts_with("acorn-pups/"))
            .cloned()
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes one QoS 1 message with `mosquitto_pub`; returns its output.
pub fn publish(port: u16, files: &PemFiles, client_id: &str, topic: &str, payload: &str) -> Output {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "localhost", "-p", &port.to_string(), "-q", "1"])
        .args(["-i", client_id, "-t", topic, "-m", payload])
        .arg("--cafile")
        .arg(&files.ca)
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key);
    run_bounded(cmd)
}
