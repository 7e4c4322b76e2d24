//! `acorn nvs` end to end: generate, dump (with redaction), check, get/set/erase, keygen, and
//! every kind of bad input — a one-line error, a non-zero exit that is not a panic, and the
//! image left byte for byte unchanged.

mod common;

use std::path::Path;

use common::{assert_clean_failure, run_in};

const KEY_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretsecretsecret\n-----END RSA PRIVATE KEY-----\n";

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), KEY_PEM).unwrap();
    std::fs::write(
        dir.path().join("v.csv"),
        "key,type,encoding,value\nmqtt_certs,namespace,,\nprivate_key,file,string,key.pem\nendpoint,data,string,abc-ats.iot.us-east-1.amazonaws.com\nother,file,binary,key.pem\ncount,data,u32,42\n",
    )
    .unwrap();
    let out = run_in(
        dir.path(),
        &["nvs", "generate", "v.csv", "img.bin", "0x6000"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dump_lists_values_and_redacts_private_keys() {
    let dir = setup();
    let out = run_in(dir.path(), &["nvs", "dump", "img.bin"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("abc-ats.iot.us-east-1.amazonaws.com"),
        "{text}"
    );
    assert!(text.contains("42"));
    assert!(text.contains("<redacted"), "{text}");
    assert!(!text.contains("secretsecret"), "private key leaked: {text}");

    let out = run_in(dir.path(), &["nvs", "dump", "img.bin", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["entries"].as_array().unwrap().len(), 4);
    assert!(!stdout(&out).contains("secretsecret"));

    let out = run_in(dir.path(), &["nvs", "dump", "img.bin", "--show-secrets"]);
    assert!(stdout(&out).contains("secretsecret"));
}

#[test]
fn set_get_erase_round_trip_and_check_is_clean() {
    let dir = setup();
    let d = dir.path();
    let ok = |args: &[&str]| {
        let out = run_in(d, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    };
    ok(&[
        "nvs",
        "set",
        "img.bin",
        "--namespace",
        "settings",
        "--key",
        "volume",
        "--type",
        "u8",
        "7",
    ]);
    ok(&[
        "nvs",
        "set",
        "img.bin",
        "--namespace",
        "settings",
        "--key",
        "blob",
        "--type",
        "blob",
        "00ff",
    ]);
    assert_eq!(
        ok(&[
            "nvs",
            "get",
            "img.bin",
            "--namespace",
            "settings",
            "--key",
            "volume"
        ])
        .trim(),
        "7"
    );
    assert_eq!(
        ok(&[
            "nvs",
            "get",
            "img.bin",
            "--namespace",
            "settings",
            "--key",
            "blob"
        ])
        .trim(),
        "00ff"
    );
    ok(&[
        "nvs",
        "erase",
        "img.bin",
        "--namespace",
        "settings",
        "--key",
        "volume",
    ]);
    let out = run_in(
        d,
        &[
            "nvs",
            "get",
            "img.bin",
            "--namespace",
            "settings",
            "--key",
            "volume",
        ],
    );
    assert_clean_failure(&out, "get erased key");
    assert!(ok(&["nvs", "check", "img.bin"]).contains("clean"));
}

#[test]
fn check_reports_corruption_with_exit_1() {
    let dir = setup();
    let mut img = std::fs::read(dir.path().join("img.bin")).unwrap();
    img[64 + 32 * 2 + 10] ^= 0x40; // a byte inside an entry header's key
    std::fs::write(dir.path().join("bad.bin"), &img).unwrap();
    let out = run_in(dir.path(), &["nvs", "check", "bad.bin"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("CRC"), "{}", stdout(&out));
}

#[test]
fn encrypted_images_need_the_right_key_and_are_never_damaged() {
    let dir = setup();
    let d = dir.path();
    assert!(run_in(d, &["nvs", "keygen", "k1.bin"]).status.success());
    assert!(run_in(d, &["nvs", "keygen", "k2.bin"]).status.success());
    assert_clean_failure(
        &run_in(d, &["nvs", "keygen", "k1.bin"]),
        "keygen over an existing file",
    );
    let out = run_in(
        d,
        &[
            "nvs",
            "generate",
            "v.csv",
            "enc.bin",
            "0x6000",
            "--encrypt",
            "--inputkey",
            "k1.bin",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = std::fs::read(d.join("enc.bin")).unwrap();

    let out = run_in(d, &["nvs", "dump", "enc.bin", "--nvs-keys", "k1.bin"]);
    assert!(stdout(&out).contains("abc-ats.iot"));
    for (args, what) in [
        (
            vec!["nvs", "dump", "enc.bin", "--nvs-keys", "k2.bin"],
            "wrong key",
        ),
        (vec!["nvs", "dump", "enc.bin"], "no key"),
        (
            vec![
                "nvs",
                "set",
                "enc.bin",
                "--namespace",
                "a",
                "--key",
                "b",
                "--type",
                "u8",
                "1",
                "--nvs-keys",
                "k2.bin",
            ],
            "set with wrong key",
        ),
        (
            vec![
                "nvs",
                "erase",
                "enc.bin",
                "--namespace",
                "mqtt_certs",
                "--key",
                "count",
            ],
            "erase without key",
        ),
        (
            vec!["nvs", "dump", "enc.bin", "--nvs-keys", "v.csv"],
            "corrupt key file",
        ),
        (
            vec!["nvs", "dump", "enc.bin", "--nvs-keys", "missing.bin"],
            "missing key file",
        ),
    ] {
        let out = run_in(d, &args);
        assert_clean_failure(&out, what);
        assert_eq!(
            std::fs::read(d.join("enc.bin")).unwrap(),
            before,
            "{what} changed the image"
        );
    }
    let out = run_in(d, &["nvs", "dump", "enc.bin", "--nvs-keys", "k2.bin"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong key"));
}

#[test]
fn bad_images_and_sizes_fail_cleanly_and_leave_files_unchanged() {
    let dir = setup();
    let d = dir.path();
    let img = std::fs::read(d.join("img.bin")).unwrap();
    std::fs::write(d.join("trunc.bin"), &img[..5000]).unwrap();
    let mut random = vec![0u8; 0x6000];
    let mut x = 99u32;
    for b in &mut random {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *b = (x >> 24) as u8;
    }
    std::fs::write(d.join("random.bin"), &random).unwrap();
    for (file, original) in [
        ("trunc.bin", img[..5000].to_vec()),
        ("random.bin", random.clone()),
    ] {
        for args in [
            vec!["nvs", "dump", file],
            vec![
                "nvs",
                "set",
                file,
                "--namespace",
                "a",
                "--key",
                "b",
                "--type",
                "u8",
                "1",
            ],
            vec!["nvs", "erase", file, "--namespace", "a", "--key", "b"],
        ] {
            let out = run_in(d, &args);
            assert_clean_failure(&out, &format!("{args:?}"));
            assert_eq!(
                std::fs::read(d.join(file)).unwrap(),
                original,
                "{args:?} changed {file}"
            );
        }
    }
    assert_eq!(
        run_in(d, &["nvs", "check", "random.bin"]).status.code(),
        Some(1)
    );
    assert_clean_failure(
        &run_in(d, &["nvs", "generate", "v.csv", "x.bin", "5000"]),
        "size not a multiple",
    );
    assert_clean_failure(
        &run_in(d, &["nvs", "generate", "v.csv", "x.bin", "0x1000x"]),
        "size not a number",
    );
    assert!(!d.join("x.bin").exists());
    // A value that does not fit its type is refused without touching the image.
    let out = run_in(
        d,
        &[
            "nvs",
            "set",
            "img.bin",
            "--namespace",
            "a",
            "--key",
            "b",
            "--type",
            "u8",
            "300",
        ],
    );
    assert_clean_failure(&out, "u8 out of range");
    assert_eq!(std::fs::read(d.join("img.bin")).unwrap(), img);
}

#[test]
fn bad_csv_rows_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            "key,type,encoding,value\nns,namespace,,\na,data,u8,1\nb,data,u8,256\n",
            ":4",
        ),
        (
            "key,type,encoding,value\nns,namespace,,\na,data,float,1\n",
            ":3",
        ),
        (
            "key,type,encoding,value\nns,namespace,,\na,file,string,nowhere.txt\n",
            ":3",
        ),
        (
            "key,type,encoding,value\na,data,u8,1\n",
            "before any namespace",
        ),
        (
            "key,type,encoding,value\nns,namespace,,\nkey_longer_than_15,data,u8,1\n",
            ":3",
        ),
        (
            "key,type,encoding,value\nns,namespace,,\nh,data,hex2bin,abc\n",
            ":3",
        ),
        ("nope\n", "header"),
    ];
    for (csv, needle) in cases {
        std::fs::write(d.join("bad.csv"), csv).unwrap();
        let out = run_in(d, &["nvs", "generate", "bad.csv", "out.bin", "0x3000"]);
        assert_clean_failure(&out, csv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{csv:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one-line error expected: {err}"
        );
        assert!(!Path::new(&d.join("out.bin")).exists(), "no partial image");
    }
}
