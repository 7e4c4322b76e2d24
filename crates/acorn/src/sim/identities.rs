//! Where the simulated devices' identities come from: a local CA made for the run (fast), the
//! registration backend (tokens minted and devices registered in bulk, as a factory would), or
//! a directory of certificate and key files (AWS IoT Core).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use acorn_transport::{ClientIdentity, SecretString, TrustRoots};
use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::sign::CertifiedKey;
use secrecy::ExposeSecret as _;
use serde::Deserialize;

/// One device's identity, loaded for rustls (certificate chain and signing key).
pub struct DeviceIdentity {
    /// The device id (client id, thing name).
    pub device_id: String,
    /// Certificate chain and key, shared by the device's connections.
    pub key: Arc<CertifiedKey>,
}

/// Where the devices and the observer connect, and whom they trust.
pub struct Fleet {
    /// The devices.
    pub devices: Vec<DeviceIdentity>,
    /// Roots the devices verify the broker against.
    pub roots: TrustRoots,
    /// The devices' broker: host and port.
    pub broker: (String, u16),
    /// The observer's identity, client id and broker (host, port), if there is one.
    pub observer: Option<ObserverIdentity>,
}

/// The cloud-side observer's service identity.
pub struct ObserverIdentity {
    /// Client id (`service:observer`).
    pub client_id: String,
    /// Certificate and key.
    pub identity: ClientIdentity,
    /// Broker host and port (the service listener).
    pub broker: (String, u16),
    /// Roots it verifies the broker against.
    pub roots: TrustRoots,
}

/// Turns a PEM identity into rustls' form, checking that the key matches.
pub fn certified(identity: &ClientIdentity, what: &str) -> Result<Arc<CertifiedKey>> {
    acorn_transport::tls::certified_key(identity)
        .map(Arc::new)
        .with_context(|| format!("the identity of {what}"))
}

/// The local PKI of a run against the simulator's own mosquitto: a device CA, a service CA,
/// the broker's server certificate, and the observer's service identity.
pub struct LocalPki {
    device_ca: CertifiedIssuer<'static, KeyPair>,
    service_ca: CertifiedIssuer<'static, KeyPair>,
    /// Files written for the broker: device CA, service CA, server cert, server key.
    pub files: BrokerFiles,
}

/// The PEM files the broker reads.
pub struct BrokerFiles {
    /// The device CA.
    pub ca: PathBuf,
    /// The service CA.
    pub service_ca: PathBuf,
    /// The server certificate (CN broker, DNS localhost).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: Vec<String>,
    client: bool,
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl LocalPki {
    /// Makes the CAs and the server certificate, and writes the broker's files into `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        let device_ca = ca("acorn sim device CA")?;
        let service_ca = ca("acorn sim service CA")?;
        let (server_cert, server_key) = leaf(
            &device_ca,
            "broker",
            vec!["localhost".into(), "127.0.0.1".into()],
            false,
        )?;
        let files = BrokerFiles {
            ca: dir.join("ca.pem"),
            service_ca: dir.join("service-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        };
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write(&files.ca, &device_ca.pem())?;
        write(&files.service_ca, &service_ca.pem())?;
        write(&files.server_cert, &server_cert)?;
        acorn_files::write_private(&files.server_key, server_key.as_bytes())
            .with_context(|| format!("cannot write {}", files.server_key.display()))?;
        Ok(Self {
            device_ca,
            service_ca,
            files,
        })
    }

    /// The roots devices and observer trust (the device CA signed the server certificate).
    pub fn roots(&self) -> Result<TrustRoots> {
        TrustRoots::from_pem(&self.device_ca.pem(), "the simulator's CA").context("local CA")
    }

    /// The observer's service identity (CN `service:observer`, from the service CA).
    pub fn observer(&self) -> Result<ClientIdentity> {
        let (cert, key) = leaf(&self.service_ca, super::OBSERVER_ID, Vec::new(), true)?;
        Ok(ClientIdentity::new(cert, SecretString::from(key)))
    }

    /// `count` device identities `{prefix}-00001`…, made on all cores; `progress` is called
    /// with the number made so far.
    pub fn devices(
        &self,
        prefix: &str,
        count: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<DeviceIdentity>> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        let done = std::sync::atomic::AtomicUsize::new(0);
        let chunk = count.div_ceil(threads).max(1);
        let parts: Vec<Result<Vec<DeviceIdentity>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..count)
                .step_by(chunk)
                .map(|first| {
                    let done = &done;
                    scope.spawn(move || {
                        let mut out = Vec::with_capacity(chunk);
                        for i in first..(first + chunk).min(count) {
                            let device_id = device_id(prefix, i);
                            let (cert, key) = leaf(&self.device_ca, &device_id, Vec::new(), true)?;
                            let identity = ClientIdentity::new(cert, SecretString::from(key));
                            out.push(DeviceIdentity {
                                key: certified(&identity, &device_id)?,
                                device_id,
                            });
                            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            if n % 500 == 0 {
                                progress(n);
                            }
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a key thread panicked")))
                })
                .collect()
        });
        let mut devices = Vec::with_capacity(count);
        for part in parts {
            devices.extend(part?);
        }
        progress(devices.len());
        Ok(devices)
    }
}

/// The id of device `i` (0-based) of a run: `{prefix}-00001`, …
pub fn device_id(prefix: &str, i: usize) -> String {
    format!("{prefix}-{:05}", i + 1)
}

/// Splits `host:port` (`localhost:8883`).
pub fn host_port(endpoint: &str, default_port: u16) -> Result<(String, u16)> {
    let target = acorn_transport::BrokerTarget::parse(endpoint, default_port == 443)
        .with_context(|| format!("endpoint {endpoint:?}"))?;
    let port = if endpoint
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        target.port
    } else {
        default_port
    };
    Ok((target.host, port))
}

// ---------------------------------------------------------------------------------------
// The registration backend.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tokens {
    tokens: Vec<Token>,
}

#[derive(Deserialize)]
struct Token {
    token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    certificate_pem: String,
    iot_endpoint: String,
    ca_certificate_pem: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceIdentity {
    client_id: String,
    certificate_pem: String,
    private_key_pem: String,
    service_endpoint: String,
    ca_certificate_pem: String,
}

/// How many registrations run at once against the backend.
const REGISTER_CONCURRENCY: usize = 8;
/// Bound of each HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

async fn post<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    bearer: &str,
    body: serde_json::Value,
) -> Result<T> {
    let answer = client
        .post(url)
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = answer.status();
    let text = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST {url}: {status}: {}", text.trim());
    }
    serde_json::from_str(&text).with_context(|| format!("POST {url}: unexpected answer {text}"))
}

/// Mints tokens and registers `count` devices `{prefix}-00001`… with the backend (key and
/// CSR made here, as a device does), then asks the admin API for the observer's service
/// identity. The broker address and CA come from the registration answers.
pub async fn from_backend(
    base: &str,
    admin_key: &str,
    prefix: &str,
    count: usize,
    progress: impl Fn(usize),
) -> Result<Fleet> {
    let base = base.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("HTTP client")?;
    // Tokens, 100 per request (the API's maximum).
    let mut tokens = Vec::with_capacity(count);
    while tokens.len() < count {
        let n = (count - tokens.len()).min(100);
        let minted: Tokens = post(
            &client,
            &format!("{base}/v1/tokens"),
            admin_key,
            serde_json::json!({"ttlSeconds": 3600, "count": n}),
        )
        .await
        .context("minting registration tokens (is --admin-key the backend's admin key?)")?;
        tokens.extend(minted.tokens.into_iter().map(|t| t.token));
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(REGISTER_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let device_id = device_id(prefix, i);
        let (client, url, semaphore) = (
            client.clone(),
            format!("{base}/v1/devices/register"),
            semaphore.clone(),
        );
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await?;
            let id = device_id.clone();
            let key = tokio::task::spawn_blocking(move || {
                acorn_register::make_device_key(&id, acorn_register::KeyType::P256)
            })
            .await??;
            let (serial, mac) = acorn_register::derived_serial_and_mac(&device_id);
            let answer: Registered = post(
                &client,
                &url,
                &token,
                serde_json::json!({
                    "deviceId": device_id, "serialNumber": serial, "macAddress": mac,
                    "firmwareVersion": "acorn-sim", "csr": key.csr_pem,
                }),
            )
            .await
            .with_context(|| format!("registering {device_id}"))?;
            let identity = ClientIdentity::new(
                answer.certificate_pem,
                SecretString::from(key.private_key_pem.expose_secret().to_owned()),
            );
            Ok::<_, anyhow::Error>((
                i,
                DeviceIdentity {
                    key: certified(&identity, &device_id)?,
                    device_id,
                },
                answer.iot_endpoint,
                answer.ca_certificate_pem,
            ))
        });
    }
    let mut registered: Vec<Option<DeviceIdentity>> = (0..count).map(|_| None).collect();
    let mut endpoint = None;
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, identity, iot_endpoint, ca) = joined.context("a registration task failed")??;
        registered[i] = Some(identity);
        endpoint.get_or_insert((iot_endpoint, ca));
        done += 1;
        if done % 100 == 0 || done == count {
            progress(done);
        }
    }
    let (iot_endpoint, ca_pem) = endpoint.context("no device registered (--devices 0?)")?;
    let roots = TrustRoots::from_pem(&ca_pem, "the backend's CA").context("backend CA")?;
    let service: ServiceIdentity = post(
        &client,
        &format!("{base}/v1/service-identities"),
        admin_key,
        serde_json::json!({"name": "observer"}),
    )
    .await
    .context("issuing the observer's service identity")?;
    let observer = ObserverIdentity {
        client_id: service.client_id,
        identity: ClientIdentity::new(
            service.certificate_pem,
            SecretString::from(service.private_key_pem),
        ),
        broker: host_port(&service.service_endpoint, 8884)?,
        roots: TrustRoots::from_pem(&service.ca_certificate_pem, "the backend's CA")
            .context("service endpoint CA")?,
    };
    Ok(Fleet {
        devices: registered.into_iter().flatten().collect(),
        roots,
        broker: host_port(&iot_endpoint, 8883)?,
        observer: Some(observer),
    })
}

// ---------------------------------------------------------------------------------------
// A directory of certificate and key files.

/// Reads `DIR`: for every `NAME.cert.pem`, `NAME.pem.crt`, `NAME-certificate.pem.crt` or
/// `NAME.crt` a key `NAME.private.key`, `NAME-private.pem.key`, `NAME.pem.key` or `NAME.key`;
/// `NAME` is the device id (thing name). At most `count` devices, in name order.
pub fn from_dir(dir: &Path, count: usize) -> Result<Vec<DeviceIdentity>> {
    const CERT_SUFFIXES: [&str; 4] = ["-certificate.pem.crt", ".cert.pem", ".pem.crt", ".crt"];
    const KEY_SUFFIXES: [&str; 4] = ["-private.pem.key", ".private.key", ".pem.key", ".key"];
    let mut certs: HashMap<String, PathBuf> = HashMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = CERT_SUFFIXES.iter().find_map(|s| name.strip_suffix(s)) {
            certs.entry(stem.to_owned()).or_insert(path.clone());
        }
    }
    let mut names: Vec<String> = certs.keys().cloned().collect();
    names.sort();
    if names.is_empty() {
        bail!(
            "no certificates in {} (expected NAME-certificate.pem.crt and NAME-private.pem.key, \
             as AWS IoT Core hands them out, or NAME.crt and NAME.key)",
            dir.display()
        );
    }
    if names.len() < count {
        bail!(
            "{} holds {} identities, fewer than --devices {count}",
            dir.display(),
            names.len()
        );
    }
    names
        .into_iter()
        .take(count)
        .map(|name| {
            let cert_path = &certs[&name];
            let key_path = KEY_SUFFIXES
                .iter()
                .map(|s| dir.join(format!("{name}{s}")))
                .find(|p| p.is_file())
                .with_context(|| format!("no private key for {}", cert_path.display()))?;
            acorn_mqtt::check_device_id(&name)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert_path.display()))?;
            let cert = std::fs::read_to_string(cert_path)
                .with_context(|| format!("cannot read {}", cert_path.display()))?;
            let key = std::fs::read_to_string(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?;
            let identity = ClientIdentity::new(cert, SecretString::from(key));
            Ok(DeviceIdentity {
                key: certified(&identity, &name)?,
                device_id: name,
            })
        })
        .collect()
}
