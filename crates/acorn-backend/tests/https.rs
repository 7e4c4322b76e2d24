//! The API over HTTPS (`BackendConfig::tls`): trusted through the CA, refused without it.

use acorn_test_support::backend as common;

use std::time::Duration;

use common::{body, start_with};
use serde_json::{json, Value};

#[tokio::test]
async fn the_api_serves_https_with_the_local_server_certificate() {
    let b = start_with(|c| c.tls = true).await;
    let url = b.handle.base_url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = reqwest::Certificate::from_pem(b.handle.ca_certificate_pem().as_bytes()).expect("ca");
    let trusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // Mint a token and register with a CSR, over HTTPS to 127.0.0.1 (an IP SAN).
    let resp = trusting
        .post(format!("{url}/v1/tokens"))
        .bearer_auth(b.admin())
        .json(&json!({}))
        .send()
        .await
        .expect("tokens over https");
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.expect("json");
    let token = v["tokens"][0]["token"].as_str().expect("token").to_owned();
    let mut req = body("tls-dev");
    req["csr"] = json!(common::csr("tls-dev").1);
    let resp = trusting
        .post(format!("{url}/v1/devices/register"))
        .bearer_auth(&token)
        .json(&req)
        .send()
        .await
        .expect("register over https");
    assert_eq!(resp.status(), 201);
    // "localhost" is a DNS SAN of the same certificate.
    let local = url.replace("127.0.0.1", "localhost");
    let resp = trusting
        .get(format!("{local}/v1/health"))
        .send()
        .await
        .expect("health via localhost");
    assert_eq!(resp.status(), 200);

    // A client that does not trust the local CA is refused, and plain HTTP gets no answer.
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    assert!(stranger
        .get(format!("{url}/v1/health"))
        .send()
        .await
        .is_err());
    let plain = url.replace("https://", "http://");
    assert!(common::client()
        .get(format!("{plain}/v1/health"))
        .send()
        .await
        .is_err());
    // The failed handshakes did not disturb the server.
    let resp = trusting
        .get(format!("{url}/v1/health"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(resp.status(), 200);
    b.handle.shutdown().await.expect("shutdown");
}
