//! `acorn certs import | show | provision` end to end: an AWS-shaped identity (RSA-2048 PKCS#1
//! key, `-ats` endpoint) in flashable images that ESP-IDF's generator decrypts and the
//! independent `esp-nvs` reader reads; batches that skip bad rows; bad input that leaves no
//! partial image.

mod common;

use std::path::Path;

use common::{assert_clean_failure, run_in};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

const ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.us-west-2.amazonaws.com";

/// Writes `<name>.crt` and `<name>.key` (PKCS#1, as AWS issues them) signed by a test CA.
fn aws_shaped(dir: &Path, name: &str) -> (String, String) {
    let mut rng = rand::thread_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string();
    let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let key_pair = rcgen::KeyPair::from_pem(&pkcs8).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let cert = params.signed_by(&key_pair, &ca).unwrap().pem();
    std::fs::write(dir.join(format!("{name}.crt")), &cert).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), &pkcs1).unwrap();
    (cert, pkcs1)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run_in(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads the identity with the independent esp-nvs reader.
fn peer_read(image: Vec<u8>) -> (Vec<u8>, Vec<u8>, Vec<u8>, u8) {
    let size = image.len();
    let mut nvs = esp_nvs::Nvs::new(0, size, acorn_nvs::MemFlash::from_bytes(image)).unwrap();
    let ns = esp_nvs::Key::from_str("mqtt_certs");
    let get = |nvs: &mut esp_nvs::Nvs<acorn_nvs::MemFlash>, k: &str| -> Vec<u8> {
        esp_nvs::Get::get(nvs, &ns, &esp_nvs::Key::from_str(k)).unwrap()
    };
    let cert = get(&mut nvs, "device_cert");
    let key = get(&mut nvs, "private_key");
    let endpoint = get(&mut nvs, "iot_endpoint");
    let valid: u8 =
        esp_nvs::Get::get(&mut nvs, &ns, &esp_nvs::Key::from_str("cert_valid")).unwrap();
    (cert, key, endpoint, valid)
}

#[test]
fn provision_an_aws_shaped_identity_readable_by_esp_nvs_and_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = aws_shaped(d, "acorn-0001");
    assert!(
        (1600..1750).contains(&key.len()),
        "PKCS#1 key of {} bytes",
        key.len()
    );
    let args = [
        "certs",
        "provision",
        "--cert",
        "acorn-0001.crt",
        "--private-key",
        "acorn-0001.key",
        "--endpoint",
        ENDPOINT,
        "--device-id",
        "acorn-0001",
    ];
    ok(d, &[&args[..], &["-o", "plain.bin"]].concat());
    let (c, k, e, v) = peer_read(std::fs::read(d.join("plain.bin")).unwrap());
    assert_eq!(
        (c, k, e, v),
        (
            cert.clone().into_bytes(),
            key.clone().into_bytes(),
            ENDPOINT.as_bytes().to_vec(),
            1
        )
    );

    ok(
        d,
        &[
            &args[..],
            &["-o", "enc.bin", "--encrypt", "--nvs-keys", "keys.bin"],
        ]
        .concat(),
    );
    assert!(d.join("keys.bin").exists());
    common::esp_gen(
        d,
        &["decrypt", "enc.bin", "keys.bin", "dec.bin", "--outdir", "."],
    );
    let (c, k, _, v) = peer_read(std::fs::read(d.join("dec.bin")).unwrap());
    assert_eq!((c, k, v), (cert.into_bytes(), key.clone().into_bytes(), 1));

    // show: everything but the key.
    let shown = ok(
        d,
        &[
            "certs",
            "show",
            "--image",
            "enc.bin",
            "--nvs-keys",
            "keys.bin",
        ],
    );
    assert!(
        shown.contains("acorn-0001") && shown.contains(ENDPOINT),
        "{shown}"
    );
    let key_line = key.lines().nth(1).unwrap();
    assert!(!shown.contains(key_line), "show leaked the private key");
    let json: serde_json::Value =
        serde_json::from_str(&ok(d, &["certs", "show", "--image", "plain.bin", "--json"])).unwrap();
    assert_eq!(json["report"]["valid"], true);
    assert_eq!(json["cert_valid"], true);
}

#[test]
fn import_replaces_an_identity_and_refuses_bad_sets_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    aws_shaped(d, "dev-a");
    aws_shaped(d, "dev-b");
    let import = |cert: &str, key: &str, id: &str| {
        run_in(
            d,
            &[
                "certs",
                "import",
                "--image",
                "id.bin",
                "--cert",
                cert,
                "--private-key",
                key,
                "--endpoint",
                ENDPOINT,
                "--device-id",
                id,
            ],
        )
    };
    assert!(import("dev-a.crt", "dev-a.key", "dev-a").status.success());
    assert!(import("dev-b.crt", "dev-b.key", "dev-b").status.success());
    assert!(ok(d, &["certs", "show", "--image", "id.bin"]).contains("dev-b"));
    let before = std::fs::read(d.join("id.bin")).unwrap();
    for (cert, key, id, what) in [
        (
            "dev-a.crt",
            "dev-b.key",
            "dev-a",
            "key of another certificate",
        ),
        ("dev-a.crt", "missing.key", "dev-a", "missing key file"),
        ("dev-a.key", "dev-a.key", "dev-a", "garbage certificate"),
        ("dev-a.crt", "dev-a.key", "bad id!", "bad device id"),
    ] {
        let out = import(cert, key, id);
        assert_clean_failure(&out, what);
        assert_eq!(
            std::fs::read(d.join("id.bin")).unwrap(),
            before,
            "{what} changed the image"
        );
    }
    let out = run_in(
        d,
        &[
            "certs",
            "provision",
            "--cert",
            "dev-a.crt",
            "--private-key",
            "dev-b.key",
            "--endpoint",
            ENDPOINT,
            "--device-id",
            "dev-a",
            "-o",
            "new.bin",
        ],
    );
    assert_clean_failure(&out, "provision mismatched pair");
    assert!(!d.join("new.bin").exists(), "no partial image");
}

#[test]
fn batch_provisioning_skips_bad_rows_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("device_id,cert,private_key,endpoint\n");
    for n in 0..5 {
        let name = format!("unit-{n}");
        aws_shaped(d, &name);
        csv.push_str(&format!("{name},{name}.crt,{name}.key,{ENDPOINT}\n"));
    }
    csv.push_str("unit-bad,unit-0.crt,unit-1.key,a-ats.iot.us-west-2.amazonaws.com\n");
    csv.push_str("unit-short,unit-0.crt\n");
    std::fs::write(d.join("devices.csv"), csv).unwrap();
    let out = run_in(
        d,
        &[
            "certs",
            "provision",
            "--batch",
            "devices.csv",
            "--out-dir",
            "out",
            "--encrypt",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "some rows failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("devices.csv:7") && err.contains("devices.csv:8"),
        "{err}"
    );
    assert!(err.contains("provisioned 5 of 7"), "{err}");
    for n in 0..5 {
        assert!(d.join(format!("out/unit-{n}.bin")).exists());
        assert!(d.join(format!("out/unit-{n}.nvs_keys.bin")).exists());
    }
    assert!(!d.join("out/unit-bad.bin").exists());
}

#[test]
fn one_factory_image_holds_identity_and_wifi_the_password_kept_secret() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    aws_shaped(d, "acorn-wifi");
    std::fs::write(d.join("wifi.pass"), "correct horse battery\n").unwrap();
    let provision = |extra: &[&str], out: &str| {
        let mut args = vec![
            "certs",
            "provision",
            "--cert",
            "acorn-wifi.crt",
            "--private-key",
            "acorn-wifi.key",
            "--endpoint",
            ENDPOINT,
            "--device-id",
            "acorn-wifi",
            "-o",
            out,
        ];
        args.extend_from_slice(extra);
        run_in(d, &args)
    };
    let out = provision(
        &[
            "--wifi-ssid",
            "Acorn Lab",
            "--wifi-password-file",
            "wifi.pass",
        ],
        "wifi.bin",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The firmware's own reader finds them.
    let image = std::fs::read(d.join("wifi.bin")).unwrap();
    let size = image.len() as u32;
    let mut nvs = acorn_nvs::Nvs::open_with(
        acorn_nvs::MemFlash::from_bytes(image),
        0,
        size,
        None,
        acorn_nvs::Mode::ReadOnly,
    )
    .unwrap();
    let wifi = acorn_embedded::boot::read_wifi_credentials(&mut nvs)
        .unwrap()
        .expect("Wi-Fi credentials stored");
    assert_eq!(wifi.ssid, "Acorn Lab");
    assert_eq!(wifi.password.as_str(), "correct horse battery");
    // The password is never printed by the tools, nor by provisioning itself.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("horse"));
    let dump = ok(d, &["nvs", "dump", "wifi.bin"]);
    assert!(dump.contains("Acorn Lab"), "{dump}");
    assert!(!dump.contains("horse"), "{dump}");
    assert!(dump.contains("<redacted"), "{dump}");
    // A password no WPA2 station accepts is refused, and nothing is written.
    for bad in ["short", &"x".repeat(64)] {
        let out = run_in(
            d,
            &[
                "certs",
                "provision",
                "--cert",
                "acorn-wifi.crt",
                "--private-key",
                "acorn-wifi.key",
                "--endpoint",
                ENDPOINT,
                "--device-id",
                "acorn-wifi",
                "-o",
                "bad.bin",
                "--wifi-ssid",
                "Lab",
            ],
        );
        assert!(out.status.success(), "no password is an open network");
        std::fs::remove_file(d.join("bad.bin")).unwrap();
        let out = provision(&["--wifi-ssid", "Lab", "--wifi-password", bad], "bad.bin");
        assert_clean_failure(&out, "bad Wi-Fi password");
        assert!(String::from_utf8_lossy(&out.stderr).contains("8 to 63"));
        assert!(!d.join("bad.bin").exists());
    }
}

#[test]
fn show_calls_a_local_broker_endpoint_a_note_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    aws_shaped(d, "acorn-local");
    ok(
        d,
        &[
            "certs",
            "provision",
            "--cert",
            "acorn-local.crt",
            "--private-key",
            "acorn-local.key",
            "--endpoint",
            "localhost",
            "--device-id",
            "acorn-local",
            "--allow-custom-endpoint",
            "-o",
            "local.bin",
        ],
    );
    let shown = ok(d, &["certs", "show", "--image", "local.bin"]);
    assert!(shown.contains("verdict: VALID"), "{shown}");
    assert!(
        shown.contains("note: `localhost` is not an AWS IoT endpoint"),
        "{shown}"
    );
    // An AWS endpoint gets no note.
    ok(
        d,
        &[
            "certs",
            "provision",
            "--cert",
            "acorn-local.crt",
            "--private-key",
            "acorn-local.key",
            "--endpoint",
            ENDPOINT,
            "--device-id",
            "acorn-local",
            "-o",
            "aws.bin",
        ],
    );
    let shown = ok(d, &["certs", "show", "--image", "aws.bin"]);
    assert!(
        shown.contains("verdict: VALID") && !shown.contains("note:"),
        "{shown}"
    );
}

#[test]
fn show_tells_where_a_certificate_rotation_stands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    aws_shaped(d, "acorn-rot");
    aws_shaped(d, "acorn-rot-new");
    let provision = [
        "certs",
        "provision",
        "--cert",
        "acorn-rot.crt",
        "--private-key",
        "acorn-rot.key",
        "--endpoint",
        ENDPOINT,
        "--device-id",
        "acorn-rot",
        "-o",
        "rot.bin",
    ];
    ok(d, &provision);
    let shown = ok(d, &["certs", "show", "--image", "rot.bin"]);
    assert!(shown.contains("rotation:       none under way"), "{shown}");

    // A new identity staged in the candidate slot (as a rotation's step 4 leaves it).
    let read = |name: &str| std::fs::read(d.join(name)).unwrap();
    let new = acorn_certs::DeviceCertificates {
        device_certificate: read("acorn-rot-new.crt"),
        private_key: acorn_certs::PrivateKey::new(read("acorn-rot-new.key")),
        iot_endpoint: ENDPOINT.into(),
        device_id: "acorn-rot".into(),
    };
    let mut image = acorn_agent::DeviceImage::open(&d.join("rot.bin"), None).unwrap();
    let report = image
        .slots()
        .stage(&new, acorn_agent::device_image::unix_now())
        .expect("a valid candidate");
    let fingerprint = report.fingerprint.unwrap();
    drop(image);
    let shown = ok(d, &["certs", "show", "--image", "rot.bin"]);
    assert!(
        shown.contains("a new certificate waits for its trial connection"),
        "{shown}"
    );
    assert!(shown.contains(&fingerprint), "{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(d, &["certs", "show", "--image", "rot.bin", "--json"])).unwrap();
    assert_eq!(
        json["rotation"]["candidate"]["certificate_fingerprint"],
        fingerprint.as_str()
    );
    // The active identity is still the old one.
    assert_ne!(
        json["metadata"]["certificate_fingerprint"],
        fingerprint.as_str()
    );
}
