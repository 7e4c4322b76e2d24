//! Fleet provisioning by claim: a device that holds only the shared claim certificate (NVS
//! namespace [`CLAIM_NAMESPACE`], written by `acorn certs provision --claim`) makes its own
//! key, gets its certificate through AWS IoT's provisioning MQTT API
//! (`CreateCertificateFromCsr`, then `RegisterThing` of the template with its `DeviceId`,
//! `SerialNumber`, `MacAddress` and `FirmwareVersion`), checks it as a registration answer is
//! checked, and stores its own identity (namespace `mqtt_certs`). The claim connection's client
//! id is `claim:<device id>` ([`acorn_mqtt::topics::claim_client_id`]); against the local stack
//! every topic is under [`acorn_mqtt::provisioning::local_claim_prefix`].

use std::time::Duration;

use acorn_mqtt::provisioning::{
    self, CreateCertificateFromCsrRequest, ProvisioningAnswer, ProvisioningTopics,
    RegisterThingRequest,
};
use acorn_transport::rumqttc::{Event, EventLoop, Packet, QoS};
use acorn_transport::{BrokerTarget, ClientIdentity, SecretString, SessionOptions, TrustRoots};
use secrecy::ExposeSecret as _;

use crate::{answer, make_device_key, unix_now, ImageTarget, KeyType, RegistrationError};

pub use acorn_mqtt::provisioning::{CLAIM_KEYS, CLAIM_NAMESPACE};

/// The claim identity a factory image holds.
pub struct ClaimIdentity {
    /// The shared claim certificate, PEM.
    pub certificate_pem: String,
    /// Its private key, PEM.
    pub private_key_pem: SecretString,
    /// Where to provision: the claim endpoint, `host[:port]` (default port 8883).
    pub endpoint: String,
    /// The device id to provision (the thing name; the client id is `claim:<device id>`).
    pub device_id: String,
}

impl core::fmt::Debug for ClaimIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClaimIdentity")
            .field("endpoint", &self.endpoint)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl ClaimIdentity {
    /// Writes the claim identity into `image` (namespace [`CLAIM_NAMESPACE`]).
    pub fn store(&self, image: &ImageTarget) -> Result<(), RegistrationError> {
        let mut nvs = image.open()?;
        self.store_into(&mut nvs)
            .map_err(|e| image.image_error(format!("cannot store the claim identity: {e}")))
    }

    /// Writes the claim identity into `nvs` (namespace [`CLAIM_NAMESPACE`]), e.g. a factory
    /// image being made in memory.
    pub fn store_into<F: embedded_storage::nor_flash::NorFlash>(
        &self,
        nvs: &mut acorn_nvs::Nvs<F>,
    ) -> Result<(), RegistrationError> {
        if !acorn_certs::is_valid_device_id(&self.device_id) {
            return Err(RegistrationError::Config(format!(
                "device id `{}` must be 1-128 of A-Z a-z 0-9 _ -",
                self.device_id
            )));
        }
        if !self.certificate_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(RegistrationError::Config(
                "the claim certificate is not a PEM CERTIFICATE".into(),
            ));
        }
        if !self
            .private_key_pem
            .expose_secret()
            .contains("PRIVATE KEY-----")
        {
            return Err(RegistrationError::Config(
                "the claim key is not a PEM private key".into(),
            ));
        }
        let fail = |e: acorn_nvs::Error| RegistrationError::Config(e.to_string());
        let ns = nvs.namespace(CLAIM_NAMESPACE).map_err(fail)?;
        nvs.set_blob(ns, CLAIM_KEYS[0], self.certificate_pem.as_bytes())
            .map_err(fail)?;
        let key = self.private_key_pem.expose_secret().as_bytes();
        nvs.set_blob(ns, CLAIM_KEYS[1], key).map_err(fail)?;
        nvs.set_str(ns, CLAIM_KEYS[2], &self.endpoint)
            .map_err(fail)?;
        nvs.set_str(ns, CLAIM_KEYS[3], &self.device_id)
            .map_err(fail)?;
        Ok(())
    }

    /// The claim identity in `image`, if it holds one.
    pub fn load(image: &ImageTarget) -> Result<Option<Self>, RegistrationError> {
        if !image.path().exists() {
            return Ok(None);
        }
        let mut nvs = image.open()?;
        let Some(ns) = nvs.find_namespace(CLAIM_NAMESPACE) else {
            return Ok(None);
        };
        let fail =
            |e: acorn_nvs::Error| image.image_error(format!("cannot read the claim identity: {e}"));
        let missing = |key: &str| {
            image.image_error(format!(
                "namespace {CLAIM_NAMESPACE} has no `{key}`; write the claim identity again with `acorn certs provision --claim`"
            ))
        };
        let text = |bytes: Vec<u8>, key: &str| {
            String::from_utf8(bytes)
                .map_err(|_| image.image_error(format!("{CLAIM_NAMESPACE}/{key} is not UTF-8")))
        };
        let cert = nvs
            .get_blob(ns, CLAIM_KEYS[0])
            .map_err(fail)?
            .ok_or_else(|| missing(CLAIM_KEYS[0]))?;
        let key = nvs
            .get_blob(ns, CLAIM_KEYS[1])
            .map_err(fail)?
            .ok_or_else(|| missing(CLAIM_KEYS[1]))?;
        let endpoint = nvs
            .get_string(ns, CLAIM_KEYS[2])
            .map_err(fail)?
            .ok_or_else(|| missing(CLAIM_KEYS[2]))?;
        let device_id = nvs
            .get_string(ns, CLAIM_KEYS[3])
            .map_err(fail)?
            .ok_or_else(|| missing(CLAIM_KEYS[3]))?;
        Ok(Some(Self {
            certificate_pem: text(cert, CLAIM_KEYS[0])?,
            private_key_pem: SecretString::from(text(key, CLAIM_KEYS[1])?),
            endpoint,
            device_id,
        }))
    }
}

/// How to provision by claim.
#[derive(Debug)]
pub struct ClaimOptions {
    /// The claim identity.
    pub identity: ClaimIdentity,
    /// Roots the claim endpoint's server certificate chains to.
    pub roots: TrustRoots,
    /// The CA (PEM) the device's new certificate must chain to (the local stack's CA); not
    /// checked for an AWS IoT endpoint, whose issuing CA AWS does not publish.
    pub certificate_ca_pem: String,
    /// The provisioning template (`acorn-pups`).
    pub template: String,
    /// Put every topic under [`provisioning::local_claim_prefix`] (the local stack).
    pub local: bool,
    /// `RegisterThing` parameters besides `DeviceId`.
    pub serial_number: String,
    /// The MAC address sent as `MacAddress`.
    pub mac_address: String,
    /// The firmware version sent as `FirmwareVersion`.
    pub firmware_version: String,
    /// The endpoint to store when the answer names none (AWS: the claim endpoint itself).
    pub allow_custom_endpoint: bool,
    /// Longest wait for each answer.
    pub step_timeout: Duration,
}

impl ClaimOptions {
    /// Options for `identity` (trusting `roots` for the endpoint, `certificate_ca_pem` for the
    /// new certificate) with the template `acorn-pups`, serial number and MAC address
    /// derived from the device id ([`crate::derived_serial_and_mac`]), this crate's version as
    /// firmware version, and 30 s per step.
    pub fn new(identity: ClaimIdentity, roots: TrustRoots, certificate_ca_pem: String) -> Self {
        let (serial_number, mac_address) = crate::derived_serial_and_mac(&identity.device_id);
        Self {
            identity,
            roots,
            certificate_ca_pem,
            template: acorn_mqtt::topics::FLEET_PROVISIONING_TEMPLATE.to_owned(),
            local: false,
            serial_number,
            mac_address,
            firmware_version: env!("CARGO_PKG_VERSION").to_owned(),
            allow_custom_endpoint: false,
            step_timeout: Duration::from_secs(30),
        }
    }
}

/// Provisions the device by claim (see the module docs) and stores its identity in `image`.
pub async fn provision_by_claim(
    options: &ClaimOptions,
    image: &ImageTarget,
) -> Result<crate::Registration, RegistrationError> {
    let id = options.identity.device_id.clone();
    let client_id = acorn_mqtt::topics::claim_client_id(&id)
        .map_err(|e| RegistrationError::Config(e.to_string()))?;
    let prefix = if options.local {
        provisioning::local_claim_prefix(&client_id)
    } else {
        String::new()
    };
    let topics = ProvisioningTopics::new(&prefix, &options.template)
        .map_err(|e| RegistrationError::Config(e.to_string()))?;
    let target = BrokerTarget::parse(&options.identity.endpoint, false)
        .map_err(|e| RegistrationError::Config(format!("claim endpoint: {e}")))?;
    let session = SessionOptions::new(
        target,
        ClientIdentity::new(
            options.identity.certificate_pem.clone(),
            options.identity.private_key_pem.clone(),
        ),
        options.roots.clone(),
        &client_id,
        env!("CARGO_PKG_VERSION"),
    );
    // A claim connection has no status topic: no last will.
    let mut session = session;
    session.will_topic.clear();
    let (client, mut events) = session
        .connect()
        .map_err(|e| RegistrationError::Config(format!("claim connection: {e}")))?;
    let step = |what: &str, detail: String| RegistrationError::Unavailable {
        url: options.identity.endpoint.clone(),
        attempts: 1,
        last: format!("{what}: {detail}"),
    };

    tracing::info!(device_id = %id, endpoint = %options.identity.endpoint, "claim: connect with the claim certificate");
    next(&mut events, options.step_timeout, |p| {
        matches!(p, Packet::ConnAck(_)).then_some(())
    })
    .await
    .map_err(|e| step("connect", e))?;
    for filter in topics.answer_filters() {
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .map_err(|e| step("subscribe", e.to_string()))?;
        next(&mut events, options.step_timeout, |p| {
            matches!(p, Packet::SubAck(_)).then_some(())
        })
        .await
        .map_err(|e| step("subscribe", e))?;
    }

    tracing::info!(device_id = %id, "claim: make the key pair and CSR on the device");
    let owned = id.clone();
    let key = tokio::task::spawn_blocking(move || make_device_key(&owned, KeyType::P256))
        .await
        .map_err(|e| RegistrationError::Config(format!("key task failed: {e}")))??;
    let request = CreateCertificateFromCsrRequest {
        certificate_signing_request: key.csr_pem.clone(),
    };
    let body =
        provisioning::to_json(&request).map_err(|e| RegistrationError::Config(e.to_string()))?;
    client
        .publish(
            topics.create_from_csr[0].clone(),
            QoS::AtLeastOnce,
            false,
            body,
        )
        .await
        .map_err(|e| step("CreateCertificateFromCsr", e.to_string()))?;
    let certificate = match answer_of(&topics, &mut events, options.step_timeout).await {
        Ok(ProvisioningAnswer::Certificate(c)) => c,
        Ok(other) => return Err(refused("CreateCertificateFromCsr", other)),
        Err(e) => return Err(step("CreateCertificateFromCsr", e)),
    };

    tracing::info!(device_id = %id, certificate_id = %certificate.certificate_id, "claim: register the thing");
    let register = RegisterThingRequest {
        certificate_ownership_token: certificate.certificate_ownership_token.clone(),
        parameters: [
            ("DeviceId", id.as_str()),
            ("SerialNumber", options.serial_number.as_str()),
            ("MacAddress", options.mac_address.as_str()),
            ("FirmwareVersion", options.firmware_version.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let body =
        provisioning::to_json(&register).map_err(|e| RegistrationError::Config(e.to_string()))?;
    client
        .publish(topics.register[0].clone(), QoS::AtLeastOnce, false, body)
        .await
        .map_err(|e| step("RegisterThing", e.to_string()))?;
    let registered = match answer_of(&topics, &mut events, options.step_timeout).await {
        Ok(ProvisioningAnswer::Registered(r)) => r,
        Ok(other) => return Err(refused("RegisterThing", other)),
        Err(e) => return Err(step("RegisterThing", e)),
    };
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while events.poll().await.is_ok() {}
    })
    .await;
    if registered.thing_name != id {
        return Err(RegistrationError::BadAnswer(format!(
            "RegisterThing made thing `{}`, not `{id}`",
            registered.thing_name
        )));
    }

    // The certificate is checked as a registration answer is: for this device, this key, the
    // claim endpoint's CA (local stack) and its id.
    let endpoint = registered
        .device_configuration
        .get("iotEndpoint")
        .cloned()
        .unwrap_or_else(|| options.identity.endpoint.clone());
    let ca_certificate_pem = options.certificate_ca_pem.clone();
    let response = acorn_api::RegisterResponse {
        device_id: id.clone(),
        certificate_pem: certificate.certificate_pem,
        private_key_pem: None,
        certificate_id: certificate.certificate_id,
        iot_endpoint: endpoint,
        ca_certificate_pem,
    };
    let checked = answer::check(
        response,
        &id,
        Some(key.private_key_pem),
        options.allow_custom_endpoint,
        unix_now(),
    )?;
    tracing::info!(device_id = %id, image = %image.path().display(), "claim: store the device's own identity");
    let (image_store, certs, allow) = (image.clone(), checked.certs, options.allow_custom_endpoint);
    let now = unix_now();
    tokio::task::spawn_blocking(move || image_store.store(&certs, now, allow))
        .await
        .map_err(|e| RegistrationError::Config(format!("store task failed: {e}")))??;
    Ok(crate::Registration {
        device_id: id,
        already_registered: false,
        certificate_id: checked.certificate_id,
        endpoint_host: checked.endpoint_host,
        endpoint_port: checked.endpoint_port,
        ca_certificate_pem: Some(checked.ca_certificate_pem),
        key_origin: Some(crate::KeyOrigin::Device),
    })
}

fn refused(api: &str, answer: ProvisioningAnswer) -> RegistrationError {
    match answer {
        ProvisioningAnswer::Rejected(r) => RegistrationError::Refused {
            status: r.status_code,
            code: r.error_code,
            message: format!("{api}: {}", r.error_message),
        },
        other => RegistrationError::BadAnswer(format!("{api} was answered with {other:?}")),
    }
}

/// The next provisioning answer (bounded by `limit`).
async fn answer_of(
    topics: &ProvisioningTopics,
    events: &mut EventLoop,
    limit: Duration,
) -> Result<ProvisioningAnswer, String> {
    next(events, limit, |p| match p {
        Packet::Publish(publish) => topics
            .parse_answer(&publish.topic, &publish.payload)
            .map_err(|e| e.to_string())
            .transpose(),
        _ => None,
    })
    .await?
}

/// Polls `events` until `wanted` picks a packet (bounded by `limit`).
async fn next<T>(
    events: &mut EventLoop,
    limit: Duration,
    wanted: impl Fn(&Packet) -> Option<T>,
) -> Result<T, String> {
    tokio::time::timeout(limit, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = wanted(&packet) {
                        return Ok(found);
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}
