//! The configuration of `acorn backend serve`: a TOML file and `ACORN_*` environment
//! variables (a variable wins over the file, the file over the default). Secrets come from
//! files or the environment, never from the command line: the admin key from
//! `admin_key_file` (mode 0600) or `ACORN_ADMIN_KEY`, the database password from the URL in
//! `ACORN_DATABASE_URL` or from `database_password_file` (0600). A configuration file that
//! holds a database password must itself be private (0600).
//!
//! | file key | environment | default | |
//! | --- | --- | --- | --- |
//! | `listen` | `ACORN_LISTEN` | `127.0.0.1:8080` | address:port of the HTTP API |
//! | `data_dir` | `ACORN_DATA_DIR` | `acorn-backend-data` | local CA files, SQLite registry, CRL |
//! | `database_url` | `ACORN_DATABASE_URL` | `sqlite:<data_dir>/registry.sqlite3` | `sqlite:PATH` or `postgres://…` |
//! | `database_password_file` | `ACORN_DATABASE_PASSWORD_FILE` | — | PostgreSQL password, 0600 |
//! | `database_ca_file` | `ACORN_DATABASE_CA_FILE` | — | PEM CA of the PostgreSQL server: TLS |
//! | `database_max_connections` | `ACORN_DATABASE_MAX_CONNECTIONS` | 16 | pool size per instance |
//! | `signer` | `ACORN_SIGNER` | `local` | `local` or `aws` |
//! | `admin_key_file` | `ACORN_ADMIN_KEY_FILE` | `<data_dir>/admin.key` (made once) | 0600 |
//! | — | `ACORN_ADMIN_KEY` | — | the admin key itself |
//! | `iot_endpoint` | `ACORN_IOT_ENDPOINT` | `localhost:8883` | MQTT endpoint (local signer) |
//! | `tls` | `ACORN_TLS` | `false` | HTTPS with the data dir's server certificate |
//! | `log_format` | `ACORN_LOG_FORMAT` | `json` | `json` or `text` (stderr) |
//! | `drain_seconds` | `ACORN_DRAIN_SECONDS` | 5 | after SIGTERM, `/v1/ready` answers 503 this long before the listener closes |
//! | `console` | `ACORN_CONSOLE` | `false` | serve the web console at `/` (`docs/console.md`) |
//! | `service_endpoint` | `ACORN_SERVICE_ENDPOINT` | — | `host:port` of the broker's service listener: handed to service identities, and the console's live link |
//! | `aws.region` | `ACORN_AWS_REGION` | the SDK's chain (`AWS_REGION`, profile) | |
//! | `aws.endpoint_url` | `ACORN_AWS_ENDPOINT_URL` | the SDK's (`AWS_ENDPOINT_URL`) | |
//! | `aws.policy_name` | `ACORN_AWS_POLICY_NAME` | `acorn-device` | |
//! | `aws.create_policy` | `ACORN_AWS_CREATE_POLICY` | `false` | create it from `policies/device-policy.json` |
//! | `aws.requests_per_second` | `ACORN_AWS_REQUESTS_PER_SECOND` | 10 | AWS IoT calls per second, this instance |
//! | `aws.max_attempts` | `ACORN_AWS_MAX_ATTEMPTS` | 5 | attempts per AWS call (throttling retried) |
//! | `aws.reconcile_interval_secs` | `ACORN_AWS_RECONCILE_INTERVAL_SECS` | 3600 | reconcile every device's certificates with AWS IoT Core this often; 0 = off |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::BackendError;
use crate::registry::{DatabaseUrl, PoolOptions};
use crate::signer::{AwsSignerConfig, SignerConfig};
use crate::BackendConfig;

/// The keys of the configuration file (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_password_file: Option<PathBuf>,
    database_ca_file: Option<PathBuf>,
    database_max_connections: Option<usize>,
    signer: Option<String>,
    admin_key_file: Option<PathBuf>,
    iot_endpoint: Option<String>,
    tls: Option<bool>,
    log_format: Option<String>,
    drain_seconds: Option<u64>,
    console: Option<bool>,
    service_endpoint: Option<String>,
    #[serde(default)]
    aws: AwsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsFile {
    region: Option<String>,
    endpoint_url: Option<String>,
    policy_name: Option<String>,
    create_policy: Option<bool>,
    requests_per_second: Option<f64>,
    max_attempts: Option<u32>,
    reconcile_interval_secs: Option<u64>,
}

/// How the service logs (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default of `acorn backend serve`).
    Json,
    /// Human-readable lines.
    Text,
}

/// Everything `acorn backend serve` needs.
#[derive(Debug)]
pub struct ServeConfig {
    /// The backend's configuration.
    pub backend: BackendConfig,
    /// The log format.
    pub log_format: LogFormat,
    /// How long `/v1/ready` answers 503 after SIGTERM before the listener closes.
    pub drain: Duration,
    /// Whether to serve the web console at `/` (the caller mounts it: `acorn-console`).
    pub console: bool,
}

fn bad(what: impl Into<String>) -> BackendError {
    BackendError::Config(what.into())
}

fn parse_bool(name: &str, value: &str) -> Result<bool, BackendError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(bad(format!("{name} must be true or false, got {value:?}"))),
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, BackendError> {
    value
        .trim()
        .parse()
        .map_err(|_| bad(format!("{name} must be a number, got {value:?}")))
}

/// Reads a secret from a file that only its owner may read (acorn-files' check).
fn read_secret_file(path: &Path, what: &str) -> Result<SecretString, BackendError> {
    crate::files::check_private(path, what)?;
    let text = crate::files::read_text(path)?;
    let secret = SecretString::from(text.trim());
    if secret.expose_secret().is_empty() {
        return Err(bad(format!("the {what} file {} is empty", path.display())));
    }
    Ok(secret)
}

impl ServeConfig {
    /// The configuration from `file` (TOML, optional) and the environment as `env` reads it
    /// (`std::env::var` in the CLI; a map in tests).
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, BackendError> {
        let parsed: FileConfig = match file {
            None => FileConfig::default(),
            Some(path) => {
                let text = crate::files::read_text(path)?;
                toml::from_str(&text).map_err(|e| {
                    bad(format!(
                        "the configuration file {} is not valid: {}",
                        path.display(),
                        e.to_string().trim()
                    ))
                })?
            }
        };
        if let (Some(path), Some(url)) = (file, parsed.database_url.as_deref()) {
            if url_has_password(url) {
                crate::files::check_private(
                    path,
                    "configuration file (its database_url holds a password)",
                )?;
            }
        }
        let pick = |name: &str, from_file: Option<String>| env(name).or(from_file);

        let data_dir = pick(
            "ACORN_DATA_DIR",
            parsed.data_dir.map(|p| p.display().to_string()),
        )
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("acorn-backend-data"));
        let mut backend = BackendConfig::new(&data_dir);

        if let Some(listen) = pick("ACORN_LISTEN", parsed.listen) {
            backend.listen = listen.trim().parse::<SocketAddr>().map_err(|_| {
                bad(format!(
                    "listen (ACORN_LISTEN) must be address:port such as 0.0.0.0:8080, got {listen:?}"
                ))
            })?;
        } else {
            backend.listen = SocketAddr::from(([127, 0, 0, 1], 8080));
        }
        if let Some(url) = pick("ACORN_DATABASE_URL", parsed.database_url) {
            backend.database = Some(DatabaseUrl::parse(&url)?);
        }
        let mut pool = PoolOptions::default();
        if let Some(path) = pick(
            "ACORN_DATABASE_PASSWORD_FILE",
            parsed
                .database_password_file
                .map(|p| p.display().to_string()),
        ) {
            pool.password = Some(read_secret_file(Path::new(&path), "database password")?);
        }
        pool.ca_file = pick(
            "ACORN_DATABASE_CA_FILE",
            parsed.database_ca_file.map(|p| p.display().to_string()),
        )
        .map(PathBuf::from);
        if let Some(n) = pick(
            "ACORN_DATABASE_MAX_CONNECTIONS",
            parsed.database_max_connections.map(|n| n.to_string()),
        ) {
            pool.max_connections = parse_num("database_max_connections", &n)?;
            if pool.max_connections == 0 {
                return Err(bad("database_max_connections must be at least 1"));
            }
        }
        backend.pool = pool;

        // The admin key: the variable, else a file, else the data dir's (made once).
        if let Some(key) = env("ACORN_ADMIN_KEY") {
            backend.admin_key = Some(SecretString::from(key.trim()));
        } else if let Some(path) = pick(
            "ACORN_ADMIN_KEY_FILE",
            parsed.admin_key_file.map(|p| p.display().to_string()),
        ) {
            let path = PathBuf::from(path);
            if !path.exists() {
                return Err(bad(format!(
                    "the admin key file {} does not exist; make one with `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {0}; chmod 600 {0}`",
                    path.display()
                )));
            }
            backend.admin_key = Some(read_secret_file(&path, "admin key")?);
        }
        if let Some(endpoint) = pick("ACORN_IOT_ENDPOINT", parsed.iot_endpoint) {
            backend.iot_endpoint = endpoint;
        }
        if let Some(tls) = pick("ACORN_TLS", parsed.tls.map(|b| b.to_string())) {
            backend.tls = parse_bool("tls (ACORN_TLS)", &tls)?;
        }

        let signer = pick("ACORN_SIGNER", parsed.signer).unwrap_or_else(|| "local".into());
        backend.signer = match signer.trim() {
            "local" => SignerConfig::Local,
            "aws" => {
                let a = parsed.aws;
                let mut aws = AwsSignerConfig {
                    region: pick("ACORN_AWS_REGION", a.region),
                    endpoint_url: pick("ACORN_AWS_ENDPOINT_URL", a.endpoint_url),
                    ..AwsSignerConfig::default()
                };
                if let Some(name) = pick("ACORN_AWS_POLICY_NAME", a.policy_name) {
                    aws.policy_name = name;
                }
                if let Some(v) = pick(
                    "ACORN_AWS_CREATE_POLICY",
                    a.create_policy.map(|b| b.to_string()),
                ) {
                    aws.create_policy =
                        parse_bool("aws.create_policy (ACORN_AWS_CREATE_POLICY)", &v)?;
                }
                if let Some(v) = pick(
                    "ACORN_AWS_REQUESTS_PER_SECOND",
                    a.requests_per_second.map(|n| n.to_string()),
                ) {
                    aws.requests_per_second = parse_num("aws.requests_per_second", &v)?;
                }
                if let Some(v) = pick(
                    "ACORN_AWS_MAX_ATTEMPTS",
                    a.max_attempts.map(|n| n.to_string()),
                ) {
                    aws.max_attempts = parse_num("aws.max_attempts", &v)?;
                }
                if let Some(v) = pick(
                    "ACORN_AWS_RECONCILE_INTERVAL_SECS",
                    a.reconcile_interval_secs.map(|n| n.to_string()),
                ) {
                    aws.reconcile_interval =
                        Duration::from_secs(parse_num("aws.reconcile_interval_secs", &v)?);
                }
                aws.check()?;
                SignerConfig::Aws(aws)
            }
            other => {
                return Err(bad(format!(
                    "signer (ACORN_SIGNER) must be local or aws, got {other:?}"
                )))
            }
        };

        let log_format = match pick("ACORN_LOG_FORMAT", parsed.log_format)
            .as_deref()
            .map(str::trim)
        {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(bad(format!(
                    "log_format (ACORN_LOG_FORMAT) must be json or text, got {other:?}"
                )))
            }
        };
        if let Some(endpoint) = pick("ACORN_SERVICE_ENDPOINT", parsed.service_endpoint) {
            backend.service_endpoint = Some(endpoint.trim().to_owned());
        }
        let console = match pick("ACORN_CONSOLE", parsed.console.map(|b| b.to_string())) {
            Some(v) => parse_bool("console (ACORN_CONSOLE)", &v)?,
            None => false,
        };
        let drain = match pick(
            "ACORN_DRAIN_SECONDS",
            parsed.drain_seconds.map(|n| n.to_string()),
        ) {
            Some(v) => Duration::from_secs(parse_num::<u64>("drain_seconds", &v)?.min(300)),
            None => Duration::from_secs(5),
        };
        Ok(Self {
            backend,
            log_format,
            drain,
            console,
        })
    }
}

/// Whether a `postgres://user:password@…` URL carries a password.
fn url_has_password(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        || url.contains("password=")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_file_and_environment_in_that_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("acorn.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nsigner = \"aws\"\nlog_format = \"text\"\n[aws]\npolicy_name = \"from-file\"\nrequests_per_second = 4\n",
        )
        .expect("write");
        let c = ServeConfig::load(
            Some(&file),
            &env(&[
                ("ACORN_LISTEN", "127.0.0.1:9100"),
                ("ACORN_AWS_MAX_ATTEMPTS", "7"),
                ("ACORN_AWS_RECONCILE_INTERVAL_SECS", "0"),
            ]),
        )
        .expect("config");
        assert_eq!(c.backend.listen, "127.0.0.1:9100".parse().expect("addr"));
        assert_eq!(c.log_format, LogFormat::Text);
        let SignerConfig::Aws(aws) = &c.backend.signer else {
            panic!("aws signer")
        };
        assert_eq!(
            (
                aws.policy_name.as_str(),
                aws.requests_per_second,
                aws.max_attempts
            ),
            ("from-file", 4.0, 7)
        );
        assert_eq!(aws.reconcile_interval, Duration::ZERO, "0 turns it off");
        let c = ServeConfig::load(None, &env(&[])).expect("defaults");
        assert_eq!(c.backend.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(
            (c.log_format, c.drain),
            (LogFormat::Json, Duration::from_secs(5))
        );
        assert!(matches!(c.backend.signer, SignerConfig::Local));
        assert!(c.backend.database.is_none());
    }

    #[test]
    fn mistakes_are_named_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("acorn.toml");
        std::fs::write(&file, "listn = \"0.0.0.0:9000\"\n").expect("write");
        let e = ServeConfig::load(Some(&file), &env(&[]))
            .expect_err("typo")
            .to_string();
        assert!(e.contains("listn") && e.contains("acorn.toml"), "{e}");
        for (var, value, expect) in [
            ("ACORN_LISTEN", "8080", "address:port"),
            ("ACORN_SIGNER", "kms", "local or aws"),
            ("ACORN_DATABASE_URL", "mysql://x", "sqlite:"),
            ("ACORN_LOG_FORMAT", "xml", "json or text"),
            ("ACORN_TLS", "maybe", "true or false"),
            (
                "ACORN_ADMIN_KEY_FILE",
                "/nonexistent/admin.key",
                "chmod 600",
            ),
        ] {
            let e = ServeConfig::load(None, &env(&[(var, value)]))
                .expect_err(var)
                .to_string();
            assert!(e.contains(expect), "{var}={value}: {e}");
        }
    }

    #[test]
    fn secrets_come_from_private_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("admin.key");
        acorn_files::write_private(&key, b"k3y\n").expect("write");
        let c = ServeConfig::load(
            None,
            &env(&[("ACORN_ADMIN_KEY_FILE", key.to_str().expect("utf-8"))]),
        )
        .expect("config");
        assert_eq!(
            c.backend
                .admin_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned()),
            Some("k3y".into())
        );
        // A world-readable key file is refused with the chmod that fixes it.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = ServeConfig::load(
            None,
            &env(&[("ACORN_ADMIN_KEY_FILE", key.to_str().expect("utf-8"))]),
        )
        .expect_err("readable")
        .to_string();
        assert!(e.contains("chmod"), "{e}");
        // A config file with a database password must be private too.
        let file = dir.path().join("acorn.toml");
        std::fs::write(&file, "database_url = \"postgres://acorn:pw@db/acorn\"\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = ServeConfig::load(Some(&file), &env(&[]))
            .expect_err("readable")
            .to_string();
        assert!(e.contains("chmod") && !e.contains("pw@"), "{e}");
        assert!(url_has_password("postgres://a:b@h/d"));
        assert!(!url_has_password("postgres://a@h/d"));
    }
}
