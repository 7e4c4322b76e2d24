//! `acorn sim --backend`: a fleet whose identities come from the registration backend of a
//! real `acorn dev up` (tokens minted and devices registered in bulk, the broker address and
//! CA from the registration answers, the observer's service identity from the admin API)
//! delivers every press.

// Shared with tests/dev_up.rs, which uses all of it; this test needs only part.
#[allow(dead_code)]
mod devstack;

use std::process::Stdio;

use devstack::{acorn, run_bounded, text, DevUp};
use serde_json::Value;

#[test]
fn a_fleet_registered_through_the_dev_stack_delivers_every_press() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = DevUp::start(&dir.path().join("dev"));
    let backend = dev.backend();
    let line = dev.line_starting("admin key:");
    let admin_key = line
        .split_whitespace()
        .nth(2)
        .expect("admin key path")
        .to_owned();
    let report = dir.path().join("report.json");
    let mut cmd = acorn();
    cmd.args(["sim", "--backend", &backend, "--admin-key", &admin_key])
        .args(["--devices", "10", "--duration", "6s", "--press-every", "1s"])
        .arg("--json")
        .arg(&report)
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let out = run_bounded(cmd);
    assert!(out.status.success(), "{}", text(&out));
    let json: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["connected"], 10, "{json}");
    assert_eq!(json["lost"], 0, "{json}");
    let acked = json["acked"].as_u64().unwrap();
    assert!(acked >= 10, "{json}");
    assert_eq!(json["received"].as_u64(), Some(acked), "{json}");
    // The devices are in the backend's registry.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("from the registration answers"), "{stdout}");
    dev.interrupt();
}
