//! The certificate store (acorn-certs `CertStore`) loading from arbitrary key-value content,
//! over the in-memory `CertKv` and over a real NVS partition (`NvsCertKv`), and storing a new
//! set over it with a power cut after a chosen number of writes.
//!
//! Input: the time (8 bytes, Unix seconds, little-endian), a flags byte (bit 0 custom
//! endpoints allowed, bit 1 also load through NVS), the number of writes before the power cut
//! of the store step, an entry count, then per entry a key selector byte (0..=4 the store's
//! five keys, else a key named by the next field), a type byte (blob, string or u8) and a value
//! field; then the new set to store: certificate, private key, endpoint, device id fields.
//!
//! Properties:
//! - never a panic; an error is never reported as `Valid`; a load is deterministic;
//! - a loaded identity is exactly what is stored under the store's keys, its device id is the
//!   metadata's, its certificate's fingerprint and endpoint are the metadata's, `cert_valid`
//!   is 1, and the certificate and key are a pair (independent oracle, see `acorn_fuzz::oracle`);
//! - a store cut after 0 writes changes nothing; cut after 1 to 5 writes, nothing loads
//!   (`Missing`); a complete store loads back exactly the set stored; a refused store writes
//!   nothing.
#![no_main]

use std::collections::BTreeMap;

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::ExposeSecret as _;
use acorn_certs::{
    CertKv, CertStore, CertificateMetadata, CertificateValidation, DeviceCertificates, MemoryKv,
    MemoryValue, PrivateKey, StoreError, KEY_CERT_META, KEY_CERT_VALID, KEY_DEVICE_CERT,
    KEY_IOT_ENDPOINT, KEY_PRIVATE_KEY, NAMESPACE,
};
use acorn_fuzz::{oracle, Fields};
use acorn_nvs::{MemFlash, Nvs};
use libfuzzer_sys::fuzz_target;

const KEYS: [&str; 5] = [
    KEY_DEVICE_CERT,
    KEY_PRIVATE_KEY,
    KEY_IOT_ENDPOINT,
    KEY_CERT_META,
    KEY_CERT_VALID,
];

/// The writes of a complete `store()`.
const STORE_WRITES: usize = 6;

/// A value as the store reads it back: bytes (a string without its NUL) or a u8.
fn stored_bytes(values: &BTreeMap<String, MemoryValue>, key: &str) -> Option<Vec<u8>> {
    match values.get(key)? {
        MemoryValue::Blob(v) => Some(v.clone()),
        MemoryValue::Str(v) => Some(v.strip_suffix(&[0]).unwrap_or(v).to_vec()),
        MemoryValue::U8(_) => None,
    }
}

/// What a load gave, comparable.
#[derive(Debug, PartialEq)]
enum Outcome {
    Loaded(DeviceCertificates),
    Refused(CertificateValidation),
}

fn outcome<E>(result: Result<acorn_certs::LoadedIdentity, StoreError<E>>) -> Outcome {
    match result {
        Ok(identity) => Outcome::Loaded(identity.certificates),
        Err(e) => {
            let verdict = e.verdict();
            assert_ne!(
                verdict,
                CertificateValidation::Valid,
                "an error with a Valid verdict"
            );
            Outcome::Refused(verdict)
        }
    }
}

/// Checks a loaded identity against the content it was loaded from (as the store reads it).
fn check_loaded(
    certs: &DeviceCertificates,
    read: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    cert_valid: Option<u8>,
    context: &str,
) {
    assert_eq!(
        cert_valid,
        Some(1),
        "{context}: loaded without cert_valid = 1"
    );
    assert_eq!(
        read(KEY_DEVICE_CERT).as_deref(),
        Some(&certs.device_certificate[..]),
        "{context}: certificate not the stored one"
    );
    assert_eq!(
        read(KEY_PRIVATE_KEY).as_deref(),
        Some(certs.private_key.expose_secret()),
        "{context}: key not the stored one"
    );
    assert_eq!(
        read(KEY_IOT_ENDPOINT).as_deref(),
        Some(certs.iot_endpoint.as_bytes()),
        "{context}: endpoint not the stored one"
    );
    let meta: CertificateMetadata =
        serde_json::from_slice(&read(KEY_CERT_META).expect("metadata")).expect("metadata JSON");
    assert_eq!(meta.device_id, certs.device_id, "{context}: device id");
    assert_eq!(meta.iot_endpoint, certs.iot_endpoint, "{context}: endpoint");
    assert!(
        oracle::is_device_id(&certs.device_id),
        "{context}: device id"
    );
    let der = oracle::certificate_der(&certs.device_certificate)
        .unwrap_or_else(|| panic!("{context}: the oracle cannot decode the certificate"));
    assert!(
        oracle::fingerprint(&der).eq_ignore_ascii_case(&meta.certificate_fingerprint),
        "{context}: fingerprint"
    );
    oracle::assert_pair(
        &certs.device_certificate,
        certs.private_key.expose_secret(),
        context,
    );
}

fn load_memory(values: &BTreeMap<String, MemoryValue>, now: u64, custom: bool) -> Outcome {
    let mut store =
        CertStore::new(MemoryKv::from_values(values.clone())).allow_custom_endpoint(custom);
    let result = outcome(store.load(now));
    if let Outcome::Loaded(certs) = &result {
        let cert_valid = match values.get(KEY_CERT_VALID) {
            Some(MemoryValue::U8(v)) => Some(*v),
            _ => None,
        };
        check_loaded(
            certs,
            &mut |k| stored_bytes(values, k),
            cert_valid,
            "memory load",
        );
        // The load counted itself in the metadata.
        let after = store.metadata().expect("metadata").expect("present");
        assert!(after.validation_attempts >= 1);
    }
    result
}

/// The same content on an NVS partition (values NVS cannot hold are left out).
fn load_nvs(values: &BTreeMap<String, MemoryValue>, now: u64, custom: bool) {
    let size = 6 * 4096;
    let Ok(mut nvs) = Nvs::open(MemFlash::new(size), 0, size as u32) else {
        panic!("a blank partition mounts");
    };
    let ns = nvs.namespace(NAMESPACE).expect("namespace");
    for (key, value) in values {
        let _ = match value {
            MemoryValue::Blob(v) => nvs.set_blob(ns, key, v),
            MemoryValue::Str(v) => match std::str::from_utf8(v.strip_suffix(&[0]).unwrap_or(v)) {
                Ok(s) => nvs.set_str(ns, key, s),
                Err(_) => continue,
            },
            MemoryValue::U8(v) => nvs.set::<u8>(ns, key, *v),
        };
    }
    let cert_valid = nvs.get::<u8>(ns, KEY_CERT_VALID).ok().flatten();
    let mut store = CertStore::new(NvsCertKv::new(&mut nvs)).allow_custom_endpoint(custom);
    if let Outcome::Loaded(certs) = outcome(store.load(now)) {
        let mut read = |key: &str| -> Option<Vec<u8>> {
            let mut kv = NvsCertKv::new(&mut nvs);
            let len = kv.stored_len(key).ok()??;
            let mut buf = vec![0; len];
            let n = kv.read(key, &mut buf).ok()??;
            buf.truncate(n);
            Some(buf)
        };
        check_loaded(&certs, &mut read, cert_valid, "NVS load");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut f = Fields::new(data);
    let now = f.u64();
    let flags = f.byte();
    let custom = flags & 1 != 0;
    let cut_after = usize::from(f.byte() % 8);
    let mut values = BTreeMap::new();
    for _ in 0..f.byte() % 12 {
        let selector = f.byte();
        let kind = f.byte();
        let key = match KEYS.get(usize::from(selector)) {
            Some(k) => (*k).to_string(),
            None => f.text().chars().take(15).collect(),
        };
        let value = f.field();
        let value = match kind % 3 {
            0 => MemoryValue::Blob(value.to_vec()),
            1 => MemoryValue::Str(value.to_vec()),
            _ => MemoryValue::U8(value.first().copied().unwrap_or(1)),
        };
        values.insert(key, value);
    }
    let new = DeviceCertificates {
        device_certificate: f.field().to_vec(),
        private_key: PrivateKey::from_slice(f.field()),
        iot_endpoint: f.text(),
        device_id: f.text(),
    };

    let before = load_memory(&values, now, custom);
    assert_eq!(
        before,
        load_memory(&values, now, custom),
        "load is not deterministic"
    );
    if flags & 2 != 0 {
        load_nvs(&values, now, custom);
    }

    // Store a new set over the content, with the power cut after `cut_after` writes.
    let mut kv = MemoryKv::from_values(values.clone());
    kv.cut_power_after(cut_after);
    let mut store = CertStore::new(kv).allow_custom_endpoint(custom);
    let stored = store.store(&new, now);
    let after_values = store.into_inner().values().clone();
    let after = load_memory(&after_values, now, custom);
    match stored {
        Ok(_) => {
            assert!(cut_after >= STORE_WRITES);
            assert_eq!(
                after,
                Outcome::Loaded(new),
                "a stored set does not load back"
            );
        }
        Err(StoreError::Rejected { .. }) => {
            assert_eq!(after_values, values, "a refused store wrote something");
        }
        Err(StoreError::Kv { .. }) if cut_after == 0 => {
            assert_eq!(
                after_values, values,
                "a store cut before its first write changed something"
            );
            assert_eq!(after, before);
        }
        Err(StoreError::Kv { .. }) => {
            assert!(cut_after < STORE_WRITES);
            assert_eq!(
                after,
                Outcome::Refused(CertificateValidation::Missing),
                "an interrupted store left something loadable"
            );
        }
        Err(e) => panic!("store failed unexpectedly: {e}"),
    }
});
