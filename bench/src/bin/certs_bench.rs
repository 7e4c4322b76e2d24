//! Certificate benchmark: heap of `CertStore::load()` for an AWS-shaped set (beside the seed's
//! two designs), time to validate a set (beside Python `cryptography` doing the same checks,
//! same run), and `acorn certs provision --batch` for 1,000 devices (beside ESP-IDF's generator
//! making one image per device).
//!
//! Run with `bash bench/run.sh`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use acorn_bench::{measure_heap, median_time, CountingAllocator};
use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{
    validate, CertStore, DeviceCertificates, ExposeSecret, PrivateKey, ValidationOptions,
};
use acorn_nvs::{MemFlash, Nvs};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

const NOW: u64 = 1_790_000_000;
const ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.us-west-2.amazonaws.com";

/// An AWS-shaped set: RSA-2048 PKCS#1 key, certificate signed by an RSA-2048 CA.
fn aws_shaped() -> (String, String) {
    let mut rng = rand::thread_rng();
    let rsa_pair = |rng: &mut rand::rngs::ThreadRng| {
        let key = rsa::RsaPrivateKey::new(rng, 2048).unwrap();
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string();
        (
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap(),
            pkcs1,
        )
    };
    let (ca_key, _) = rsa_pair(&mut rng);
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let (key, pkcs1) = rsa_pair(&mut rng);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "AWS IoT Certificate");
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    (params.signed_by(&key, &ca, &ca_key).unwrap().pem(), pkcs1)
}

fn main() {
    let (cert, key) = aws_shaped();
    let certs = DeviceCertificates {
        device_certificate: cert.clone().into_bytes(),
        private_key: PrivateKey::new(key.clone().into_bytes()),
        iot_endpoint: ENDPOINT.into(),
        device_id: "acorn-0001".into(),
    };
    let mut nvs = Nvs::open(MemFlash::new(0x6000), 0, 0x6000).unwrap();
    CertStore::new(NvsCertKv::new(&mut nvs))
        .store(&certs, NOW)
        .unwrap();
    let stored = cert.len() + key.len() + ENDPOINT.len();
    let (loaded, heap) =
        measure_heap(|| CertStore::new(NvsCertKv::new(&mut nvs)).load(NOW).unwrap());
    let identity = loaded.certificates.device_certificate.len()
        + loaded.certificates.private_key.expose_secret().len()
        + loaded.certificates.iot_endpoint.len();
    drop(loaded);
    println!("## Certificate store: heap of `load()` for an AWS-shaped set\n");
    println!(
        "Certificate PEM {} B, RSA-2048 PKCS#1 key {} B, endpoint {} B: {stored} stored bytes.\n",
        cert.len(),
        key.len(),
        ENDPOINT.len()
    );
    println!("| design | identity buffers | heap peak of the whole load |");
    println!("|---|---|---|");
    println!("| seed, fixed buffers | 4,352 B | — |");
    println!("| seed, \"optimized\" `max(len, 1500)` | 3,456 B | — |");
    println!(
        "| acorn `CertStore::load()` on NVS | {identity} B (= stored bytes) | {} B (with validation, metadata JSON and its rewrite) |",
        heap.peak
    );

    let options = ValidationOptions::new(NOW);
    let acorn_t = median_time(201, || {
        std::hint::black_box(validate(&certs, &options));
    });
    println!("\n## Validating a set (parse certificate and key, key match, validity, endpoint), median\n");
    println!("| implementation | time per set |");
    println!("|---|---|");
    println!(
        "| acorn-certs `validate()` | {:.1} µs |",
        acorn_t.as_secs_f64() * 1e6
    );
    if let Some(py) = python_validate(&cert, &key) {
        println!(
            "| Python `cryptography` (load both, compare public numbers, dates) | {py:.1} µs |"
        );
    }
    batch(&cert, &key);
}

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The same checks in Python's `cryptography` (installed with ESP-IDF's generator), timed in-process.
fn python_validate(cert: &str, key: &str) -> Option<f64> {
    let python = root().join(".venv/bin/python");
    let script = r#"
import sys, timeit, datetime
from cryptography import x509
from cryptography.hazmat.primitives import serialization
cert_pem, key_pem = open(sys.argv[1],'rb').read(), open(sys.argv[2],'rb').read()
def check():
    c = x509.load_pem_x509_certificate(cert_pem)
    k = serialization.load_pem_private_key(key_pem, password=None)
    assert c.public_key().public_numbers() == k.public_key().public_numbers()
    now = datetime.datetime.now(datetime.timezone.utc)
    assert c.not_valid_before_utc <= now <= c.not_valid_after_utc
    assert 'ats.iot.' in 'a1b2c3d4e5f6g7-ats.iot.us-west-2.amazonaws.com'
runs = [timeit.timeit(check, number=50)/50 for _ in range(5)]
print(sorted(runs)[2] * 1e6)
"#;
    let dir = std::env::temp_dir().join(format!("acorn-certs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(dir.join("c.pem"), cert).ok()?;
    std::fs::write(dir.join("k.pem"), key).ok()?;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dir.join("c.pem"))
        .arg(dir.join("k.pem"))
        .output()
        .ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn batch(cert: &str, key: &str) {
    let acorn = root().join("target/release/acorn");
    let python = root().join(".venv/bin/python");
    let dir = std::env::temp_dir().join(format!("acorn-batch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("device.crt"), cert).unwrap();
    std::fs::write(dir.join("device.key"), key).unwrap();
    let mut csv = String::from("device_id,cert,private_key,endpoint\n");
    for n in 0..1000 {
        csv.push_str(&format!("acorn-{n:04},device.crt,device.key,{ENDPOINT}\n"));
    }
    std::fs::write(dir.join("devices.csv"), csv).unwrap();
    let t = Instant::now();
    let out = Command::new(&acorn)
        .current_dir(&dir)
        .args([
            "certs",
            "provision",
            "--batch",
            "devices.csv",
            "--out-dir",
            "images",
        ])
        .output()
        .unwrap();
    let acorn_t = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The peer: ESP-IDF's generator, one invocation per device image (its factory flow).
    let id_csv = format!(
        "key,type,encoding,value\nmqtt_certs,namespace,,\ndevice_cert,file,binary,device.crt\nprivate_key,file,binary,device.key\niot_endpoint,data,string,{ENDPOINT}\ncert_valid,data,u8,1\n"
    );
    std::fs::write(dir.join("id.csv"), id_csv).unwrap();
    let py_n = 100;
    let t = Instant::now();
    for n in 0..py_n {
        let status = Command::new(&python)
            .current_dir(&dir)
            .args([
                "-m",
                "esp_idf_nvs_partition_gen",
                "generate",
                "id.csv",
                &format!("py{n}.bin"),
                "0x6000",
            ])
            .output()
            .unwrap()
            .status;
        assert!(status.success());
    }
    let py_t = t.elapsed();
    println!("\n## Factory batch: one flashable 24 KB identity image per device\n");
    println!("| tool | devices | wall time | per device |");
    println!("|---|---|---|---|");
    println!(
        "| `acorn certs provision --batch` (validates every set) | 1000 | {:.2} s | {:.2} ms |",
        acorn_t.as_secs_f64(),
        acorn_t.as_secs_f64() * 1e3 / 1000.0
    );
    println!(
        "| ESP-IDF `nvs_partition_gen.py generate`, one run per device (no validation) | {py_n} | {:.2} s | {:.2} ms |",
        py_t.as_secs_f64(),
        py_t.as_secs_f64() * 1e3 / py_n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
