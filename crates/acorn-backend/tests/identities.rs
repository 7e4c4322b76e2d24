//! Service identities come only from the service CA through the admin API; no registration
//! can obtain one; the CRL is renewed on a timer.

use acorn_test_support::backend as common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use acorn_backend::{BackendError, CaRole, KeyType, LocalCa};
use common::{body, check_device_cert, csr, start, start_with};
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

/// The common names of a certificate's subject and issuer.
fn names(pem: &str) -> (String, String) {
    let der = common::der(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("cert");
    let cn = |name: &x509_parser::x509::X509Name<'_>| -> String {
        name.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .expect("cn")
            .to_owned()
    };
    let names = (cn(cert.subject()), cn(cert.issuer()));
    names
}

fn subject_cn(pem: &str) -> String {
    names(pem).0
}

fn issuer_cn(pem: &str) -> String {
    names(pem).1
}

#[tokio::test]
async fn service_identities_come_from_the_service_ca_through_the_admin_api_only() {
    let b = start_with(|c| c.service_endpoint = Some("localhost:8884".into())).await;
    let url = b.url("/v1/service-identities");
    // Admin only.
    let resp = b
        .client
        .post(&url)
        .json(&json!({ "name": "observer" }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let resp = b
        .client
        .post(&url)
        .bearer_auth(b.admin())
        .json(&json!({ "name": "observer" }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["clientId"], "service:observer");
    assert_eq!(v["serviceEndpoint"], "localhost:8884");
    let cert = v["certificatePem"].as_str().expect("cert");
    assert_eq!(subject_cn(cert), "service:observer");
    assert_eq!(issuer_cn(cert), "Acorn Local Service CA");
    assert!(v["privateKeyPem"]
        .as_str()
        .expect("key")
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(v["caCertificatePem"], b.handle.ca_certificate_pem());
    for bad in ["", "Observer", "a:b", "x/y"] {
        let resp = b
            .client
            .post(&url)
            .bearer_auth(b.admin())
            .json(&json!({ "name": bad }))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400, "{bad:?}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(code(&v), "invalid_service_name", "{bad:?}");
    }
}

#[tokio::test]
async fn no_registration_path_yields_a_service_name_or_the_service_ca() {
    let b = start().await;
    for id in ["service:backend", "service:cloud", "backend.", "a:b"] {
        // Server-side key generation and a CSR with the same CN are both refused.
        let (status, v) = b.register(Some(&b.token().await), &body(id)).await;
        assert_eq!((status, code(&v)), (400, "invalid_device_id"), "{id}: {v}");
        let mut req = body(id);
        req["csr"] = json!(csr(id).1);
        let (status, v) = b.register(Some(&b.token().await), &req).await;
        assert_eq!((status, code(&v)), (400, "invalid_device_id"), "{id}: {v}");
    }
    // An id that merely looks like a service ("backend") is an ordinary device: its
    // certificate comes from the device CA, never the service CA.
    let (status, v) = b.register(Some(&b.token().await), &body("backend")).await;
    assert_eq!(status, 201, "{v}");
    let cert = v["certificatePem"].as_str().expect("cert");
    check_device_cert(cert, b.handle.ca_certificate_pem(), "backend");
    assert_eq!(issuer_cn(cert), "Acorn Local Dev CA");
}

#[test]
fn each_ca_signs_only_the_names_of_its_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devices = LocalCa::create(&dir.path().join("d")).expect("device CA");
    let services = LocalCa::create_as(&dir.path().join("s"), CaRole::Service).expect("service CA");
    for name in ["service:backend", "a.b", "", "x y"] {
        let err = devices
            .issue_with_new_key(name, KeyType::P256)
            .expect_err("the device CA refuses");
        assert!(
            matches!(err, BackendError::NameNotAllowed { .. }),
            "{name}: {err}"
        );
    }
    let (_, csr_pem) = csr("service:backend");
    // A CSR cannot smuggle the name either: check_csr needs CN = the (valid) device id.
    assert!(LocalCa::check_csr("service:backend", &csr_pem).is_ok());
    // ... but the device CA will not sign it.
    let checked = LocalCa::check_csr("service:backend", &csr_pem).expect("parses");
    assert!(matches!(
        devices.issue_for_csr(&checked),
        Err(BackendError::NameNotAllowed { .. })
    ));
    services
        .issue_with_new_key("service:backend", KeyType::P256)
        .expect("service name");
    services
        .issue_with_new_key("acorn-0001", KeyType::P256)
        .expect("takeover name");
    for name in ["service:", "service:Bad", "a.b"] {
        assert!(
            services.issue_with_new_key(name, KeyType::P256).is_err(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_crl_is_renewed_on_a_timer_and_the_hook_hears_of_it() {
    let events: Arc<Mutex<Vec<acorn_backend::CrlEvent>>> = Arc::default();
    let seen = Arc::clone(&events);
    let b = start_with(move |c| {
        c.crl_validity = Duration::from_secs(4);
        c.crl_refresh = Duration::from_secs(1);
        c.crl_hook = Some(Arc::new(move |e: &acorn_backend::CrlEvent| {
            seen.lock().map_err(|e| e.to_string())?.push(e.clone());
            Ok(())
        }));
    })
    .await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let events = events.lock().expect("lock").clone();
    assert!(events.len() >= 2, "{} renewals in 3.5 s", events.len());
    assert!(events.iter().all(|e| e.revoked.is_none()));
    assert!(events.windows(2).all(|w| w[0].crl_number < w[1].crl_number));
    // The file on disk is the newest, and it is valid for the configured lifetime.
    let pem = std::fs::read_to_string(&b.handle.paths().crl).expect("crl");
    let der = common::der(&pem);
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&der).expect("crl");
    let next = crl.next_update().expect("nextUpdate").timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        next > now && next <= now + 5,
        "nextUpdate {next}, now {now}"
    );

    // A refresh that would let the CRL lapse is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = acorn_backend::BackendConfig::new(dir.path());
    config.crl_validity = Duration::from_secs(10);
    config.crl_refresh = Duration::from_secs(6);
    let err = acorn_backend::Backend::start(config)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("crl_refresh"), "{err}");
}
