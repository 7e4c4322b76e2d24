//! Admin endpoints: tokens, device listing and lookup, revocation with its CRL and hook,
//! unknown routes, and a restart on the same data directory.

use acorn_test_support::backend as common;

use std::sync::{Arc, Mutex};

use common::{body, start, start_with};
use secrecy::ExposeSecret as _;
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_key() {
    let b = start().await;
    for (method, path) in [
        ("POST", "/v1/tokens"),
        ("GET", "/v1/devices"),
        ("GET", "/v1/devices/x"),
        ("POST", "/v1/devices/x/revoke"),
    ] {
        let req = |key: Option<&str>| {
            let r = match method {
                "POST" => b.client.post(b.url(path)),
                _ => b.client.get(b.url(path)),
            };
            match key {
                Some(k) => r.bearer_auth(k),
                None => r,
            }
        };
        let resp = req(None).send().await.expect("send");
        assert_eq!(resp.status(), 401, "{method} {path}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(code(&v), "admin_key_required");
        let resp = req(Some("wrong")).send().await.expect("send");
        assert_eq!(resp.status(), 403, "{method} {path}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(code(&v), "admin_key_invalid");
        // A registration token is not an admin key.
        let token = b.token().await;
        let resp = req(Some(&token)).send().await.expect("send");
        assert_eq!(resp.status(), 403, "{method} {path}");
    }
}

#[tokio::test]
async fn tokens_are_minted_with_defaults_and_limits() {
    let b = start().await;
    // No body at all: one token, one hour.
    let resp = b
        .client
        .post(b.url("/v1/tokens"))
        .bearer_auth(b.admin())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.expect("json");
    let tokens = v["tokens"].as_array().expect("array");
    assert_eq!(tokens.len(), 1);
    let expires = tokens[0]["expiresAt"].as_str().expect("expiresAt");
    let expires =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::minutes(55) && left <= time::Duration::minutes(61));
    // Several at once, all different, all usable.
    let many = b.tokens(5).await;
    let mut unique = many.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5);
    for (i, t) in many.iter().enumerate() {
        let (status, resp) = b.register(Some(t), &body(&format!("tok-{i}"))).await;
        assert_eq!(status, 201, "{resp}");
    }
    // Out-of-range values.
    for (req, want) in [
        (json!({"ttlSeconds": 0}), "invalid_ttl"),
        (json!({"ttlSeconds": -5}), "invalid_ttl"),
        (json!({"ttlSeconds": 31 * 24 * 3600}), "invalid_ttl"),
        (json!({"count": 0}), "invalid_count"),
        (json!({"count": 101}), "invalid_count"),
        (json!({"count": -1}), "invalid_count"),
    ] {
        let resp = b
            .client
            .post(b.url("/v1/tokens"))
            .bearer_auth(b.admin())
            .json(&req)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400, "{req}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(code(&v), want, "{req}: {v}");
    }
    // The registry stores hashes, never the tokens themselves.
    let conn = rusqlite::Connection::open(&b.handle.paths().registry).expect("db");
    let stored: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM tokens WHERE token_hash = ?1",
            [&many[0]],
            |r| r.get(0),
        )
        .expect("query");
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn devices_are_listed_and_looked_up() {
    let b = start().await;
    let (status, v) = b.admin_get("/v1/devices").await;
    assert_eq!(status, 200);
    assert_eq!(v["devices"], json!([]));
    for id in ["beta", "alpha"] {
        let t = b.token().await;
        let mut req = body(id);
        req["macAddress"] = json!("0a-1b-2c-3d-4e-5f");
        let (status, _) = b.register(Some(&t), &req).await;
        assert_eq!(status, 201);
    }
    let (status, v) = b.admin_get("/v1/devices").await;
    assert_eq!(status, 200);
    let list = v["devices"].as_array().expect("array");
    let ids: Vec<&str> = list.iter().filter_map(|d| d["deviceId"].as_str()).collect();
    assert_eq!(ids, ["alpha", "beta"]);
    assert!(list[0].get("certificatePem").is_none(), "list omits PEMs");
    let (status, d) = b.admin_get("/v1/devices/alpha").await;
    assert_eq!(status, 200);
    assert_eq!(d["macAddress"], "0A:1B:2C:3D:4E:5F", "MAC normalised");
    assert_eq!(d["serialNumber"], "SN-0001");
    assert_eq!(d["firmwareVersion"], "1.0.0");
    assert_eq!(d["status"], "active");
    assert!(d["certificatePem"]
        .as_str()
        .expect("pem")
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(d["certificateSerial"].as_str().expect("serial").len(), 32);
    let (status, v) = b.admin_get("/v1/devices/nobody").await;
    assert_eq!((status, code(&v)), (404, "device_not_found"));
}

#[tokio::test]
async fn revoke_marks_the_device_puts_its_serial_in_the_crl_and_calls_the_hook() {
    let calls: Arc<Mutex<Vec<acorn_backend::CrlEvent>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let b = start_with(move |c| {
        c.crl_hook = Some(Arc::new(move |e: &acorn_backend::CrlEvent| {
            seen.lock().map_err(|e| e.to_string())?.push(e.clone());
            Ok(())
        }));
    })
    .await;
    // The CRL exists from the start, empty, signed by the CA.
    let crl_path = b.handle.paths().crl.clone();
    assert!(crl_revoked_serials(&crl_path, b.handle.ca_certificate_pem()).is_empty());

    let mut serials = Vec::new();
    for id in ["keep-me", "revoke-me"] {
        let t = b.token().await;
        let (status, resp) = b.register(Some(&t), &body(id)).await;
        assert_eq!(status, 201);
        let (_, serial) = common::check_device_cert(
            resp["certificatePem"].as_str().expect("cert"),
            b.handle.ca_certificate_pem(),
            id,
        );
        serials.push(serial);
    }
    let (status, v) = b.admin_post("/v1/devices/revoke-me/revoke").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["device"]["status"], "revoked");
    assert!(v["device"]["revokedAt"].is_string());
    let first_number = v["crlNumber"].as_u64().expect("crlNumber");

    let revoked = crl_revoked_serials(&crl_path, b.handle.ca_certificate_pem());
    assert_eq!(
        revoked,
        vec![serials[1].clone()],
        "only the revoked serial is listed"
    );
    {
        let calls = calls.lock().expect("lock");
        assert_eq!(calls.len(), 1);
        let revoked = calls[0].revoked.as_ref().expect("a revocation event");
        assert_eq!(revoked.device_id, "revoke-me");
        assert_eq!(revoked.certificate_serial, hex::encode(&serials[1]));
        assert_eq!(revoked.firmware_version, body("x")["firmwareVersion"]);
        assert_eq!(calls[0].crl_path, crl_path);
        assert_eq!(Some(calls[0].crl_number), Some(first_number));
    }
    let (_, d) = b.admin_get("/v1/devices/revoke-me").await;
    assert_eq!(d["status"], "revoked");
    let (_, d) = b.admin_get("/v1/devices/keep-me").await;
    assert_eq!(d["status"], "active");

    // Revoking again is harmless; the CRL number still grows.
    let (status, v) = b.admin_post("/v1/devices/revoke-me/revoke").await;
    assert_eq!(status, 200);
    assert!(v["crlNumber"].as_u64().expect("n") > first_number);
    assert_eq!(
        crl_revoked_serials(&crl_path, b.handle.ca_certificate_pem()).len(),
        1
    );
    let (status, v) = b.admin_post("/v1/devices/ghost/revoke").await;
    assert_eq!((status, code(&v)), (404, "device_not_found"));
    // A revoked device's id stays taken.
    let t = b.token().await;
    let (status, v) = b.register(Some(&t), &body("revoke-me")).await;
    assert_eq!((status, code(&v)), (409, "device_exists"));
}

#[tokio::test]
async fn a_failing_revocation_hook_is_reported_as_a_server_fault() {
    let b = start_with(|c| {
        c.crl_hook = Some(Arc::new(|_: &acorn_backend::CrlEvent| {
            Err("mosquitto is not running at /secret/path".to_owned())
        }));
    })
    .await;
    let t = b.token().await;
    let (status, _) = b.register(Some(&t), &body("dev")).await;
    assert_eq!(status, 201);
    let (status, v) = b.admin_post("/v1/devices/dev/revoke").await;
    assert_eq!((status, code(&v)), (500, "revocation_hook_failed"), "{v}");
    // The client learns what happened and a request id, never the internal detail.
    let message = v["error"]["message"].as_str().expect("m");
    assert!(message.contains("request id"), "{message}");
    assert!(!message.contains("/secret/path"), "{message}");
    // The revocation itself stands.
    assert_eq!(
        crl_revoked_serials(&b.handle.paths().crl, b.handle.ca_certificate_pem()).len(),
        1
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let b = start().await;
    let resp = b.client.get(b.url("/nope")).send().await.expect("send");
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(code(&v), "not_found");
    let resp = b
        .client
        .get(b.url("/v1/devices/register"))
        .send()
        .await
        .expect("send");
    // The static route wins over /v1/devices/{id}: GET is not allowed there.
    assert_eq!(resp.status(), 405);
    let resp = b
        .client
        .delete(b.url("/v1/tokens"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 405);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(code(&v), "method_not_allowed");
    let resp = b
        .client
        .get(b.url("/v1/health"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_restart_keeps_the_ca_admin_key_registry_and_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = acorn_backend::BackendConfig::new(dir.path());
    let first = acorn_backend::Backend::start(config.clone())
        .await
        .expect("start");
    let ca = first.ca_certificate_pem().to_owned();
    let admin = first.admin_key().expose_secret().to_owned();
    let token = first.mint_token(600).await.expect("token");
    let client = common::client();
    let resp = client
        .post(format!("{}/v1/devices/register", first.base_url()))
        .bearer_auth(token.token.expose_secret())
        .json(&body("persist-1"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 201);
    let paths = first.paths().clone();
    let server_cert = std::fs::read_to_string(&paths.server_cert).expect("server cert");
    first.shutdown().await.expect("shutdown");

    let second = acorn_backend::Backend::start(config)
        .await
        .expect("restart");
    assert_eq!(second.ca_certificate_pem(), ca);
    assert_eq!(second.admin_key().expose_secret(), admin);
    assert_eq!(
        std::fs::read_to_string(&paths.server_cert).expect("server cert"),
        server_cert
    );
    let resp = client
        .get(format!("{}/v1/devices/persist-1", second.base_url()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    // Key files are private.
    #[cfg(unix)]
    for key in [
        dir.path().join(acorn_backend::ca::CA_KEY_FILE),
        paths.server_key.clone(),
        dir.path().join(acorn_backend::ADMIN_KEY_FILE),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is private", key.display());
    }
    // The server certificate is a localhost server certificate from this CA.
    let cert_der = common::der(&server_cert);
    let ca_der = common::der(&ca);
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).expect("parse");
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).expect("parse");
    cert.verify_signature(Some(ca_cert.public_key()))
        .expect("signed by the CA");
    let san = cert
        .subject_alternative_name()
        .expect("san parses")
        .expect("san present");
    let names = format!("{:?}", san.value.general_names);
    assert!(
        names.contains("localhost") && names.contains("IPAddress([127, 0, 0, 1])"),
        "{names}"
    );
    assert!(
        cert.extended_key_usage()
            .expect("eku")
            .expect("present")
            .value
            .server_auth
    );
    second.shutdown().await.expect("shutdown");
}

/// Parses the CRL PEM at `path`, checks its signature with the CA, returns revoked serials.
fn crl_revoked_serials(path: &std::path::Path, ca_pem: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).expect("crl file");
    assert!(
        text.starts_with("-----BEGIN X509 CRL-----"),
        "PEM CRL for mosquitto"
    );
    let der = common::der(&text);
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&der).expect("crl");
    let ca_der = common::der(ca_pem);
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("ca");
    crl.verify_signature(ca.public_key())
        .expect("CRL signed by the CA");
    assert_eq!(crl.issuer(), ca.subject());
    assert!(crl.next_update().is_some());
    crl.iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect()
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_replaced_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let config = acorn_backend::BackendConfig::new(dir.path());
    let first = acorn_backend::Backend::start(config.clone())
        .await
        .expect("start");
    let paths = first.paths().clone();
    first.shutdown().await.expect("shutdown");
    // Plant a server certificate issued by a different CA.
    let stranger = acorn_backend::LocalCa::create(other.path()).expect("other ca");
    let foreign = stranger.issue_server_certificate(&[]).expect("foreign");
    std::fs::write(&paths.server_cert, &foreign.certificate.pem).expect("write");
    let second = acorn_backend::Backend::start(config)
        .await
        .expect("restart");
    let now_pem = std::fs::read_to_string(&paths.server_cert).expect("read");
    assert_ne!(now_pem, foreign.certificate.pem);
    let ca = acorn_backend::LocalCa::load(dir.path()).expect("ca");
    assert!(ca.still_vouches_for(&now_pem, time::Duration::days(30)));
    second.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn ready_fails_when_the_registry_does_not_answer_while_health_stays_up() {
    let b = start().await;
    let get = |path: &'static str| {
        let b = &b;
        async move {
            let resp = b.client.get(b.url(path)).send().await.expect("send");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }
    };
    assert_eq!(get("/v1/health").await.0, 200);
    let (status, v) = get("/v1/ready").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["checks"]["database"], "ok");
    assert_eq!(v["checks"]["signer"], "ok");
    // The registry's file turns into a directory: the database cannot be opened.
    let registry = b.handle.paths().registry.clone();
    std::fs::remove_file(&registry).expect("remove");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", registry.display()));
    }
    std::fs::create_dir(&registry).expect("dir in its place");
    let (status, v) = get("/v1/ready").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["checks"]["database"], "unavailable");
    assert_eq!(v["checks"]["signer"], "ok");
    // Liveness does not depend on the database: no restart loop during a database outage.
    assert_eq!(get("/v1/health").await.0, 200);
}

/// With the local CA the service sees every step of a rotation itself: reconciling a device
/// changes nothing, a sweep reads no device (it only abandons stale pending certificates),
/// and the endpoints answer as with the aws signer.
#[tokio::test]
async fn reconciliation_with_the_local_signer_changes_nothing() {
    let b = start().await;
    let (status, v) = b
        .register(Some(&b.token().await), &body("rec-local-1"))
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = b.admin_post("/v1/devices/rec-local-1/reconcile").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["changed"], &v["changes"]),
        (&json!(false), &json!([])),
        "{v}"
    );
    let (status, v) = b.admin_post("/v1/devices/nobody/reconcile").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("device_not_found"))
    );
    let (status, v) = b.admin_get("/v1/reconcile").await;
    assert_eq!((status, &v["sweep"]), (200, &Value::Null), "{v}");
    let (status, v) = b.admin_post("/v1/reconcile").await;
    assert_eq!(status, 202, "{v}");
    let mut sweep = Value::Null;
    for _ in 0..100 {
        let (_, v) = b.admin_get("/v1/reconcile").await;
        if v["sweep"]["running"] == false {
            sweep = v["sweep"].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        (
            &sweep["devices"],
            &sweep["failed"],
            &sweep["abandonedPending"]
        ),
        (&json!(0), &json!(0), &json!(0)),
        "{sweep}"
    );
    // Revoked devices are not reconciled.
    b.admin_post("/v1/devices/rec-local-1/revoke").await;
    let (status, v) = b.admin_post("/v1/devices/rec-local-1/reconcile").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("device_revoked"))
    );
    let resp = b
        .client
        .post(b.url("/v1/reconcile"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
}
