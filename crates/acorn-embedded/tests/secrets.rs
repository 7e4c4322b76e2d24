//! One secret type for the whole device path: every type that holds a private key, an NVS key
//! or a token keeps it in `secrecy`'s types, prints none of it in Debug, cannot be compared,
//! and is read through one trait, `secrecy::ExposeSecret`.

use acorn_api::RegisterResponse;
use acorn_certs::{DeviceCertificates, PrivateKey, PrivateKeyDer};
use acorn_embedded::register::{BackendUrl, RegisterConfig};
use acorn_nvs::{NvsKey, NvsKeys};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

/// Fails to compile when `$t` implements `PartialEq` (the method is then ambiguous between
/// the two blanket impls); the trick `static_assertions::assert_not_impl_any!` uses.
macro_rules! assert_not_partial_eq {
    ($($t:ty),+ $(,)?) => {{
        trait AmbiguousIfPartialEq<A> {
            fn some_item() {}
        }
        impl<T: ?Sized> AmbiguousIfPartialEq<()> for T {}
        #[allow(dead_code)]
        struct Invalid;
        impl<T: ?Sized + PartialEq> AmbiguousIfPartialEq<Invalid> for T {}
        $(let _ = <$t as AmbiguousIfPartialEq<_>>::some_item;)+
    }};
}

/// Reads any secret the one way there is; the test compiles only if every secret type
/// implements this one trait.
fn exposed<T: ?Sized, S: ExposeSecret<T>>(secret: &S) -> &T {
    secret.expose_secret()
}

/// The same trait under each crate's re-export: these compile only if they are one trait.
fn through_certs<S: acorn_certs::ExposeSecret<[u8]>>(secret: &S) -> &[u8] {
    exposed(secret)
}
fn through_nvs<S: acorn_nvs::ExposeSecret<[u8; 32]>>(secret: &S) -> &[u8; 32] {
    exposed(secret)
}
fn through_backend<S: acorn_backend::ExposeSecret<str>>(secret: &S) -> &str {
    exposed(secret)
}

const MARKER: &str = "MARKER-0f1e2d3c4b5a";

/// A P-256 key as PKCS#8 PEM, made fresh for the test.
fn p256_pem() -> String {
    rcgen::KeyPair::generate().unwrap().serialize_pem()
}

/// `text` shows none of `bytes`: neither as text nor as a Debug list of byte values.
fn assert_hides(text: &str, bytes: &[u8]) {
    if let Ok(s) = std::str::from_utf8(bytes) {
        for line in s.lines().filter(|l| l.len() >= 16) {
            assert!(!text.contains(line), "{text}");
        }
    }
    let window = &bytes[..bytes.len().min(12)];
    let listed = format!("{window:?}");
    assert!(!text.contains(listed.trim_matches(['[', ']'])), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
}

#[test]
fn secret_types_cannot_be_compared() {
    assert_not_partial_eq!(
        PrivateKey,
        PrivateKeyDer,
        NvsKey,
        NvsKeys,
        SecretSlice<u8>,
        SecretString,
        RegisterConfig,
        RegisterResponse,
    );
}

#[test]
fn a_private_key_and_its_der_are_read_through_the_one_trait_and_never_printed() {
    let pem = format!("{MARKER}\n{}", p256_pem());
    let key = PrivateKey::new(pem.clone().into_bytes());
    assert_eq!(through_certs(&key), pem.as_bytes());
    assert_hides(&format!("{key:?}"), pem.as_bytes());

    let certs = DeviceCertificates {
        device_certificate: b"not needed here".to_vec(),
        private_key: PrivateKey::from_slice(p256_pem().as_bytes()),
        iot_endpoint: "localhost".into(),
        device_id: "acorn-0001".into(),
    };
    let der = certs.private_key_der().unwrap();
    assert_hides(&format!("{der:?}"), through_certs(&der));
    assert_hides(&format!("{certs:?}"), through_certs(&certs.private_key));
    assert_hides(&format!("{:?}", certs.clone()), through_certs(&der));
}

#[test]
fn nvs_keys_are_read_through_the_one_trait_and_never_printed() {
    let keys = NvsKeys::new([0xA7; 32], [0x5C; 32]);
    assert_eq!(through_nvs(keys.data_key()), &[0xA7; 32]);
    assert_eq!(through_nvs(keys.clone().tweak_key()), &[0x5C; 32]);
    let text = format!("{keys:?}");
    assert_hides(&text, &[0xA7; 32]);
    assert_hides(&text, &[0x5C; 32]);
    // The partition image carries the keys: the round trip reads them back unchanged.
    let back = NvsKeys::from_partition(&keys.to_partition()).unwrap();
    assert_eq!(exposed(back.data_key()), exposed(keys.data_key()));
}

#[test]
fn tokens_and_server_made_keys_are_read_through_the_one_trait_and_never_printed() {
    let token = format!("tok-{MARKER}");
    let config = RegisterConfig {
        backend: BackendUrl::parse("http://localhost:8080").unwrap(),
        token: SecretString::from(token.clone()),
        device_id: "acorn-0001".into(),
        serial_number: "SN".into(),
        mac_address: "AA:BB:CC:DD:EE:FF".into(),
        firmware_version: "1.0.0".into(),
    };
    assert_eq!(through_backend(&config.token), token);
    assert_hides(&format!("{config:?}"), token.as_bytes());

    // The backend sends a server-made key in the answer; it is a secret on both sides.
    let pem = format!("{MARKER}\n{}", p256_pem());
    let answer = RegisterResponse {
        device_id: "acorn-0001".into(),
        certificate_pem: "cert".into(),
        private_key_pem: Some(SecretString::from(pem.clone())),
        certificate_id: "id".into(),
        iot_endpoint: "localhost".into(),
        ca_certificate_pem: "ca".into(),
    };
    assert_hides(&format!("{answer:?}"), pem.as_bytes());
    // The JSON round trip (the wire carries the PEM itself) is `acorn-api/tests/wire.rs`.
    assert_eq!(exposed(answer.private_key_pem.as_ref().unwrap()), pem);
}
