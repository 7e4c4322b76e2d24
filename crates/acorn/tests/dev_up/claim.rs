//! Fleet provisioning by claim through a real `acorn dev up`: a factory image made with
//! `acorn certs provision --claim` holds only the shared claim certificate; `acorn device run`
//! makes the device's own key, gets its certificate over the provisioning MQTT API on the
//! claim endpoint, registers its thing, stores its identity and connects to mosquitto as
//! itself. The claim certificate reaches no device topic (mosquitto refuses it outright) and
//! one claim connection cannot read another's answers; an id already registered is refused.

use std::path::{Path, PathBuf};

use super::attack::{connected, Stack};
use super::devstack::{acorn, http, pem_files, publish, run_bounded, text, Subscriber, WAIT};

/// The claim endpoint's port and the claim certificate and key files, from the banner.
fn claim_endpoint(stack: &mut Stack) -> (u16, PathBuf, PathBuf) {
    let port = stack.up.port("claim:");
    let line = stack.up.line_starting("claim:");
    let after = |marker: &str| {
        let rest = line.split(marker).nth(1).expect(marker);
        PathBuf::from(rest.split([',', ';']).next().expect("path").trim())
    };
    (port, after("certificate "), after("key "))
}

/// `acorn certs provision --claim` of `device_id` into `out`.
fn claim_image(cert: &Path, key: &Path, port: u16, device_id: &str, out: &Path) {
    let mut cmd = acorn();
    cmd.args(["certs", "provision", "--claim", "--cert"])
        .arg(cert)
        .arg("--private-key")
        .arg(key)
        .args(["--endpoint", &format!("localhost:{port}")])
        .args(["--device-id", device_id])
        .arg("-o")
        .arg(out);
    let result = run_bounded(cmd);
    assert!(
        result.status.success(),
        "provision --claim: {}",
        text(&result)
    );
}

/// The registry holds `id`, active, with the certificate `image` now holds.
fn registered_with_the_images_certificate(stack: &Stack, id: &str, image: &Path) {
    let (code, body) = http(
        "GET",
        &stack.backend,
        &format!("/v1/devices/{id}"),
        Some(&stack.admin),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(view["status"], "active");
    let own = stack.pem_files_of(image, id);
    let stored = std::fs::read_to_string(&own.cert).expect("stored cert");
    assert_eq!(
        view["certificatePem"].as_str().map(str::trim),
        Some(stored.trim())
    );
}

#[test]
fn a_device_with_only_the_claim_certificate_ends_connected_as_itself() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut stack = Stack::start(tmp.path(), &[], &[]);
    let (claim_port, cert, key) = claim_endpoint(&mut stack);

    // Another claim connection listens to every answer it can name.
    let claim_files = pem_files(
        &stack.work,
        "claim",
        &std::fs::read_to_string(&cert).expect("claim cert"),
        &std::fs::read_to_string(&key).expect("claim key"),
        &stack.ca,
    );
    let mut spy = Subscriber::start(
        claim_port,
        &claim_files,
        "claim:spy",
        &[
            "acorn-claim/claim:claimed-1/#",
            "acorn-claim/+/$aws/certificates/create-from-csr/json/accepted",
            "acorn-pups/#",
            // Its own answers (allowed), so it stays connected throughout.
            "acorn-claim/claim:spy/$aws/certificates/create-from-csr/json/accepted",
        ],
    );

    let image = stack.work.join("claimed-1.nvs.bin");
    claim_image(&cert, &key, claim_port, "claimed-1", &image);
    let show = |image: &Path| {
        let mut cmd = acorn();
        cmd.args(["certs", "show", "--image"]).arg(image);
        run_bounded(cmd)
    };
    let before = show(&image);
    assert!(before.status.success(), "{}", text(&before));
    let shown = String::from_utf8_lossy(&before.stdout).into_owned();
    assert!(
        shown.contains("claimed-1") && shown.contains("claim identity"),
        "{shown}"
    );
    let mut device = stack.run_device(&image, None);
    device.status_until(WAIT, connected);
    assert!(
        device
            .stderr
            .wait_for(WAIT, |l| l.contains("provisioned by claim"))
            .is_some(),
        "{:?}",
        device.stderr.seen
    );
    // The registry has the device, with the certificate the image now holds.
    registered_with_the_images_certificate(&stack, "claimed-1", &image);
    drop(device);
    let after = show(&image);
    let shown = String::from_utf8_lossy(&after.stdout).into_owned();
    assert!(
        after.status.success() && !shown.contains("claim identity"),
        "{}",
        text(&after)
    );

    // The spy read nothing of it.
    let seen: Vec<String> = spy
        .lines
        .drain()
        .iter()
        .filter(|l| l.starts_with("acorn-"))
        .cloned()
        .collect();
    assert!(seen.is_empty(), "a claim connection read: {seen:?}");
    drop(spy);

    // The claim certificate is no device identity: mosquitto refuses it.
    let out = publish(
        stack.device_port,
        &claim_files,
        "claimed-1",
        "acorn-pups/button-press/claimed-1",
        "{}",
    );
    assert!(
        !out.status.success(),
        "the claim certificate reached mosquitto: {}",
        text(&out)
    );

    // A claim for an id already registered is refused with the endpoint's reason.
    let again = stack.work.join("claimed-1-again.nvs.bin");
    claim_image(&cert, &key, claim_port, "claimed-1", &again);
    let mut run = acorn();
    run.args(["device", "run", "--image"])
        .arg(&again)
        .args(["--broker", &format!("localhost:{}", stack.device_port)])
        .arg("--ca")
        .arg(&stack.ca);
    let out = run_bounded(run);
    assert!(!out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("registered already"), "{all}");
}

/// The chip's own claim path (`acorn_embedded::claim` over the embedded transport, as the
/// firmware's boot runs it) against the same claim endpoint: the device ends registered with
/// the certificate its image now holds, and online on mosquitto as itself.
#[test]
fn the_chips_claim_path_over_the_embedded_transport_ends_online_as_itself() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut stack = Stack::start(tmp.path(), &[], &[]);
    let (claim_port, cert, key) = claim_endpoint(&mut stack);
    let (observer_id, observer) = stack.service("observer");
    let mut watch = Subscriber::start(
        stack.service_port,
        &observer,
        &observer_id,
        &["acorn-pups/status/claimed-e"],
    );
    let image = stack.work.join("claimed-e.nvs.bin");
    claim_image(&cert, &key, claim_port, "claimed-e", &image);
    let mut device = stack.run_device_with(&image, None, &["--transport", "embedded"]);
    assert!(
        device
            .stderr
            .wait_for(WAIT, |l| l.contains("provisioned by claim"))
            .is_some(),
        "{:?}",
        device.stderr.seen
    );
    assert!(
        watch
            .lines
            .wait_for(WAIT, |l| l.contains(r#""status":"online""#))
            .is_some(),
        "not online: {:?}",
        device.stderr.seen
    );
    registered_with_the_images_certificate(&stack, "claimed-e", &image);
    drop(device);

    // A claim for an id already registered: refused with AWS's error shape, nothing stored.
    let again = stack.work.join("claimed-e-again.nvs.bin");
    claim_image(&cert, &key, claim_port, "claimed-e", &again);
    let mut run = acorn();
    run.args(["device", "run", "--transport", "embedded", "--image"])
        .arg(&again)
        .args(["--broker", &format!("localhost:{}", stack.device_port)])
        .arg("--ca")
        .arg(&stack.ca);
    let out = run_bounded(run);
    assert!(!out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("was refused (409, ResourceConflict)") && all.contains("registered already"),
        "{all}"
    );
}
