//! Every file the CLI writes that holds a secret (partition images with a device private key,
//! `nvs_keys` files, a private key written by `nvs get --out --show-secrets`) is private to its
//! owner (mode 0600), directories made for them are 0700, and a symbolic link planted where
//! the CLI writes is never written through. Runs the real `acorn` binary.
#![cfg(unix)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use common::run_in;

const ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.us-west-2.amazonaws.com";
const KEY_PEM: &str =
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretsecretsecret\n-----END RSA PRIVATE KEY-----\n";

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

#[track_caller]
fn assert_private(path: &Path) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(meta.is_file(), "{} is not a regular file", path.display());
    assert_eq!(
        mode(path),
        0o600,
        "{} is mode {:04o}, not 0600",
        path.display(),
        mode(path)
    );
}

#[track_caller]
fn ok(dir: &Path, args: &[&str]) -> Output {
    let out = run_in(dir, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory with a CSV whose image holds a private key.
fn nvs_setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), KEY_PEM).unwrap();
    std::fs::write(
        dir.path().join("v.csv"),
        "key,type,encoding,value\nmqtt_certs,namespace,,\nprivate_key,file,string,key.pem\ncount,data,u32,42\n",
    )
    .unwrap();
    dir
}

/// Writes `<name>.crt` and `<name>.key` (a P-256 device key, fast to make) signed by a test CA.
fn identity(dir: &Path, name: &str) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let cert = params.signed_by(&key, &ca).unwrap().pem();
    std::fs::write(dir.join(format!("{name}.crt")), cert).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn identity_args<'a>(name: &'a str, cert: &'a str, key: &'a str) -> Vec<&'a str> {
    vec![
        "--cert",
        cert,
        "--private-key",
        key,
        "--endpoint",
        ENDPOINT,
        "--device-id",
        name,
    ]
}

#[test]
fn nvs_generate_writes_images_and_key_files_0600() {
    let dir = nvs_setup();
    let d = dir.path();
    ok(d, &["nvs", "generate", "v.csv", "plain.bin", "0x6000"]);
    assert_private(&d.join("plain.bin"));

    ok(
        d,
        &[
            "nvs",
            "generate",
            "v.csv",
            "enc.bin",
            "0x6000",
            "--encrypt",
            "--keygen",
            "--keyfile",
            "keys.bin",
        ],
    );
    assert_private(&d.join("enc.bin"));
    assert_private(&d.join("keys.bin"));

    ok(
        d,
        &[
            "nvs",
            "generate",
            "v.csv",
            "enc2.bin",
            "0x6000",
            "--encrypt",
            "--inputkey",
            "keys.bin",
        ],
    );
    assert_private(&d.join("enc2.bin"));

    ok(d, &["nvs", "keygen", "more_keys.bin"]);
    assert_private(&d.join("more_keys.bin"));
    chmod(&d.join("more_keys.bin"), 0o644);
    ok(d, &["nvs", "keygen", "more_keys.bin", "--force"]);
    assert_private(&d.join("more_keys.bin"));
}

#[test]
fn nvs_set_erase_and_get_out_leave_private_files() {
    let dir = nvs_setup();
    let d = dir.path();
    ok(d, &["nvs", "generate", "v.csv", "img.bin", "0x6000"]);
    // An image made by an older tool or copied with a umask of 022.
    chmod(&d.join("img.bin"), 0o644);
    ok(
        d,
        &[
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
        ],
    );
    assert_private(&d.join("img.bin"));

    chmod(&d.join("img.bin"), 0o644);
    ok(
        d,
        &[
            "nvs",
            "erase",
            "img.bin",
            "--namespace",
            "settings",
            "--key",
            "volume",
        ],
    );
    assert_private(&d.join("img.bin"));

    ok(
        d,
        &[
            "nvs",
            "get",
            "img.bin",
            "--namespace",
            "mqtt_certs",
            "--key",
            "private_key",
            "--out",
            "key.out",
            "--show-secrets",
        ],
    );
    assert_eq!(
        std::fs::read(d.join("key.out")).unwrap(),
        KEY_PEM.as_bytes()
    );
    assert_private(&d.join("key.out"));
}

#[test]
fn certs_import_and_provision_write_images_and_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    identity(d, "dev-a");
    let id = identity_args("dev-a", "dev-a.crt", "dev-a.key");

    let import = |image: &str| {
        ok(
            d,
            &[&["certs", "import", "--image", image][..], &id[..]].concat(),
        )
    };
    import("new.bin");
    assert_private(&d.join("new.bin"));
    chmod(&d.join("new.bin"), 0o644);
    import("new.bin");
    assert_private(&d.join("new.bin"));

    ok(
        d,
        &[&["certs", "provision"][..], &id[..], &["-o", "plain.bin"]].concat(),
    );
    assert_private(&d.join("plain.bin"));

    ok(
        d,
        &[
            &["certs", "provision"][..],
            &id[..],
            &["-o", "enc.bin", "--encrypt", "--nvs-keys", "keys.bin"],
        ]
        .concat(),
    );
    assert_private(&d.join("enc.bin"));
    assert_private(&d.join("keys.bin"));

    // --force replaces a world-readable image with a private one.
    chmod(&d.join("plain.bin"), 0o644);
    ok(
        d,
        &[
            &["certs", "provision"][..],
            &id[..],
            &["-o", "plain.bin", "--force"],
        ]
        .concat(),
    );
    assert_private(&d.join("plain.bin"));
}

#[test]
fn batch_provisioning_makes_a_private_directory_of_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("device_id,cert,private_key,endpoint\n");
    for n in 0..2 {
        let name = format!("unit-{n}");
        identity(d, &name);
        csv.push_str(&format!("{name},{name}.crt,{name}.key,{ENDPOINT}\n"));
    }
    std::fs::write(d.join("devices.csv"), csv).unwrap();
    let batch = |out_dir: &str, extra: &[&str]| {
        ok(
            d,
            &[
                &[
                    "certs",
                    "provision",
                    "--batch",
                    "devices.csv",
                    "--out-dir",
                    out_dir,
                    "--encrypt",
                ][..],
                extra,
            ]
            .concat(),
        )
    };

    // One key file per device.
    batch("out/images", &[]);
    assert_eq!(mode(&d.join("out/images")), 0o700);
    for n in 0..2 {
        assert_private(&d.join(format!("out/images/unit-{n}.bin")));
        assert_private(&d.join(format!("out/images/unit-{n}.nvs_keys.bin")));
    }

    // An existing directory of ours is tightened; one shared key file.
    std::fs::create_dir(d.join("shared")).unwrap();
    chmod(&d.join("shared"), 0o755);
    batch("shared", &["--nvs-keys", "shared/keys.bin"]);
    assert_eq!(mode(&d.join("shared")), 0o700);
    assert_private(&d.join("shared/keys.bin"));
    for n in 0..2 {
        assert_private(&d.join(format!("shared/unit-{n}.bin")));
    }
}

/// Plants symbolic links to `victim` at the temporary names a writer of `name` in `dir`
/// might pick: `.<name>.tmp-<pid>` for the process ids the next processes will get (Linux
/// hands them out in order), and `.<name>.tmp`.
fn plant_temp_links(dir: &Path, name: &str, victim: &Path) {
    let next_pid = std::process::Command::new("true")
        .spawn()
        .and_then(|mut c| {
            let id = c.id();
            c.wait().map(|_| id)
        })
        .unwrap();
    for pid in next_pid..next_pid + 2000 {
        std::os::unix::fs::symlink(victim, dir.join(format!(".{name}.tmp-{pid}"))).unwrap();
    }
    std::os::unix::fs::symlink(victim, dir.join(format!(".{name}.tmp"))).unwrap();
}

/// A file another user owns and reads: it must stay as it is.
fn victim(dir: &Path) -> std::path::PathBuf {
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"not yours to write").unwrap();
    chmod(&victim, 0o644);
    victim
}

#[track_caller]
fn assert_untouched(victim: &Path) {
    assert_eq!(
        std::fs::read(victim).unwrap(),
        b"not yours to write",
        "the CLI wrote through a symbolic link into {}",
        victim.display()
    );
    assert_eq!(mode(victim), 0o644);
}

#[test]
fn symlinks_at_temporary_names_are_never_written_through() {
    let dir = nvs_setup();
    let d = dir.path();
    let victim = victim(d);
    ok(d, &["nvs", "generate", "v.csv", "img.bin", "0x6000"]);
    let before_links = std::fs::read_dir(d).unwrap().count();
    plant_temp_links(d, "img.bin", &victim);
    ok(
        d,
        &[
            "nvs",
            "set",
            "img.bin",
            "--namespace",
            "settings",
            "--key",
            "volume",
            "--type",
            "u8",
            "9",
        ],
    );
    assert_untouched(&victim);
    assert_private(&d.join("img.bin"));
    let out = ok(
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
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "9");
    // The planted links are left alone, and no temporary file is left behind.
    assert_eq!(
        std::fs::read_dir(d).unwrap().count(),
        before_links + 2001,
        "temporary files left behind"
    );

    plant_temp_links(d, "keys.bin", &victim);
    ok(d, &["nvs", "keygen", "keys.bin"]);
    assert_untouched(&victim);
    assert_private(&d.join("keys.bin"));
}

#[test]
fn a_symlink_at_the_output_is_replaced_not_written_through() {
    let dir = nvs_setup();
    let d = dir.path();
    let victim = victim(d);
    let link = |name: &str| std::os::unix::fs::symlink(&victim, d.join(name)).unwrap();

    link("img.bin");
    ok(d, &["nvs", "generate", "v.csv", "img.bin", "0x6000"]);
    assert_untouched(&victim);
    assert_private(&d.join("img.bin"));

    link("key.out");
    ok(
        d,
        &[
            "nvs",
            "get",
            "img.bin",
            "--namespace",
            "mqtt_certs",
            "--key",
            "private_key",
            "--out",
            "key.out",
            "--show-secrets",
        ],
    );
    assert_untouched(&victim);
    assert_private(&d.join("key.out"));

    // A dangling link at a new key file: nothing is made at its target.
    std::os::unix::fs::symlink(d.join("elsewhere.bin"), d.join("keys.bin")).unwrap();
    ok(
        d,
        &[
            "nvs",
            "generate",
            "v.csv",
            "enc.bin",
            "0x6000",
            "--encrypt",
            "--keygen",
            "--keyfile",
            "keys.bin",
        ],
    );
    assert!(!d.join("elsewhere.bin").exists(), "wrote through the link");
    assert_private(&d.join("keys.bin"));
}
