//! `acorn sim --identities DIR --endpoint HOST`: a fleet whose certificate/key files were issued
//! elsewhere (AWS IoT Core's file names) against a broker given by name, with an observer
//! identity of its own. Here the files come from a test CA and the broker is a real mosquitto
//! whose ACL (in this test only) lets every client read the press and status topics, as the
//! observer thing's AWS policy would.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acorn_test_support::mqtt::{BrokerSetup, Env, Validity};
use serde_json::Value;

#[test]
fn a_fleet_from_certificate_files_delivers_every_press() {
    let env = Env::with(BrokerSetup {
        extra_acl_lines: vec![
            "pattern read acorn-pups/button-press/+".into(),
            "pattern read acorn-pups/status/+".into(),
        ],
        ..BrokerSetup::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids");
    std::fs::create_dir(&ids).unwrap();
    for i in 0..5 {
        let name = format!("acorn-file-{i}");
        let (cert, key) = env.ca.leaf(&name, &[], Validity::Valid);
        std::fs::write(ids.join(format!("{name}-certificate.pem.crt")), cert).unwrap();
        std::fs::write(ids.join(format!("{name}-private.pem.key")), key).unwrap();
    }
    let (cert, key) = env.ca.leaf("acorn-sim-observer", &[], Validity::Valid);
    let observer_cert = dir.path().join("observer.crt");
    let observer_key = dir.path().join("observer.key");
    std::fs::write(&observer_cert, cert).unwrap();
    std::fs::write(&observer_key, key).unwrap();
    let report = dir.path().join("report.json");
    let endpoint = format!("localhost:{}", env.broker.port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_acorn"))
        .args(["sim", "--identities"])
        .arg(&ids)
        .args(["--endpoint", &endpoint, "--ca"])
        .arg(env.dir.path().join("ca.pem"))
        .arg("--observer-cert")
        .arg(&observer_cert)
        .arg("--observer-key")
        .arg(&observer_key)
        .args(["--devices", "5", "--duration", "5s", "--press-every", "1s"])
        .args(["--commands-every", "0", "--json"])
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("acorn sim runs");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("acorn sim did not end within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    let json: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["connected"], 5, "{json}");
    assert_eq!(json["lost"], 0, "{json}");
    let acked = json["acked"].as_u64().unwrap();
    assert!(acked >= 5, "{json}");
    assert_eq!(json["received"].as_u64(), Some(acked), "{json}");
}
