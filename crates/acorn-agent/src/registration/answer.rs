//! Checking the backend's answer before anything is stored: the certificate is for this
//! device, matches the key, chains to the returned CA, and the endpoint is acceptable.

use acorn_certs::{validate, DeviceCertificates, PrivateKey, ValidationOptions};

use super::http::RegisterAnswer;
use super::RegistrationError;
use crate::identity::BrokerTarget;
use crate::secret::SecretString;

/// A checked answer: the identity to store and what the caller needs to connect.
pub(crate) struct Checked {
    pub certs: DeviceCertificates,
    pub certificate_id: String,
    pub endpoint_host: String,
    pub endpoint_port: Option<u16>,
    pub ca_certificate_pem: String,
}

/// Splits `host[:port]` (the backend may hand out `localhost:8883` for a local broker).
pub(crate) fn split_endpoint(endpoint: &str) -> Result<(String, Option<u16>), RegistrationError> {
    let has_port = endpoint
        .rsplit_once(':')
        .is_some_and(|(h, _)| !h.contains(':'))
        || endpoint.contains("]:");
    let target = BrokerTarget::parse(endpoint, false).map_err(|e| {
        RegistrationError::BadAnswer(format!("iotEndpoint `{endpoint}` is not host[:port]: {e}"))
    })?;
    Ok((target.host, has_port.then_some(target.port)))
}

/// Validates `answer` for `device_id`; `device_key` is the key made on the device (CSR flow)
/// or `None` when the backend made the key (it must then be in the answer).
pub(crate) fn check(
    answer: RegisterAnswer,
    device_id: &str,
    device_key: Option<SecretString>,
    allow_custom_endpoint: bool,
    now: u64,
) -> Result<Checked, RegistrationError> {
    let bad = |s: String| Err(RegistrationError::BadAnswer(s));
    if answer.device_id != device_id {
        return bad(format!(
            "it is for device `{}`, not `{device_id}`",
            answer.device_id
        ));
    }
    let key = match (device_key, answer.private_key_pem) {
        (Some(own), None) => own,
        (Some(_), Some(_)) => {
            return bad(
                "it holds a private key although the device sent a CSR (the key made on the \
                 device must be the only one)"
                    .into(),
            )
        }
        (None, Some(pem)) => SecretString::new(pem),
        (None, None) => {
            return bad("it holds no private key although the backend was asked to make one".into())
        }
    };
    let (endpoint_host, endpoint_port) = split_endpoint(&answer.iot_endpoint)?;
    let certs = DeviceCertificates {
        device_certificate: answer.certificate_pem.into_bytes(),
        private_key: PrivateKey::new(key.expose().as_bytes().to_vec()),
        iot_endpoint: endpoint_host.clone(),
        device_id: device_id.to_owned(),
    };
    drop(key);
    let options = ValidationOptions::new(now)
        .with_ca(answer.ca_certificate_pem.as_bytes())
        .allow_custom_endpoint(allow_custom_endpoint);
    let report = validate(&certs, &options);
    if !report.is_valid() {
        let failures: Vec<String> = report
            .checks
            .iter()
            .filter(|c| c.status == acorn_certs::Status::Fail)
            .map(|c| format!("{}: {}", c.id.name(), c.explanation))
            .collect();
        return bad(failures.join("; "));
    }
    let Some(info) = report.certificate.as_ref() else {
        return bad("the certificate could not be read".into());
    };
    let cn = format!("CN={device_id}");
    if !info.subject.split([',', '/']).any(|part| part.trim() == cn) {
        return bad(format!(
            "the certificate's subject is `{}`, expected `{cn}`",
            info.subject
        ));
    }
    if !answer
        .certificate_id
        .eq_ignore_ascii_case(&info.fingerprint)
    {
        return bad(format!(
            "certificateId {} is not the certificate's SHA-256 {}",
            answer.certificate_id, info.fingerprint
        ));
    }
    Ok(Checked {
        certs,
        certificate_id: info.fingerprint.clone(),
        endpoint_host,
        endpoint_port,
        ca_certificate_pem: answer.ca_certificate_pem,
    })
}
