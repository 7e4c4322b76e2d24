//! Interop both ways with ESP-IDF's own generator (PyPI `esp-idf-nvs-partition-gen`): images it
//! makes read back with acorn-nvs, `acorn nvs generate` equals its output byte for byte (plain
//! and encrypted), and images acorn-nvs encrypts decrypt with its `decrypt`.

mod common;

use std::path::Path;

use acorn_nvs::{IntValue, MemFlash, Mode, Nvs, NvsKeys, ValueType};
use common::{esp_gen, run_in};

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Int(IntValue),
    Str(String),
    Blob(Vec<u8>),
}

struct Fixture {
    dir: tempfile::TempDir,
    expected: Vec<(String, String, Expect)>,
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A CSV with everything the format has: a 10,000-byte blob spanning pages, 150+ keys over
/// several pages and namespaces, the longest string the generator takes, every integer type at its extremes, and a
/// certificate PEM as `file,string` and `file,binary` rows.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut cert = String::from("-----BEGIN CERTIFICATE-----\n");
    while cert.len() < 1190 {
        cert.push_str("MIIDWTCCAkGgAwIBAgIUZ3x0YWNvcm4tZGV2aWNlLWNlcnRpZmljYXRlAAAAAA==\n");
    }
    cert.push_str("-----END CERTIFICATE-----\n");
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    let blob = pseudo_random(10_000, 7);
    std::fs::write(dir.path().join("blob.bin"), &blob).unwrap();
    // The generator refuses strings of more than 3,967 bytes (it wants a spare entry after the
    // value); the engine test below stores 3,999 and has the generator decrypt it.
    let long = "s".repeat(3967);

    let mut csv = String::from("key,type,encoding,value\n# comment line\n");
    let mut expected = Vec::new();
    csv.push_str("mqtt_certs,namespace,,\n");
    let ints: Vec<(&str, &str, IntValue)> = vec![
        ("u8", "255", IntValue::U8(255)),
        ("i8", "-128", IntValue::I8(-128)),
        ("u16", "65535", IntValue::U16(65535)),
        ("i16", "-32768", IntValue::I16(-32768)),
        ("u32", "4294967295", IntValue::U32(u32::MAX)),
        ("i32", "-2147483648", IntValue::I32(i32::MIN)),
        ("u64", "18446744073709551615", IntValue::U64(u64::MAX)),
        ("i64", "-9223372036854775808", IntValue::I64(i64::MIN)),
    ];
    push(
        &mut csv,
        &mut expected,
        "mqtt_certs",
        "device_cert",
        "device_cert,file,string,cert.pem\n".into(),
        Expect::Str(cert.clone()),
    );
    push(
        &mut csv,
        &mut expected,
        "mqtt_certs",
        "cert_bin",
        "cert_bin,file,binary,cert.pem\n".into(),
        Expect::Blob(cert.clone().into_bytes()),
    );
    push(
        &mut csv,
        &mut expected,
        "mqtt_certs",
        "iot_endpoint",
        "iot_endpoint,data,string,abc123-ats.iot.us-west-2.amazonaws.com\n".into(),
        Expect::Str("abc123-ats.iot.us-west-2.amazonaws.com".into()),
    );
    push(
        &mut csv,
        &mut expected,
        "mqtt_certs",
        "cert_valid",
        "cert_valid,data,u8,1\n".into(),
        Expect::Int(IntValue::U8(1)),
    );
    csv.push_str("limits,namespace,,\n");
    for (t, v, iv) in &ints {
        push(
            &mut csv,
            &mut expected,
            "limits",
            &format!("max_{t}"),
            format!("max_{t},data,{t},{v}\n"),
            Expect::Int(*iv),
        );
    }
    let low: Vec<(&str, &str, IntValue)> = vec![
        ("u8", "0", IntValue::U8(0)),
        ("i8", "127", IntValue::I8(127)),
        ("u16", "0", IntValue::U16(0)),
        ("i16", "32767", IntValue::I16(32767)),
        ("u32", "0", IntValue::U32(0)),
        ("i32", "2147483647", IntValue::I32(i32::MAX)),
        ("u64", "0", IntValue::U64(0)),
        ("i64", "9223372036854775807", IntValue::I64(i64::MAX)),
    ];
    for (t, v, iv) in &low {
        push(
            &mut csv,
            &mut expected,
            "limits",
            &format!("min_{t}"),
            format!("min_{t},data,{t},{v}\n"),
            Expect::Int(*iv),
        );
    }
    csv.push_str("big,namespace,,\n");
    push(
        &mut csv,
        &mut expected,
        "big",
        "blob10k",
        "blob10k,file,binary,blob.bin\n".into(),
        Expect::Blob(blob),
    );
    push(
        &mut csv,
        &mut expected,
        "big",
        "str_max",
        format!("str_max,data,string,{long}\n"),
        Expect::Str(long),
    );
    push(
        &mut csv,
        &mut expected,
        "big",
        "hex",
        "hex,data,hex2bin,00ff10abcdef\n".into(),
        Expect::Blob(vec![0, 0xff, 0x10, 0xab, 0xcd, 0xef]),
    );
    push(
        &mut csv,
        &mut expected,
        "big",
        "b64",
        "b64,data,base64,aGVsbG8gd29ybGQ=\n".into(),
        Expect::Blob(b"hello world".to_vec()),
    );
    for n in 0..3 {
        csv.push_str(&format!("many{n},namespace,,\n"));
        for k in 0..55 {
            if k % 2 == 0 {
                push(
                    &mut csv,
                    &mut expected,
                    &format!("many{n}"),
                    &format!("num{k}"),
                    format!("num{k},data,u32,{}\n", k * 1000 + n),
                    Expect::Int(IntValue::U32((k * 1000 + n) as u32)),
                );
            } else {
                let s = format!("value {k} of namespace {n} {}", "x".repeat(k % 40));
                push(
                    &mut csv,
                    &mut expected,
                    &format!("many{n}"),
                    &format!("str{k}"),
                    format!("str{k},data,string,{s}\n"),
                    Expect::Str(s),
                );
            }
        }
    }
    std::fs::write(dir.path().join("values.csv"), csv).unwrap();
    Fixture { dir, expected }
}

fn push(
    csv: &mut String,
    expected: &mut Vec<(String, String, Expect)>,
    ns: &str,
    key: &str,
    row: String,
    e: Expect,
) {
    csv.push_str(&row);
    expected.push((ns.to_string(), key.to_string(), e));
}

const SIZE: &str = "0x40000";

fn read_all(image: Vec<u8>, keys: Option<&NvsKeys>, expected: &[(String, String, Expect)]) {
    let size = image.len() as u32;
    let mut nvs =
        Nvs::open_with(MemFlash::from_bytes(image), 0, size, keys, Mode::ReadOnly).unwrap();
    assert!(
        nvs.mount_findings().is_empty(),
        "{:?}",
        nvs.mount_findings()
    );
    for (ns_name, key, want) in expected {
        let ns = nvs
            .find_namespace(ns_name)
            .unwrap_or_else(|| panic!("namespace {ns_name}"));
        let info = nvs
            .value_info(ns, key)
            .unwrap()
            .unwrap_or_else(|| panic!("{ns_name}/{key} missing"));
        let got = match info.value_type {
            ValueType::Str => Expect::Str(nvs.get_string(ns, key).unwrap().unwrap()),
            ValueType::Blob => {
                let mut buf = vec![0u8; info.len];
                nvs.get_blob_into(ns, key, &mut buf).unwrap();
                Expect::Blob(buf)
            }
            _ => Expect::Int(nvs.get_int(ns, key).unwrap().unwrap()),
        };
        assert_eq!(&got, want, "{ns_name}/{key}");
    }
    assert_eq!(nvs.entries().len(), expected.len());
    assert!(expected.len() >= 150);
}

#[test]
fn generator_images_read_back_plain_and_encrypted() {
    let fx = fixture();
    let dir = fx.dir.path();
    esp_gen(dir, &["generate", "values.csv", "esp.bin", SIZE]);
    read_all(
        std::fs::read(dir.join("esp.bin")).unwrap(),
        None,
        &fx.expected,
    );

    esp_gen(
        dir,
        &["generate-key", "--keyfile", "esp_keys.bin", "--outdir", "."],
    );
    esp_gen(
        dir,
        &[
            "encrypt",
            "values.csv",
            "esp_enc.bin",
            SIZE,
            "--inputkey",
            "keys/esp_keys.bin",
        ],
    );
    let keys =
        NvsKeys::from_partition(&std::fs::read(dir.join("keys/esp_keys.bin")).unwrap()).unwrap();
    read_all(
        std::fs::read(dir.join("esp_enc.bin")).unwrap(),
        Some(&keys),
        &fx.expected,
    );
}

#[test]
fn acorn_generate_equals_the_generator_byte_for_byte() {
    let fx = fixture();
    let dir = fx.dir.path();
    esp_gen(dir, &["generate", "values.csv", "esp.bin", SIZE]);
    let out = run_in(dir, &["nvs", "generate", "values.csv", "acorn.bin", SIZE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_bytes_equal(dir, "esp.bin", "acorn.bin");

    // Encrypted, with keys made by `acorn nvs keygen`: the generator accepts them and the two
    // encrypted images are identical.
    let out = run_in(dir, &["nvs", "keygen", "acorn_keys.bin"]);
    assert!(out.status.success());
    esp_gen(
        dir,
        &[
            "encrypt",
            "values.csv",
            "esp_enc.bin",
            SIZE,
            "--inputkey",
            "acorn_keys.bin",
        ],
    );
    let out = run_in(
        dir,
        &[
            "nvs",
            "generate",
            "values.csv",
            "acorn_enc.bin",
            SIZE,
            "--encrypt",
            "--inputkey",
            "acorn_keys.bin",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_bytes_equal(dir, "esp_enc.bin", "acorn_enc.bin");
}

#[test]
fn small_and_v1_images_match_too() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "key,type,encoding,value\nns,namespace,,\na,data,u8,1\nb,data,string,hello\nc,data,hex2bin,0102\n";
    std::fs::write(dir.path().join("s.csv"), csv).unwrap();
    for (size, version) in [("0x3000", "2"), ("0x2000", "2"), ("0x4000", "1")] {
        esp_gen(
            dir.path(),
            &["generate", "s.csv", "esp.bin", size, "--version", version],
        );
        let out = run_in(
            dir.path(),
            &[
                "nvs",
                "generate",
                "s.csv",
                "acorn.bin",
                size,
                "--version",
                version,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_bytes_equal(dir.path(), "esp.bin", "acorn.bin");
    }
}

#[test]
fn legacy_v1_blobs_from_the_generator_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let blob = pseudo_random(1500, 11);
    std::fs::write(dir.path().join("b.bin"), &blob).unwrap();
    let csv = "key,type,encoding,value\nns,namespace,,\nlegacy,file,binary,b.bin\nhex,data,hex2bin,a1b2\n";
    std::fs::write(dir.path().join("v1.csv"), csv).unwrap();
    esp_gen(
        dir.path(),
        &["generate", "v1.csv", "v1.bin", "0x4000", "--version", "1"],
    );
    let image = std::fs::read(dir.path().join("v1.bin")).unwrap();
    assert_eq!(image[8], 0xFF, "a v1 page header");
    let mut nvs = Nvs::open_with(
        MemFlash::from_bytes(image),
        0,
        0x4000,
        None,
        Mode::ReadWrite,
    )
    .unwrap();
    let ns = nvs.find_namespace("ns").unwrap();
    assert_eq!(nvs.get_blob(ns, "legacy").unwrap().unwrap(), blob);
    assert_eq!(nvs.get_blob(ns, "hex").unwrap().unwrap(), vec![0xa1, 0xb2]);
    // Overwriting a legacy blob stores a v2 multi-page blob and drops the legacy one.
    nvs.set_blob(ns, "legacy", &[1, 2, 3]).unwrap();
    let flash = nvs.release();
    let mut nvs = Nvs::open_with(flash, 0, 0x4000, None, Mode::ReadOnly).unwrap();
    let ns = nvs.find_namespace("ns").unwrap();
    assert_eq!(nvs.get_blob(ns, "legacy").unwrap().unwrap(), vec![1, 2, 3]);
    assert_eq!(nvs.entries().len(), 2);
}

fn assert_bytes_equal(dir: &Path, a: &str, b: &str) {
    let (x, y) = (
        std::fs::read(dir.join(a)).unwrap(),
        std::fs::read(dir.join(b)).unwrap(),
    );
    assert_eq!(x.len(), y.len(), "{a} and {b} differ in length");
    if let Some(at) = (0..x.len()).find(|&i| x[i] != y[i]) {
        panic!(
            "{a} and {b} differ first at byte {at:#x} (page {}, offset {:#x})",
            at / 4096,
            at % 4096
        );
    }
}

#[test]
fn engine_written_encrypted_images_decrypt_with_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    let keys = NvsKeys::generate(&mut rand::rngs::OsRng);
    std::fs::write(dir.path().join("k.bin"), keys.to_partition()).unwrap();
    let size = 0x8000u32;
    let mut nvs = Nvs::open_with(
        MemFlash::new(size as usize),
        0,
        size,
        Some(&keys),
        Mode::ReadWrite,
    )
    .unwrap();
    let ns = nvs.namespace("mqtt_certs").unwrap();
    let blob = pseudo_random(5000, 3);
    nvs.set_blob(ns, "device_cert", &blob).unwrap();
    nvs.set_str(ns, "iot_endpoint", "abc-ats.iot.eu-west-1.amazonaws.com")
        .unwrap();
    nvs.set::<u8>(ns, "cert_valid", 1).unwrap();
    let long = "L".repeat(3999);
    nvs.set_str(ns, "str3999", &long).unwrap();
    // A value whose last entry is all 0xFF must still be written (encrypted, it is not blank).
    nvs.set_blob(ns, "ff_tail", &[0xFF; 64]).unwrap();
    std::fs::write(dir.path().join("enc.bin"), nvs.release().bytes()).unwrap();

    esp_gen(
        dir.path(),
        &["decrypt", "enc.bin", "k.bin", "dec.bin", "--outdir", "."],
    );
    let plain = std::fs::read(dir.path().join("dec.bin")).unwrap();
    let mut nvs =
        Nvs::open_with(MemFlash::from_bytes(plain), 0, size, None, Mode::ReadOnly).unwrap();
    let ns = nvs.find_namespace("mqtt_certs").unwrap();
    assert_eq!(nvs.get_blob(ns, "device_cert").unwrap().unwrap(), blob);
    assert_eq!(
        nvs.get_string(ns, "iot_endpoint").unwrap().unwrap(),
        "abc-ats.iot.eu-west-1.amazonaws.com"
    );
    assert_eq!(nvs.get::<u8>(ns, "cert_valid").unwrap(), Some(1));
    assert_eq!(nvs.get_string(ns, "str3999").unwrap().unwrap(), long);
    assert_eq!(
        nvs.get_blob(ns, "ff_tail").unwrap().unwrap(),
        vec![0xFF; 64]
    );
}
