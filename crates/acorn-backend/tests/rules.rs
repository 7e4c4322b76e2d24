//! One device-id rule: every id the registration service accepts builds topics, is accepted
//! by the certificate store and by the device CA, and every id one of them refuses, all
//! refuse.

use acorn_backend::{fields, KeyType, LocalCa};
use proptest::prelude::*;

fn verdicts(id: &str) -> [bool; 4] {
    [
        fields::device_id(id).is_ok(),
        acorn_mqtt::Topics::new(id).is_ok(),
        acorn_mqtt::check_device_id(id).is_ok(),
        acorn_certs::is_valid_device_id(id),
    ]
}

#[test]
fn hand_picked_ids_get_one_verdict_everywhere() {
    for id in [
        "acorn-0001",
        "A_b-9",
        &"x".repeat(128),
        "",
        &"x".repeat(129),
        "acorn.01",
        "service:backend",
        "a/b",
        "a+b",
        "a#",
        "dev ice",
        "é",
    ] {
        let v = verdicts(id);
        assert!(v.iter().all(|ok| *ok == v[0]), "{id:?}: {v:?}");
    }
}

proptest! {
    #[test]
    fn generated_ids_get_one_verdict_everywhere(id in "[A-Za-z0-9_.:/ +#é-]{0,130}") {
        let v = verdicts(&id);
        prop_assert!(v.iter().all(|ok| *ok == v[0]), "{:?}: {:?}", id, v);
    }
}

#[test]
fn the_device_ca_signs_exactly_the_ids_registration_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = LocalCa::create(dir.path()).expect("ca");
    for id in ["acorn-0001", "acorn.01", "service:backend", ""] {
        assert_eq!(
            ca.issue_with_new_key(id, KeyType::P256).is_ok(),
            fields::device_id(id).is_ok(),
            "{id:?}"
        );
    }
}
