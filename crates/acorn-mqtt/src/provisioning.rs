//! AWS IoT Core's device provisioning MQTT API (JSON payload format): the topics and payloads
//! of `CreateCertificateFromCsr` (a new certificate for a key made on the device: certificate
//! rotation, and fleet provisioning by claim) and `RegisterThing` (a provisioning template
//! activates the certificate, attaches the policy and the thing).
//!
//! AWS answers on `…/accepted` or `…/rejected` **to the requesting connection only**; a
//! device subscribes to both before it publishes the request. Field names are AWS's
//! (camelCase), checked against fixtures copied from AWS's documentation in this crate's
//! tests.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::Error;

/// `CreateCertificateFromCsr` request topic (the device policy's, [`crate::topics`]).
pub const CREATE_FROM_CSR: &str = crate::topics::TOPIC_CREATE_CERTIFICATE_FROM_CSR;
/// Its answer topic on success.
pub const CREATE_FROM_CSR_ACCEPTED: &str = "$aws/certificates/create-from-csr/json/accepted";
/// Its answer topic on failure.
pub const CREATE_FROM_CSR_REJECTED: &str = "$aws/certificates/create-from-csr/json/rejected";

/// Longest provisioning template name AWS accepts.
pub const MAX_TEMPLATE_NAME: usize = 36;
/// Largest answer payload read (a certificate PEM is ~1.3 KB; AWS caps payloads at 128 KB).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// NVS namespace of the claim identity in a factory image (fleet provisioning by claim).
pub const CLAIM_NAMESPACE: &str = "mqtt_claim";
/// Keys of [`CLAIM_NAMESPACE`]: the claim certificate and key (PEM blobs), the claim endpoint
/// (`host[:port]`, a string), and the id of the device to provision (a string).
pub const CLAIM_KEYS: [&str; 4] = ["claim_cert", "claim_key", "endpoint", "device_id"];

/// Checks a provisioning template name: 1..=36 of `A-Z a-z 0-9 _ -` (AWS's rule, and no MQTT
/// wildcard or separator can slip into the topic).
pub fn check_template_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TEMPLATE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Provisioning {
            detail: format!(
                "provisioning template name {name:?} must be 1..=36 characters of A-Z a-z 0-9 _ -"
            ),
        })
    }
}

/// The `RegisterThing` topics of a template: (request, accepted, rejected).
pub fn register_thing_topics(template: &str) -> Result<[String; 3], Error> {
    Ok(ProvisioningTopics::new("", template)?.register)
}

/// The prefix a device puts before the API's topics against the local stack
/// (`acorn dev up`): `acorn-local/<device id>/`. The broker lets each device use only its own
/// prefix, so an answer (a certificate, an ownership token) reaches the device that asked and
/// no other: AWS does that by answering the requesting connection only; mosquitto delivers to
/// every subscriber.
pub fn local_prefix(device_id: &str) -> String {
    format!("{LOCAL_TOPIC_ROOT}/{device_id}/")
}

/// The first level of the local stack's per-device provisioning topics.
pub const LOCAL_TOPIC_ROOT: &str = "acorn-local";

/// The prefix a device provisioning itself by claim puts before the API's topics against the
/// local stack: `acorn-claim/<client id>/` (client id `claim:<device id>`). The local stack's
/// claim endpoint lets each claim connection use only its own prefix.
pub fn local_claim_prefix(claim_client_id: &str) -> String {
    format!("{LOCAL_CLAIM_ROOT}/{claim_client_id}/")
}

/// The first level of the local stack's claim-provisioning topics.
pub const LOCAL_CLAIM_ROOT: &str = "acorn-claim";

/// Every topic of the API a device uses, with an optional prefix (empty against AWS IoT Core;
/// [`local_prefix`] against the local stack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningTopics {
    /// `CreateCertificateFromCsr`: request, accepted, rejected.
    pub create_from_csr: [String; 3],
    /// `RegisterThing` of the template: request, accepted, rejected.
    pub register: [String; 3],
}

impl ProvisioningTopics {
    /// The topics for `template` under `prefix` (`""` or ending in `/`, no wildcard, not
    /// starting with `$`).
    pub fn new(prefix: &str, template: &str) -> Result<Self, Error> {
        check_template_name(template)?;
        let prefix_ok = prefix.is_empty()
            || (prefix.ends_with('/')
                && !prefix.starts_with('$')
                && !prefix.contains(['+', '#', '\0'])
                && prefix.len() <= 160);
        if !prefix_ok {
            return Err(Error::Provisioning {
                detail: format!(
                    "topic prefix {prefix:?} must be empty or end with '/', without '+', '#' or a leading '$'"
                ),
            });
        }
        let three = |request: String| {
            [
                request.clone(),
                format!("{request}/accepted"),
                format!("{request}/rejected"),
            ]
        };
        Ok(Self {
            create_from_csr: three(format!("{prefix}{CREATE_FROM_CSR}")),
            register: three(format!(
                "{prefix}$aws/provisioning-templates/{template}/provision/json"
            )),
        })
    }

    /// The four answer topics a device subscribes to before it asks.
    pub fn answer_filters(&self) -> Vec<String> {
        alloc::vec![
            self.create_from_csr[1].clone(),
            self.create_from_csr[2].clone(),
            self.register[1].clone(),
            self.register[2].clone(),
        ]
    }

    /// Reads an answer by its topic; `Ok(None)` for any other topic.
    pub fn parse_answer(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<ProvisioningAnswer>, Error> {
        Ok(Some(if topic == self.create_from_csr[1] {
            ProvisioningAnswer::Certificate(parse(topic, payload)?)
        } else if topic == self.register[1] {
            ProvisioningAnswer::Registered(parse(topic, payload)?)
        } else if topic == self.create_from_csr[2] || topic == self.register[2] {
            ProvisioningAnswer::Rejected(parse(topic, payload)?)
        } else {
            return Ok(None);
        }))
    }
}

/// `CreateCertificateFromCsr` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCertificateFromCsrRequest {
    /// The CSR, PEM.
    pub certificate_signing_request: String,
}

/// `CreateCertificateFromCsr` answer on `…/accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCertificateFromCsrAccepted {
    /// The certificate's id (SHA-256 of its DER, hex).
    pub certificate_id: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Proves ownership of the certificate to `RegisterThing` (valid for one hour).
    pub certificate_ownership_token: String,
}

/// `RegisterThing` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterThingRequest {
    /// From the `CreateCertificateFromCsr` answer.
    pub certificate_ownership_token: String,
    /// The template's parameters (e.g. `SerialNumber`, `DeviceId`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// `RegisterThing` answer on `…/accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterThingAccepted {
    /// The template's `DeviceConfiguration`.
    #[serde(default)]
    pub device_configuration: BTreeMap<String, String>,
    /// The thing provisioned (the device's id and MQTT client id from now on).
    pub thing_name: String,
}

/// The answer on any `…/rejected` topic of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningRejected {
    /// HTTP-like status (400, 401, 403, 404, 409, 429, 500, 503).
    pub status_code: u16,
    /// AWS's error code (e.g. `InvalidCsr`, `InvalidCertificateOwnershipToken`).
    pub error_code: String,
    /// AWS's message.
    pub error_message: String,
}

impl ProvisioningRejected {
    /// Whether trying again later can help (throttled or the service failed).
    pub fn is_retryable(&self) -> bool {
        matches!(self.status_code, 429 | 500..=599)
    }
}

/// What arrived on a provisioning answer topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisioningAnswer {
    /// `CreateCertificateFromCsr` accepted.
    Certificate(CreateCertificateFromCsrAccepted),
    /// `RegisterThing` accepted.
    Registered(RegisterThingAccepted),
    /// Either rejected.
    Rejected(ProvisioningRejected),
}

fn parse<T: for<'de> Deserialize<'de>>(topic: &str, payload: &[u8]) -> Result<T, Error> {
    if payload.len() > MAX_ANSWER_BYTES {
        return Err(Error::Provisioning {
            detail: format!(
                "answer on {topic} is {} bytes, over the {MAX_ANSWER_BYTES}-byte limit",
                payload.len()
            ),
        });
    }
    serde_json::from_slice(payload).map_err(|e| Error::Provisioning {
        detail: format!("answer on {topic} is not the documented JSON: {e}"),
    })
}

/// Reads an answer by its topic: `CreateCertificateFromCsr`'s, or the `RegisterThing` answer
/// of `template`. `Ok(None)` for any other topic.
pub fn parse_answer(
    template: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Option<ProvisioningAnswer>, Error> {
    ProvisioningTopics::new("", template)?.parse_answer(topic, payload)
}

/// The four answer topics a device subscribes to before it asks (both APIs, both outcomes).
pub fn answer_filters(template: &str) -> Result<Vec<String>, Error> {
    Ok(ProvisioningTopics::new("", template)?.answer_filters())
}

/// Serializes a request.
pub fn to_json<T: Serialize>(request: &T) -> Result<Vec<u8>, Error> {
    crate::messages::to_json(request)
}
