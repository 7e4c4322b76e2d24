//! Certificate rotation through a real `acorn dev up` (real mosquitto, the backend answering
//! AWS IoT's provisioning MQTT API on each device's own topics): by the admin API's command
//! and by the expiry trigger, each ends with a new certificate in the image, the device
//! online, the registry's history showing the old one superseded, and the broker refusing
//! the old one; no other device can read a rotation's answers or ask on its behalf.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::attack::{connected, Stack};
use super::devstack::{acorn, http, publish, run_bounded, text, Subscriber, WAIT};

/// The flags that turn rotation on against the local stack.
fn rotation_flags(stack: &Stack) -> Vec<String> {
    vec![
        "--rotation-template".into(),
        "acorn-pups".into(),
        "--rotation-local".into(),
        "--rotation-ca".into(),
        stack.ca.display().to_string(),
    ]
}

/// The device certificate stored in `image` (PEM).
fn certificate_in(image: &Path, out: &Path) -> String {
    let mut cmd = acorn();
    cmd.args([
        "nvs",
        "get",
        "--namespace",
        "mqtt_certs",
        "--key",
        "device_cert",
    ])
    .arg(image)
    .arg("--out")
    .arg(out);
    let result = run_bounded(cmd);
    assert!(result.status.success(), "nvs get: {}", text(&result));
    String::from_utf8_lossy(&std::fs::read(out).expect("cert"))
        .trim_end_matches('\0')
        .to_owned()
}

/// `GET /v1/devices/{id}` until `wanted` accepts it (bounded).
fn device_until(
    stack: &Stack,
    id: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = http(
            "GET",
            &stack.backend,
            &format!("/v1/devices/{id}"),
            Some(&stack.admin),
            None,
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        if wanted(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "the device never matched: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A ping with `image`'s identity: its output when refused, `None` when it connected.
fn ping_refusal(stack: &Stack, image: &Path) -> Option<String> {
    let mut ping = acorn();
    ping.args(["device", "ping", "--image"])
        .arg(image)
        .arg("--broker")
        .arg(format!("localhost:{}", stack.device_port))
        .arg("--ca")
        .arg(&stack.ca);
    let out = run_bounded(ping);
    (!out.status.success()).then(|| text(&out))
}

/// The refusal of `image`'s identity, waiting at most `bound` for the broker to refuse it.
fn refusal_within(stack: &Stack, image: &Path, bound: Duration) -> String {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(refusal) = ping_refusal(stack, image) {
            return refusal;
        }
        assert!(
            Instant::now() < deadline,
            "the broker still accepts {} after {bound:?}",
            image.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `rotation` answers of `device` seen on the observer's status stream.
fn rotation_lines(watch: &mut Subscriber, device: &str) -> Vec<serde_json::Value> {
    watch
        .lines
        .drain()
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("acorn-pups/status/{device} ")))
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter(|v| v["command"] == "rotate-certificate")
        .collect()
}

/// Checks what a finished rotation of `id` left: a new certificate in the image, the
/// registry's history, the old identity refused by the broker, the device online.
fn check_rotated(stack: &Stack, id: &str, image: &Path, old_image: &Path, new_id: &str) {
    let work = &stack.work;
    let new_pem = certificate_in(image, &work.join(format!("{id}-new.crt")));
    let old_pem = certificate_in(old_image, &work.join(format!("{id}-old.crt")));
    assert_ne!(new_pem, old_pem, "the image holds a new certificate");
    // Within 60 s of its first use the new certificate is the registry's and the old one is
    // superseded and revoked.
    let view = device_until(stack, id, |v| v["certificateId"] == new_id);
    let history = view["certificateHistory"].as_array().expect("history");
    assert_eq!(history[0]["state"], "superseded", "{view}");
    assert!(history[0]["revokedAt"].is_string(), "{view}");
    // The registry records the revocation before the broker has reloaded its CRL, so the
    // refusal comes within a bounded while, not at once; from then on the old identity is
    // refused and the new one connects.
    let refusal = refusal_within(stack, old_image, Duration::from_secs(15));
    assert!(refusal.contains("revoked"), "{refusal}");
    assert!(
        ping_refusal(stack, image).is_none(),
        "the new identity connects"
    );
}

/// A dev stack, an observer of every status, and device `id` registered: its image and a copy
/// of it as it is before any rotation.
fn registered(tmp: &Path, id: &str) -> (Stack, Subscriber, PathBuf, PathBuf) {
    let stack = Stack::start(tmp, &[], &[]);
    let (observer_id, observer) = stack.service("observer");
    let watch = Subscriber::start(
        stack.service_port,
        &observer,
        &observer_id,
        &["acorn-pups/status/+"],
    );
    let image = stack.register(id, &[]);
    let old_image = stack.work.join(format!("{id}-before.nvs.bin"));
    std::fs::copy(&image, &old_image).expect("copy the image");
    (stack, watch, image, old_image)
}

#[test]
fn rotation_by_the_admin_apis_command_ends_on_the_new_certificate_and_no_one_else_sees_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (stack, mut watch, image, old_image) = registered(tmp.path(), "rot-1");

    // Another device tries to ask for a certificate in rot-1's name (the broker drops it: the
    // backend never sees it), and listens to every rotation's answers.
    let spy_image = stack.register("spy", &[]);
    let spy = stack.pem_files_of(&spy_image, "spy");
    let csr = r#"{"certificateSigningRequest":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}"#;
    let out = publish(
        stack.device_port,
        &spy,
        "spy",
        "acorn-local/rot-1/$aws/certificates/create-from-csr/json",
        csr,
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut eavesdrop = Subscriber::start(
        stack.device_port,
        &spy,
        "spy",
        &[
            "acorn-local/rot-1/#",
            "acorn-local/+/$aws/certificates/create-from-csr/json/accepted",
            "acorn-local/+/$aws/provisioning-templates/acorn-pups/provision/json/accepted",
        ],
    );

    let flags = rotation_flags(&stack);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut device = stack.run_device_with(&image, None, &flags);
    device.status_until(WAIT, connected);
    let (status, body) = http(
        "POST",
        &stack.backend,
        "/v1/devices/rot-1/rotate",
        Some(&stack.admin),
        None,
    );
    assert_eq!(status, 202, "{body}");
    let request_id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["requestId"]
        .as_str()
        .expect("requestId")
        .to_owned();
    let committed = watch
        .lines
        .wait_for(WAIT, |l| {
            l.starts_with("acorn-pups/status/rot-1 ") && l.contains(r#""rotation":"committed""#)
        })
        .unwrap_or_else(|| {
            panic!(
                "no committed rotation: {:?}",
                rotation_lines(&mut watch, "rot-1")
            )
        });
    let answers = rotation_lines(&mut watch, "rot-1");
    assert_eq!(answers[0]["rotation"], "started", "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a["requestId"] == request_id.as_str()),
        "{answers:?}"
    );
    let committed: serde_json::Value =
        serde_json::from_str(committed.split_once(' ').expect("payload").1).expect("json");
    let new_id = committed["certificateId"].as_str().expect("certificateId");

    check_rotated(&stack, "rot-1", &image, &old_image, new_id);
    // The device went on, connected with its new certificate.
    let status = device.status_until(WAIT, connected);
    assert!(status["connects"].as_u64().unwrap_or(0) >= 2, "{status}");
    // The spy saw nothing of it, and its forged request issued nothing.
    let seen: Vec<String> = eavesdrop
        .lines
        .drain()
        .iter()
        .filter(|l| l.starts_with("acorn-local/"))
        .cloned()
        .collect();
    assert!(
        seen.is_empty(),
        "another device read rotation answers: {seen:?}"
    );
    let history = device_until(&stack, "rot-1", |_| true)["certificateHistory"].clone();
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");

    // A second rotation within the minute is refused by the backend (429, AWS's shape); the
    // device reports it, keeps its identity and will try again later.
    let (status, body) = http(
        "POST",
        &stack.backend,
        "/v1/devices/rot-1/rotate",
        Some(&stack.admin),
        None,
    );
    assert_eq!(status, 202, "{body}");
    let failed = watch
        .lines
        .wait_for(WAIT, |l| {
            l.starts_with("acorn-pups/status/rot-1 ") && l.contains(r#""rotation":"failed""#)
        })
        .unwrap_or_else(|| panic!("no refusal: {:?}", rotation_lines(&mut watch, "rot-1")));
    assert!(
        failed.contains("ThrottlingException") || failed.contains("too many certificates"),
        "{failed}"
    );
    assert!(
        failed.contains(new_id),
        "still on the new certificate: {failed}"
    );
    device.status_until(WAIT, connected);
}

#[test]
fn a_certificate_near_its_end_rotates_by_itself_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (stack, mut watch, image, old_image) = registered(tmp.path(), "rot-2");
    // The dev CA issues for a year: with a 400-day threshold the certificate is "near its end".
    let mut flags = rotation_flags(&stack);
    flags.extend(["--rotation-days-before".into(), "400".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut device = stack.run_device_with(&image, None, &flags);
    let committed = watch
        .lines
        .wait_for(WAIT, |l| {
            l.starts_with("acorn-pups/status/rot-2 ") && l.contains(r#""rotation":"committed""#)
        })
        .unwrap_or_else(|| panic!("no rotation: {:?}", rotation_lines(&mut watch, "rot-2")));
    let committed: serde_json::Value =
        serde_json::from_str(committed.split_once(' ').expect("payload").1).expect("json");
    assert!(committed.get("requestId").is_none(), "{committed}");
    let new_id = committed["certificateId"].as_str().expect("certificateId");
    check_rotated(&stack, "rot-2", &image, &old_image, new_id);
    device.status_until(WAIT, connected);
    // The new certificate is as short as the old one: no second rotation.
    std::thread::sleep(Duration::from_secs(2));
    let started = rotation_lines(&mut watch, "rot-2")
        .into_iter()
        .filter(|a| a["rotation"] == "started")
        .count();
    assert_eq!(started, 1);
}

/// The chip's rotation (`acorn_embedded::rotation` over the embedded transport, as the
/// firmware runs it) through the same stack: the admin API's command ends with a new
/// certificate in the image, tried on mosquitto before it is committed, the old one superseded
/// and refused.
#[test]
fn the_chips_rotation_over_the_embedded_transport_ends_on_the_new_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (stack, mut watch, image, old_image) = registered(tmp.path(), "rot-e");
    let mut flags = rotation_flags(&stack);
    flags.extend(["--transport".into(), "embedded".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let device = stack.run_device_with(&image, None, &flags);
    watch
        .lines
        .wait_for(WAIT, |l| {
            l.starts_with("acorn-pups/status/rot-e ") && l.contains(r#""status":"online""#)
        })
        .unwrap_or_else(|| panic!("not online: {:?}", device.stderr.seen));
    let (status, body) = http(
        "POST",
        &stack.backend,
        "/v1/devices/rot-e/rotate",
        Some(&stack.admin),
        None,
    );
    assert_eq!(status, 202, "{body}");
    let committed = watch
        .lines
        .wait_for(WAIT, |l| {
            l.starts_with("acorn-pups/status/rot-e ") && l.contains(r#""rotation":"committed""#)
        })
        .unwrap_or_else(|| {
            panic!(
                "no committed rotation: {:?}\n{:?}",
                rotation_lines(&mut watch, "rot-e"),
                device.stderr.seen
            )
        });
    let committed: serde_json::Value =
        serde_json::from_str(committed.split_once(' ').expect("payload").1).expect("json");
    let new_id = committed["certificateId"].as_str().expect("certificateId");
    check_rotated(&stack, "rot-e", &image, &old_image, new_id);
}
