//! The independent reader: partitions written by the acorn-nvs engine (with overwrites and
//! garbage collection) read back with the `esp-nvs` crate.
#![cfg(feature = "esp-nvs")]

use acorn_nvs::{MemFlash, Nvs};
use esp_nvs::Key;

#[test]
fn esp_nvs_reads_what_the_engine_wrote() {
    let size = 0x8000;
    let mut nvs = Nvs::open(MemFlash::new(size), 0, size as u32).unwrap();
    let ns = nvs.namespace("mqtt_certs").unwrap();
    let big: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    // Overwrite enough to force garbage collection in 8 pages.
    for round in 0..40u32 {
        nvs.set_blob(ns, "device_cert", &big[..(round as usize * 97) % 9000 + 1])
            .unwrap();
        nvs.set::<u32>(ns, "round", round).unwrap();
    }
    nvs.set_blob(ns, "device_cert", &big).unwrap();
    nvs.set_str(ns, "iot_endpoint", "abc-ats.iot.us-east-1.amazonaws.com")
        .unwrap();
    nvs.set::<i64>(ns, "i64", i64::MIN).unwrap();
    nvs.set::<u8>(ns, "cert_valid", 1).unwrap();
    let image = nvs.release().into_bytes();

    let mut peer = esp_nvs::Nvs::new(0, size, MemFlash::from_bytes(image)).unwrap();
    let nsk = Key::from_str("mqtt_certs");
    let blob: Vec<u8> = peer.get(&nsk, &Key::from_str("device_cert")).unwrap();
    assert_eq!(blob, big);
    let endpoint: String = peer.get(&nsk, &Key::from_str("iot_endpoint")).unwrap();
    assert_eq!(endpoint, "abc-ats.iot.us-east-1.amazonaws.com");
    let round: u32 = peer.get(&nsk, &Key::from_str("round")).unwrap();
    assert_eq!(round, 39);
    let min: i64 = peer.get(&nsk, &Key::from_str("i64")).unwrap();
    assert_eq!(min, i64::MIN);
    let valid: u8 = peer.get(&nsk, &Key::from_str("cert_valid")).unwrap();
    assert_eq!(valid, 1);
}
