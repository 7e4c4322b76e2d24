//! The wire format both sides agree on: field names, optional fields, key type names.

use acorn_api::{ErrorBody, KeyType, RegisterRequest, RegisterResponse};
use secrecy::ExposeSecret;

#[test]
fn request_fields_are_camel_case_and_optional_ones_left_out() {
    let request = RegisterRequest {
        device_id: "acorn-0001".into(),
        serial_number: "SN-1".into(),
        mac_address: "AA:BB:CC:DD:EE:FF".into(),
        firmware_version: "1.0.0".into(),
        csr: None,
        key_type: None,
    };
    assert_eq!(
        serde_json::to_string(&request).unwrap(),
        r#"{"deviceId":"acorn-0001","serialNumber":"SN-1","macAddress":"AA:BB:CC:DD:EE:FF","firmwareVersion":"1.0.0"}"#
    );
}

#[test]
fn response_round_trips_and_debug_hides_the_key() {
    let text = r#"{"deviceId":"d","certificatePem":"C","privateKeyPem":"-----BEGIN PRIVATE KEY-----x","certificateId":"i","iotEndpoint":"e","caCertificatePem":"A"}"#;
    let response: RegisterResponse = serde_json::from_str(text).unwrap();
    assert_eq!(
        response.private_key_pem.as_ref().map(|k| k.expose_secret()),
        Some("-----BEGIN PRIVATE KEY-----x")
    );
    assert!(!format!("{response:?}").contains("BEGIN PRIVATE KEY"));
    let again: serde_json::Value = serde_json::to_value(&response).unwrap();
    assert_eq!(
        again,
        serde_json::from_str::<serde_json::Value>(text).unwrap()
    );
    let without: RegisterResponse = serde_json::from_str(
        r#"{"deviceId":"d","certificatePem":"C","certificateId":"i","iotEndpoint":"e","caCertificatePem":"A"}"#,
    )
    .unwrap();
    assert!(without.private_key_pem.is_none());
}

#[test]
fn key_type_names_parse_back() {
    for k in [KeyType::P256, KeyType::Rsa2048] {
        assert_eq!(KeyType::parse(k.api_name()), Some(k));
        assert_eq!(KeyType::parse(&k.api_name().to_uppercase()), Some(k));
    }
    for bad in ["", "ec", "rsa", "rsa4096", "ed25519"] {
        assert_eq!(KeyType::parse(bad), None, "{bad}");
    }
}

#[test]
fn error_bodies_parse() {
    let e: ErrorBody =
        serde_json::from_str(r#"{"error":{"code":"token_used","message":"m"}}"#).unwrap();
    assert_eq!(e.error.code, "token_used");
}
