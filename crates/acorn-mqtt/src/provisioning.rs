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
use alloc::string::{String, ToString};
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
    check_template_name(template)?;
    let request = format!("$aws/provisioning-templates/{template}/provision/json");
    Ok([
        request.clone(),
        format!("{request}/accepted"),
        format!("{request}/rejected"),
    ])
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
    let [_, accepted, rejected] = register_thing_topics(template)?;
    Ok(Some(match topic {
        CREATE_FROM_CSR_ACCEPTED => ProvisioningAnswer::Certificate(parse(topic, payload)?),
        t if t == accepted => ProvisioningAnswer::Registered(parse(topic, payload)?),
        CREATE_FROM_CSR_REJECTED => ProvisioningAnswer::Rejected(parse(topic, payload)?),
        t if t == rejected => ProvisioningAnswer::Rejected(parse(topic, payload)?),
        _ => return Ok(None),
    }))
}

/// The four answer topics a device subscribes to before it asks (both APIs, both outcomes).
pub fn answer_filters(template: &str) -> Result<Vec<String>, Error> {
    let [_, accepted, rejected] = register_thing_topics(template)?;
    Ok(alloc::vec![
        CREATE_FROM_CSR_ACCEPTED.to_string(),
        CREATE_FROM_CSR_REJECTED.to_string(),
        accepted,
        rejected,
    ])
}

/// Serializes a request.
pub fn to_json<T: Serialize>(request: &T) -> Result<Vec<u8>, Error> {
    crate::messages::to_json(request)
}
