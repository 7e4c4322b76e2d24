//! The certificate store: round trips, NVS strings and blobs, exact buffers, corruption, and
//! power cuts at every write.

mod common;

use acorn_certs::{
    CertKv, CertStore, CertificateMetadata, CertificateValidation, DeviceCertificates,
    ExposeSecret, MemoryKv, MemoryKvError, MemoryValue, Problem, StoreError, KEY_CERT_META,
    KEY_CERT_VALID, KEY_DEVICE_CERT, KEY_IOT_ENDPOINT, KEY_PRIVATE_KEY,
};
use common::*;

fn stored(set: &DeviceCertificates) -> MemoryKv {
    let mut store = CertStore::new(MemoryKv::new());
    store.store(set, NOW).expect("store");
    store.into_inner()
}

#[test]
fn store_then_load_round_trips_and_records_use() {
    for set in [aws_set(), ec_set()] {
        let mut store = CertStore::new(MemoryKv::new());
        let report = store.store(&set, NOW - DAY).expect("store");
        assert!(report.is_valid());
        assert_eq!(store.validity_flag().unwrap(), Some(true));
        let meta = store.metadata().unwrap().unwrap();
        assert_eq!(meta.stored_at, NOW - DAY);
        assert_eq!(meta.validation_attempts, 0);
        assert_eq!(meta.last_used, None);
        assert_eq!(
            Some(meta.certificate_fingerprint.clone()),
            report.fingerprint
        );

        let loaded = store.load(NOW).expect("load");
        assert_eq!(loaded.certificates, set);
        assert_eq!(loaded.metadata.validation_attempts, 1);
        assert_eq!(loaded.metadata.last_used, Some(NOW));
        assert!(loaded.metadata.is_valid);
        let again = store.load(NOW + 60).expect("load again");
        assert_eq!(again.metadata.validation_attempts, 2);
        assert_eq!(again.metadata.last_used, Some(NOW + 60));
        assert_eq!(store.metadata().unwrap().unwrap(), again.metadata);
    }
}

#[test]
fn metadata_json_uses_the_seed_field_names() {
    let mut kv = stored(&aws_set());
    let len = kv.stored_len(KEY_CERT_META).unwrap().unwrap();
    let mut buf = vec![0; len];
    kv.read(KEY_CERT_META, &mut buf).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "certificate_fingerprint",
            "device_id",
            "iot_endpoint",
            "is_valid",
            "last_used",
            "stored_at",
            "validation_attempts"
        ]
    );
}

#[test]
fn load_with_unsynced_clock_works_but_does_not_record_last_used() {
    let mut store = CertStore::new(stored(&aws_set()));
    let loaded = store.load(5).expect("load at 1970");
    assert_eq!(loaded.report.warnings(), vec![Problem::ClockNotSynced]);
    assert_eq!(loaded.metadata.last_used, None);
    assert_eq!(loaded.metadata.validation_attempts, 1);
}

#[test]
fn values_stored_as_nvs_strings_load_too() {
    let set = aws_set();
    let blobs = stored(&set);
    // Rebuild the namespace with every text value as an NVS string (with its NUL).
    let mut kv = MemoryKv::new();
    for (key, value) in blobs.values() {
        match value {
            MemoryValue::Blob(bytes) => kv.insert_string(key, std::str::from_utf8(bytes).unwrap()),
            other => kv.insert(key, other.clone()),
        }
    }
    let mut store = CertStore::new(kv);
    let loaded = store.load(NOW).expect("load strings");
    assert_eq!(loaded.certificates, set);
}

/// A KV that records the buffer sizes `load()` reads with.
struct Recording {
    inner: MemoryKv,
    reads: Vec<(String, usize, usize)>,
}

impl CertKv for Recording {
    type Error = MemoryKvError;
    fn stored_len(&mut self, key: &str) -> Result<Option<usize>, Self::Error> {
        self.inner.stored_len(key)
    }
    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        let stored = self.inner.stored_len(key)?.unwrap_or(0);
        self.reads.push((key.to_string(), buf.len(), stored));
        self.inner.read(key, buf)
    }
    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), Self::Error> {
        self.inner.write(key, value)
    }
    fn read_u8(&mut self, key: &str) -> Result<Option<u8>, Self::Error> {
        self.inner.read_u8(key)
    }
    fn write_u8(&mut self, key: &str, value: u8) -> Result<(), Self::Error> {
        self.inner.write_u8(key, value)
    }
    fn erase(&mut self, key: &str) -> Result<(), Self::Error> {
        self.inner.erase(key)
    }
}

#[test]
fn load_sizes_every_buffer_exactly_from_the_stored_length() {
    let set = aws_set();
    let mut store = CertStore::new(Recording {
        inner: stored(&set),
        reads: Vec::new(),
    });
    store.load(NOW).expect("load");
    let reads = &store.kv().reads;
    assert_eq!(reads.len(), 4, "{reads:?}");
    for (key, buf, stored) in reads {
        assert_eq!(buf, stored, "buffer for {key}");
    }
    let cert = reads.iter().find(|r| r.0 == KEY_DEVICE_CERT).unwrap();
    assert_eq!(cert.1, set.device_certificate.len());
    let key = reads.iter().find(|r| r.0 == KEY_PRIVATE_KEY).unwrap();
    assert_eq!(key.1, set.private_key.len());
}

#[test]
fn nothing_stored_is_missing() {
    let mut store = CertStore::new(MemoryKv::new());
    let err = store.load(NOW).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Missing {
                key: KEY_CERT_VALID,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.verdict(), CertificateValidation::Missing);
    assert!(err.to_string().contains("provision"), "{err}");
}

#[test]
fn store_rejects_an_invalid_set_and_writes_nothing() {
    let set = DeviceCertificates {
        private_key: acorn_certs::PrivateKey::from_slice(rsa_key(2).pkcs1_pem.as_bytes()),
        ..aws_set()
    };
    let mut store = CertStore::new(MemoryKv::new());
    let err = store.store(&set, NOW).unwrap_err();
    assert!(matches!(err, StoreError::Rejected { .. }), "{err}");
    assert_eq!(err.verdict(), CertificateValidation::InvalidContent);
    assert_eq!(store.kv().writes(), 0);
    assert!(store.kv().values().is_empty());
    let text = err.to_string();
    assert!(text.contains("does not belong"), "{text}");
    assert!(!text.contains("PRIVATE KEY"));
}

#[test]
fn custom_endpoint_needs_permission() {
    let set = DeviceCertificates {
        iot_endpoint: "localhost".into(),
        ..ec_set()
    };
    let mut strict = CertStore::new(MemoryKv::new());
    assert!(strict.store(&set, NOW).is_err());
    let mut relaxed = CertStore::new(MemoryKv::new()).allow_custom_endpoint(true);
    relaxed.store(&set, NOW).expect("store custom");
    relaxed.load(NOW).expect("load custom");
}

#[test]
fn replaced_or_damaged_certificate_is_corrupted() {
    let set = aws_set();
    // Another certificate for the same key: valid on its own, but not the one recorded.
    let reissued = device_cert_valid(&rsa_key(1).key_pair, rsa_ca(), NOW - DAY, NOW + 100 * DAY);
    let mut kv = stored(&set);
    kv.insert(
        KEY_DEVICE_CERT,
        MemoryValue::Blob(reissued.pem().into_bytes()),
    );
    let err = CertStore::new(kv).load(NOW).unwrap_err();
    assert_eq!(err.verdict(), CertificateValidation::Corrupted, "{err}");
    // One damaged byte in the stored PEM.
    let mut kv = stored(&set);
    let mut pem = set.device_certificate.clone();
    pem[200] = if pem[200] == b'A' { b'B' } else { b'A' };
    kv.insert(KEY_DEVICE_CERT, MemoryValue::Blob(pem));
    let mut store = CertStore::new(kv);
    let err = store.load(NOW).unwrap_err();
    assert_eq!(err.verdict(), CertificateValidation::Corrupted, "{err}");
    // The failed attempt is recorded.
    let meta = store.metadata().unwrap().unwrap();
    assert!(!meta.is_valid);
    assert_eq!(meta.validation_attempts, 1);
    // Damaged metadata JSON, and an endpoint that disagrees with the metadata.
    let mut kv = stored(&set);
    kv.insert(
        KEY_CERT_META,
        MemoryValue::Blob(b"{\"stored_at\":".to_vec()),
    );
    let err = CertStore::new(kv).load(NOW).unwrap_err();
    assert_eq!(err.verdict(), CertificateValidation::Corrupted, "{err}");
    let mut kv = stored(&set);
    let other = "zzzzzzzzzzzzzz-ats.iot.eu-west-1.amazonaws.com";
    kv.insert(
        KEY_IOT_ENDPOINT,
        MemoryValue::Blob(other.as_bytes().to_vec()),
    );
    let err = CertStore::new(kv).load(NOW).unwrap_err();
    assert_eq!(err.verdict(), CertificateValidation::Corrupted, "{err}");
}

#[test]
fn erase_leaves_nothing_loadable() {
    let mut store = CertStore::new(stored(&aws_set()));
    store.erase().unwrap();
    assert!(store.kv().values().is_empty());
    assert_eq!(
        store.load(NOW).unwrap_err().verdict(),
        CertificateValidation::Missing
    );
}

/// Power cut after each write of a `store()` over an existing identity: afterwards `load()`
/// returns the old identity, the new one, or an error — never a certificate with another key.
#[test]
fn power_cut_at_every_write_never_loads_a_mismatched_pair() {
    let old = aws_set();
    let new = ec_set();
    let base = stored(&old);
    let mut full = base.clone();
    CertStore::new(&mut full).store(&new, NOW).unwrap();
    let total = full.writes() - base.writes();
    assert_eq!(total, 6);
    let mut outcomes = Vec::new();
    for cut in 0..=total {
        let mut kv = base.clone();
        kv.cut_power_after(cut);
        let result = CertStore::new(&mut kv).store(&new, NOW);
        assert_eq!(result.is_ok(), cut == total, "cut after {cut}");
        // Power comes back: whatever reached the store is all there is.
        let mut store = CertStore::new(MemoryKv::from_values(kv.values().clone()));
        let outcome = match store.load(NOW) {
            Ok(loaded) => {
                let c = &loaded.certificates;
                let pair = (&c.device_certificate, c.private_key.expose_secret());
                if pair == (&old.device_certificate, old.private_key.expose_secret()) {
                    "old"
                } else if pair == (&new.device_certificate, new.private_key.expose_secret()) {
                    assert_eq!(c.device_id, new.device_id);
                    "new"
                } else {
                    panic!("cut after {cut}: loaded a mixed pair");
                }
            }
            Err(err) => {
                assert!(
                    matches!(
                        err.verdict(),
                        CertificateValidation::Missing | CertificateValidation::Corrupted
                    ),
                    "cut after {cut}: {err}"
                );
                "none"
            }
        };
        outcomes.push(outcome);
    }
    assert_eq!(outcomes.first(), Some(&"old"));
    assert_eq!(outcomes.last(), Some(&"new"));
    assert!(
        outcomes[1..total].iter().all(|o| *o == "none"),
        "{outcomes:?}"
    );
}

/// Without the `cert_valid` flag (an older image, or a bug), the key-match and fingerprint
/// checks still stop a mixed pair: write every subset of the new values over the old ones.
#[test]
fn any_mix_of_old_and_new_values_never_loads_a_mismatched_pair() {
    let old = aws_set();
    let new = ec_set();
    let old_kv = stored(&old);
    let new_kv = stored(&new);
    let keys = [
        KEY_DEVICE_CERT,
        KEY_PRIVATE_KEY,
        KEY_IOT_ENDPOINT,
        KEY_CERT_META,
    ];
    for mask in 0u32..16 {
        let mut kv = old_kv.clone();
        for (i, key) in keys.iter().enumerate() {
            if mask & (1 << i) != 0 {
                kv.insert(key, new_kv.values()[*key].clone());
            }
        }
        match CertStore::new(kv).load(NOW) {
            Ok(loaded) => {
                let c = loaded.certificates;
                assert!(
                    (c.device_certificate == old.device_certificate
                        && c.private_key.expose_secret() == old.private_key.expose_secret())
                        || (c.device_certificate == new.device_certificate
                            && c.private_key.expose_secret() == new.private_key.expose_secret()),
                    "mask {mask:04b}"
                );
            }
            Err(err) => assert_ne!(err.verdict(), CertificateValidation::Valid),
        }
    }
}

#[test]
fn metadata_round_trips_through_json() {
    let meta = CertificateMetadata {
        stored_at: 1,
        device_id: "d".into(),
        certificate_fingerprint: "ab".into(),
        iot_endpoint: "e".into(),
        is_valid: true,
        last_used: Some(3),
        validation_attempts: 4,
    };
    let json = serde_json::to_string(&meta).unwrap();
    assert_eq!(
        serde_json::from_str::<CertificateMetadata>(&json).unwrap(),
        meta
    );
}

#[test]
fn loaded_material_decodes_to_der_for_tls() {
    use acorn_certs::PrivateKeyFormat;
    let set = aws_set();
    let loaded = CertStore::new(stored(&set)).load(NOW).unwrap();
    let cert = loaded.certificates.certificate_der().unwrap();
    assert_eq!(
        acorn_certs::fingerprint(&cert),
        loaded.metadata.certificate_fingerprint
    );
    let key = loaded.certificates.private_key_der().unwrap();
    assert_eq!(key.format, PrivateKeyFormat::Pkcs1);
    assert_eq!(
        format!("{key:?}"),
        "PrivateKeyDer { format: Pkcs1, der: SecretBox<[u8]>([REDACTED]) }"
    );
    let ec = ec_set().private_key_der().unwrap();
    assert_eq!(ec.format, PrivateKeyFormat::Pkcs8);
    let der_key = DeviceCertificates {
        private_key: acorn_certs::PrivateKey::from_slice(ec.expose_secret()),
        ..ec_set()
    };
    assert_eq!(
        der_key.private_key_der().unwrap().format,
        PrivateKeyFormat::Pkcs8
    );
}

#[test]
fn debug_of_the_store_never_shows_the_key() {
    let set = aws_set();
    let store = CertStore::new(stored(&set));
    let shown = format!("{store:?}");
    let key_text = std::str::from_utf8(set.private_key.expose_secret()).unwrap();
    let secret_line = key_text.lines().nth(4).unwrap();
    assert!(!shown.contains(secret_line), "{shown}");
    // Nor as a list of byte values.
    let bytes = format!("{:?}", &set.private_key.expose_secret()[40..60]);
    assert!(!shown.contains(bytes.trim_matches(['[', ']'])), "{shown}");
    assert!(shown.contains("Blob("), "{shown}");
}

#[test]
fn a_store_that_fails_to_read_is_corrupted_not_missing() {
    let mut kv = stored(&aws_set());
    // A value of the wrong type where the certificate belongs: the read fails.
    kv.insert(KEY_DEVICE_CERT, MemoryValue::U8(1));
    let mut store = CertStore::new(kv);
    let err = store.load(NOW).expect_err("unreadable");
    assert!(matches!(err, StoreError::Kv { .. }), "{err:?}");
    assert_eq!(err.verdict(), CertificateValidation::Corrupted, "{err}");
    // A store that really is empty is Missing.
    let mut empty = CertStore::new(MemoryKv::new());
    let err = empty.load(NOW).expect_err("empty");
    assert_eq!(err.verdict(), CertificateValidation::Missing, "{err}");
}
