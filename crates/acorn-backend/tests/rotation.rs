//! The registration service's side of AWS IoT's provisioning MQTT API (what the dev stack's
//! responder calls): a certificate for a registered device's CSR, `RegisterThing` with its
//! ownership token, the switch at first use with the old certificate in the CRL; and every
//! refusal in AWS's shape (`statusCode`, `errorCode`, `errorMessage`).

use acorn_test_support::backend::{self as common, body, check_device_cert, csr};

use acorn_backend::registry::history::CertificateState;
use acorn_mqtt::provisioning::{CreateCertificateFromCsrRequest, RegisterThingRequest};
use serde_json::Value;

async fn registered(b: &common::TestBackend, id: &str) -> Value {
    let token = b.token().await;
    let (status, v) = b.register(Some(&token), &body(id)).await;
    assert_eq!(status, 201, "{v}");
    v
}

fn request(cn: &str) -> CreateCertificateFromCsrRequest {
    CreateCertificateFromCsrRequest {
        certificate_signing_request: csr(cn).1,
    }
}

fn register(token: &str, device_id: Option<&str>) -> RegisterThingRequest {
    RegisterThingRequest {
        certificate_ownership_token: token.into(),
        parameters: device_id
            .map(|d| [("DeviceId".to_owned(), d.to_owned())].into())
            .unwrap_or_default(),
    }
}

#[tokio::test]
async fn a_rotation_issues_registers_and_supersedes_and_each_refusal_says_why() {
    let b = common::start().await;
    registered(&b, "dev-a").await;
    registered(&b, "dev-b").await;
    let iot = b.handle.local_iot("acorn-pups").expect("template");

    // Refusals before anything is issued.
    let no = iot
        .create_certificate_from_csr("dev-a", &request("dev-b"))
        .await
        .expect_err("CN of another device");
    assert_eq!(
        (no.status_code, no.error_code.as_str()),
        (400, "InvalidCsr")
    );
    assert!(no.error_message.contains("dev-b"), "{}", no.error_message);
    let no = iot
        .create_certificate_from_csr(
            "dev-a",
            &CreateCertificateFromCsrRequest {
                certificate_signing_request: "not a CSR".into(),
            },
        )
        .await
        .expect_err("garbage");
    assert_eq!(no.error_code, "InvalidCsr");
    let no = iot
        .create_certificate_from_csr("ghost", &request("ghost"))
        .await
        .expect_err("unregistered");
    assert_eq!((no.status_code, no.error_code.as_str()), (403, "Forbidden"));

    // The certificate: for the CSR's key, from the CA, CN = the device.
    let accepted = iot
        .create_certificate_from_csr("dev-a", &request("dev-a"))
        .await
        .expect("issued");
    check_device_cert(
        &accepted.certificate_pem,
        b.handle.ca_certificate_pem(),
        "dev-a",
    );
    assert_eq!(accepted.certificate_ownership_token.len(), 64);

    // RegisterThing: the right template, the device itself, its own token, once.
    let token = accepted.certificate_ownership_token.as_str();
    let no = iot
        .register_thing("dev-a", "other-template", &register(token, None))
        .await
        .expect_err("template");
    assert_eq!((no.status_code, no.error_code.as_str()), (404, "NotFound"));
    let no = iot
        .register_thing("dev-a", "acorn-pups", &register(token, Some("dev-b")))
        .await
        .expect_err("another thing name");
    assert_eq!(no.status_code, 403);
    let no = iot
        .register_thing("dev-b", "acorn-pups", &register(token, None))
        .await
        .expect_err("another device's token");
    assert_eq!(no.error_code, "InvalidCertificateOwnershipToken");
    let thing = iot
        .register_thing("dev-a", "acorn-pups", &register(token, Some("dev-a")))
        .await
        .expect("registered");
    assert_eq!(thing.thing_name, "dev-a");
    let no = iot
        .register_thing("dev-a", "acorn-pups", &register(token, None))
        .await
        .expect_err("used twice");
    assert_eq!(no.error_code, "InvalidCertificateOwnershipToken");

    // First use: the new certificate becomes current, the old one is revoked in a new CRL.
    let (_, before) = b.admin_get("/v1/devices/dev-a").await;
    let crl_before = std::fs::read(&b.handle.paths().crl).expect("crl");
    assert!(iot
        .certificate_in_use("dev-b", &accepted.certificate_id)
        .await
        .expect("db")
        .is_none());
    let promotion = iot
        .certificate_in_use("dev-a", &accepted.certificate_id)
        .await
        .expect("db")
        .expect("promoted");
    assert_eq!(
        promotion.superseded_serial,
        before["certificateSerial"].as_str().unwrap()
    );
    let crl_after = std::fs::read(&b.handle.paths().crl).expect("crl");
    assert_ne!(crl_before, crl_after, "a new CRL");
    let (_, after) = b.admin_get("/v1/devices/dev-a").await;
    assert_eq!(after["certificateId"], accepted.certificate_id.as_str());
    assert_eq!(after["certificateHistory"][0]["state"], "superseded");
    assert_eq!(
        after["certificateHistory"][0]["certificateId"],
        before["certificateId"]
    );
    let history = b
        .handle
        .registry()
        .certificate_history("dev-a")
        .await
        .expect("history");
    assert_eq!(history[0].state, CertificateState::Superseded);
    // A second report of the same certificate changes nothing.
    assert!(iot
        .certificate_in_use("dev-a", &accepted.certificate_id)
        .await
        .expect("db")
        .is_none());

    // A revoked device gets no new certificate.
    let (status, _) = b.admin_post("/v1/devices/dev-b/revoke").await;
    assert_eq!(status, 200);
    let no = iot
        .create_certificate_from_csr("dev-b", &request("dev-b"))
        .await
        .expect_err("revoked");
    assert_eq!(no.status_code, 403);
    assert!(no.error_message.contains("revoked"), "{}", no.error_message);
}

#[tokio::test]
async fn the_rotate_endpoint_needs_the_admin_key_a_device_and_an_mqtt_link() {
    let b = common::start().await;
    registered(&b, "dev-r").await;
    let resp = b
        .client
        .post(b.url("/v1/devices/dev-r/rotate"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let (status, v) = b.admin_post("/v1/devices/nobody/rotate").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("device_not_found"))
    );
    let (status, v) = b.admin_post("/v1/devices/dev-r/rotate").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("no_mqtt_link"))
    );
    // With a link, the command goes to the device's commands topic.
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&sent);
    b.handle
        .set_command_sink(std::sync::Arc::new(move |topic: &str, payload: Vec<u8>| {
            seen.lock().unwrap().push((topic.to_owned(), payload));
            Ok(())
        }));
    let (status, v) = b.admin_post("/v1/devices/dev-r/rotate").await;
    assert_eq!(status, 202, "{v}");
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "acorn-pups/commands/dev-r");
    let command: Value = serde_json::from_slice(&sent[0].1).expect("json");
    assert_eq!(command["command"], "rotate-certificate");
    assert_eq!(command["requestId"], v["requestId"]);
    // Reports of the certificate in use: the current one changes nothing, one the registry
    // never issued is refused (the local CA's rotations are recorded as they are issued).
    let (_, device) = b.admin_get("/v1/devices/dev-r").await;
    let report = |id: String| {
        let b = &b;
        async move {
            let resp = b
                .client
                .post(b.url("/v1/devices/dev-r/certificate-in-use"))
                .bearer_auth(b.admin())
                .json(&serde_json::json!({ "certificateId": id }))
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }
    };
    let current = device["certificateId"].as_str().unwrap().to_owned();
    let (status, v) = report(current).await;
    assert_eq!((status, v["changed"].as_bool()), (200, Some(false)), "{v}");
    let (status, v) = report("ab".repeat(32)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("certificate_not_registered")),
        "{v}"
    );
    // A revoked device is not asked.
    b.admin_post("/v1/devices/dev-r/revoke").await;
    let (status, v) = b.admin_post("/v1/devices/dev-r/rotate").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("device_revoked"))
    );
}
