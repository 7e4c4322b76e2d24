//! `POST /v1/devices/register`: both flows, every refusal, the single-use token race, and
//! the absence of partial registry rows after failures.

use acorn_test_support::backend as common;

use std::sync::Arc;

use common::{body, check_device_cert, csr, der, pem, start};
use secrecy::ExposeSecret as _;
use serde_json::{json, Value};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test]
async fn csr_flow_returns_certificate_for_the_csr_key_signed_by_the_returned_ca() {
    let b = start().await;
    let token = b.token().await;
    let (key, csr_pem) = csr("acorn-csr-1");
    let mut req = body("acorn-csr-1");
    req["csr"] = json!(csr_pem);
    let (status, resp) = b.register(Some(&token), &req).await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["deviceId"], "acorn-csr-1");
    assert!(
        resp.get("privateKeyPem").is_none(),
        "no key in the CSR flow"
    );
    assert_eq!(resp["iotEndpoint"], "localhost:8883");
    let cert_pem = resp["certificatePem"].as_str().expect("cert");
    let ca_pem = resp["caCertificatePem"].as_str().expect("ca");
    assert_eq!(ca_pem, b.handle.ca_certificate_pem());
    let (spki, _) = check_device_cert(cert_pem, ca_pem, "acorn-csr-1");
    // The certificate carries exactly the CSR's public key.
    use rcgen::PublicKeyData;
    assert_eq!(spki, key.subject_public_key_info());
    // certificateId is the SHA-256 of the DER, lowercase hex.
    let id = resp["certificateId"].as_str().expect("id");
    assert_eq!(id, acorn_backend::ca::certificate_id(&der(cert_pem)));
    assert_eq!(id.len(), 64);
    assert!(id
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_eq!(b.counts(), (1, 1));
}

#[tokio::test]
async fn server_keygen_p256_returns_a_pkcs8_key_matching_its_certificate() {
    let b = start().await;
    let token = b.token().await;
    let (status, resp) = b.register(Some(&token), &body("acorn-keygen-1")).await;
    assert_eq!(status, 201, "{resp}");
    let key_pem = resp["privateKeyPem"].as_str().expect("key returned");
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let key = rcgen::KeyPair::from_pem(key_pem).expect("key parses");
    let (spki, _) = check_device_cert(
        resp["certificatePem"].as_str().expect("cert"),
        resp["caCertificatePem"].as_str().expect("ca"),
        "acorn-keygen-1",
    );
    use rcgen::PublicKeyData;
    assert_eq!(
        spki,
        key.subject_public_key_info(),
        "key matches certificate"
    );
}

#[tokio::test]
async fn server_keygen_rsa2048_returns_a_pkcs1_key_matching_its_certificate() {
    let b = start().await;
    let token = b.token().await;
    let mut req = body("acorn-rsa-1");
    req["keyType"] = json!("rsa2048");
    let (status, resp) = b.register(Some(&token), &req).await;
    assert_eq!(status, 201, "{resp}");
    let key_pem = resp["privateKeyPem"].as_str().expect("key returned");
    assert!(
        key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "PKCS#1 like AWS"
    );
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::EncodePublicKey;
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(key_pem).expect("PKCS#1 parses");
    assert_eq!(rsa::traits::PublicKeyParts::size(&key), 256, "2048-bit");
    let key_spki = key
        .to_public_key()
        .to_public_key_der()
        .expect("spki")
        .into_vec();
    let (spki, _) = check_device_cert(
        resp["certificatePem"].as_str().expect("cert"),
        resp["caCertificatePem"].as_str().expect("ca"),
        "acorn-rsa-1",
    );
    assert_eq!(spki, key_spki, "key matches certificate");
}

#[tokio::test]
async fn one_token_registers_exactly_one_device_under_concurrent_requests() {
    let b = Arc::new(start().await);
    const ROUNDS: usize = 4;
    const RACERS: usize = 12;
    for round in 0..ROUNDS {
        let token = b.token().await;
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let b = Arc::clone(&b);
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("race-{round}-{i}");
                // Half use CSRs, half server keygen, so the work before the commit differs.
                let mut req = body(&id);
                if i % 2 == 0 {
                    req["csr"] = json!(csr(&id).1);
                }
                b.register(Some(&token), &req).await
            }));
        }
        let mut won = 0;
        for t in tasks {
            let (status, resp) = t.await.expect("task");
            match status {
                201 => won += 1,
                409 => assert!(
                    ["token_used", "token_in_use"].contains(&code(&resp)),
                    "{resp}"
                ),
                other => panic!("unexpected {other}: {resp}"),
            }
        }
        assert_eq!(won, 1, "exactly one registration wins round {round}");
    }
    assert_eq!(b.counts(), (ROUNDS as i64, ROUNDS as i64));
}

#[tokio::test]
async fn one_token_costs_at_most_one_key_generation_however_many_requests_race() {
    let b = Arc::new(start().await);
    const RACERS: usize = 12;
    let token = b.token().await;
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let b = Arc::clone(&b);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = body(&format!("rsa-race-{i}"));
            req["keyType"] = json!("rsa2048");
            b.register(Some(&token), &req).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        let (status, resp) = t.await.expect("task");
        match status {
            201 => won += 1,
            409 => assert!(
                ["token_used", "token_in_use"].contains(&code(&resp)),
                "{resp}"
            ),
            other => panic!("unexpected {other}: {resp}"),
        }
    }
    assert_eq!(won, 1);
    let stats = b.handle.stats();
    assert_eq!(stats.key_generations, 1, "{stats:?}");
    assert_eq!(stats.registrations, 1, "{stats:?}");
    assert_eq!(stats.refusals, (RACERS - 1) as u64, "{stats:?}");
}

#[tokio::test]
async fn a_failed_registration_gives_its_reserved_token_back() {
    // Twelve tokens race for one device id: a loser is refused at its reservation while
    // another token holds the id (device_registration_in_progress), or finds it registered
    // (device_exists); either way its token is not used up or held, so every losing token
    // registers another id at once (a held token would answer token_in_use).
    let b = Arc::new(start().await);
    const RACERS: usize = 12;
    let tokens = b.tokens(RACERS as u32).await;
    let mut tasks = Vec::new();
    for (i, token) in tokens.iter().cloned().enumerate() {
        let b = Arc::clone(&b);
        tasks.push(tokio::spawn(async move {
            let mut req = body("contested");
            if i % 2 == 0 {
                req["csr"] = json!(csr("contested").1);
            }
            b.register(Some(&token), &req).await
        }));
    }
    let mut losers = Vec::new();
    for (t, token) in tasks.into_iter().zip(&tokens) {
        let (status, resp) = t.await.expect("task");
        match status {
            201 => {}
            409 => {
                assert!(
                    ["device_exists", "device_registration_in_progress"].contains(&code(&resp)),
                    "{resp}"
                );
                losers.push(token.clone());
            }
            other => panic!("unexpected {other}: {resp}"),
        }
    }
    assert_eq!(losers.len(), RACERS - 1);
    for (i, token) in losers.iter().enumerate() {
        let (status, v) = b.register(Some(token), &body(&format!("free-{i}"))).await;
        assert_eq!(status, 201, "{v}");
    }
}

#[tokio::test]
async fn a_bound_token_registers_only_its_device() {
    let b = start().await;
    let mint = |binding: Value| {
        let b = &b;
        async move {
            let resp = b
                .client
                .post(b.url("/v1/tokens"))
                .bearer_auth(b.admin())
                .json(&binding)
                .send()
                .await
                .expect("mint");
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.expect("json");
            (status, v)
        }
    };
    let (status, v) = mint(json!({ "deviceId": "acorn-bound" })).await;
    assert_eq!(status, 201, "{v}");
    let token = v["tokens"][0]["token"].as_str().expect("token").to_owned();
    // Another device id, even a free one, is refused, and the token survives.
    let (status, v) = b.register(Some(&token), &body("acorn-squatter")).await;
    assert_eq!((status, code(&v)), (403, "token_bound"), "{v}");
    let (status, v) = b.register(Some(&token), &body("acorn-bound")).await;
    assert_eq!(status, 201, "{v}");

    // Bound by MAC address (normalised as registration normalises it).
    let (status, v) = mint(json!({ "macAddress": "02-00-00-00-00-01" })).await;
    assert_eq!(status, 201, "{v}");
    let token = v["tokens"][0]["token"].as_str().expect("token").to_owned();
    let (status, v) = b.register(Some(&token), &body("mac-other")).await;
    assert_eq!((status, code(&v)), (403, "token_bound"), "{v}");
    let mut req = body("mac-right");
    req["macAddress"] = json!("02:00:00:00:00:01");
    let (status, v) = b.register(Some(&token), &req).await;
    assert_eq!(status, 201, "{v}");

    // Bindings are validated, and bound tokens are minted one at a time.
    let (status, v) = mint(json!({ "deviceId": "a.b" })).await;
    assert_eq!((status, code(&v)), (400, "invalid_device_id"), "{v}");
    let (status, v) = mint(json!({ "deviceId": "x", "count": 2 })).await;
    assert_eq!((status, code(&v)), (400, "invalid_count"), "{v}");
}

#[tokio::test]
async fn token_problems_are_refused_with_their_own_codes() {
    let b = start().await;
    // No Authorization header.
    let (status, resp) = b.register(None, &body("dev-a")).await;
    assert_eq!((status, code(&resp)), (401, "token_required"), "{resp}");
    // Unknown token.
    let (status, resp) = b.register(Some("not-a-token"), &body("dev-a")).await;
    assert_eq!((status, code(&resp)), (401, "token_unknown"), "{resp}");
    // Expired token: minted directly in the registry with a creation time in the past.
    let past = time::OffsetDateTime::now_utc().unix_timestamp() - 7200;
    let expired = b
        .handle
        .registry()
        .mint_tokens(1, 60, past)
        .await
        .expect("mint")
        .remove(0);
    let (status, resp) = b
        .register(Some(expired.token.expose_secret()), &body("dev-a"))
        .await;
    assert_eq!((status, code(&resp)), (401, "token_expired"), "{resp}");
    // Used token.
    let token = b.token().await;
    let (status, _) = b.register(Some(&token), &body("dev-a")).await;
    assert_eq!(status, 201);
    let (status, resp) = b.register(Some(&token), &body("dev-b")).await;
    assert_eq!((status, code(&resp)), (409, "token_used"), "{resp}");
    assert!(resp["error"]["message"]
        .as_str()
        .expect("msg")
        .contains("new token"));
    assert_eq!(b.counts(), (1, 1));
}

#[tokio::test]
async fn bad_fields_are_refused_with_400_and_no_rows_and_the_token_survives() {
    let b = start().await;
    let token = b.token().await;
    let long = "x".repeat(129);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("deviceId", json!(""), "invalid_device_id"),
        ("deviceId", json!("has space"), "invalid_device_id"),
        ("deviceId", json!("a/b"), "invalid_device_id"),
        ("deviceId", json!(long), "invalid_device_id"),
        ("serialNumber", json!(""), "invalid_serial_number"),
        ("serialNumber", json!("SN_1"), "invalid_serial_number"),
        (
            "serialNumber",
            json!("S".repeat(65)),
            "invalid_serial_number",
        ),
        ("macAddress", json!("aa:bb:cc:dd:ee"), "invalid_mac_address"),
        (
            "macAddress",
            json!("aa:bb:cc:dd:ee:zz"),
            "invalid_mac_address",
        ),
        (
            "macAddress",
            json!("aa:bb-cc:dd:ee:ff"),
            "invalid_mac_address",
        ),
        ("macAddress", json!("aabbccddeeff"), "invalid_mac_address"),
        ("firmwareVersion", json!(""), "invalid_firmware_version"),
        (
            "firmwareVersion",
            json!("1".repeat(33)),
            "invalid_firmware_version",
        ),
        ("keyType", json!("dsa"), "invalid_key_type"),
    ];
    for (field, value, want) in cases {
        let mut req = body("dev-1");
        req[field] = value.clone();
        let (status, resp) = b.register(Some(&token), &req).await;
        assert_eq!(
            (status, code(&resp)),
            (400, want),
            "{field}={value}: {resp}"
        );
        let message = resp["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(field),
            "message names the field: {message}"
        );
    }
    // Missing field, wrong type, not JSON, wrong content type: 4xx in the same error format.
    let mut missing = body("dev-1");
    missing
        .as_object_mut()
        .expect("object")
        .remove("macAddress");
    let (status, resp) = b.register(Some(&token), &missing).await;
    assert_eq!((status, code(&resp)), (422, "invalid_json"), "{resp}");
    assert!(resp["error"]["message"]
        .as_str()
        .expect("m")
        .contains("macAddress"));
    let mut wrong_type = body("dev-1");
    wrong_type["deviceId"] = json!(42);
    let (status, resp) = b.register(Some(&token), &wrong_type).await;
    assert_eq!((status, code(&resp)), (422, "invalid_json"), "{resp}");
    let resp = b
        .client
        .post(b.url("/v1/devices/register"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(code(&v), "invalid_json");
    let resp = b
        .client
        .post(b.url("/v1/devices/register"))
        .bearer_auth(&token)
        .body(body("dev-1").to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 415);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(code(&v), "unsupported_media_type");

    // Nothing was written, and the token still works.
    assert_eq!(b.counts(), (0, 0));
    let (status, resp) = b.register(Some(&token), &body("dev-1")).await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(b.counts(), (1, 1));
}

#[tokio::test]
async fn bad_csrs_are_refused_with_400_and_no_rows() {
    let b = start().await;
    let token = b.token().await;
    let id = "dev-csr";
    let (_, good) = csr(id);
    // Signature damaged: flip a bit in the last byte (inside the signature).
    let mut tampered = der(&good);
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let tampered = pem("CERTIFICATE REQUEST", &tampered);
    // Subject without a CN.
    let no_cn = {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Acorn");
        params.distinguished_name = dn;
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    };
    // Ed25519 key, which AWS IoT Core refuses.
    let ed = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, id);
        params.distinguished_name = dn;
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    };
    let cases: Vec<(String, &str)> = vec![
        ("hello".into(), "csr_malformed"),
        (
            pem("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x01"),
            "csr_malformed",
        ),
        (tampered, "csr_bad_signature"),
        (csr("someone-else").1, "csr_common_name_mismatch"),
        (no_cn, "csr_missing_common_name"),
        (ed, "csr_unsupported_algorithm"),
    ];
    for (csr_pem, want) in cases {
        let mut req = body(id);
        req["csr"] = json!(csr_pem);
        let (status, resp) = b.register(Some(&token), &req).await;
        assert_eq!((status, code(&resp)), (400, want), "{resp}");
    }
    // keyType with a CSR is contradictory.
    let mut req = body(id);
    req["csr"] = json!(good);
    req["keyType"] = json!("p256");
    let (status, resp) = b.register(Some(&token), &req).await;
    assert_eq!((status, code(&resp)), (400, "invalid_key_type"), "{resp}");
    assert_eq!(b.counts(), (0, 0));
}

#[tokio::test]
async fn duplicate_device_is_refused_and_leaves_the_new_token_unused() {
    let b = start().await;
    let tokens = b.tokens(3).await;
    let (status, first) = b.register(Some(&tokens[0]), &body("dup-1")).await;
    assert_eq!(status, 201);
    let (status, resp) = b.register(Some(&tokens[1]), &body("dup-1")).await;
    assert_eq!((status, code(&resp)), (409, "device_exists"), "{resp}");
    // Same through the CSR path.
    let mut req = body("dup-1");
    req["csr"] = json!(csr("dup-1").1);
    let (status, resp) = b.register(Some(&tokens[1]), &req).await;
    assert_eq!((status, code(&resp)), (409, "device_exists"), "{resp}");
    // One device, one used token; the original certificate is untouched.
    assert_eq!(b.counts(), (1, 1));
    let (_, dev) = b.admin_get("/v1/devices/dup-1").await;
    assert_eq!(dev["certificateId"], first["certificateId"]);
    // The refused token still registers another device.
    let (status, _) = b.register(Some(&tokens[1]), &body("dup-2")).await;
    assert_eq!(status, 201);
    assert_eq!(b.counts(), (2, 2));
}

/// A CSR made by the `openssl` CLI with `-newkey <newkey>` and subject CN = `cn`.
fn openssl_csr(cn: &str, newkey: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", &format!("/CN={cn}")])
        .args(newkey)
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test]
async fn unsupported_key_sizes_and_curves_get_their_own_code() {
    let b = start().await;
    for (what, newkey) in [
        ("RSA-1024", &["-newkey", "rsa:1024"][..]),
        (
            "P-521",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"][..],
        ),
        (
            "secp256k1",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"][..],
        ),
    ] {
        let mut req = body("odd-key");
        req["csr"] = json!(openssl_csr("odd-key", newkey));
        let (status, v) = b.register(Some(&b.token().await), &req).await;
        assert_eq!(
            (status, code(&v)),
            (400, "csr_unsupported_key"),
            "{what}: {v}"
        );
        let message = v["error"]["message"].as_str().expect("message");
        assert!(message.contains("P-256"), "{what}: {message}");
    }
    // RSA-2048 from the same tool is fine.
    let mut req = body("rsa-ok");
    req["csr"] = json!(openssl_csr("rsa-ok", &["-newkey", "rsa:2048"]));
    let (status, v) = b.register(Some(&b.token().await), &req).await;
    assert_eq!(status, 201, "{v}");
}
