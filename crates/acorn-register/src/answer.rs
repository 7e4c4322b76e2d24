//! Checking the backend's answer before anything is stored: the certificate is for this
//! device, matches the key, chains to the returned CA, and the endpoint is acceptable.

use acorn_certs::{validate, DeviceCertificates, PrivateKey, ValidationOptions};

use crate::RegistrationError;
use acorn_api::RegisterResponse;
use acorn_transport::BrokerTarget;
use acorn_transport::SecretString;
use secrecy::ExposeSecret as _;

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
    answer: RegisterResponse,
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
    let server_keygen = device_key.is_none();
    let key = match (device_key, answer.private_key_pem) {
        (Some(own), None) => own,
        (Some(_), Some(_)) => {
            return bad(
                "it holds a private key although the device sent a CSR (the key made on the \
                 device must be the only one)"
                    .into(),
            )
        }
        (None, Some(pem)) => pem,
        (None, None) => {
            return bad("it holds no private key although the backend was asked to make one".into())
        }
    };
    let (endpoint_host, endpoint_port) = split_endpoint(&answer.iot_endpoint)?;
    // AWS IoT Core issues its device certificates from an Amazon CA it does not publish (the
    // answer's CA is then Amazon's root for the endpoint's server certificate), and a
    // certificate it makes with the key (CreateKeysAndCertificate) is for CN "AWS IoT
    // Certificate" (the thing is bound by AttachThingPrincipal, not by name). So for an AWS
    // endpoint the chain is not checked here, nor the CN of a server-made key; the key match,
    // validity, key type and certificate id still are, and AWS checks the rest at connect.
    let aws = acorn_certs::is_aws_iot_endpoint(&endpoint_host);
    let certs = DeviceCertificates {
        device_certificate: answer.certificate_pem.into_bytes(),
        private_key: PrivateKey::new(key.expose_secret().as_bytes().to_vec()),
        iot_endpoint: endpoint_host.clone(),
        device_id: device_id.to_owned(),
    };
    drop(key);
    let mut options = ValidationOptions::new(now).allow_custom_endpoint(allow_custom_endpoint);
    if !aws {
        options = options.with_ca(answer.ca_certificate_pem.as_bytes());
    }
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
    let check_cn = !(aws && server_keygen);
    if check_cn && !info.subject.split([',', '/']).any(|part| part.trim() == cn) {
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

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    use super::*;

    const NOW: u64 = 1_790_000_000; // 2026-09

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A device certificate with CN `cn` for `key`, signed by `ca`.
    fn device_cert(ca: &Ca, cn: &str, key: &KeyPair) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(key, &ca.issuer).unwrap();
        let id = acorn_certs::fingerprint(cert.der());
        (cert.pem(), id)
    }

    fn answer(id: &str, cert: (String, String), ca: &Ca, key: Option<String>) -> RegisterResponse {
        RegisterResponse {
            device_id: id.into(),
            certificate_pem: cert.0,
            private_key_pem: key.map(SecretString::from),
            certificate_id: cert.1,
            iot_endpoint: "localhost:8883".into(),
            ca_certificate_pem: ca.pem.clone(),
        }
    }

    fn own(key: &KeyPair) -> Option<SecretString> {
        Some(SecretString::from(key.serialize_pem()))
    }

    fn bad(result: Result<Checked, RegistrationError>) -> String {
        match result {
            Err(RegistrationError::BadAnswer(why)) => why,
            Err(other) => panic!("expected BadAnswer, got {other}"),
            Ok(_) => panic!("expected BadAnswer, got a checked answer"),
        }
    }

    #[test]
    fn a_good_csr_answer_passes_and_splits_the_endpoint() {
        let ca = ca("test CA");
        let key = KeyPair::generate().unwrap();
        let a = answer("dev-1", device_cert(&ca, "dev-1", &key), &ca, None);
        let checked = check(a, "dev-1", own(&key), true, NOW).unwrap();
        assert_eq!(checked.endpoint_host, "localhost");
        assert_eq!(checked.endpoint_port, Some(8883));
        assert_eq!(checked.certs.iot_endpoint, "localhost");
    }

    #[test]
    fn answers_for_another_device_or_subject_are_refused() {
        let ca = ca("test CA");
        let key = KeyPair::generate().unwrap();
        let a = answer("dev-2", device_cert(&ca, "dev-2", &key), &ca, None);
        assert!(bad(check(a, "dev-1", own(&key), true, NOW)).contains("not `dev-1`"));
        let a = answer("dev-1", device_cert(&ca, "dev-2", &key), &ca, None);
        assert!(bad(check(a, "dev-1", own(&key), true, NOW)).contains("CN=dev-1"));
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let ca = ca("test CA");
        let (mine, theirs) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let a = answer("dev-1", device_cert(&ca, "dev-1", &theirs), &ca, None);
        let why = bad(check(a, "dev-1", own(&mine), true, NOW));
        assert!(why.contains("key"), "{why}");
    }

    #[test]
    fn a_certificate_another_ca_signed_is_refused() {
        let (real, other) = (ca("test CA"), ca("other CA"));
        let key = KeyPair::generate().unwrap();
        let a = answer("dev-1", device_cert(&other, "dev-1", &key), &real, None);
        let why = bad(check(a, "dev-1", own(&key), true, NOW));
        assert!(why.contains("chain"), "{why}");
    }

    #[test]
    fn a_wrong_certificate_id_is_refused() {
        let ca = ca("test CA");
        let key = KeyPair::generate().unwrap();
        let (pem, _) = device_cert(&ca, "dev-1", &key);
        let a = answer("dev-1", (pem, "00".repeat(32)), &ca, None);
        assert!(bad(check(a, "dev-1", own(&key), true, NOW)).contains("certificateId"));
    }

    #[test]
    fn key_presence_must_match_the_flow() {
        let ca = ca("test CA");
        let key = KeyPair::generate().unwrap();
        // CSR flow, but the backend sent a key too.
        let a = answer(
            "dev-1",
            device_cert(&ca, "dev-1", &key),
            &ca,
            Some(key.serialize_pem()),
        );
        assert!(bad(check(a, "dev-1", own(&key), true, NOW)).contains("CSR"));
        // Server keygen, but no key came back.
        let a = answer("dev-1", device_cert(&ca, "dev-1", &key), &ca, None);
        assert!(bad(check(a, "dev-1", None, true, NOW)).contains("no private key"));
        // Server keygen with its key: fine.
        let a = answer(
            "dev-1",
            device_cert(&ca, "dev-1", &key),
            &ca,
            Some(key.serialize_pem()),
        );
        assert!(check(a, "dev-1", None, true, NOW).is_ok());
    }

    /// An answer as the aws signer gives it: an AWS endpoint, Amazon's root as the CA.
    fn aws_answer(id: &str, cert: (String, String), key: Option<String>) -> RegisterResponse {
        let amazon = ca("Amazon Root CA 1 (stand-in)");
        RegisterResponse {
            iot_endpoint: "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com".into(),
            ..answer(id, cert, &amazon, key)
        }
    }

    #[test]
    fn an_aws_answer_is_not_chained_to_the_returned_ca_but_its_key_must_match() {
        // AWS IoT's issuing CA is not published: the chain is not checked for an AWS
        // endpoint, and a server-made key's certificate is AWS's "AWS IoT Certificate".
        let aws_ca = ca("Amazon (unpublished issuer)");
        let key = KeyPair::generate().unwrap();
        let a = aws_answer("dev-1", device_cert(&aws_ca, "dev-1", &key), None);
        let checked = check(a, "dev-1", own(&key), false, NOW).expect("CSR flow on AWS");
        assert_eq!(checked.endpoint_port, None);
        let a = aws_answer(
            "dev-1",
            device_cert(&aws_ca, "AWS IoT Certificate", &key),
            Some(key.serialize_pem()),
        );
        check(a, "dev-1", None, false, NOW).expect("server keys on AWS");
        // With a CSR, AWS keeps the CSR's subject: another CN is still refused.
        let a = aws_answer("dev-1", device_cert(&aws_ca, "dev-2", &key), None);
        assert!(bad(check(a, "dev-1", own(&key), false, NOW)).contains("CN=dev-1"));
        // The key check stays: a certificate for a key the device does not hold is refused
        // (what moto's CreateCertificateFromCsr returns).
        let other = KeyPair::generate().unwrap();
        let a = aws_answer("dev-1", device_cert(&aws_ca, "dev-1", &other), None);
        let why = bad(check(a, "dev-1", own(&key), false, NOW));
        assert!(why.contains("does not belong"), "{why}");
    }

    #[test]
    fn a_custom_endpoint_needs_permission() {
        let ca = ca("test CA");
        let key = KeyPair::generate().unwrap();
        let a = answer("dev-1", device_cert(&ca, "dev-1", &key), &ca, None);
        let why = bad(check(a, "dev-1", own(&key), false, NOW));
        assert!(why.contains("endpoint"), "{why}");
        let mut a = answer("dev-1", device_cert(&ca, "dev-1", &key), &ca, None);
        a.iot_endpoint = "abc123-ats.iot.eu-west-1.amazonaws.com".into();
        let checked = check(a, "dev-1", own(&key), false, NOW).unwrap();
        assert_eq!(checked.endpoint_port, None);
        let mut a = answer("dev-1", device_cert(&ca, "dev-1", &key), &ca, None);
        a.iot_endpoint = "mqtts://x:1/".into();
        bad(check(a, "dev-1", own(&key), true, NOW));
    }
}
