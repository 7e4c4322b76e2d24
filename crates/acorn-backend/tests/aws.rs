//! The `aws` signer against a local AWS IoT Core: moto's server (PyPI `moto[server]`), started
//! by each test on a free loopback port. What the signer made is read back through moto's own
//! API with boto3 (a second client, not our code); failures are injected by a proxy between
//! the signer and moto. Run with `cargo test -p acorn-backend --features aws`.
#![cfg(feature = "aws")]

use std::sync::{Arc, Once};
use std::time::Duration;

use acorn_backend::{AwsSignerConfig, BackendConfig, SignerConfig};
use acorn_test_support::backend::{body, csr, der, start_with, TestBackend};
use acorn_test_support::moto::{Fault, FaultProxy, Moto, REGION};
use serde_json::{json, Value};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no code>")
}

/// Fake credentials for moto, set once before any test of this binary touches the SDK (each
/// test calls this first, so no thread reads the environment while it is written).
fn fake_credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::remove_var("AWS_PROFILE");
    });
}

fn aws_config(endpoint: &str) -> AwsSignerConfig {
    AwsSignerConfig {
        region: Some(REGION.into()),
        endpoint_url: Some(endpoint.into()),
        create_policy: true,
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ready_cache: Duration::ZERO,
        ..AwsSignerConfig::default()
    }
}

async fn moto() -> Arc<Moto> {
    fake_credentials();
    Arc::new(
        tokio::task::spawn_blocking(Moto::start)
            .await
            .expect("moto starts"),
    )
}

async fn backend(
    endpoint: &str,
    adjust: impl FnOnce(&mut AwsSignerConfig, &mut BackendConfig),
) -> TestBackend {
    let mut aws = aws_config(endpoint);
    start_with(|config| {
        adjust(&mut aws, config);
        config.signer = SignerConfig::Aws(aws);
    })
    .await
}

/// Reads moto's state with boto3 (a child process), off the runtime.
async fn state(moto: &Arc<Moto>) -> Value {
    let moto = Arc::clone(moto);
    tokio::task::spawn_blocking(move || moto.state())
        .await
        .expect("state")
}

fn sha256_hex(der: &[u8]) -> String {
    acorn_backend::ca::certificate_id(der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_create_the_thing_certificate_and_attachments_and_revocation_revokes() {
    let moto = moto().await;
    let b = backend(&moto.endpoint, |_, _| {}).await;
    let before = state(&moto).await;
    // The policy was created from policies/device-policy.json at start-up.
    let document: Value = serde_json::from_str(
        before["policies"]["acorn-device"]
            .as_str()
            .expect("policy created"),
    )
    .expect("json");
    assert_eq!(document, acorn_backend::policy::device_policy());

    // Server-side keys: AWS makes an RSA-2048 key (PKCS#1, as AWS returns it).
    let mut req = body("aws-keys-1");
    req["serialNumber"] = json!("SN-AWS-1");
    let (status, keys) = b.register(Some(&b.token().await), &req).await;
    assert_eq!(status, 201, "{keys}");
    let key_pem = keys["privateKeyPem"].as_str().expect("key");
    assert!(
        key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "{key_pem}"
    );
    let cert_pem = keys["certificatePem"].as_str().expect("cert");
    assert_eq!(keys["certificateId"], sha256_hex(&der(cert_pem)));
    let endpoint = keys["iotEndpoint"].as_str().expect("endpoint");
    assert!(
        acorn_certs::is_aws_iot_endpoint(endpoint),
        "an iot:Data-ATS endpoint: {endpoint}"
    );
    assert!(keys["caCertificatePem"]
        .as_str()
        .expect("ca")
        .contains("BEGIN CERTIFICATE"));

    // With a CSR: CreateCertificateFromCsr (the same endpoint, cached).
    let (_, csr_pem) = csr("aws-csr-1");
    let mut req = body("aws-csr-1");
    req["csr"] = json!(csr_pem);
    let (status, with_csr) = b.register(Some(&b.token().await), &req).await;
    assert_eq!(status, 201, "{with_csr}");
    assert!(with_csr.get("privateKeyPem").is_none());
    assert_eq!(with_csr["iotEndpoint"], endpoint);

    // What AWS IoT now holds, read through moto's API with boto3.
    let after = state(&moto).await;
    for (id, serial, answer) in [
        ("aws-keys-1", "SN-AWS-1", &keys),
        ("aws-csr-1", "SN-0001", &with_csr),
    ] {
        let thing = &after["things"][id];
        assert_eq!(
            thing["attributes"],
            json!({ "serialNumber": serial, "macAddress": "AA:BB:CC:DD:EE:FF", "firmwareVersion": "1.0.0" }),
            "{id}"
        );
        let principals = thing["principals"].as_array().expect("principals");
        assert_eq!(principals.len(), 1, "{id}: {thing}");
        let arn = principals[0].as_str().expect("arn");
        assert!(
            arn.ends_with(answer["certificateId"].as_str().expect("id")),
            "{arn}"
        );
        let cert = &after["certificates"][arn];
        assert_eq!(cert["status"], "ACTIVE", "{id}");
        assert_eq!(cert["policies"], json!(["acorn-device"]), "{id}");
        assert_eq!(cert["things"], json!([id]), "{id}");
        // The registry keeps the ARN (for revocation).
        let record = b
            .handle
            .registry()
            .get(id)
            .await
            .expect("get")
            .expect("registered");
        assert_eq!(record.certificate_arn.as_deref(), Some(arn));
    }

    // Revocation: REVOKED in AWS IoT and detached from the thing and the policy.
    let (status, revoked) = b.admin_post("/v1/devices/aws-keys-1/revoke").await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["certificateStatus"], "REVOKED");
    assert_eq!(revoked["device"]["status"], "revoked");
    assert!(
        revoked.get("crlNumber").is_none(),
        "no local CRL for AWS certificates"
    );
    let arn = after["things"]["aws-keys-1"]["principals"][0]
        .as_str()
        .expect("arn")
        .to_owned();
    let now = state(&moto).await;
    assert_eq!(now["certificates"][&arn]["status"], "REVOKED");
    assert_eq!(now["certificates"][&arn]["policies"], json!([]));
    assert_eq!(now["things"]["aws-keys-1"]["principals"], json!([]));
    // Revoking again is harmless; the other device is untouched.
    let (status, again) = b.admin_post("/v1/devices/aws-keys-1/revoke").await;
    assert_eq!(status, 200, "{again}");
    let csr_arn = after["things"]["aws-csr-1"]["principals"][0]
        .as_str()
        .expect("arn");
    assert_eq!(now["certificates"][csr_arn]["status"], "ACTIVE");

    // /v1/ready asks AWS IoT (GetPolicy) and the registry.
    let resp = b
        .client
        .get(b.url("/v1/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(resp.status(), 200);
}

/// Every certificate is INACTIVE or gone and no thing exists but `keep`.
fn nothing_half_made(state: &Value, keep: &[&str], step: &str) {
    let things: Vec<&String> = state["things"]
        .as_object()
        .expect("things")
        .keys()
        .collect();
    assert_eq!(
        things.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        keep,
        "{step}: things left behind: {state}"
    );
    for (arn, cert) in state["certificates"].as_object().expect("certificates") {
        let owned_by_kept = cert["things"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| keep.contains(&t.as_str().unwrap_or(""))));
        if !owned_by_kept {
            assert_ne!(
                cert["status"], "ACTIVE",
                "{step}: orphan ACTIVE certificate {arn}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_each_aws_step_leaves_nothing_half_made_and_answers_502() {
    let moto = moto().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let b = backend(&proxy.endpoint, |_, _| {}).await;
    let steps = [
        (
            "CreateThing",
            Fault::internal("POST", "/things/", 3),
            false,
            "aws_create_thing_failed",
        ),
        (
            "CreateKeysAndCertificate",
            Fault::internal("POST", "/keys-and-certificate", 3),
            false,
            "aws_create_certificate_failed",
        ),
        (
            "CreateCertificateFromCsr",
            Fault::internal("POST", "/certificates", 3),
            true,
            "aws_create_certificate_failed",
        ),
        (
            "AttachPolicy",
            Fault::internal("PUT", "/target-policies/", 3),
            false,
            "aws_attach_policy_failed",
        ),
        (
            "AttachThingPrincipal",
            Fault::internal("PUT", "/things/step-", 3),
            true,
            "aws_attach_thing_principal_failed",
        ),
    ];
    let mut registered = Vec::new();
    for (i, (step, fault, with_csr, expected)) in steps.into_iter().enumerate() {
        let id = format!("step-{i}");
        let mut req = body(&id);
        if with_csr {
            req["csr"] = json!(csr(&id).1);
        }
        let token = b.token().await;
        proxy.fail(fault);
        let (status, v) = b.register(Some(&token), &req).await;
        proxy.reset();
        assert_eq!((status, code(&v)), (502, expected), "{step}: {v}");
        let message = v["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(step) && message.contains("nothing was left"),
            "{step}: {message}"
        );
        assert!(message.contains("request id"), "{step}: {message}");
        let now = state(&moto).await;
        let keep: Vec<&str> = registered.iter().map(String::as_str).collect();
        nothing_half_made(&now, &keep, step);
        assert!(
            b.handle.registry().get(&id).await.expect("get").is_none(),
            "{step}"
        );
        // The token was given back: the same registration now succeeds.
        let (status, v) = b.register(Some(&token), &req).await;
        assert_eq!(status, 201, "{step}, retried: {v}");
        registered.push(id);
    }
    // Metrics count the signer's failures by code.
    let metrics = b
        .client
        .get(b.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            r#"acorn_signer_errors_total{signer="aws",code="aws_attach_policy_failed"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_failure_after_the_aws_steps_undoes_them() {
    let moto = moto().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let b = Arc::new(backend(&proxy.endpoint, |_, _| {}).await);
    let token = b.token().await;
    // Hold the last AWS step, break the registry meanwhile, then let it go on.
    let hold = proxy.hold("PUT", "/things/late-1/principals");
    let task = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { b.register(Some(&token), &body("late-1")).await })
    };
    hold.arrived().await;
    let registry = b.handle.paths().registry.clone();
    std::fs::remove_file(&registry).expect("remove");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", registry.display()));
    }
    std::fs::create_dir(&registry).expect("dir in its place");
    hold.release();
    let (status, v) = task.await.expect("task");
    assert_eq!((status, code(&v)), (500, "internal_error"), "{v}");
    let now = state(&moto).await;
    nothing_half_made(&now, &[], "registry insert");
    assert_eq!(
        now["certificates"].as_object().expect("certs").len(),
        0,
        "the certificate was deleted: {now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_backoff() {
    let moto = moto().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let b = backend(&proxy.endpoint, |aws, _| {
        aws.max_attempts = 4;
    })
    .await;
    // Throttled twice, then through: the registration succeeds after three CreateThing calls.
    proxy.fail(Fault::throttle("POST", "/things/slow-1", 2));
    let started = std::time::Instant::now();
    let (status, v) = b.register(Some(&b.token().await), &body("slow-1")).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(proxy.count("POST", "/things/slow-1"), 3);
    assert!(started.elapsed() >= Duration::from_millis(20), "backed off");
    // Throttled on every attempt: 502 naming the throttling, nothing left behind.
    proxy.fail(Fault::throttle("PUT", "/target-policies/", 4));
    let (status, v) = b.register(Some(&b.token().await), &body("slow-2")).await;
    assert_eq!((status, code(&v)), (502, "aws_attach_policy_failed"), "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("ThrottlingException"));
    assert_eq!(
        proxy.count("PUT", "/target-policies/"),
        1 + 4,
        "slow-1's attachment, then four attempts for slow-2"
    );
    let now = state(&moto).await;
    nothing_half_made(&now, &["slow-1"], "throttled AttachPolicy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_policy_stops_the_start_unless_it_may_be_created_and_ready_follows_aws() {
    let moto = moto().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BackendConfig::new(dir.path());
    let mut aws = aws_config(&proxy.endpoint);
    aws.create_policy = false;
    aws.policy_name = "acorn-missing".into();
    config.signer = SignerConfig::Aws(aws);
    let err = acorn_backend::Backend::start(config)
        .await
        .expect_err("no policy");
    let text = err.to_string();
    assert!(
        text.contains("acorn-missing")
            && text.contains("aws iot create-policy")
            && text.contains("policies/device-policy.json"),
        "{text}"
    );
    // Created on request, then ready; ready fails while AWS IoT does not answer.
    let b = backend(&proxy.endpoint, |_, _| {}).await;
    let ready = |b: &TestBackend| {
        let (client, url) = (b.client.clone(), b.url("/v1/ready"));
        async move {
            let resp = client.get(url).send().await.expect("ready");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.expect("json"),
            )
        }
    };
    assert_eq!(ready(&b).await.0, 200);
    proxy.fail(Fault::internal("GET", "/policies/", 3));
    let (status, v) = ready(&b).await;
    assert_eq!(
        (status, &v["checks"]["signer"]),
        (503, &json!("unavailable")),
        "{v}"
    );
    assert_eq!(v["checks"]["database"], "ok");
    proxy.reset();
    assert_eq!(ready(&b).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_signer_refuses_bodies_aws_cannot_take() {
    let moto = moto().await;
    let b = backend(&moto.endpoint, |_, _| {}).await;
    // AWS makes RSA keys only; a firmware version outside AWS's attribute alphabet.
    let mut req = body("refused-1");
    req["keyType"] = json!("p256");
    let (status, v) = b.register(Some(&b.token().await), &req).await;
    assert_eq!((status, code(&v)), (400, "invalid_key_type"), "{v}");
    let mut req = body("refused-1");
    req["firmwareVersion"] = json!("1.0.0+build.7");
    let (status, v) = b.register(Some(&b.token().await), &req).await;
    assert_eq!((status, code(&v)), (400, "invalid_firmware_version"), "{v}");
    assert!(state(&moto).await["things"]
        .as_object()
        .expect("things")
        .is_empty());
}

fn device_options(
    b: &TestBackend,
    token: String,
    device_id: &str,
) -> acorn_register::RegistrationOptions {
    let mut options = acorn_register::RegistrationOptions::new(
        b.handle.base_url(),
        secrecy::SecretString::from(token),
        device_id,
    );
    options.retry = acorn_register::RetryPolicy {
        max_attempts: 1,
        ..acorn_register::RetryPolicy::default()
    };
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_refuses_motos_csr_certificate_and_stores_aws_server_keys() {
    let moto = moto().await;
    let b = backend(&moto.endpoint, |_, _| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // moto's CreateCertificateFromCsr certifies a fresh key of its own, not the CSR's (real
    // AWS IoT certifies the CSR's key): the device's key-match check must refuse it.
    let mut options = device_options(&b, b.token().await, "moto-csr-1");
    options.allow_custom_endpoint = false;
    let image = acorn_register::ImageTarget::new(dir.path().join("csr.bin"));
    let err = acorn_register::register(&options, &image, &mut acorn_register::HostNetwork)
        .await
        .expect_err("a certificate for another key");
    match &err {
        acorn_register::RegistrationError::BadAnswer(why) => assert!(
            why.contains("key_match") || why.contains("does not belong"),
            "{why}"
        ),
        other => panic!("expected BadAnswer, got {other}"),
    }
    assert!(
        image.stored_device(0).ok().flatten().is_none(),
        "nothing stored"
    );
    // Server-side keys (AWS makes RSA-2048): accepted and stored, no chain to check.
    let mut options = device_options(&b, b.token().await, "moto-keys-1");
    options.allow_custom_endpoint = false;
    options.server_keygen = true;
    options.key_type = acorn_register::KeyType::Rsa2048;
    let image = acorn_register::ImageTarget::new(dir.path().join("keys.bin"));
    let done = acorn_register::register(&options, &image, &mut acorn_register::HostNetwork)
        .await
        .expect("registered with AWS's key");
    assert_eq!(done.key_origin, Some(acorn_register::KeyOrigin::Backend));
    assert!(
        acorn_certs::is_aws_iot_endpoint(&done.endpoint_host),
        "{}",
        done.endpoint_host
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert_eq!(
        image.stored_device(now).expect("read").as_deref(),
        Some("moto-keys-1")
    );
}

#[tokio::test]
async fn the_csr_flow_succeeds_end_to_end_against_the_local_signer() {
    // The happy CSR path moto cannot show: the certificate carries the device's own key.
    let b = acorn_test_support::backend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = device_options(&b, b.token().await, "local-csr-1");
    let image = acorn_register::ImageTarget::new(dir.path().join("local.bin"));
    let done = acorn_register::register(&options, &image, &mut acorn_register::HostNetwork)
        .await
        .expect("registered");
    assert_eq!(done.key_origin, Some(acorn_register::KeyOrigin::Device));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let certs = image
        .load(now)
        .expect("stored identity loads and validates");
    assert_eq!(certs.device_id, "local-csr-1");
}

/// Run only as a child process of the next test, with `AWS_ENDPOINT_URL` and `AWS_REGION` in
/// its environment (a test cannot change its own process's environment safely).
#[tokio::test]
#[ignore = "run in a child process by the_sdk_chain_honours_aws_endpoint_url_and_aws_region"]
async fn child_registers_through_the_environment_only() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL is set");
    assert!(std::env::var("AWS_REGION").is_ok());
    let b = start_with(|config| {
        config.signer = SignerConfig::Aws(AwsSignerConfig {
            region: None,
            endpoint_url: None,
            create_policy: true,
            ..AwsSignerConfig::default()
        });
    })
    .await;
    let (status, v) = b.register(Some(&b.token().await), &body("env-1")).await;
    assert_eq!(status, 201, "through {endpoint}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_chain_honours_aws_endpoint_url_and_aws_region() {
    let moto = moto().await;
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "child_registers_through_the_environment_only",
            "--ignored",
        ])
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .expect("run the child test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(state(&moto).await["things"]["env-1"].is_object());
}

/// A rotation AWS IoT Core answered itself (its CreateCertificateFromCsr and RegisterThing:
/// a new ACTIVE certificate attached to the thing), reported through
/// `POST /v1/devices/{id}/certificate-in-use`: the old certificate ends REVOKED and detached,
/// the registry has the new one and the old one in its history; certificates not attached to
/// the thing, unknown or malformed ids are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_answered_by_aws_is_followed_and_the_old_certificate_revoked() {
    let moto = moto().await;
    let b = backend(&moto.endpoint, |_, _| {}).await;
    let (_, csr_pem) = csr("aws-rot-1");
    let mut req = body("aws-rot-1");
    req["csr"] = json!(csr_pem);
    let (status, registered) = b.register(Some(&b.token().await), &req).await;
    assert_eq!(status, 201, "{registered}");
    let old_id = registered["certificateId"].as_str().expect("id").to_owned();

    // What AWS IoT Core does for the device's CreateCertificateFromCsr and RegisterThing.
    let boto = |method: &'static str, kwargs: Value| {
        let moto = Arc::clone(&moto);
        tokio::task::spawn_blocking(move || moto.boto3(method, &kwargs))
    };
    let make = |cn: &'static str| {
        let (_, pem) = csr(cn);
        boto(
            "create_certificate_from_csr",
            json!({"certificateSigningRequest": pem, "setAsActive": true}),
        )
    };
    let new = make("aws-rot-1").await.expect("create");
    let new_id = new["certificateId"].as_str().expect("id").to_owned();
    let new_arn = new["certificateArn"].as_str().expect("arn").to_owned();
    boto(
        "attach_thing_principal",
        json!({"thingName": "aws-rot-1", "principal": new_arn}),
    )
    .await
    .expect("attach");

    let report = |id: String| {
        let b = &b;
        async move {
            let resp = b
                .client
                .post(b.url("/v1/devices/aws-rot-1/certificate-in-use"))
                .bearer_auth(b.admin())
                .json(&json!({ "certificateId": id }))
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }
    };
    // Refused: malformed, unknown, and a certificate not attached to this thing.
    let (status, v) = report("xyz".into()).await;
    assert_eq!((status, code(&v)), (400, "invalid_certificate_id"), "{v}");
    let (status, v) = report("0".repeat(64)).await;
    assert_eq!((status, code(&v)), (409, "certificate_not_found"), "{v}");
    let stray = make("aws-rot-1").await.expect("create");
    let (status, v) = report(stray["certificateId"].as_str().expect("id").into()).await;
    assert_eq!((status, code(&v)), (409, "certificate_not_attached"), "{v}");

    let (status, v) = report(new_id.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["changed"], true);
    assert_eq!(v["supersededCertificateId"], old_id.as_str());
    let now = state(&moto).await;
    let old_arn = now["certificates"]
        .as_object()
        .expect("certificates")
        .keys()
        .find(|arn| arn.ends_with(&old_id))
        .expect("old certificate")
        .clone();
    assert_eq!(now["certificates"][&old_arn]["status"], "REVOKED");
    assert_eq!(now["certificates"][&new_arn]["status"], "ACTIVE");
    assert_eq!(now["things"]["aws-rot-1"]["principals"], json!([new_arn]));
    let (_, device) = b.admin_get("/v1/devices/aws-rot-1").await;
    assert_eq!(device["certificateId"], new_id.as_str());
    assert_eq!(device["certificateHistory"][0]["state"], "superseded");
    assert_eq!(
        device["certificateHistory"][0]["certificateId"],
        old_id.as_str()
    );
    // Reporting it again changes nothing.
    let (status, v) = report(new_id).await;
    assert_eq!((status, v["changed"].as_bool()), (200, Some(false)), "{v}");
}

/// Calls boto3's IoT client off the runtime (see [`Moto::boto3`]).
async fn boto(moto: &Arc<Moto>, method: &'static str, kwargs: Value) -> Value {
    let moto = Arc::clone(moto);
    tokio::task::spawn_blocking(move || moto.boto3(method, &kwargs))
        .await
        .expect("boto3")
}

/// What AWS IoT Core does for a device's `CreateCertificateFromCsr` and `RegisterThing` of a
/// rotation: a new ACTIVE certificate attached to the thing. Returns its id and ARN.
async fn rotate_in_aws(moto: &Arc<Moto>, thing: &str) -> (String, String) {
    let (_, pem) = csr(thing);
    let made = boto(
        moto,
        "create_certificate_from_csr",
        json!({"certificateSigningRequest": pem, "setAsActive": true}),
    )
    .await;
    let id = made["certificateId"].as_str().expect("id").to_owned();
    let arn = made["certificateArn"].as_str().expect("arn").to_owned();
    let attached = boto(
        moto,
        "attach_thing_principal",
        json!({"thingName": thing, "principal": arn}),
    )
    .await;
    assert!(attached.get("error").is_none(), "{attached}");
    (id, arn)
}

/// Registers `id` (with a CSR) through the API; returns its certificate id.
async fn register_device(b: &TestBackend, id: &str, n: u8) -> String {
    let mut req = body(id);
    req["csr"] = json!(csr(id).1);
    req["serialNumber"] = json!(format!("SN-REC-{n}"));
    req["macAddress"] = json!(format!("AA:BB:CC:DD:EE:{n:02X}"));
    let (status, v) = b.register(Some(&b.token().await), &req).await;
    assert_eq!(status, 201, "{v}");
    v["certificateId"].as_str().expect("id").to_owned()
}

/// `POST /v1/devices/{id}/reconcile`: (status, answer).
async fn reconcile(b: &TestBackend, id: &str) -> (u16, Value) {
    b.admin_post(&format!("/v1/devices/{id}/reconcile")).await
}

fn actions(report: &Value) -> Vec<(String, String)> {
    report["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["action"].as_str().expect("action").to_owned(),
                c["certificateId"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

/// The state of `certificate_id` in the device's history, if there.
fn history_state(device: &Value, certificate_id: &str) -> Option<String> {
    device["certificateHistory"]
        .as_array()?
        .iter()
        .find(|c| c["certificateId"] == certificate_id)
        .and_then(|c| c["state"].as_str())
        .map(str::to_owned)
}

fn no_schedule(aws: &mut AwsSignerConfig, _: &mut BackendConfig) {
    aws.reconcile_interval = Duration::ZERO;
}

/// A rotation AWS IoT Core answered itself, never reported to the service: reconciliation
/// learns the new certificate as `registered` and leaves the old one alone while it still
/// works; once an operator revokes the old one in AWS, the new one is made current (the old
/// one detached, superseded). Each step is idempotent; an unknown device is 404; a sweep on
/// demand covers every device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_learns_a_rotation_aws_answered_and_promotes_it_once_the_old_certificate_is_revoked(
) {
    let moto = moto().await;
    let b = backend(&moto.endpoint, no_schedule).await;
    let old_id = register_device(&b, "rec-1", 1).await;

    // Nothing to do yet.
    let (status, v) = reconcile(&b, "rec-1").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["changed"], &v["changes"], &v["certificateId"]),
        (&json!(false), &json!([]), &json!(old_id)),
        "{v}"
    );

    // AWS answers a rotation; the device's report never reaches the service.
    let (new_id, new_arn) = rotate_in_aws(&moto, "rec-1").await;
    let (status, v) = reconcile(&b, "rec-1").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(actions(&v), [("learned".to_owned(), new_id.clone())], "{v}");
    assert_eq!(
        v["certificateId"],
        old_id.as_str(),
        "the old one still works"
    );
    let (_, device) = b.admin_get("/v1/devices/rec-1").await;
    assert_eq!(
        history_state(&device, &new_id).as_deref(),
        Some("registered")
    );
    let (status, v) = reconcile(&b, "rec-1").await;
    assert_eq!((status, &v["changed"]), (200, &json!(false)), "again: {v}");
    let now = state(&moto).await;
    let old_arn = new_arn.replace(&new_id, &old_id);
    assert_eq!(now["certificates"][&old_arn]["status"], "ACTIVE");

    // An operator revokes the old certificate in AWS: the device cannot be using it.
    let revoked = boto(
        &moto,
        "update_certificate",
        json!({"certificateId": old_id, "newStatus": "REVOKED"}),
    )
    .await;
    assert!(revoked.get("error").is_none(), "{revoked}");
    let (status, v) = reconcile(&b, "rec-1").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        actions(&v),
        [("promoted".to_owned(), new_id.clone())],
        "{v}"
    );
    assert_eq!(v["changes"][0]["supersededCertificateId"], old_id.as_str());
    assert_eq!(v["certificateId"], new_id.as_str());
    let now = state(&moto).await;
    assert_eq!(now["certificates"][&old_arn]["status"], "REVOKED");
    assert_eq!(now["certificates"][&old_arn]["policies"], json!([]));
    assert_eq!(now["certificates"][&new_arn]["status"], "ACTIVE");
    assert_eq!(now["things"]["rec-1"]["principals"], json!([new_arn]));
    let (_, device) = b.admin_get("/v1/devices/rec-1").await;
    assert_eq!(device["certificateId"], new_id.as_str());
    assert_eq!(
        history_state(&device, &old_id).as_deref(),
        Some("superseded")
    );
    let (status, v) = reconcile(&b, "rec-1").await;
    assert_eq!(
        (status, &v["changed"], &v["changes"]),
        (200, &json!(false), &json!([])),
        "again: {v}"
    );

    // Refusals.
    let (status, v) = reconcile(&b, "nobody").await;
    assert_eq!((status, code(&v)), (404, "device_not_found"), "{v}");
    let resp = b
        .client
        .post(b.url("/v1/devices/rec-1/reconcile"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);

    // A sweep on demand: 202, then its report.
    let (status, v) = b.admin_post("/v1/reconcile").await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["sweep"]["trigger"], "request");
    let mut sweep = Value::Null;
    for _ in 0..100 {
        let (status, v) = b.admin_get("/v1/reconcile").await;
        assert_eq!(status, 200, "{v}");
        if v["sweep"]["running"] == false {
            sweep = v["sweep"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (&sweep["devices"], &sweep["changed"], &sweep["failed"]),
        (&json!(1), &json!(0), &json!(0)),
        "{sweep}"
    );
}

/// Certificates the registry holds revoked but AWS still accepts or keeps attached: a
/// certificate learned and then left behind by a later rotation (abandoned in the registry,
/// ACTIVE and attached in AWS) and a superseded one re-activated by hand are revoked and
/// detached; a registered one an operator made INACTIVE is abandoned. Then nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_revokes_what_the_registry_holds_revoked_and_abandons_what_aws_refuses() {
    let moto = moto().await;
    let b = backend(&moto.endpoint, no_schedule).await;
    let first_id = register_device(&b, "rec-2", 2).await;
    // A first rotation, learned but never used; a second one the device reports in use.
    let (tried_id, tried_arn) = rotate_in_aws(&moto, "rec-2").await;
    let (_, v) = reconcile(&b, "rec-2").await;
    assert_eq!(
        actions(&v),
        [("learned".to_owned(), tried_id.clone())],
        "{v}"
    );
    let (used_id, used_arn) = rotate_in_aws(&moto, "rec-2").await;
    let resp = b
        .client
        .post(b.url("/v1/devices/rec-2/certificate-in-use"))
        .bearer_auth(b.admin())
        .json(&json!({ "certificateId": used_id }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let (_, device) = b.admin_get("/v1/devices/rec-2").await;
    assert_eq!(
        history_state(&device, &tried_id).as_deref(),
        Some("abandoned")
    );
    assert_eq!(
        history_state(&device, &first_id).as_deref(),
        Some("superseded")
    );
    let now = state(&moto).await;
    assert_eq!(now["certificates"][&tried_arn]["status"], "ACTIVE");
    // Someone re-activates the superseded certificate (moto allows what AWS would not).
    let first_arn = used_arn.replace(&used_id, &first_id);
    boto(
        &moto,
        "update_certificate",
        json!({"certificateId": first_id, "newStatus": "ACTIVE"}),
    )
    .await;

    let (status, v) = reconcile(&b, "rec-2").await;
    assert_eq!(status, 200, "{v}");
    let mut done = actions(&v);
    done.sort();
    let mut expected = vec![
        ("revoked".to_owned(), first_id.clone()),
        ("revoked".to_owned(), tried_id.clone()),
    ];
    expected.sort();
    assert_eq!(done, expected, "{v}");
    for change in v["changes"].as_array().expect("changes") {
        let expected = if change["certificateId"] == tried_id.as_str() {
            json!({"action": "revoked", "certificateId": tried_id, "state": "abandoned", "awsStatus": "ACTIVE", "wasAttached": true})
        } else {
            json!({"action": "revoked", "certificateId": first_id, "state": "superseded", "awsStatus": "ACTIVE", "wasAttached": false})
        };
        assert_eq!(change, &expected);
    }
    let now = state(&moto).await;
    for arn in [&tried_arn, &first_arn] {
        assert_eq!(now["certificates"][arn]["status"], "REVOKED", "{arn}");
        assert_eq!(now["certificates"][arn]["policies"], json!([]), "{arn}");
    }
    assert_eq!(now["things"]["rec-2"]["principals"], json!([used_arn]));
    let (status, v) = reconcile(&b, "rec-2").await;
    assert_eq!((status, &v["changes"]), (200, &json!([])), "again: {v}");

    // A third rotation, learned; an operator makes that certificate INACTIVE: abandoned,
    // and REVOKED in AWS (an INACTIVE one could be made ACTIVE again).
    let (third_id, third_arn) = rotate_in_aws(&moto, "rec-2").await;
    let (_, v) = reconcile(&b, "rec-2").await;
    assert_eq!(
        actions(&v),
        [("learned".to_owned(), third_id.clone())],
        "{v}"
    );
    boto(
        &moto,
        "update_certificate",
        json!({"certificateId": third_id, "newStatus": "INACTIVE"}),
    )
    .await;
    let (_, v) = reconcile(&b, "rec-2").await;
    assert_eq!(
        actions(&v),
        [("abandoned".to_owned(), third_id.clone())],
        "{v}"
    );
    assert_eq!(v["changes"][0]["awsStatus"], "INACTIVE");
    assert_eq!(
        v["certificateId"],
        used_id.as_str(),
        "the current one stays"
    );
    let now = state(&moto).await;
    assert_eq!(now["certificates"][&third_arn]["status"], "REVOKED");
    assert_eq!(now["things"]["rec-2"]["principals"], json!([used_arn]));
    let (_, v) = reconcile(&b, "rec-2").await;
    assert_eq!(v["changes"], json!([]), "again: {v}");
}

/// The current certificate revoked in AWS with no newer one attached, or with two: nothing
/// is guessed, the answer says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_guesses_nothing_when_no_single_newer_certificate_exists() {
    let moto = moto().await;
    let b = backend(&moto.endpoint, no_schedule).await;
    let old_id = register_device(&b, "rec-3", 3).await;
    boto(
        &moto,
        "update_certificate",
        json!({"certificateId": old_id, "newStatus": "REVOKED"}),
    )
    .await;
    let (status, v) = reconcile(&b, "rec-3").await;
    assert_eq!((status, &v["changes"]), (200, &json!([])), "{v}");
    let note = v["notes"][0].as_str().expect("note");
    assert!(
        note.contains("REVOKED") && note.contains("cannot connect"),
        "{note}"
    );
    rotate_in_aws(&moto, "rec-3").await;
    rotate_in_aws(&moto, "rec-3").await;
    let (_, v) = reconcile(&b, "rec-3").await;
    let learned: Vec<_> = actions(&v).into_iter().map(|(a, _)| a).collect();
    assert_eq!(learned, ["learned", "learned"], "{v}");
    assert_eq!(v["certificateId"], old_id.as_str());
    let note = v["notes"][0].as_str().expect("note");
    assert!(note.contains("2 newer ACTIVE"), "{note}");
}

/// `aws.reconcile_interval`: the scheduled sweep walks every device by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_sweep_reconciles_every_device() {
    let moto = moto().await;
    let b = backend(&moto.endpoint, |aws, _| {
        aws.reconcile_interval = Duration::from_millis(500);
    })
    .await;
    register_device(&b, "rec-4", 4).await;
    register_device(&b, "rec-5", 5).await;
    let (new_id, _) = rotate_in_aws(&moto, "rec-5").await;
    let mut learned = false;
    for _ in 0..120 {
        let (_, device) = b.admin_get("/v1/devices/rec-5").await;
        if history_state(&device, &new_id).as_deref() == Some("registered") {
            learned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(learned, "the schedule learned the rotation within 30 s");
    let (status, v) = b.admin_get("/v1/reconcile").await;
    assert_eq!(
        (status, &v["sweep"]["trigger"]),
        (200, &json!("schedule")),
        "{v}"
    );
    // The sweeps are counted (the learning sweep may still be finishing: wait a little).
    let lines = [
        r#"acorn_reconcile_changes_total{action="learned"} 1"#,
        r#"acorn_reconcile_sweeps_total{trigger="schedule"}"#,
        r#"acorn_reconciled_devices_total{result="unchanged"}"#,
        r#"acorn_reconciled_devices_total{result="changed"} 1"#,
    ];
    let mut metrics = String::new();
    for _ in 0..40 {
        metrics = b
            .client
            .get(b.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if lines.iter().all(|l| metrics.contains(l)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for line in lines {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
}
