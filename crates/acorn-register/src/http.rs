//! The HTTP exchange with the registration backend (`POST /v1/devices/register`), with retries:
//! network errors, 408, 429 and 5xx are retried with full-jitter backoff (the acorn-mqtt
//! policy) for a bounded number of attempts; any other 4xx stops at once with the backend's
//! own message.

use std::time::Duration;

use acorn_api::{ErrorBody, RegisterRequest, RegisterResponse, REGISTER_PATH};
use acorn_mqtt::BackoffConfig;

use crate::RegistrationError;
use acorn_transport::SecretString;
use secrecy::ExposeSecret as _;

/// How often and how patiently to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Sleep between attempts: full jitter, `random(0, min(cap, initial · 2^(n-1)))`.
    pub backoff: BackoffConfig,
    /// Attempts in all (at least 1): a command-line tool gives up, a device would not.
    pub max_attempts: u32,
    /// Time limit of one HTTP request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// The acorn-mqtt backoff (1 s, 2 s, 4 s... bounds), 5 attempts, 30 s per request.
    fn default() -> Self {
        Self {
            backoff: BackoffConfig::default(),
            max_attempts: 5,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The backend client: base URL, optional extra trust root for HTTPS, retry policy.
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    policy: RetryPolicy,
}

impl Client {
    /// A client for `backend_url` (e.g. `http://127.0.0.1:8080`); `ca_pem` adds a root for an
    /// HTTPS backend with a local CA.
    pub fn new(
        backend_url: &str,
        ca_pem: Option<&str>,
        policy: RetryPolicy,
    ) -> Result<Self, RegistrationError> {
        let base = backend_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base).map_err(|e| {
            RegistrationError::Config(format!(
                "backend URL `{backend_url}` is not a URL ({e}); give e.g. http://127.0.0.1:8080"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RegistrationError::Config(format!(
                "backend URL `{backend_url}` must start with http:// or https://"
            )));
        }
        if policy.max_attempts == 0 {
            return Err(RegistrationError::Config(
                "max_attempts must be at least 1".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(policy.request_timeout)
            .connect_timeout(policy.request_timeout);
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                RegistrationError::Config(format!("the backend CA file is not PEM: {e}"))
            })?;
            if certs.is_empty() {
                return Err(RegistrationError::Config(
                    "the backend CA file holds no certificate".into(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| RegistrationError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            url: format!("{base}{REGISTER_PATH}"),
            policy,
        })
    }

    /// Posts the registration, retrying transient failures.
    pub async fn register(
        &self,
        token: &SecretString,
        body: &RegisterRequest,
    ) -> Result<RegisterResponse, RegistrationError> {
        let mut last = String::new();
        for attempt in 1..=self.policy.max_attempts {
            match self.attempt(token, body).await {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Transient(why)) => {
                    last = why;
                    if attempt == self.policy.max_attempts {
                        break;
                    }
                    let delay = {
                        let mut rng = rand::thread_rng();
                        self.policy.backoff.delay(attempt, &mut rng)
                    };
                    tracing::warn!(
                        attempt,
                        max = self.policy.max_attempts,
                        retry_in_ms = delay.ms,
                        error = %last,
                        "registration attempt failed; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(delay.ms)).await;
                }
            }
        }
        Err(RegistrationError::Unavailable {
            url: self.url.clone(),
            attempts: self.policy.max_attempts,
            last,
        })
    }

    async fn attempt(
        &self,
        token: &SecretString,
        body: &RegisterRequest,
    ) -> Result<RegisterResponse, Attempt> {
        tracing::info!(url = %self.url, device_id = %body.device_id, "POST registration");
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(token.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(|e| match untrusted_certificate(&e) {
                Some(why) => Attempt::Fatal(RegistrationError::Config(format!(
                    "the backend's HTTPS certificate is not trusted ({why}): give the CA it \
                     chains to (e.g. the dev stack's ca.pem) with --ca"
                ))),
                None => Attempt::Transient(network_text(&e)),
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Attempt::Transient(network_text(&e)))?;
        if status.is_success() {
            return serde_json::from_slice::<RegisterResponse>(&bytes).map_err(|e| {
                Attempt::Fatal(RegistrationError::BadAnswer(format!(
                    "HTTP {} with a body that is not a registration answer: {e}",
                    status.as_u16()
                )))
            });
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (
                format!("http_{}", status.as_u16()),
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                    .trim()
                    .to_owned(),
            ),
        };
        let code_num = status.as_u16();
        if status.is_server_error() || code_num == 408 || code_num == 429 {
            return Err(Attempt::Transient(format!(
                "HTTP {code_num} ({code}): {message}"
            )));
        }
        Err(Attempt::Fatal(RegistrationError::Refused {
            status: code_num,
            code,
            message,
        }))
    }
}

enum Attempt {
    Transient(String),
    Fatal(RegistrationError),
}

/// A readable network error: reqwest's text plus its causes (connection refused, DNS, TLS...).
fn network_text(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The rustls certificate error inside `err`, if the server's certificate was refused (not a
/// transient fault: retrying cannot help).
fn untrusted_certificate(err: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(why)) = tls {
            return Some(format!("{why:?}"));
        }
        source = cause.source();
    }
    // Wrappers that hide the rustls error from `source()` still show its text.
    let text = network_text(err);
    text.split_once("invalid peer certificate: ")
        .map(|(_, why)| {
            why.split(['.', ';'])
                .next()
                .unwrap_or(why)
                .trim()
                .to_owned()
        })
}
