//! A real PostgreSQL for the tests: a cluster made with `initdb` in a temporary directory,
//! started on a free loopback port (`postgres` itself, no unix socket, fsync off), stopped and
//! removed on drop. As root it runs as the `postgres` user (or `nobody`) through `setpriv`,
//! since PostgreSQL refuses to run as root; it always gets a parent-death signal, so a killed
//! test takes its database with it.
//!
//! The binaries come from `ACORN_PG_BINDIR`, else `initdb` on `PATH`, else Debian's
//! `/usr/lib/postgresql/<version>/bin` (package `postgresql`). Missing, the test fails and
//! says how to install them: no test skips silently.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the directory of `initdb`, `postgres` and `psql`.
pub const BINDIR_ENV: &str = "ACORN_PG_BINDIR";

/// The superuser the cluster is made with (trust authentication on loopback).
pub const USER: &str = "acorn";

/// How long a start (until "ready to accept connections") or a stop may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the PostgreSQL binaries are, or how to install them.
pub fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // Follow a symbolic link (e.g. /usr/local/bin/initdb) to the directory that
                // has postgres and psql beside it.
                let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
                if let Some(bin) = real.parent() {
                    if bin.join("postgres").is_file() && bin.join("psql").is_file() {
                        return bin.to_path_buf();
                    }
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no initdb in {BINDIR_ENV}, on PATH or in \
             /usr/lib/postgresql/*/bin): install it with `apt-get install -y postgresql` \
             (bash .ci/run does), or set {BINDIR_ENV} to the directory of initdb and postgres"
        ),
    }
}

/// The user and group ids the cluster runs as: `postgres` (or `nobody`) when we are root.
fn run_as() -> Option<(u32, u32)> {
    // `id -u` tells whether we are root without a libc call.
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    for user in ["postgres", "nobody"] {
        let ids = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, user]).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
        };
        if let (Some(u), Some(g)) = (ids("-u"), ids("-g")) {
            return Some((u, g));
        }
    }
    panic!("running as root, but neither user `postgres` nor `nobody` exists to run PostgreSQL as");
}

/// A command that runs `program` as the cluster's user with a parent-death signal.
fn command(program: &Path, run_as: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new("setpriv");
    if let Some((uid, gid)) = run_as {
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups");
    }
    cmd.args(["--pdeathsig", "SIGKILL", "--"]).arg(program);
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running (or stopped) PostgreSQL cluster of one test.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    port: u16,
    durable: bool,
    child: Option<Child>,
    keeper: Option<std::thread::JoinHandle<()>>,
    stop_tx: Option<std::sync::mpsc::Sender<()>>,
}

impl Postgres {
    /// Makes a cluster in a temporary directory and starts it on a free loopback port, with
    /// fsync and synchronous commit off (fast; tests do not need durability).
    pub fn start() -> Self {
        Self::start_as(false)
    }

    /// As [`Postgres::start`] but durable (fsync and synchronous commit on, as in
    /// production): for benchmarks.
    pub fn start_durable() -> Self {
        Self::start_as(true)
    }

    fn start_as(durable: bool) -> Self {
        let bin = bindir();
        let run_as = run_as();
        let dir = tempfile::Builder::new()
            .prefix("acorn-pg-")
            .tempdir()
            .expect("tempdir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), run_as)
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale=C.UTF-8", "--no-instructions"])
            .output()
            .expect("initdb runs (is setpriv from util-linux installed?)");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            dir,
            bin,
            run_as,
            port: 0,
            durable,
            child: None,
            keeper: None,
            stop_tx: None,
        };
        // Another process may take the port between our probe and postgres's bind: retry.
        for attempt in 0..3 {
            pg.port = free_port();
            match pg.try_start() {
                Ok(()) => return pg,
                Err(e) if attempt < 2 => eprintln!("postgres start failed ({e}); new port"),
                Err(e) => panic!("PostgreSQL did not start: {e}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn try_start(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.log_path()).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid))
                .map_err(|e| e.to_string())?;
        }
        let mut cmd = command(&self.bin.join("postgres"), self.run_as);
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k", ""])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null());
        if !self.durable {
            cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }
        cmd.stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // The child is spawned by a thread that lives until the cluster is stopped, so its
        // parent-death signal fires only when the test process dies.
        let (child_tx, child_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let keeper = std::thread::spawn(move || {
            let _ = child_tx.send(cmd.spawn());
            let _ = stop_rx.recv();
        });
        let child = child_rx
            .recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot run setpriv/postgres: {e}"))?;
        self.child = Some(child);
        self.keeper = Some(keeper);
        self.stop_tx = Some(stop_tx);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.log().contains("ready to accept connections") {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.release_keeper();
                    self.child = None;
                    return Err(format!("postgres exited ({status}): {}", self.log()));
                }
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "not ready within {START_TIMEOUT:?}: {}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn release_keeper(&mut self) {
        drop(self.stop_tx.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with `psql` against database `db`; panics with psql's message on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
            ])
            .args(["-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Stops the server (fast shutdown: open connections are closed), waiting at most 30 s,
    /// then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGINT is PostgreSQL's fast shutdown. `kill` from procps: no libc call here.
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        self.release_keeper();
    }

    /// Starts a stopped server again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.try_start().expect("PostgreSQL restarts");
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
