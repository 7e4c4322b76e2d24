//! The mosquitto process's life: it dies with the process that started it (even by SIGKILL),
//! it outlives the thread that started it, a broker left running from an earlier start in the
//! same directory is stopped (and nothing else is), and stop cleans up after itself.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use acorn_backend::LocalCa;
use acorn_devstack::broker::{Broker, BrokerConfig, CONF_FILE_NAME, PID_FILE_NAME};
use secrecy::ExposeSecret as _;

/// Set in the re-executed test binary: the directory where [`helper_child_starts_a_broker`]
/// starts a broker.
const CHILD_DIR_ENV: &str = "ACORN_BROKER_PROCESS_CHILD_DIR";

/// The line the child prints once its broker runs.
const CHILD_READY: &str = "ACORN_CHILD_BROKER";

/// Generous bound for anything that should take milliseconds.
const WAIT: Duration = Duration::from_secs(2);

/// A CA (made once) and a server certificate in `dir`, and a broker config using them.
fn config(dir: &Path) -> BrokerConfig {
    let ca = LocalCa::load_or_create(&dir.join("ca")).expect("ca");
    let server = ca.issue_server_certificate(&[]).expect("server cert");
    std::fs::write(dir.join("server.pem"), &server.certificate.pem).expect("write");
    std::fs::write(
        dir.join("server.key"),
        server.private_key_pem.expose_secret(),
    )
    .expect("write");
    BrokerConfig::new(
        dir.join("broker"),
        ca.cert_path(),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// Whether `pid` exists and is not a zombie (a killed orphan may wait a moment to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Whether `pid` is a mosquitto started with one of our configs.
fn is_our_mosquitto(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        text.contains("mosquitto") && text.contains(CONF_FILE_NAME)
    })
}

/// Waits (bounded by [`WAIT`]) until `pid` is gone.
fn gone_within_wait(pid: u32) -> bool {
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Not a test of its own: when the parent test re-executes this binary with
/// [`CHILD_DIR_ENV`] set, starts a broker there from a short-lived thread (as tokio's
/// `spawn_blocking` would), prints its pid and runtime directory, and sleeps until killed.
#[test]
fn helper_child_starts_a_broker() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let config = config(&dir);
    let broker = std::thread::spawn(move || Broker::start(config))
        .join()
        .expect("start thread")
        .expect("mosquitto starts");
    println!(
        "{CHILD_READY} {} {}",
        broker.pid().expect("pid"),
        broker.runtime_dir().display()
    );
    // The parent kills this process; the bound only matters if it does not.
    std::thread::sleep(Duration::from_secs(60));
    drop(broker);
}

#[test]
fn killing_the_starting_process_kills_its_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "helper_child_starts_a_broker",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-execute the test binary");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let ready = loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            // libtest prints `test helper_child_starts_a_broker ... ` before it.
            Ok(line) if line.contains(CHILD_READY) => break line,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child did not start a broker: {e}");
            }
        }
    };
    let (_, ready) = ready.split_once(CHILD_READY).expect("ready line");
    let mut fields = ready.split_whitespace();
    let pid: u32 = fields.next().expect("pid").parse().expect("pid number");
    let runtime_dir = PathBuf::from(fields.next().expect("runtime dir"));
    assert!(alive(pid) && is_our_mosquitto(pid), "pid {pid}");

    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    assert!(
        gone_within_wait(pid),
        "mosquitto {pid} outlived the process that started it"
    );

    // The next start in the same directory clears what the dead one left behind.
    assert!(runtime_dir.exists(), "nothing removed it yet");
    let broker_dir = dir.path().join("broker");
    let mut again = config(dir.path());
    again.dir = broker_dir.clone();
    let broker = Broker::start(again).expect("mosquitto starts again");
    assert!(!runtime_dir.exists(), "the stale runtime dir is removed");
    let pid_file = std::fs::read_to_string(broker_dir.join(PID_FILE_NAME)).expect("pid file");
    assert_eq!(
        pid_file.lines().next(),
        Some(broker.pid().expect("pid").to_string().as_str())
    );
    broker.stop().expect("stop");
}

#[test]
fn a_broker_started_from_a_thread_that_ended_keeps_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let broker = std::thread::spawn(move || Broker::start(config))
        .join()
        .expect("start thread")
        .expect("mosquitto starts");
    // Give a parent-death signal tied to the ended thread time to fire (it would be at once).
    std::thread::sleep(Duration::from_millis(300));
    let pid = broker.pid().expect("pid");
    assert!(broker.is_running(), "{}", broker.log());
    assert!(alive(pid));
    std::net::TcpStream::connect(("127.0.0.1", broker.port())).expect("still listening");
    broker.reload().expect("still answers SIGHUP");
    broker.stop().expect("stop");
    assert!(gone_within_wait(pid));
}

#[test]
fn a_broker_left_running_is_stopped_by_the_next_start_in_its_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let left = Broker::start(config.clone()).expect("mosquitto starts");
    let left_pid = left.pid().expect("pid");
    let left_runtime = left.runtime_dir().to_path_buf();
    // As if its owner lost track of it: no stop, no drop.
    std::mem::forget(left);
    assert!(alive(left_pid));

    let broker = Broker::start(config.clone()).expect("mosquitto starts");
    assert!(
        gone_within_wait(left_pid),
        "the broker left running was not stopped"
    );
    assert!(!left_runtime.exists());
    let pid = broker.pid().expect("pid");
    let pid_path = broker.pid_file().to_path_buf();
    let runtime = broker.runtime_dir().to_path_buf();
    let text = std::fs::read_to_string(&pid_path).expect("pid file");
    assert_eq!(
        text,
        format!("{pid}\n{}\n", broker.conf_path().display()),
        "pid, then the config path"
    );
    assert!(broker.is_running());

    broker.stop().expect("stop");
    assert!(gone_within_wait(pid));
    assert!(!pid_path.exists(), "stop removes the pid file");
    assert!(!runtime.exists(), "stop removes the runtime dir");
}

#[test]
fn a_pid_file_naming_another_program_does_not_kill_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("start sleep");
    std::fs::create_dir_all(&config.dir).expect("broker dir");
    let fake_conf = std::env::temp_dir()
        .join(format!(
            "acorn-mosquitto-not-running-{}",
            std::process::id()
        ))
        .join(CONF_FILE_NAME);
    std::fs::write(
        config.dir.join(PID_FILE_NAME),
        format!("{}\n{}\n", sleeper.id(), fake_conf.display()),
    )
    .expect("pid file");
    let broker = Broker::start(config).expect("mosquitto starts");
    let still_running = matches!(sleeper.try_wait(), Ok(None));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(still_running, "a program that is not our broker was killed");
    broker.stop().expect("stop");
}

/// Sets the modification time of `dir` to `age` ago.
fn age(dir: &Path, age: Duration) {
    let when = std::time::SystemTime::now() - age;
    std::fs::File::open(dir)
        .and_then(|d| d.set_modified(when))
        .expect("set mtime");
}

#[test]
fn a_start_removes_runtime_dirs_that_dead_brokers_left_behind() {
    use std::os::unix::fs::MetadataExt as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let running = Broker::start(config(dir.path())).expect("mosquitto starts");
    let base = running.runtime_dir().parent().expect("base").to_path_buf();
    let meta = std::fs::metadata(running.runtime_dir()).expect("metadata");
    let fake = |name: &str| {
        let path = base.join(format!("acorn-mosquitto-{name}"));
        std::fs::create_dir(&path).expect("mkdir");
        std::fs::write(path.join(CONF_FILE_NAME), "# from a dead broker\n").expect("write");
        std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid())).expect("chown");
        path
    };
    let suffix = format!("{:08x}", rand::random::<u32>());
    // A dead broker's: named and owned like ours, untouched for two minutes, used by nobody.
    let dead = fake(&format!("dead{suffix}dead"));
    age(&dead, Duration::from_secs(120));
    // A start in progress (fresh), and something else with our prefix (not 16 hex digits).
    let fresh = fake(&format!("0000{suffix}0000"));
    let other = fake(&format!("other-{suffix}"));
    age(&other, Duration::from_secs(120));
    // The running broker's own, as old: in use, so it stays.
    age(running.runtime_dir(), Duration::from_secs(120));

    let dir_2 = tempfile::tempdir().expect("tempdir");
    let second = Broker::start(config(dir_2.path())).expect("mosquitto starts");
    let (dead_left, fresh_left, other_left) = (dead.exists(), fresh.exists(), other.exists());
    let running_left = running.runtime_dir().exists();
    for path in [&dead, &fresh, &other] {
        let _ = std::fs::remove_dir_all(path);
    }
    assert!(!dead_left, "the dead broker's runtime dir stayed");
    assert!(fresh_left && other_left && running_left);
    second.stop().expect("stop");
    running.stop().expect("stop");
}
