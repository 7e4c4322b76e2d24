//! The certificate store on real NVS: images made by ESP-IDF's generator (certificate as a
//! string and as a binary row) load through it, and a power cut at every flash operation of an
//! import over an existing identity never leaves a certificate with a foreign key.

mod common;

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{
    validate, CertStore, CertificateValidation, DeviceCertificates, ExposeSecret, PrivateKey,
    ValidationOptions,
};
use acorn_nvs::{MemFlash, Mode, Nvs, PowerCut};

const NOW: u64 = 1_790_000_000; // 2026-09
const ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com";

fn identity(device_id: &str) -> DeviceCertificates {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![device_id.to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let cert = params.signed_by(&key, &ca).unwrap();
    DeviceCertificates {
        device_certificate: cert.pem().into_bytes(),
        private_key: PrivateKey::new(key.serialize_pem().into_bytes()),
        iot_endpoint: ENDPOINT.into(),
        device_id: device_id.into(),
    }
}

fn load(bytes: Vec<u8>) -> Result<DeviceCertificates, CertificateValidation> {
    let size = bytes.len() as u32;
    let mut nvs =
        Nvs::open_with(MemFlash::from_bytes(bytes), 0, size, None, Mode::ReadWrite).expect("mount");
    let mut store = CertStore::new(NvsCertKv::new(&mut nvs));
    store
        .load(NOW)
        .map(|l| l.certificates)
        .map_err(|e| e.verdict())
}

#[test]
fn generator_images_with_string_or_binary_certificates_load() {
    let certs = identity("acorn-0001");
    let fp = validate(&certs, &ValidationOptions::new(NOW))
        .fingerprint
        .expect("fingerprint");
    for encoding in ["string", "binary"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("cert.pem"), &certs.device_certificate).unwrap();
        std::fs::write(d.join("key.pem"), certs.private_key.expose_secret()).unwrap();
        let meta = format!(
            r#"{{"stored_at":{NOW},"device_id":"acorn-0001","certificate_fingerprint":"{fp}","iot_endpoint":"{ENDPOINT}","is_valid":true,"last_used":null,"validation_attempts":0}}"#
        );
        std::fs::write(d.join("meta.json"), meta).unwrap();
        std::fs::write(
            d.join("id.csv"),
            format!(
                "key,type,encoding,value\nmqtt_certs,namespace,,\ndevice_cert,file,{encoding},cert.pem\nprivate_key,file,{encoding},key.pem\niot_endpoint,data,string,{ENDPOINT}\ncert_meta,file,string,meta.json\ncert_valid,data,u8,1\n"
            ),
        )
        .unwrap();
        common::esp_gen(d, &["generate", "id.csv", "id.bin", "0x6000"]);
        let loaded = load(std::fs::read(d.join("id.bin")).unwrap()).expect("identity loads");
        assert_eq!(loaded, certs, "{encoding} rows");
    }
}

#[test]
fn power_cut_during_import_never_pairs_a_certificate_with_a_foreign_key() {
    let old = identity("acorn-0001");
    let new = identity("acorn-0001");
    let size = 0x6000u32;
    let mut nvs = Nvs::open(MemFlash::new(size as usize), 0, size).unwrap();
    CertStore::new(NvsCertKv::new(&mut nvs))
        .store(&old, NOW)
        .unwrap();
    let base = nvs.release().into_bytes();

    // Count the flash operations of a full import.
    let mut flash = MemFlash::from_bytes(base.clone());
    flash.cut_power(PowerCut {
        at_op: usize::MAX,
        torn_bytes: 0,
    });
    let mut nvs = Nvs::open(flash, 0, size).unwrap();
    CertStore::new(NvsCertKv::new(&mut nvs))
        .store(&new, NOW)
        .unwrap();
    let total = nvs.release().ops();
    assert!(total > 30, "{total} operations");

    let (mut saw_old, mut saw_new, mut saw_missing) = (0, 0, 0);
    for at_op in 0..total {
        for torn_bytes in [0, 5] {
            let mut flash = MemFlash::from_bytes(base.clone());
            flash.cut_power(PowerCut { at_op, torn_bytes });
            let mut nvs = Nvs::open(flash, 0, size).unwrap();
            let result = CertStore::new(NvsCertKv::new(&mut nvs)).store(&new, NOW);
            assert!(
                result.is_err(),
                "the cut at {at_op} must interrupt the import"
            );
            match load(nvs.release().into_bytes()) {
                Ok(c) if c == old => saw_old += 1,
                Ok(c) if c == new => saw_new += 1,
                Ok(_) => panic!("cut at {at_op}: loaded a set that is neither old nor new"),
                Err(CertificateValidation::Missing) => saw_missing += 1,
                Err(other) => panic!(
                    "cut at {at_op} (torn {torn_bytes}): load gave {other:?}, not old/new/missing"
                ),
            }
        }
    }
    eprintln!("import cut at each of {total} flash operations: old {saw_old}, new {saw_new}, missing {saw_missing}");
    assert!(saw_old > 0 && saw_missing > 0);
}
