//! Runs a local mosquitto 2.0 broker configured like an AWS IoT Core policy.
//!
//! # Two listeners, rights by trust path
//!
//! Rights depend on *which CA vouched for a client*, not only on the name in its certificate,
//! so mosquitto runs with `per_listener_settings true` and up to two TLS listeners on
//! `127.0.0.1` (free ports unless given). Both require a client certificate, refuse anonymous
//! clients and take the certificate's common name as the MQTT username *and* client id
//! (`use_identity_as_username`, `use_username_as_clientid`):
//!
//! * the **device listener** ([`Broker::port`]) trusts the device CA ([`BrokerConfig::ca_file`],
//!   optionally with a CRL) and its ACL holds only per-device patterns, so every client, whatever
//!   its name, reaches its own topics only:
//!
//!   ```text
//!   pattern write acorn-pups/button-press/%u
//!   pattern write acorn-pups/status/%u
//!   pattern read acorn-pups/settings/%u
//!   pattern read acorn-pups/commands/%u
//!   ```
//!
//! * the **service listener** ([`Broker::service_port`], only when
//!   [`BrokerConfig::service_ca_file`] is set) trusts the service CA only, and its ACL lets each
//!   name in [`BrokerConfig::service_identities`] (such as `service:backend`, outside the
//!   device-id alphabet) read and write all of `acorn-pups/#`; other names get nothing.
//!
//! A device that registers the id of a service gets nothing more than any device: the name
//! only matters on the listener that trusts the service CA. mosquitto keeps *one* table of
//! client ids for both listeners, though: a service-CA certificate whose CN is a device id
//! takes over that device's session (the device's connection is closed at once and its last
//! will is published), so the service CA must only vouch for names it means to. Nothing is
//! persisted. The broker's log (`log_type all`, including denied publishes) goes to
//! [`Broker::log_path`].
//!
//! # Files, privileges and processes
//!
//! * **Least privilege.** Started as root, mosquitto does not run as root: it runs as user
//!   `mosquitto` (or `nobody` when that user does not exist), switched by `setpriv` before
//!   mosquitto starts. Everything mosquitto reads at start and re-reads on SIGHUP (config, both
//!   ACLs, CA files, server certificate and key, CRL) is *copied* into a fresh private runtime
//!   directory `$TMPDIR/acorn-mosquitto-<random>` (`/tmp/…` when `$TMPDIR` cannot be traversed by
//!   that user), mode 0700, files 0600, owned by that user. It lives outside
//!   [`BrokerConfig::dir`] because callers often pass a root-owned 0700 directory (such as
//!   `tempfile::tempdir()`) that the unprivileged user cannot enter; it is removed when the
//!   broker is stopped or dropped. Not started as root: no user change, same layout. The log and
//!   the pid file stay in [`BrokerConfig::dir`]: mosquitto writes the log through a file
//!   descriptor opened by this process. [`Broker::reload`] refreshes the copies of the server
//!   certificate, key and CRL from their source files before the SIGHUP.
//! * **No orphans.** mosquitto is started through `setpriv --pdeathsig SIGKILL`, from a keeper
//!   thread that owns the child process and lives until the broker is stopped or dropped
//!   (`PR_SET_PDEATHSIG` fires when the *thread* that forked dies, and [`Broker::start`] is often
//!   called from short-lived threads such as tokio's `spawn_blocking`). So when the process that
//!   started the broker dies, even by SIGKILL, the kernel kills mosquitto. setpriv (util-linux
//!   2.38, checked) sets the parent-death signal *after* changing the uid, which would otherwise
//!   clear it. Also, a pid file ([`PID_FILE_NAME`], holding the pid and the config path) in
//!   [`BrokerConfig::dir`] lets the next start in the same directory stop a broker that still
//!   runs from an earlier start there (only a process whose command line holds that exact
//!   config path, never another program) and remove its runtime directory. Every start also
//!   removes runtime directories that no running process uses and that were left untouched for
//!   a minute (their starter died without cleaning up). The config file is always named
//!   [`CONF_FILE_NAME`], so `pgrep -f acorn-mosquitto.conf` finds our brokers.
//!
//! Used by the integration tests of `acorn-agent` and by the local dev stack.
//!
//! ```no_run
//! use acorn_devstack::broker::{Broker, BrokerConfig};
//! # fn main() -> Result<(), acorn_devstack::broker::BrokerError> {
//! let dir = std::path::Path::new("/tmp/acorn-broker");
//! let mut config = BrokerConfig::new(dir, dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
//! config.crl_file = Some(dir.join("crl.pem"));
//! config.service_ca_file = Some(dir.join("service-ca.pem"));
//! config.service_identities = vec!["service:backend".to_owned()];
//! let broker = Broker::start(config)?;
//! println!("devices:  mqtts://127.0.0.1:{}", broker.port());
//! println!("services: mqtts://127.0.0.1:{}", broker.service_port().unwrap_or_default());
//! broker.install_crl(&dir.join("crl-2.pem"))?; // returns once mosquitto has re-read it
//! broker.stop()?;
//! # Ok(()) }
//! ```
//!
//! Mosquitto must be installed: `apt-get install mosquitto` on Debian/Ubuntu (the binary is
//! `/usr/sbin/mosquitto`; the package's own system service is not needed and may stay stopped).
//! `setpriv` comes with util-linux; without it the broker still starts, but as root it then
//! drops privileges by itself (`user` in the config) and nothing kills it if we die.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default location of the mosquitto binary (Debian package `mosquitto`).
pub const DEFAULT_MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Environment variable that overrides [`DEFAULT_MOSQUITTO`].
pub const MOSQUITTO_ENV: &str = "ACORN_MOSQUITTO";

/// Default location of util-linux's `setpriv`, which starts mosquitto with a parent-death
/// signal (and, as root, as an unprivileged user).
pub const DEFAULT_SETPRIV: &str = "/usr/bin/setpriv";

/// File name of the generated mosquitto config (in the runtime directory); a process check
/// such as `pgrep -f acorn-mosquitto.conf` finds every broker started by this module.
pub const CONF_FILE_NAME: &str = "acorn-mosquitto.conf";

/// File name of the pid file in [`BrokerConfig::dir`]: the broker's pid, then its config path.
pub const PID_FILE_NAME: &str = "acorn-mosquitto.pid";

/// File name of the broker's log in [`BrokerConfig::dir`].
pub const LOG_FILE_NAME: &str = "mosquitto.log";

/// Name prefix of the private runtime directories (under the temporary directory).
pub const RUNTIME_DIR_PREFIX: &str = "acorn-mosquitto-";

/// What mosquitto 2.0 logs when it starts a reload after SIGHUP (`<time>: Reloading config.`);
/// it then re-reads the config, the server certificate, key and CRL, and the ACL files before
/// it serves anything else.
pub const RELOAD_LOG_LINE: &str = "Reloading config.";

/// How long [`Broker::install_crl`] and [`Broker::reload`] wait for [`RELOAD_LOG_LINE`].
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(3);

/// Users that mosquitto runs as when started by root, in order of preference.
pub const UNPRIVILEGED_USERS: [&str; 2] = ["mosquitto", "nobody"];

/// The ACL patterns that give every device (username = certificate CN = client id) access to
/// its own topics only, like the Acorn Pups AWS IoT policy.
pub fn device_acl_patterns() -> Vec<String> {
    acorn_mqtt::DEVICE_POLICY
        .iter()
        .map(|(topic, access)| {
            let verb = match access {
                acorn_mqtt::Access::Publish => "write",
                acorn_mqtt::Access::Subscribe => "read",
            };
            format!("pattern {verb} {topic}/%u")
        })
        .collect()
}

/// AWS IoT's provisioning MQTT API on the local broker (see
/// [`BrokerConfig::local_provisioning`]). AWS answers the requesting connection only;
/// mosquitto delivers to every subscriber, so each device gets topics of its own under
/// `acorn-local/<its id>/` and no device can read another's certificate or ownership token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalProvisioning {
    /// The provisioning template devices name in `RegisterThing` (e.g. `acorn-pups`).
    pub template: String,
    /// The service identity that answers (e.g. `service:backend`); it must be one of
    /// [`BrokerConfig::service_identities`].
    pub responder: String,
}

impl LocalProvisioning {
    /// What the responder may read and write on the service listener.
    pub const RESPONDER_TOPICS: &'static str = "acorn-local/#";
    /// What the responder may read and write on the embedded broker's service listener for
    /// claims (the claim endpoint's topics, `acorn-claim/<claim client id>/…`).
    pub const CLAIM_RESPONDER_TOPICS: &'static str = "acorn-claim/#";

    /// The device listener's patterns: each device may publish its own requests and read its
    /// own answers, nothing else of the API (AWS's documented device policy for it, per
    /// device).
    pub fn device_patterns(&self) -> Result<Vec<String>, BrokerError> {
        let topics = acorn_mqtt::provisioning::ProvisioningTopics::new(
            &acorn_mqtt::provisioning::local_prefix("%u"),
            &self.template,
        )
        .map_err(|_| BrokerError::BadConfigValue {
            what: "provisioning template",
            value: self.template.clone(),
        })?;
        let mut lines = Vec::new();
        for [request, accepted, rejected] in [topics.create_from_csr, topics.register] {
            lines.push(format!("pattern write {request}"));
            lines.push(format!("pattern read {accepted}"));
            lines.push(format!("pattern read {rejected}"));
        }
        Ok(lines)
    }
}

/// The topic filter that service identities may read and write on the service listener:
/// every device topic (the prefix the four topic families of acorn-mqtt share).
pub const SERVICE_TOPICS: &str = "acorn-pups/#";

/// How many times [`Broker::start`] picks new free ports when another process took one it
/// picked before mosquitto could bind it.
const PORT_ATTEMPTS: usize = 3;

/// How long a stale broker (from the pid file) may take to die after SIGKILL.
const STALE_KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a runtime directory no process uses must have been left untouched before a
/// start removes it (see `sweep_runtime_dirs`).
const STALE_RUNTIME_AGE: Duration = Duration::from_secs(60);

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
    /// An extra ACL line is not a `pattern` line (the device listener has no per-user rules).
    #[error(
        "extra ACL line {line:?} is not a `pattern` line: the device listener's ACL holds \
         per-device patterns only; give services their rights through service_identities"
    )]
    NotAPattern {
        /// The line.
        line: String,
    },
    /// No free loopback port could be found.
    #[error("could not find a free port on 127.0.0.1: {0}")]
    NoFreePort(std::io::Error),
    /// Running as root, but neither user `mosquitto` nor `nobody` exists to run mosquitto as.
    #[error(
        "running as root, but no unprivileged user to run mosquitto as (looked for {:?} in \
         /etc/passwd): install the mosquitto package, which creates user `mosquitto`",
        UNPRIVILEGED_USERS
    )]
    NoUnprivilegedUser,
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
    #[error("mosquitto did not listen on port {port} within {timeout:?}; see {log_path}")]
    StartTimeout {
        /// The port it should listen on.
        port: u16,
        /// How long we waited.
        timeout: Duration,
        /// The log file.
        log_path: PathBuf,
    },
    /// Sending a signal (`kill -HUP`) failed, or the broker is not running.
    #[error("could not signal mosquitto (pid {pid}): {detail}")]
    Signal {
        /// The broker's process id.
        pid: u32,
        /// What went wrong.
        detail: String,
    },
    /// mosquitto did not log a reload in time after SIGHUP.
    #[error(
        "mosquitto did not log {RELOAD_LOG_LINE:?} within {timeout:?} after SIGHUP; see {log_path}"
    )]
    ReloadTimeout {
        /// How long we waited.
        timeout: Duration,
        /// The log file.
        log_path: PathBuf,
    },
    /// [`Broker::install_crl`] on a broker started without a CRL (mosquitto reads `crlfile`
    /// only at start, so a CRL cannot be added by a reload).
    #[error(
        "the broker was started without a CRL, and mosquitto cannot add one on reload: start it \
         with BrokerConfig::crl_file set"
    )]
    CrlNotConfigured,
    /// The file given to [`Broker::install_crl`] is not a PEM certificate revocation list.
    #[error("{path} is not a PEM certificate revocation list: {detail}")]
    BadCrl {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The new CRL was issued before the installed one. mosquitto keeps every CRL it ever
    /// loaded (until restart) and OpenSSL judges by the one with the latest `thisUpdate`, so
    /// an older CRL would never take effect.
    #[error(
        "the CRL {path} was issued at unix time {new_this_update}, before the installed one \
         ({installed_this_update}); mosquitto would keep judging by the newer one"
    )]
    CrlOlder {
        /// The new CRL.
        path: PathBuf,
        /// `thisUpdate` of the new CRL (unix seconds).
        new_this_update: i64,
        /// `thisUpdate` of the installed CRL (unix seconds).
        installed_this_update: i64,
    },
}

/// How to run the broker. Build it with [`BrokerConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Directory for the broker's log ([`LOG_FILE_NAME`]) and pid file ([`PID_FILE_NAME`]);
    /// must exist or be creatable; the caller owns and removes it (e.g. a temporary
    /// directory). The files mosquitto reads live in a private runtime directory elsewhere
    /// (see the module documentation).
    pub dir: PathBuf,
    /// PEM file of the CA that signs device certificates (the device listener's `cafile`).
    pub ca_file: PathBuf,
    /// PEM file of the broker's server certificate (chain), used by both listeners.
    pub cert_file: PathBuf,
    /// PEM file of the broker's server private key.
    pub key_file: PathBuf,
    /// Optional PEM certificate revocation list of the device CA (`crlfile`). Needed for
    /// [`Broker::install_crl`].
    pub crl_file: Option<PathBuf>,
    /// PEM file of the CA that signs service certificates; `Some` opens the service listener.
    pub service_ca_file: Option<PathBuf>,
    /// Port of the service listener; `None` picks a free one.
    pub service_port: Option<u16>,
    /// Certificate common names (e.g. `service:backend`) that may read and write
    /// `acorn-pups/#` through the service listener. Default: none.
    pub service_identities: Vec<String>,
    /// Optional `tls_version` (`tlsv1.3`, `tlsv1.2` or `tlsv1.1`): the *minimum* TLS version
    /// in mosquitto 2.0 (default TLS 1.2), on both listeners.
    pub tls_version: Option<String>,
    /// Extra `pattern` lines appended after [`device_acl_patterns`] in the device listener's
    /// ACL (e.g. a command-reply topic). Other kinds of lines are refused.
    pub extra_acl_lines: Vec<String>,
    /// AWS IoT's provisioning MQTT API served locally: each device may use its own
    /// [`acorn_mqtt::provisioning::local_prefix`] topics of this API, and the responder (a
    /// service identity) every device's. Default: off.
    pub local_provisioning: Option<LocalProvisioning>,
    /// Port of the device listener; `None` picks a free one.
    pub port: Option<u16>,
    /// Address the device listener binds (default 127.0.0.1). Another address (a LAN
    /// address, so that hardware reaches the broker: `acorn dev up --lan-address`) is
    /// chosen deliberately; the service listener always stays on 127.0.0.1.
    pub device_address: Ipv4Addr,
    /// The mosquitto binary; default from [`MOSQUITTO_ENV`] or [`DEFAULT_MOSQUITTO`].
    pub mosquitto: PathBuf,
    /// util-linux's `setpriv` ([`DEFAULT_SETPRIV`]); when missing, mosquitto starts without a
    /// parent-death signal (a warning is logged).
    pub setpriv: PathBuf,
    /// How long to wait for the ports to accept connections.
    pub startup_timeout: Duration,
    /// Extra environment variables for the mosquitto process (e.g. `OPENSSL_CONF` to pin
    /// OpenSSL's protocol range: mosquitto's `tls_version` only sets the *minimum*). The file
    /// named by `OPENSSL_CONF` is copied into the runtime directory, so that the unprivileged
    /// user can read it.
    pub env: Vec<(String, String)>,
    /// `max_connections` of each listener; `None` leaves mosquitto's default (no limit of its
    /// own: the open-files limit it inherits bounds it).
    pub max_connections: Option<u32>,
    /// `max_queued_messages`: QoS 1 messages queued per client beyond those in flight before
    /// mosquitto drops new ones for it (mosquitto's default is 1000); `Some(0)` means no limit.
    /// A fleet simulation's observer subscribes to every device and needs more.
    pub max_queued_messages: Option<u32>,
    /// Log connections, warnings and errors only instead of every packet (`log_type all`):
    /// under the load of thousands of devices, a line per PUBLISH costs the broker more CPU
    /// than the messages themselves.
    pub quiet_log: bool,
}

impl BrokerConfig {
    /// A config with the given directory and TLS files, no service listener, a free port,
    /// mosquitto's default TLS versions and a 10 s start-up timeout.
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
            service_ca_file: None,
            service_port: None,
            service_identities: Vec::new(),
            tls_version: None,
            extra_acl_lines: Vec::new(),
            local_provisioning: None,
            port: None,
            device_address: Ipv4Addr::LOCALHOST,
            mosquitto,
            setpriv: PathBuf::from(DEFAULT_SETPRIV),
            startup_timeout: Duration::from_secs(10),
            env: Vec::new(),
            max_connections: None,
            max_queued_messages: None,
            quiet_log: false,
        }
    }

    /// The text of the device listener's ACL: [`device_acl_patterns`] and
    /// [`BrokerConfig::extra_acl_lines`], no per-user rules.
    pub fn device_acl_text(&self) -> Result<String, BrokerError> {
        let mut acl = String::from(
            "# generated by acorn-devstack from acorn-mqtt's DEVICE_POLICY: every client its own topics\n",
        );
        for line in device_acl_patterns() {
            acl.push_str(&line);
            acl.push('\n');
        }
        if let Some(local) = &self.local_provisioning {
            for line in local.device_patterns()? {
                acl.push_str(&line);
                acl.push('\n');
            }
        }
        for line in &self.extra_acl_lines {
            check_value("ACL line", line, true)?;
            if line.split_whitespace().next() != Some("pattern") {
                return Err(BrokerError::NotAPattern { line: line.clone() });
            }
            acl.push_str(line);
            acl.push('\n');
        }
        Ok(acl)
    }

    /// The text of the service listener's ACL: each of
    /// [`BrokerConfig::service_identities`] may read and write [`SERVICE_TOPICS`].
    pub fn service_acl_text(&self) -> Result<String, BrokerError> {
        let mut acl = String::from("# generated by acorn-devstack: service identities\n");
        for id in &self.service_identities {
            check_value("service identity", id, false)?;
            // `writeln!` into a String cannot fail.
            let _ = writeln!(acl, "\nuser {id}\ntopic readwrite {SERVICE_TOPICS}");
            if self
                .local_provisioning
                .as_ref()
                .is_some_and(|local| &local.responder == id)
            {
                let _ = writeln!(
                    acl,
                    "topic readwrite {}",
                    LocalProvisioning::RESPONDER_TOPICS
                );
            }
        }
        Ok(acl)
    }

    /// The text of [`CONF_FILE_NAME`] for the given ports, with the files in `files`. The
    /// service listener is written when `service_port` is `Some` (and the CRL line when
    /// [`BrokerConfig::crl_file`] is set).
    pub fn conf_text(
        &self,
        port: u16,
        service_port: Option<u16>,
        files: &RuntimeFiles,
    ) -> Result<String, BrokerError> {
        let mut conf = String::from("# generated by acorn-devstack\n");
        conf.push_str("per_listener_settings true\n");
        conf.push_str("persistence false\n");
        if self.quiet_log {
            conf.push_str("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n");
            conf.push_str("log_type information\nconnection_messages true\n");
        } else {
            conf.push_str("log_dest stderr\nlog_type all\nconnection_messages true\n");
        }
        conf.push_str("log_timestamp true\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n");
        if let Some(max) = self.max_queued_messages {
            let _ = writeln!(conf, "max_queued_messages {max}");
        }
        if let Some(version) = &self.tls_version {
            check_value("tls_version", version, false)?;
        }
        conf.push_str("\n# devices: the device CA, per-device patterns only\n");
        let device = (self.device_address, port);
        self.listener(
            &mut conf,
            device,
            &files.device_ca,
            &files.device_acl,
            files,
        )?;
        if self.crl_file.is_some() {
            let _ = writeln!(conf, "crlfile {}", path_value("crlfile", &files.crl)?);
        }
        if let Some(service_port) = service_port {
            conf.push_str("\n# services: the service CA, service identities only\n");
            self.listener(
                &mut conf,
                (Ipv4Addr::LOCALHOST, service_port),
                &files.service_ca,
                &files.service_acl,
                files,
            )?;
        }
        Ok(conf)
    }

    fn listener(
        &self,
        conf: &mut String,
        (address, port): (Ipv4Addr, u16),
        ca: &Path,
        acl: &Path,
        files: &RuntimeFiles,
    ) -> Result<(), BrokerError> {
        let _ = writeln!(conf, "listener {port} {address}");
        conf.push_str("allow_anonymous false\n");
        let _ = writeln!(conf, "acl_file {}", path_value("acl_file", acl)?);
        let _ = writeln!(conf, "cafile {}", path_value("cafile", ca)?);
        let _ = writeln!(
            conf,
            "certfile {}",
            path_value("certfile", &files.server_cert)?
        );
        let _ = writeln!(
            conf,
            "keyfile {}",
            path_value("keyfile", &files.server_key)?
        );
        conf.push_str("require_certificate true\n");
        conf.push_str("use_identity_as_username true\n");
        conf.push_str("use_username_as_clientid true\n");
        if let Some(max) = self.max_connections {
            let _ = writeln!(conf, "max_connections {max}");
        }
        if let Some(version) = &self.tls_version {
            let _ = writeln!(conf, "tls_version {version}");
        }
        Ok(())
    }
}

/// The files mosquitto reads, all in one private runtime directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFiles {
    /// The directory (mode 0700).
    pub dir: PathBuf,
    /// The config, [`CONF_FILE_NAME`].
    pub conf: PathBuf,
    /// The device listener's ACL.
    pub device_acl: PathBuf,
    /// The service listener's ACL.
    pub service_acl: PathBuf,
    /// Copy of the device CA.
    pub device_ca: PathBuf,
    /// Copy of the service CA.
    pub service_ca: PathBuf,
    /// Copy of the server certificate.
    pub server_cert: PathBuf,
    /// Copy of the server key.
    pub server_key: PathBuf,
    /// Copy of the CRL.
    pub crl: PathBuf,
    /// Copy of the file named by `OPENSSL_CONF` in [`BrokerConfig::env`].
    pub openssl_conf: PathBuf,
}

impl RuntimeFiles {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            conf: dir.join(CONF_FILE_NAME),
            device_acl: dir.join("device.acl"),
            service_acl: dir.join("service.acl"),
            device_ca: dir.join("device-ca.pem"),
            service_ca: dir.join("service-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            crl: dir.join("crl.pem"),
            openssl_conf: dir.join("openssl.cnf"),
        }
    }
}

/// The user mosquitto runs as when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// Where the files that [`Broker::reload`] refreshes come from.
#[derive(Debug)]
struct Sources {
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
}

/// A running mosquitto process, owned by a keeper thread; killed on [`Broker::stop`] or drop.
#[derive(Debug)]
pub struct Broker {
    keeper: Option<Keeper>,
    pid: u32,
    device_address: Ipv4Addr,
    port: u16,
    service_port: Option<u16>,
    files: RuntimeFiles,
    log_path: PathBuf,
    pid_path: PathBuf,
    owner: Option<(u32, u32)>,
    sources: Mutex<Sources>,
    /// Whether stop/drop removes the runtime directory (not while `start` may retry in it).
    owns_runtime: bool,
}

impl Broker {
    /// Stops a broker left running by an earlier start in `config.dir`, copies the files
    /// into a fresh runtime directory, writes the config and ACLs, starts mosquitto (as an
    /// unprivileged user when root) with a parent-death signal, and waits (bounded by
    /// `config.startup_timeout`) until its ports accept TCP connections.
    pub fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        if !config.mosquitto.is_file() {
            return Err(BrokerError::NotInstalled {
                path: config.mosquitto.clone(),
            });
        }
        // Check every value before touching anything.
        let device_acl = config.device_acl_text()?;
        let service_acl = config.service_acl_text()?;
        fs::create_dir_all(&config.dir).map_err(|source| BrokerError::Io {
            path: config.dir.clone(),
            source,
        })?;
        stop_stale(&config.dir);
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let owner = run_as.as_ref().map(|u| (u.uid, u.gid));
        let base = runtime_base(owner);
        let owner_uid = owner.map_or_else(current_uid, |(uid, _)| uid);
        sweep_runtime_dirs(&base, owner_uid);
        let files = create_runtime_dir(&base, owner)?;
        let started = (|| {
            copy_inputs(&config, &files, owner)?;
            write_private(&files.device_acl, device_acl.as_bytes(), owner)?;
            if config.service_ca_file.is_some() {
                write_private(&files.service_acl, service_acl.as_bytes(), owner)?;
            }
            Self::start_with_retries(&config, &files, run_as.as_ref())
        })();
        if started.is_err() {
            let _ = fs::remove_dir_all(&files.dir);
        }
        started
    }

    fn start_with_retries(
        config: &BrokerConfig,
        files: &RuntimeFiles,
        run_as: Option<&RunAs>,
    ) -> Result<Broker, BrokerError> {
        let fixed = config.port.is_some()
            && (config.service_ca_file.is_none() || config.service_port.is_some());
        let attempts = if fixed { 1 } else { PORT_ATTEMPTS };
        let mut last_error = None;
        for _ in 0..attempts {
            let port = match config.port {
                Some(port) => port,
                None => free_port()?,
            };
            let service_port = match (&config.service_ca_file, config.service_port) {
                (None, _) => None,
                (Some(_), Some(p)) => Some(p),
                (Some(_), None) => Some(free_port_other_than(port)?),
            };
            match Self::start_on(config, files, run_as, port, service_port) {
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

    fn start_on(
        config: &BrokerConfig,
        files: &RuntimeFiles,
        run_as: Option<&RunAs>,
        port: u16,
        service_port: Option<u16>,
    ) -> Result<Broker, BrokerError> {
        let owner = run_as.map(|u| (u.uid, u.gid));
        let setpriv = config.setpriv.is_file();
        let mut conf = config.conf_text(port, service_port, files)?;
        if !setpriv {
            tracing::warn!(
                setpriv = %config.setpriv.display(),
                "setpriv not found: mosquitto starts without a parent-death signal"
            );
            if let Some(user) = run_as {
                // mosquitto drops root privileges by itself, to this user.
                let _ = writeln!(conf, "user {}", user.name);
            }
        }
        write_private(&files.conf, conf.as_bytes(), owner)?;
        let log_path = config.dir.join(LOG_FILE_NAME);
        let log = fs::File::create(&log_path).map_err(|source| BrokerError::Io {
            path: log_path.clone(),
            source,
        })?;
        let mut command = if setpriv {
            let mut c = Command::new(&config.setpriv);
            if let Some(user) = run_as {
                c.arg("--reuid")
                    .arg(user.uid.to_string())
                    .arg("--regid")
                    .arg(user.gid.to_string())
                    .arg("--clear-groups");
            }
            c.args(["--no-new-privs", "--pdeathsig", "SIGKILL", "--"])
                .arg(&config.mosquitto);
            c
        } else {
            Command::new(&config.mosquitto)
        };
        command
            .arg("-c")
            .arg(&files.conf)
            .envs(config.env.iter().map(|(k, v)| {
                if k == "OPENSSL_CONF" {
                    (k.clone(), files.openssl_conf.display().to_string())
                } else {
                    (k.clone(), v.clone())
                }
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let program = if setpriv {
            config.setpriv.clone()
        } else {
            config.mosquitto.clone()
        };
        let (keeper, pid) = Keeper::spawn(command, program)?;
        let pid_path = config.dir.join(PID_FILE_NAME);
        let mut broker = Broker {
            keeper: Some(keeper),
            pid,
            device_address: config.device_address,
            port,
            service_port,
            files: files.clone(),
            log_path,
            pid_path,
            owner,
            sources: Mutex::new(Sources {
                cert: config.cert_file.clone(),
                key: config.key_file.clone(),
                crl: config.crl_file.clone(),
            }),
            owns_runtime: false,
        };
        let pid_text = format!("{pid}\n{}\n", files.conf.display());
        // On failure the broker is dropped, which kills mosquitto but keeps the runtime
        // directory for the next attempt (`start` removes it when all attempts failed).
        write_file(&broker.pid_path, &pid_text)?;
        broker.wait_listening(config.startup_timeout)?;
        broker.owns_runtime = true;
        tracing::debug!(
            port,
            ?service_port,
            pid,
            log = %broker.log_path.display(),
            "mosquitto is listening"
        );
        Ok(broker)
    }

    /// Waits until mosquitto says it runs (it logs `mosquitto version … running` after
    /// opening its listeners) and its ports accept a connection, while the process is alive.
    /// The log check makes sure the ports are ours, not another broker's or a self-connect.
    fn wait_listening(&self, timeout: Duration) -> Result<(), BrokerError> {
        let deadline = Instant::now() + timeout;
        let device = SocketAddr::from((self.device_address, self.port));
        let addresses: Vec<SocketAddr> = std::iter::once(device)
            .chain(
                self.service_port
                    .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            )
            .collect();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(BrokerError::Exited {
                    status,
                    log_path: self.log_path.clone(),
                    log_tail: self.log_tail(20),
                });
            }
            let running = self
                .log()
                .lines()
                .any(|l| l.contains("mosquitto version") && l.ends_with(" running"));
            if running
                && addresses.iter().all(|addr| {
                    TcpStream::connect_timeout(addr, Duration::from_millis(100)).is_ok()
                })
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BrokerError::StartTimeout {
                    port: self.port,
                    timeout,
                    log_path: self.log_path.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The TCP port of the device listener (on [`Broker::host`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP port of the service listener (on 127.0.0.1), when
    /// [`BrokerConfig::service_ca_file`] was set.
    pub fn service_port(&self) -> Option<u16> {
        self.service_port
    }

    /// The address the device listener binds: [`BrokerConfig::device_address`] (127.0.0.1
    /// unless chosen otherwise).
    pub fn host(&self) -> Ipv4Addr {
        self.device_address
    }

    /// The process id, until the broker is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.keeper.as_ref().map(|_| self.pid)
    }

    /// The generated config ([`CONF_FILE_NAME`] in the runtime directory).
    pub fn conf_path(&self) -> &Path {
        &self.files.conf
    }

    /// The private runtime directory with every file mosquitto reads (removed on stop).
    pub fn runtime_dir(&self) -> &Path {
        &self.files.dir
    }

    /// The pid file ([`PID_FILE_NAME`] in [`BrokerConfig::dir`]).
    pub fn pid_file(&self) -> &Path {
        &self.pid_path
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

    fn reload_count(&self) -> usize {
        self.log().matches(RELOAD_LOG_LINE).count()
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// `None` while the process runs, else how it ended.
    fn exit_status(&self) -> Option<String> {
        match &self.keeper {
            Some(keeper) => keeper.exit_status(),
            None => Some("stopped".to_owned()),
        }
    }

    /// Makes mosquitto reload its config, ACLs, server certificate, key and CRL: refreshes
    /// the runtime copies of the certificate, key and CRL from their source files (the CRL
    /// from [`BrokerConfig::crl_file`], or the last file given to [`Broker::install_crl`]),
    /// sends SIGHUP and waits (at most [`RELOAD_TIMEOUT`]) until mosquitto logs the reload.
    pub fn reload(&self) -> Result<(), BrokerError> {
        // Held throughout: reloads and CRL installs happen one at a time.
        let sources = self.sources();
        copy_private(&sources.cert, &self.files.server_cert, self.owner)?;
        copy_private(&sources.key, &self.files.server_key, self.owner)?;
        if let Some(crl) = &sources.crl {
            copy_private(crl, &self.files.crl, self.owner)?;
        }
        self.hangup_and_wait()
    }

    /// Installs a new CRL for the device listener and makes mosquitto re-read it: checks that
    /// `crl_pem_path` holds a PEM CRL not issued before the installed one, copies it into the
    /// runtime directory (readable by the broker's user only), sends SIGHUP and waits (at most
    /// [`RELOAD_TIMEOUT`]) until mosquitto logs the reload. mosquitto re-reads the CRL in the
    /// same step of its event loop, before it serves anything else, so once this returns every
    /// new handshake is judged by the new CRL. Later [`Broker::reload`]s re-copy this file.
    ///
    /// The broker must have been started with [`BrokerConfig::crl_file`] set.
    pub fn install_crl(&self, crl_pem_path: &Path) -> Result<(), BrokerError> {
        // Held throughout: reloads and CRL installs happen one at a time.
        let mut sources = self.sources();
        if sources.crl.is_none() {
            return Err(BrokerError::CrlNotConfigured);
        }
        let bytes = fs::read(crl_pem_path).map_err(|source| BrokerError::Io {
            path: crl_pem_path.to_path_buf(),
            source,
        })?;
        let new_this_update = crl_this_update(&bytes).map_err(|detail| BrokerError::BadCrl {
            path: crl_pem_path.to_path_buf(),
            detail,
        })?;
        let installed = fs::read(&self.files.crl).ok();
        let installed_this_update = installed.as_deref().and_then(|b| crl_this_update(b).ok());
        if let Some(installed_this_update) = installed_this_update {
            if new_this_update < installed_this_update {
                return Err(BrokerError::CrlOlder {
                    path: crl_pem_path.to_path_buf(),
                    new_this_update,
                    installed_this_update,
                });
            }
            if new_this_update == installed_this_update && installed.as_deref() != Some(&bytes) {
                tracing::warn!(
                    crl = %crl_pem_path.display(),
                    "the new CRL has the same thisUpdate second as the installed one: OpenSSL's \
                     choice between them is not specified (it took the newer one in our tests); \
                     issue CRLs with increasing thisUpdate"
                );
            }
        }
        write_private(&self.files.crl, &bytes, self.owner)?;
        sources.crl = Some(crl_pem_path.to_path_buf());
        self.hangup_and_wait()
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        // A panic while holding this lock cannot leave `Sources` half-written.
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// SIGHUP, then a bounded wait until the log holds one more [`RELOAD_LOG_LINE`]. The
    /// count is taken after the files were written: a reload logged after it re-reads them.
    fn hangup_and_wait(&self) -> Result<(), BrokerError> {
        let before = self.reload_count();
        let keeper = self.keeper.as_ref().ok_or(BrokerError::Signal {
            pid: self.pid,
            detail: "the broker is stopped".to_owned(),
        })?;
        keeper.hangup(self.pid)?;
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while self.reload_count() <= before {
            if Instant::now() >= deadline {
                return Err(BrokerError::ReloadTimeout {
                    timeout: RELOAD_TIMEOUT,
                    log_path: self.log_path.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops the broker (SIGKILL), waits for it to exit, and removes its runtime directory
    /// and pid file.
    pub fn stop(mut self) -> Result<(), BrokerError> {
        self.shut_down();
        Ok(())
    }

    /// Kills the process through its keeper; removes the pid file when it is still ours, and
    /// the runtime directory when the broker owns it.
    fn shut_down(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.stop();
            let ours = format!("{}\n{}\n", self.pid, self.files.conf.display());
            if fs::read_to_string(&self.pid_path).is_ok_and(|text| text == ours) {
                let _ = fs::remove_file(&self.pid_path);
            }
        }
        if self.owns_runtime {
            let _ = fs::remove_dir_all(&self.files.dir);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// What the keeper thread is asked to do.
enum Request {
    /// Reply `None` while the child runs, else its exit status.
    Status(mpsc::Sender<Option<String>>),
    /// Send SIGHUP to the child (if it still runs).
    Hangup(mpsc::Sender<Result<(), String>>),
    /// Kill the child, wait for it, reply, and end the thread.
    Stop(mpsc::Sender<()>),
}

/// The thread that started mosquitto and owns its [`Child`]. It lives until the broker is
/// stopped or dropped, so that the parent-death signal fires only when the whole process
/// dies (or the broker is stopped, when the child is killed anyway).
#[derive(Debug)]
struct Keeper {
    requests: mpsc::Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    /// Starts the keeper thread, which spawns `command`; returns once the child runs.
    fn spawn(mut command: Command, program: PathBuf) -> Result<(Keeper, u32), BrokerError> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<u32, std::io::Error>>(1);
        let thread = std::thread::Builder::new()
            .name("acorn-mosquitto".into())
            .spawn(move || {
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(child.id()));
                Self::serve(&mut child, &inbox);
                let _ = child.kill();
                let _ = child.wait();
            })
            .map_err(|source| BrokerError::Spawn {
                path: program.clone(),
                source,
            })?;
        let pid = match ready_rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(source)) => {
                let _ = thread.join();
                return Err(BrokerError::Spawn {
                    path: program,
                    source,
                });
            }
            Err(_) => {
                let _ = thread.join();
                return Err(BrokerError::Spawn {
                    path: program,
                    source: std::io::Error::other("the keeper thread ended"),
                });
            }
        };
        Ok((
            Keeper {
                requests,
                thread: Some(thread),
            },
            pid,
        ))
    }

    /// Answers requests until `Stop` or until every sender is gone (the broker was dropped
    /// without `stop`, or leaked: then the thread waits here for good and the child runs on).
    fn serve(child: &mut Child, inbox: &mpsc::Receiver<Request>) {
        for request in inbox {
            match request {
                Request::Status(reply) => {
                    let status = match child.try_wait() {
                        Ok(None) => None,
                        Ok(Some(status)) => Some(status.to_string()),
                        Err(e) => Some(format!("unknown ({e})")),
                    };
                    let _ = reply.send(status);
                }
                Request::Hangup(reply) => {
                    // Signalling only an unreaped child: its pid cannot have been reused.
                    let result = match child.try_wait() {
                        Ok(None) => send_signal("HUP", child.id()),
                        Ok(Some(status)) => Err(format!("the broker exited ({status})")),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = reply.send(result);
                }
                Request::Stop(reply) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn exit_status(&self) -> Option<String> {
        let (tx, rx) = mpsc::channel();
        if self.requests.send(Request::Status(tx)).is_err() {
            return Some("the keeper thread ended".to_owned());
        }
        rx.recv()
            .unwrap_or_else(|_| Some("the keeper thread ended".to_owned()))
    }

    fn hangup(&self, pid: u32) -> Result<(), BrokerError> {
        let (tx, rx) = mpsc::channel();
        let gone = || BrokerError::Signal {
            pid,
            detail: "the keeper thread ended".to_owned(),
        };
        self.requests
            .send(Request::Hangup(tx))
            .map_err(|_| gone())?;
        rx.recv()
            .map_err(|_| gone())?
            .map_err(|detail| BrokerError::Signal { pid, detail })
    }

    fn stop(mut self) {
        let (tx, rx) = mpsc::channel();
        if self.requests.send(Request::Stop(tx)).is_ok() {
            let _ = rx.recv();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `kill -<signal> <pid>` (no `unsafe` needed for signals).
fn send_signal(signal: &str, pid: u32) -> Result<(), String> {
    let output = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run `kill`: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// Stops the broker named by the pid file in `dir` if it still runs — only a process whose
/// command line holds the recorded config path, which must be one of ours — and removes its
/// runtime directory and the pid file.
fn stop_stale(dir: &Path) {
    let pid_path = dir.join(PID_FILE_NAME);
    let Ok(text) = fs::read_to_string(&pid_path) else {
        return;
    };
    let mut lines = text.lines();
    let (Some(Ok(pid)), Some(conf)) = (lines.next().map(str::parse::<u32>), lines.next()) else {
        let _ = fs::remove_file(&pid_path);
        return;
    };
    let conf = Path::new(conf);
    let runtime_dir = conf
        .parent()
        .filter(|_| conf.file_name() == Some(CONF_FILE_NAME.as_ref()))
        .filter(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(RUNTIME_DIR_PREFIX))
        });
    let Some(runtime_dir) = runtime_dir else {
        let _ = fs::remove_file(&pid_path);
        return;
    };
    if process_runs_conf(pid, conf) {
        tracing::warn!(pid, conf = %conf.display(), "stopping a broker left from an earlier start");
        let _ = send_signal("KILL", pid);
        let deadline = Instant::now() + STALE_KILL_TIMEOUT;
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = fs::remove_dir_all(runtime_dir);
    let _ = fs::remove_file(&pid_path);
}

/// Whether process `pid` runs with `conf` as one of its arguments (`/proc/PID/cmdline`).
fn process_runs_conf(pid: u32, conf: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let conf = conf.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == conf)
}

/// Whether process `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) S ...`: the state follows the last ')'.
        stat.rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false)
    })
}

/// The uid this process runs as (owner of `/proc/self`), without `unsafe`.
fn current_uid() -> u32 {
    fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// Whether this process runs as root.
fn running_as_root() -> bool {
    current_uid() == 0
}

/// The first of [`UNPRIVILEGED_USERS`] in `/etc/passwd`.
fn unprivileged_user() -> Result<RunAs, BrokerError> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for wanted in UNPRIVILEGED_USERS {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0] != wanted {
                continue;
            }
            if let (Ok(uid), Ok(gid)) = (fields[2].parse::<u32>(), fields[3].parse::<u32>()) {
                if uid != 0 {
                    return Ok(RunAs {
                        name: wanted.to_owned(),
                        uid,
                        gid,
                    });
                }
            }
        }
    }
    Err(BrokerError::NoUnprivilegedUser)
}

/// Where the runtime directories go: `$TMPDIR`, or `/tmp` when mosquitto runs as another
/// user and cannot traverse `$TMPDIR`.
fn runtime_base(owner: Option<(u32, u32)>) -> PathBuf {
    let base = std::env::temp_dir();
    if owner.is_some() && !traversable_by_others(&base) {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

/// Makes `<base>/acorn-mosquitto-<16 hex digits>` (mode 0700, owned by `owner`).
fn create_runtime_dir(base: &Path, owner: Option<(u32, u32)>) -> Result<RuntimeFiles, BrokerError> {
    let name = format!(
        "{RUNTIME_DIR_PREFIX}{}",
        hex::encode(rand::random::<[u8; 8]>())
    );
    let dir = base.join(name);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| BrokerError::Io {
            path: dir.clone(),
            source,
        })?;
    if let Some((uid, gid)) = owner {
        if let Err(source) = std::os::unix::fs::chown(&dir, Some(uid), Some(gid)) {
            let _ = fs::remove_dir(&dir);
            return Err(BrokerError::Io { path: dir, source });
        }
    }
    Ok(RuntimeFiles::in_dir(&dir))
}

/// Removes the runtime directories under `base` that brokers left behind when the process
/// that started them died without cleaning up (SIGKILL, `std::process::exit`, a leaked
/// [`Broker`]): only directories named like ours (prefix and 16 hex digits), owned by
/// `owner_uid`, that no running process's command line names (`/proc/*/cmdline`), and that
/// nothing touched for [`STALE_RUNTIME_AGE`] (a start in progress has not spawned mosquitto
/// yet). A broker in another PID namespace sharing this directory would be invisible here.
fn sweep_runtime_dirs(base: &Path, owner_uid: u32) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUNTIME_DIR_PREFIX))
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= STALE_RUNTIME_AGE);
        if ours && meta.is_dir() && meta.uid() == owner_uid && old {
            stale.push(entry.path());
        }
    }
    if stale.is_empty() {
        return;
    }
    let in_use = running_confs();
    for dir in stale {
        if !in_use.contains(&dir.join(CONF_FILE_NAME)) {
            tracing::debug!(dir = %dir.display(), "removing a dead broker's runtime directory");
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Every [`CONF_FILE_NAME`] path on the command line of a running process.
fn running_confs() -> std::collections::HashSet<PathBuf> {
    let mut confs = std::collections::HashSet::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return confs;
    };
    for entry in entries.flatten() {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        for arg in cmdline.split(|&b| b == 0) {
            let arg = Path::new(std::ffi::OsStr::from_bytes(arg));
            if arg.file_name() == Some(CONF_FILE_NAME.as_ref()) {
                confs.insert(arg.to_path_buf());
            }
        }
    }
    confs
}

/// Whether every directory from `/` to `path` lets other users through (`o+x`).
fn traversable_by_others(path: &Path) -> bool {
    path.ancestors()
        .all(|p| fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// Copies the TLS files (and the `OPENSSL_CONF` file) into the runtime directory. A source
/// that does not exist is left out, so that mosquitto itself reports the missing file in its
/// log, naming the setting (`Error: Unable to load server key file …`).
fn copy_inputs(
    config: &BrokerConfig,
    files: &RuntimeFiles,
    owner: Option<(u32, u32)>,
) -> Result<(), BrokerError> {
    let mut pairs = vec![
        (&config.ca_file, &files.device_ca),
        (&config.cert_file, &files.server_cert),
        (&config.key_file, &files.server_key),
    ];
    if let Some(crl) = &config.crl_file {
        pairs.push((crl, &files.crl));
    }
    if let Some(ca) = &config.service_ca_file {
        pairs.push((ca, &files.service_ca));
    }
    let openssl_conf = config
        .env
        .iter()
        .find(|(k, _)| k == "OPENSSL_CONF")
        .map(|(_, v)| PathBuf::from(v));
    if let Some(conf) = &openssl_conf {
        pairs.push((conf, &files.openssl_conf));
    }
    for (source, target) in pairs {
        if source.exists() {
            copy_private(source, target, owner)?;
        }
    }
    Ok(())
}

/// Copies `source` to `target` with [`write_private`].
fn copy_private(
    source: &Path,
    target: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), BrokerError> {
    let bytes = fs::read(source).map_err(|e| BrokerError::Io {
        path: source.to_path_buf(),
        source: e,
    })?;
    write_private(target, &bytes, owner)
}

/// Writes `bytes` to `path` atomically (a temporary file renamed over it) with mode 0600,
/// owned by `owner` when given, so that mosquitto never reads half a file.
fn write_private(path: &Path, bytes: &[u8], owner: Option<(u32, u32)>) -> Result<(), BrokerError> {
    let io = |source| BrokerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".new");
    let tmp = PathBuf::from(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    drop(file);
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)
}

/// `thisUpdate` (unix seconds) of a PEM CRL, or why it is not one.
fn crl_this_update(pem: &[u8]) -> Result<i64, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    if pem.label != "X509 CRL" {
        return Err(format!("PEM label {:?}, expected \"X509 CRL\"", pem.label));
    }
    let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).map_err(|e| e.to_string())?;
    Ok(crl.last_update().timestamp())
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

/// A free port that is not `taken` (bounded: a few tries).
fn free_port_other_than(taken: u16) -> Result<u16, BrokerError> {
    for _ in 0..8 {
        let port = free_port()?;
        if port != taken {
            return Ok(port);
        }
    }
    Err(BrokerError::NoFreePort(std::io::Error::other(
        "the OS kept offering the same port",
    )))
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

    fn files() -> RuntimeFiles {
        RuntimeFiles::in_dir(Path::new("/tmp/acorn-mosquitto-test"))
    }

    #[test]
    fn device_acl_has_only_per_device_patterns() {
        let mut c = config();
        c.service_identities = vec!["service:backend".into()];
        c.extra_acl_lines = vec!["pattern read acorn-pups/replies/%u".into()];
        let acl = c.device_acl_text().unwrap();
        assert!(acl.contains("pattern write acorn-pups/button-press/%u\n"));
        assert!(acl.contains("pattern read acorn-pups/commands/%u\n"));
        assert!(acl.contains("pattern read acorn-pups/replies/%u\n"));
        assert!(!acl.contains("user"), "{acl}");
        assert!(!acl.contains("service:backend"), "{acl}");
    }

    #[test]
    fn service_acl_lets_service_identities_read_and_write_all() {
        let mut c = config();
        assert!(!c.service_acl_text().unwrap().contains("user"));
        c.service_identities = vec!["service:backend".into(), "service:observer".into()];
        let acl = c.service_acl_text().unwrap();
        assert!(acl.contains("user service:backend\ntopic readwrite acorn-pups/#\n"));
        assert!(acl.contains("user service:observer\ntopic readwrite acorn-pups/#\n"));
        assert!(!acl.contains("pattern"), "{acl}");
    }

    #[test]
    fn a_chosen_device_address_moves_only_the_device_listener() {
        let mut c = config();
        c.service_ca_file = Some("/tmp/x/service-ca.pem".into());
        c.device_address = Ipv4Addr::new(192, 168, 1, 10);
        let conf = c.conf_text(18883, Some(18884), &files()).unwrap();
        let listeners: Vec<&str> = conf.lines().filter(|l| l.starts_with("listener")).collect();
        assert_eq!(
            listeners,
            ["listener 18883 192.168.1.10", "listener 18884 127.0.0.1"],
            "{conf}"
        );
    }

    #[test]
    fn conf_has_two_listeners_with_their_own_ca_and_acl() {
        let mut c = config();
        c.tls_version = Some("tlsv1.2".into());
        c.crl_file = Some("/tmp/x/crl.pem".into());
        c.service_ca_file = Some("/tmp/x/service-ca.pem".into());
        let f = files();
        let conf = c.conf_text(18883, Some(18884), &f).unwrap();
        assert!(conf.lines().any(|l| l == "per_listener_settings true"));
        assert!(conf.lines().any(|l| l == "persistence false"));
        assert!(!conf.lines().any(|l| l.starts_with("user ")), "{conf}");
        let (device, service) = conf.split_once("listener 18884 127.0.0.1").unwrap();
        let device = device.split_once("listener 18883 127.0.0.1").unwrap().1;
        let d = "/tmp/acorn-mosquitto-test";
        for (section, ca, acl) in [
            (device, "device-ca.pem", "device.acl"),
            (service, "service-ca.pem", "service.acl"),
        ] {
            for line in [
                format!("cafile {d}/{ca}"),
                format!("acl_file {d}/{acl}"),
                format!("certfile {d}/server.pem"),
                format!("keyfile {d}/server.key"),
                "require_certificate true".into(),
                "use_identity_as_username true".into(),
                "use_username_as_clientid true".into(),
                "allow_anonymous false".into(),
                "tls_version tlsv1.2".into(),
            ] {
                assert!(
                    section.lines().any(|l| l == line),
                    "missing {line}:\n{conf}"
                );
            }
        }
        assert!(device.lines().any(|l| l == format!("crlfile {d}/crl.pem")));
        assert!(!service.contains("crlfile"));
        assert_eq!(f.conf.file_name().unwrap(), CONF_FILE_NAME);
    }

    #[test]
    fn conf_without_service_ca_has_one_listener() {
        let conf = config().conf_text(18883, None, &files()).unwrap();
        assert_eq!(conf.matches("\nlistener ").count(), 1, "{conf}");
        assert!(!conf.contains("crlfile"));
    }

    #[test]
    fn values_that_would_break_the_conf_are_refused() {
        let mut c = config();
        c.tls_version = Some("tlsv1.2\nallow_anonymous true".into());
        assert!(matches!(
            c.conf_text(1, None, &files()),
            Err(BrokerError::BadConfigValue { .. })
        ));
        c.tls_version = None;
        c.service_identities = vec!["a b".into()];
        assert!(matches!(
            c.service_acl_text(),
            Err(BrokerError::BadConfigValue { .. })
        ));
        c.service_identities = vec!["service:backend\ntopic readwrite #".into()];
        assert!(matches!(
            c.service_acl_text(),
            Err(BrokerError::BadConfigValue { .. })
        ));
    }

    #[test]
    fn extra_acl_lines_must_be_patterns() {
        let mut c = config();
        c.extra_acl_lines = vec!["user backend".into()];
        assert!(matches!(
            c.device_acl_text(),
            Err(BrokerError::NotAPattern { .. })
        ));
        c.extra_acl_lines = vec!["topic readwrite acorn-pups/+/dev-1".into()];
        assert!(matches!(
            c.device_acl_text(),
            Err(BrokerError::NotAPattern { .. })
        ));
    }

    #[test]
    fn missing_binary_says_how_to_install() {
        let mut c = config();
        c.mosquitto = PathBuf::from("/nonexistent/mosquitto");
        let err = Broker::start(c).unwrap_err();
        assert!(err.to_string().contains("apt-get install mosquitto"));
    }

    #[test]
    fn stale_pid_files_never_touch_other_programs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        // This test process is not a broker: a pid file naming it must not kill it.
        let me = std::process::id();
        let fake_runtime = std::env::temp_dir().join(format!("{RUNTIME_DIR_PREFIX}unit-{me}"));
        fs::create_dir_all(&fake_runtime).unwrap();
        let conf = fake_runtime.join(CONF_FILE_NAME);
        write_file(
            &dir.join(PID_FILE_NAME),
            &format!("{me}\n{}\n", conf.display()),
        )
        .unwrap();
        stop_stale(&dir);
        assert!(process_alive(me));
        assert!(!dir.join(PID_FILE_NAME).exists());
        assert!(!fake_runtime.exists(), "the dead broker's runtime dir goes");
        // A pid file naming a directory that is not one of ours removes nothing but itself.
        let other = dir.join("not-ours");
        fs::create_dir_all(&other).unwrap();
        write_file(
            &dir.join(PID_FILE_NAME),
            &format!("{me}\n{}\n", other.join(CONF_FILE_NAME).display()),
        )
        .unwrap();
        stop_stale(&dir);
        assert!(other.exists());
        assert!(!dir.join(PID_FILE_NAME).exists());
    }

    #[test]
    fn crl_this_update_reads_pem_crls_only() {
        assert!(crl_this_update(b"not pem").is_err());
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(crl_this_update(cert.as_bytes())
            .unwrap_err()
            .contains("X509 CRL"));
    }
}
