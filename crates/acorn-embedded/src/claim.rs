//! Fleet provisioning by claim on the embedded transport (feature `claim`): a device that
//! holds only the shared claim certificate (NVS namespace
//! [`acorn_mqtt::provisioning::CLAIM_NAMESPACE`], written by `acorn certs provision --claim`)
//! connects with it as `claim:<device id>`, makes its own P-256 key and CSR, asks AWS IoT's
//! provisioning MQTT API for a certificate (`CreateCertificateFromCsr`) and to register its
//! thing (`RegisterThing` of the template, with `DeviceId`, `SerialNumber`, `MacAddress` and
//! `FirmwareVersion`), and hands back its own identity for `acorn_certs::CertStore::store`
//! (which checks that the certificate is for this key and within its dates). The same code runs
//! on the chip's boot path and in `acorn device run --transport embedded` on Linux.
//!
//! Against AWS IoT Core the topics are AWS's own; against a local stack (an endpoint that is
//! not an AWS IoT endpoint, e.g. `acorn dev up`'s claim endpoint) they are under
//! [`acorn_mqtt::provisioning::local_claim_prefix`], where only this connection reads them.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::future::Future;

use acorn_certs::{DeviceCertificates, PrivateKey};
use acorn_mqtt::provisioning::{
    self, CreateCertificateFromCsrRequest, ProvisioningAnswer, ProvisioningTopics,
    RegisterThingRequest, CLAIM_KEYS, CLAIM_NAMESPACE,
};
use acorn_mqtt::QoS;
use rand_core::{CryptoRng, RngCore};

use crate::identity::TlsIdentity;
use crate::transport::{ConnectOrder, Driver, LinkEvent, Order, OutPublish, Target, Time};

/// Longest wait for the connection and for each answer, ms (the error text says 30 s).
pub const STEP_TIMEOUT_MS: u64 = 30_000;

/// The claim identity and where to use it, as a factory image holds them.
pub struct ClaimConfig {
    /// The claim certificate and key (shared by many devices), as a TLS identity.
    pub identity: TlsIdentity,
    /// The claim endpoint's host.
    pub host: String,
    /// Its port (8883 unless the image names another).
    pub port: u16,
    /// The id of the device to provision (the thing name).
    pub device_id: String,
}

impl core::fmt::Debug for ClaimConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClaimConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl ClaimConfig {
    /// The endpoint to connect to.
    pub fn target(&self) -> Target {
        Target::new(&self.host, self.port)
    }
}

/// Why provisioning by claim failed; every message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// The claim identity in NVS is incomplete or unusable.
    #[error("the claim identity in NVS namespace `mqtt_claim` is not usable: {0}; write it again with `acorn certs provision --claim`")]
    Config(String),
    /// The claim endpoint could not be reached, or the connection ended.
    #[error("the claim endpoint: {0}")]
    Connection(String),
    /// The API refused a request (AWS's `statusCode`, `errorCode`, `errorMessage`).
    #[error("{api} was refused ({status}, {code}): {message}")]
    Refused {
        /// `CreateCertificateFromCsr` or `RegisterThing`.
        api: &'static str,
        /// AWS's status code.
        status: u16,
        /// AWS's error code.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// An answer that does not fit (unreadable, another thing, out of order).
    #[error("the claim endpoint's answer is not usable: {0}")]
    BadAnswer(String),
    /// No answer in time.
    #[error("no answer from the claim endpoint within 30 s while {0}")]
    Timeout(&'static str),
}

/// A value of the claim identity that must be there.
fn found<T>(key: &str, value: Result<Option<T>, acorn_nvs::Error>) -> Result<T, ClaimError> {
    value
        .map_err(|e| ClaimError::Config(format!("`{key}`: {e}")))?
        .ok_or_else(|| ClaimError::Config(format!("`{key}` is missing")))
}

/// Reads the claim identity from `nvs` (namespace `mqtt_claim`: `claim_cert`, `claim_key`,
/// `endpoint` as `host[:port]`, `device_id`); `Ok(None)` when the image holds none.
pub fn read_config<F: embedded_storage::nor_flash::NorFlash>(
    nvs: &mut acorn_nvs::Nvs<F>,
) -> Result<Option<ClaimConfig>, ClaimError> {
    let Some(ns) = nvs.find_namespace(CLAIM_NAMESPACE) else {
        return Ok(None);
    };
    let [cert_key, key_key, endpoint_key, id_key] = CLAIM_KEYS;
    let cert = found(cert_key, nvs.get_blob(ns, cert_key))?;
    let key = PrivateKey::new(found(key_key, nvs.get_blob(ns, key_key))?);
    let endpoint = found(endpoint_key, nvs.get_string(ns, endpoint_key))?;
    let device_id = found(id_key, nvs.get_string(ns, id_key))?;
    if !acorn_certs::is_valid_device_id(&device_id) {
        return Err(ClaimError::Config(format!(
            "device id `{device_id}` must be 1 to 128 letters, digits, `_` or `-`"
        )));
    }
    let (host, port) = crate::boot::split_endpoint(&endpoint).map_err(ClaimError::Config)?;
    let port = port.unwrap_or(8883);
    if host.is_empty() {
        return Err(ClaimError::Config("`endpoint` is empty".into()));
    }
    let certificates = DeviceCertificates {
        device_certificate: cert,
        private_key: key,
        iot_endpoint: host.clone(),
        device_id: device_id.clone(),
    };
    let identity = TlsIdentity::from_certificates(&certificates)
        .map_err(|e| ClaimError::Config(format!("the claim certificate and key: {e}")))?;
    Ok(Some(ClaimConfig {
        identity,
        host,
        port,
        device_id,
    }))
}

/// What the device sends in `RegisterThing` besides `DeviceId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingParameters {
    /// `SerialNumber`.
    pub serial_number: String,
    /// `MacAddress`.
    pub mac_address: String,
    /// `FirmwareVersion`.
    pub firmware_version: String,
}

impl ThingParameters {
    /// The parameters of a chip with this MAC address (the serial number is the MAC address
    /// without colons, as registration sends it).
    pub fn for_mac(mac: [u8; 6], firmware_version: &str) -> Self {
        let (mac_address, _) = crate::boot::mac_names(mac);
        Self {
            serial_number: mac_address.replace(':', ""),
            mac_address,
            firmware_version: firmware_version.to_string(),
        }
    }
}

/// The device's own identity, obtained by claim.
#[derive(Debug)]
pub struct Claimed {
    /// Its certificate (PEM), its key (SEC1 PEM, made here), the endpoint to use from now on
    /// (the template's `iotEndpoint`, or the claim endpoint's host) and the device id.
    pub certificates: DeviceCertificates,
    /// The certificate's id, as AWS IoT named it.
    pub certificate_id: String,
    /// The port the template named with the endpoint, if any (`host:port`).
    pub endpoint_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connecting,
    Subscribing,
    AwaitingCertificate,
    AwaitingRegistration,
    Done,
}

impl Step {
    fn doing(self) -> &'static str {
        match self {
            Step::Connecting => "connecting with the claim certificate",
            Step::Subscribing => "subscribing to the answers",
            Step::AwaitingCertificate => "waiting for CreateCertificateFromCsr's answer",
            Step::AwaitingRegistration | Step::Done => "waiting for RegisterThing's answer",
        }
    }
}

/// One provisioning by claim, as a [`Driver`] of the [`crate::Transport`] made with the claim
/// identity: one connection, the two requests, then DISCONNECT. [`ClaimDriver::outcome`] says
/// how it ended.
pub struct ClaimDriver<G> {
    rng: G,
    device_id: String,
    client_id: String,
    endpoint: String,
    topics: ProvisioningTopics,
    parameters: ThingParameters,
    step: Step,
    deadline: Option<u64>,
    orders: Vec<Order<()>>,
    key: Option<p256::SecretKey>,
    certificate: Option<(String, String)>,
    outcome: Option<Result<Claimed, ClaimError>>,
    disconnected: bool,
}

impl<G: RngCore + CryptoRng> ClaimDriver<G> {
    /// Provisioning of `config.device_id` by claim with the template `acorn-pups`, keys from
    /// `rng`.
    pub fn new(
        config: &ClaimConfig,
        parameters: ThingParameters,
        rng: G,
    ) -> Result<Self, ClaimError> {
        Self::for_device(&config.device_id, &config.host, parameters, rng)
    }

    /// As [`ClaimDriver::new`], for `device_id` at the claim endpoint `host` (a local stack's
    /// topics when it is not an AWS IoT endpoint).
    pub fn for_device(
        device_id: &str,
        host: &str,
        parameters: ThingParameters,
        rng: G,
    ) -> Result<Self, ClaimError> {
        let template = acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE;
        let client_id = acorn_mqtt::topics::claim_client_id(device_id)
            .map_err(|e| ClaimError::Config(e.to_string()))?;
        let prefix = if acorn_certs::is_aws_iot_endpoint(host) {
            String::new()
        } else {
            provisioning::local_claim_prefix(&client_id)
        };
        let topics = ProvisioningTopics::new(&prefix, template)
            .map_err(|e| ClaimError::Config(e.to_string()))?;
        Ok(Self {
            rng,
            device_id: device_id.to_string(),
            client_id,
            endpoint: host.to_string(),
            topics,
            parameters,
            step: Step::Connecting,
            deadline: None,
            orders: Vec::new(),
            key: None,
            certificate: None,
            outcome: None,
            disconnected: false,
        })
    }

    /// How it ended (`None` while it runs).
    pub fn outcome(&mut self) -> Option<Result<Claimed, ClaimError>> {
        self.outcome.take()
    }

    fn fail(&mut self, error: ClaimError) {
        if self.outcome.is_none() {
            self.outcome = Some(Err(error));
        }
        self.finish();
    }

    fn finish(&mut self) {
        self.step = Step::Done;
        self.deadline = None;
        if !self.disconnected {
            self.disconnected = true;
            self.orders.push(Order::Disconnect);
        }
    }

    fn next_step(&mut self, now: Time, step: Step) {
        self.step = step;
        self.deadline = Some(now.mono_ms.saturating_add(STEP_TIMEOUT_MS));
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>) {
        self.orders.push(Order::Publish(OutPublish {
            tag: (),
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retransmit: false,
        }));
    }

    fn ask_for_certificate(&mut self, now: Time) {
        let (key, csr) = match crate::csr::key_and_csr(&mut self.rng, &self.device_id) {
            Ok(made) => made,
            Err(e) => return self.fail(ClaimError::Config(e.to_string())),
        };
        self.key = Some(key);
        let request = CreateCertificateFromCsrRequest {
            certificate_signing_request: csr,
        };
        match provisioning::to_json(&request) {
            Ok(body) => {
                let topic = self.topics.create_from_csr[0].clone();
                self.publish(topic, body);
                self.next_step(now, Step::AwaitingCertificate);
            }
            Err(e) => self.fail(ClaimError::Config(e.to_string())),
        }
    }

    fn register(&mut self, now: Time, token: String) {
        let parameters: BTreeMap<String, String> = [
            ("DeviceId", self.device_id.as_str()),
            ("SerialNumber", self.parameters.serial_number.as_str()),
            ("MacAddress", self.parameters.mac_address.as_str()),
            ("FirmwareVersion", self.parameters.firmware_version.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let request = RegisterThingRequest {
            certificate_ownership_token: token,
            parameters,
        };
        match provisioning::to_json(&request) {
            Ok(body) => {
                let topic = self.topics.register[0].clone();
                self.publish(topic, body);
                self.next_step(now, Step::AwaitingRegistration);
            }
            Err(e) => self.fail(ClaimError::Config(e.to_string())),
        }
    }

    fn answer(&mut self, now: Time, answer: ProvisioningAnswer) {
        match (self.step, answer) {
            (Step::AwaitingCertificate, ProvisioningAnswer::Certificate(c)) => {
                let token = c.certificate_ownership_token;
                self.certificate = Some((c.certificate_pem, c.certificate_id));
                self.register(now, token);
            }
            (Step::AwaitingRegistration, ProvisioningAnswer::Registered(r)) => {
                self.registered(r.thing_name, r.device_configuration)
            }
            (step, ProvisioningAnswer::Rejected(r)) => self.fail(ClaimError::Refused {
                api: if step == Step::AwaitingCertificate {
                    "CreateCertificateFromCsr"
                } else {
                    "RegisterThing"
                },
                status: r.status_code,
                code: r.error_code,
                message: r.error_message,
            }),
            (step, other) => self.fail(ClaimError::BadAnswer(format!(
                "{other:?} while {}",
                step.doing()
            ))),
        }
    }

    fn registered(&mut self, thing: String, configuration: BTreeMap<String, String>) {
        if thing != self.device_id {
            return self.fail(ClaimError::BadAnswer(format!(
                "RegisterThing made thing `{thing}`, not `{}`",
                self.device_id
            )));
        }
        let (Some(key), Some((certificate_pem, certificate_id))) =
            (self.key.take(), self.certificate.take())
        else {
            return self.fail(ClaimError::BadAnswer("RegisterThing answered first".into()));
        };
        let private_key = match crate::csr::sec1_pem(&key) {
            Ok(pem) => pem,
            Err(e) => return self.fail(ClaimError::Config(e.to_string())),
        };
        let (endpoint, endpoint_port) = match configuration.get("iotEndpoint") {
            Some(named) => match crate::boot::split_endpoint(named) {
                Ok(split) => split,
                Err(e) => return self.fail(ClaimError::BadAnswer(e)),
            },
            None => (self.endpoint.clone(), None),
        };
        self.outcome = Some(Ok(Claimed {
            certificates: DeviceCertificates {
                device_certificate: certificate_pem.into_bytes(),
                private_key,
                iot_endpoint: endpoint,
                device_id: self.device_id.clone(),
            },
            certificate_id,
            endpoint_port,
        }));
        self.finish();
    }
}

impl<G: RngCore + CryptoRng> Driver for ClaimDriver<G> {
    type Tag = ();
    type Input = ();

    fn start(&mut self, now: Time) {
        self.next_step(now, Step::Connecting);
        self.orders.push(Order::Connect(ConnectOrder {
            client_id: self.client_id.clone(),
            keep_alive_secs: 60,
            clean_session: true,
            // A claim connection has no status topic: no last will.
            will: None,
        }));
    }

    fn poll_order(&mut self, _now: Time) -> Option<Order<()>> {
        (!self.orders.is_empty()).then(|| self.orders.remove(0))
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.deadline
    }

    fn tick(&mut self, now: Time) {
        if self.deadline.is_some_and(|t| now.mono_ms >= t) {
            let doing = self.step.doing();
            self.fail(ClaimError::Timeout(doing));
        }
    }

    fn event(&mut self, now: Time, event: LinkEvent<'_, ()>) {
        if self.step == Step::Done {
            return;
        }
        match event {
            LinkEvent::ConnAck { .. } => {
                self.next_step(now, Step::Subscribing);
                self.orders
                    .push(Order::Subscribe(self.topics.answer_filters()));
            }
            LinkEvent::SubAck { granted: true } if self.step == Step::Subscribing => {
                self.ask_for_certificate(now)
            }
            LinkEvent::SubAck { .. } => self.fail(ClaimError::Connection(
                "the claim endpoint refused the answer topics (check the claim policy)".into(),
            )),
            LinkEvent::Message { topic, payload } => {
                match self.topics.parse_answer(topic, payload) {
                    Ok(Some(answer)) => self.answer(now, answer),
                    Ok(None) => {}
                    Err(e) => self.fail(ClaimError::BadAnswer(e.to_string())),
                }
            }
            LinkEvent::ConnectRefused { diagnosis, .. } | LinkEvent::ConnectFailed(diagnosis) => {
                self.disconnected = true;
                self.fail(ClaimError::Connection(diagnosis.to_string()))
            }
            LinkEvent::Disconnected { diagnosis, .. } => {
                self.disconnected = true;
                self.fail(ClaimError::Connection(diagnosis.to_string()))
            }
            LinkEvent::PingTimeout => self.fail(ClaimError::Connection(
                "the claim endpoint stopped answering (no PINGRESP)".into(),
            )),
            _ => {}
        }
    }

    fn next_input(&mut self) -> impl Future<Output = ()> {
        core::future::pending()
    }

    fn input(&mut self, _now: Time, _input: ()) {}

    fn is_finished(&self) -> bool {
        self.step == Step::Done && self.orders.is_empty()
    }
}

/// Provisions by claim over one connection to `config`'s endpoint (trusting `anchors`, with
/// `connector`, `clock` and `rng`), bounded by [`STEP_TIMEOUT_MS`] per step: the device's own
/// identity, to be stored with `acorn_certs::CertStore::store`.
pub async fn provision<C, K, G>(
    connector: C,
    clock: K,
    rng: G,
    config: &ClaimConfig,
    anchors: &crate::TrustAnchors,
    parameters: ThingParameters,
) -> Result<Claimed, ClaimError>
where
    C: crate::Connector,
    K: crate::Clock,
    G: RngCore + CryptoRng + Clone,
{
    let mut driver = ClaimDriver::new(config, parameters, rng.clone())?;
    let mut buffers = crate::Buffers::new();
    let mut transport = crate::Transport::new(
        connector,
        clock,
        rng,
        &config.identity,
        anchors,
        crate::TransportConfig::new(config.target()),
        &mut buffers,
    );
    transport.drive(&mut driver).await;
    driver
        .outcome()
        .unwrap_or(Err(ClaimError::Connection("the connection ended".into())))
}
