//! Runs a local mosquitto 2.0 broker configured like an AWS IoT Core policy.
//!
//! The broker listens on `127.0.0.1` (on a free port unless one is given), requires a client
//! certificate signed by the configured CA, takes the certificate's common name as the MQTT
//! username *and* client id (`use_identity_as_username`, `use_username_as_clientid`), and
//! limits every device to its own topics through an ACL file:
//!
//! ```text
//! pattern write acorn-pups/button-press/%u
//! pattern write acorn-pups/status/%u
//! pattern read  acorn-pups/settings/%u
//! pattern read  acorn-pups/commands/%u
//! ```
//!
//! Backend identities (certificate common names listed in [`BrokerConfig::backend_identities`])
//! may read and write all of `acorn-pups/#`. Anonymous clients are refused and nothing is
//! persisted. The broker's log (`log_type all`, including denied publishes) goes to
//! [`Broker::log_path`].
//!
//! Used by the integration tests of `acorn-agent` and by the local dev stack.
//!
//! ```no_run
//! use acorn_backend::broker::{Broker, BrokerConfig};
//! # fn main() -> Result<(), acorn_backend::broker::BrokerError> {
//! let dir = std::path::Path::new("/tmp/acorn-broker");
//! let config = BrokerConfig::new(dir, dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
//! let broker = Broker::start(config)?;
//! println!("mqtts://127.0.0.1:{}", broker.port());
//! broker.stop()?;
//! # Ok(()) }
//! ```
//!
//! Mosquitto must be installed: `apt-get install mosquitto` on Debian/Ubuntu (the binary is
//! `/usr/sbin/mosquitto`; the package's own system service is not needed and may stay stopped).

use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Default location of the mosquitto binary (Debian package `mosquitto`).
pub const DEFAULT_MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Environment variable that overrides [`DEFAULT_MOSQUITTO`].
pub const MOSQUITTO_ENV: &str = "ACORN_MOSQUITTO";

/// The ACL patterns that give every device (username = certificate CN = client id) access to
/// its own topics only, like the Acorn Pups AWS IoT policy.
pub const DEVICE_ACL_PATTERNS: [&str; 4] = [
    "pattern write acorn-pups/button-press/%u",
    "pattern write acorn-pups/status/%u",
    "pattern read acorn-pups/settings/%u",
    "pattern read acorn-pups/commands/%u",
];

/// How many times [`Broker::start`] picks a new free port when another process took the one
/// it picked before mosquitto could bind it.
const PORT_ATTEMPTS: usize = 3;

/// Errors of the local broker launcher.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The mosquitto binary is not there.
    #[error(
        "mosquitto not found at {path}: install it with `apt-get install mosquitto` \
         (Debian/Ubuntu), or set {MOSQUITTO_ENV} to the binary's path"
    )]
    NotInstalled {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file could not be written or read.
    #[error("broker file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A path or name cannot be written into mosquitto's line-based configuration.
    #[error("{what} {value:?} cannot be used in a mosquitto config (no spaces, newlines or '#')")]
    BadConfigValue {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// No free loopback port could be found.
    #[error("could not find a free port on 127.0.0.1: {0}")]
    NoFreePort(std::io::Error),
    /// The process could not be started.
    #[error("could not start {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// mosquitto exited during start-up (bad config, bad certificate file, port taken...).
    #[error(
        "mosquitto exited during start-up ({status}); its log {log_path} ends with:\n{log_tail}"
    )]
    Exited {
        /// Exit status as text.
        status: String,
        /// The log file.
        log_path: PathBuf,
        /// The last lines of the log.
        log_tail: String,
    },
    /// mosquitto did not accept connections in time.
    #[error("mosquitto did not listen on 127.0.0.1:{port} within {timeout:?}; see {log_path}")]
    StartTimeout {
        /// The port it should listen on.
        port: u16,
        /// How long we waited.
        timeout: Duration,
        /// The log file.
        log_path: PathBuf,
    },
    /// Sending a signal (`kill -HUP`) failed.
    #[error("could not signal mosquitto (pid {pid}): {detail}")]
    Signal {
        /// The broker's process id.
        pid: u32,
        /// What went wrong.
        detail: String,
    },
}

/// How to run the broker. Build it with [`BrokerConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Directory for the generated `mosquitto.conf`, `acl` and `mosquitto.log` (must exist or
    /// be creatable; the caller owns and removes it, e.g. a temporary directory).
    pub dir: PathBuf,
    /// PEM file of the CA that signs device (and backend) certificates.
    pub ca_file: PathBuf,
    /// PEM file of the broker's server certificate (chain).
    pub cert_file: PathBuf,
    /// PEM file of the broker's server private key.
    pub key_file: PathBuf,
    /// Optional PEM certificate revocation list (`crlfile`).
    pub crl_file: Option<PathBuf>,
    /// Optional `tls_version` (`tlsv1.3`, `tlsv1.2` or `tlsv1.1`): the *minimum* TLS version
    /// in mosquitto 2.0 (default TLS 1.2).
    pub tls_version: Option<String>,
    /// Certificate common names that may read and write `acorn-pups/#` (the backend).
    pub backend_identities: Vec<String>,
    /// Extra ACL lines appended after [`DEVICE_ACL_PATTERNS`] (e.g. a command-reply topic).
    pub extra_acl_lines: Vec<String>,
    /// Port to listen on; `None` picks a free one.
    pub port: Option<u16>,
    /// The mosquitto binary; default from [`MOSQUITTO_ENV`] or [`DEFAULT_MOSQUITTO`].
    pub mosquitto: PathBuf,
    /// How long to wait for the port to accept connections.
    pub startup_timeout: Duration,
    /// Extra environment variables for the mosquitto process (e.g. `OPENSSL_CONF` to pin
    /// OpenSSL's protocol range: mosquitto's `tls_version` only sets the *minimum*).
    pub env: Vec<(String, String)>,
}

impl BrokerConfig {
    /// A config with the given directory and TLS files, backend identity `backend`, a free
    /// port, mosquitto's default TLS versions and a 10 s start-up timeout.
    pub fn new(
        dir: impl Into<PathBuf>,
        ca_file: impl Into<PathBuf>,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        let mosquitto = std::env::var_os(MOSQUITTO_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MOSQUITTO));
        Self {
            dir: dir.into(),
            ca_file: ca_file.into(),
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            crl_file: None,
            tls_version: None,
            backend_identities: vec!["backend".to_owned()],
            extra_acl_lines: Vec::new(),
            port: None,
            mosquitto,
            startup_timeout: Duration::from_secs(10),
            env: Vec::new(),
        }
    }

    /// The text of the ACL file.
    pub fn acl_text(&self) -> Result<String, BrokerError> {
        let mut acl = String::from("# generated by acorn-backend: AWS IoT-like policy\n");
        for line in DEVICE_ACL_PATTERNS {
            acl.push_str(line);
            acl.push('\n');
        }
        for line in &self.extra_acl_lines {
            check_value("ACL line", line, true)?;
            acl.push_str(line);
            acl.push('\n');
        }
        for id in &self.backend_identities {
            check_value("backend identity", id, false)?;
            // `writeln!` into a String cannot fail.
            let _ = writeln!(acl, "\nuser {id}\ntopic readwrite acorn-pups/#");
        }
        Ok(acl)
    }

    /// The text of `mosquitto.conf` for the given port and ACL file.
    pub fn conf_text(&self, port: u16, acl_path: &Path) -> Result<String, BrokerError> {
        let mut conf = String::from("# generated by acorn-backend\n");
        conf.push_str("per_listener_settings false\n");
        conf.push_str("allow_anonymous false\n");
        conf.push_str("persistence false\n");
        if running_as_root() {
            // mosquitto drops root privileges to user `mosquitto`, which cannot read our files.
            conf.push_str("user root\n");
        }
        conf.push_str("log_dest stderr\nlog_type all\nconnection_messages true\n");
        conf.push_str("log_timestamp true\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n");
        let _ = writeln!(conf, "acl_file {}", path_value("acl_file", acl_path)?);
        let _ = writeln!(conf, "listener {port} 127.0.0.1");
        let _ = writeln!(conf, "cafile {}", path_value("cafile", &self.ca_file)?);
        let _ = writeln!(
            conf,
            "certfile {}",
            path_value("certfile", &self.cert_file)?
        );
        let _ = writeln!(conf, "keyfile {}", path_value("keyfile", &self.key_file)?);
        conf.push_str("require_certificate true\n");
        conf.push_str("use_identity_as_username true\n");
        conf.push_str("use_username_as_clientid true\n");
        if let Some(crl) = &self.crl_file {
            let _ = writeln!(conf, "crlfile {}", path_value("crlfile", crl)?);
        }
        if let Some(version) = &self.tls_version {
            check_value("tls_version", version, false)?;
            let _ = writeln!(conf, "tls_version {version}");
        }
        Ok(conf)
    }
}

/// A running mosquitto process; killed on [`Broker::stop`] or drop.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    port: u16,
    conf_path: PathBuf,
    log_path: PathBuf,
}

impl Broker {
    /// Writes the config and ACL into `config.dir`, starts mosquitto and waits (bounded by
    /// `config.startup_timeout`) until its port accepts TCP connections.
    pub fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        if !config.mosquitto.is_file() {
            return Err(BrokerError::NotInstalled {
                path: config.mosquitto.clone(),
            });
        }
        fs::create_dir_all(&config.dir).map_err(|source| BrokerError::Io {
            path: config.dir.clone(),
            source,
        })?;
        let acl_path = config.dir.join("acl");
        write_file(&acl_path, &config.acl_text()?)?;
        let mut last_error = None;
        let attempts = if config.port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        for _ in 0..attempts {
            let port = match config.port {
                Some(port) => port,
                None => free_port()?,
            };
            match Self::start_on(&config, port, &acl_path) {
                Ok(broker) => return Ok(broker),
                Err(BrokerError::Exited {
                    status,
                    log_path,
                    log_tail,
                }) if log_tail.contains("Address already in use") => {
                    last_error = Some(BrokerError::Exited {
                        status,
                        log_path,
                        log_tail,
                    });
                }
                Err(other) => return Err(other),
            }
        }
        Err(
            last_error.unwrap_or(BrokerError::NoFreePort(std::io::Error::other(
                "no attempt made",
            ))),
        )
    }

    fn start_on(config: &BrokerConfig, port: u16, acl_path: &Path) -> Result<Broker, BrokerError> {
        let conf_path = config.dir.join("mosquitto.conf");
        write_file(&conf_path, &config.conf_text(port, acl_path)?)?;
        let log_path = config.dir.join("mosquitto.log");
        let log = fs::File::create(&log_path).map_err(|source| BrokerError::Io {
            path: log_path.clone(),
            source,
        })?;
        let child = Command::new(&config.mosquitto)
            .arg("-c")
            .arg(&conf_path)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|source| BrokerError::Spawn {
                path: config.mosquitto.clone(),
                source,
            })?;
        let mut broker = Broker {
            child: Some(child),
            port,
            conf_path,
            log_path,
        };
        broker.wait_listening(config.startup_timeout)?;
        tracing::debug!(port, log = %broker.log_path.display(), "mosquitto is listening");
        Ok(broker)
    }

    /// Waits until mosquitto says it runs (it logs `mosquitto version … running` after
    /// opening its listeners) and the port accepts a connection, while the process is alive.
    /// The log check makes sure the port is ours, not another broker's or a self-connect.
    fn wait_listening(&mut self, timeout: Duration) -> Result<(), BrokerError> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(BrokerError::Exited {
                        status: status.to_string(),
                        log_path: self.log_path.clone(),
                        log_tail: self.log_tail(20),
                    });
                }
            }
            let running = self
                .log()
                .lines()
                .any(|l| l.contains("mosquitto version") && l.ends_with(" running"));
            if running && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(BrokerError::StartTimeout {
                    port: self.port,
                    timeout,
                    log_path: self.log_path.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The TCP port the broker listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host the broker listens on: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The generated `mosquitto.conf`.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// The broker's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far (lossy UTF-8; empty if it cannot be read).
    pub fn log(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut file) = fs::File::open(&self.log_path) {
            let _ = file.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Makes mosquitto reload its config, ACL, CRL and certificates (SIGHUP via `kill -HUP`).
    pub fn reload(&self) -> Result<(), BrokerError> {
        let pid = self.pid().ok_or(BrokerError::Signal {
            pid: 0,
            detail: "the broker is not running".to_owned(),
        })?;
        let output = Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .output()
            .map_err(|e| BrokerError::Signal {
                pid,
                detail: format!("could not run `kill`: {e}"),
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(BrokerError::Signal {
                pid,
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// Stops the broker (SIGKILL) and waits for it to exit.
    pub fn stop(mut self) -> Result<(), BrokerError> {
        self.kill();
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether this process runs as root (owner of `/proc/self`), without `unsafe`.
fn running_as_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Asks the OS for a free port on 127.0.0.1 (bind port 0, read it, release it).
pub fn free_port() -> Result<u16, BrokerError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(BrokerError::NoFreePort)?;
    let port = listener
        .local_addr()
        .map_err(BrokerError::NoFreePort)?
        .port();
    Ok(port)
}

fn write_file(path: &Path, text: &str) -> Result<(), BrokerError> {
    fs::write(path, text).map_err(|source| BrokerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn check_value(what: &'static str, value: &str, spaces_ok: bool) -> Result<(), BrokerError> {
    let bad = value.is_empty()
        || value.contains(['\n', '\r', '#', '\0'])
        || (!spaces_ok && value.contains(char::is_whitespace));
    if bad {
        return Err(BrokerError::BadConfigValue {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn path_value(what: &'static str, path: &Path) -> Result<String, BrokerError> {
    let text = path.to_str().ok_or_else(|| BrokerError::BadConfigValue {
        what,
        value: path.to_string_lossy().into_owned(),
    })?;
    check_value(what, text, false)?;
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrokerConfig {
        BrokerConfig::new("/tmp/x", "/tmp/x/ca.pem", "/tmp/x/s.pem", "/tmp/x/s.key")
    }

    #[test]
    fn acl_limits_devices_to_their_topics_and_lets_backend_read_all() {
        let acl = config().acl_text().unwrap();
        assert!(acl.contains("pattern write acorn-pups/button-press/%u\n"));
        assert!(acl.contains("pattern read acorn-pups/commands/%u\n"));
        assert!(acl.contains("user backend\ntopic readwrite acorn-pups/#"));
    }

    #[test]
    fn conf_has_the_aws_like_listener() {
        let mut c = config();
        c.tls_version = Some("tlsv1.2".into());
        let conf = c.conf_text(18883, Path::new("/tmp/x/acl")).unwrap();
        for line in [
            "listener 18883 127.0.0.1",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "allow_anonymous false",
            "persistence false",
            "acl_file /tmp/x/acl",
            "tls_version tlsv1.2",
        ] {
            assert!(conf.lines().any(|l| l == line), "missing {line}:\n{conf}");
        }
    }

    #[test]
    fn values_that_would_break_the_conf_are_refused() {
        let mut c = config();
        c.tls_version = Some("tlsv1.2\nallow_anonymous true".into());
        assert!(matches!(
            c.conf_text(1, Path::new("/tmp/acl")),
            Err(BrokerError::BadConfigValue { .. })
        ));
        c.tls_version = None;
        c.backend_identities = vec!["a b".into()];
        assert!(matches!(
            c.acl_text(),
            Err(BrokerError::BadConfigValue { .. })
        ));
    }

    #[test]
    fn missing_binary_says_how_to_install() {
        let mut c = config();
        c.mosquitto = PathBuf::from("/nonexistent/mosquitto");
        let err = Broker::start(c).unwrap_err();
        assert!(err.to_string().contains("apt-get install mosquitto"));
    }
}
