//! `kill -9` of `acorn device run` between the steps of a certificate rotation: the next start
//! finishes or drops what the rotation left, connects with a whole identity (the old one, or
//! the new one once committed), and the candidate slot is clean — never stuck. A stand-in for
//! AWS IoT's provisioning API (a client signing CSRs with the test CA) plays the cloud.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use acorn_test_support::mqtt::{device_image, BrokerSetup, Client, Env, WAIT};
use rcgen::CertificateSigningRequestParams;
use serde_json::{json, Value};

const CSR_TOPIC: &str = "$aws/certificates/create-from-csr/json";
const PROVISION_TOPIC: &str = "$aws/provisioning-templates/acorn-pups/provision/json";

/// Where the device is killed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KillAt {
    /// The CSR was sent; no answer yet (only a key in RAM).
    CsrSent,
    /// The certificate was answered and staged; RegisterThing not answered.
    CandidateStaged,
    /// RegisterThing answered: the trial is under way (or just committed).
    Trial,
    /// The device said `committed`.
    Committed,
}

/// A running `acorn device run`, killed (`kill -9`) when dropped, so that a failing test leaves
/// no device behind.
struct Running(Child);

impl Running {
    /// `kill -9`, and reaps it.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn device(env: &Env, image: &Path, rotate: bool) -> Running {
    let ca = env.dir.path().join("ca.pem");
    let port = env.broker.port().to_string();
    let mut args = vec![
        "device".to_owned(),
        "run".into(),
        "--image".into(),
        image.display().to_string(),
        "--broker".into(),
        format!("localhost:{port}"),
        "--ca".into(),
        ca.display().to_string(),
    ];
    if rotate {
        args.extend([
            "--rotation-template".into(),
            "acorn-pups".into(),
            "--rotation-ca".into(),
            ca.display().to_string(),
        ]);
    }
    Command::new(env!("CARGO_BIN_EXE_acorn"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .expect("acorn runs")
}

async fn next_json(client: &mut Client) -> (String, Value) {
    let publish = tokio::time::timeout(WAIT, client.next_publish())
        .await
        .expect("a message in time");
    (
        publish.topic.clone(),
        serde_json::from_slice(&publish.payload).unwrap(),
    )
}

async fn wait_online(backend: &mut Client) {
    loop {
        let (_, v) = next_json(backend).await;
        // The presence status, not a reply or a rotation answer (also `online`).
        if v["status"] == "online" && v.get("command").is_none() && v.get("uptimeMs").is_none() {
            return;
        }
    }
}

/// Answers a CSR with a certificate for its key from the test CA.
async fn answer_csr(env: &Env, api: &mut Client, request: &Value) {
    let csr = request["certificateSigningRequest"].as_str().unwrap();
    let cert = CertificateSigningRequestParams::from_pem(csr)
        .unwrap()
        .signed_by(&env.ca.issuer)
        .unwrap();
    let body = json!({
        "certificateId": acorn_certs::fingerprint(cert.der()),
        "certificatePem": cert.pem(),
        "certificateOwnershipToken": "token-1"
    });
    api.publish(
        &format!("{CSR_TOPIC}/accepted"),
        body.to_string().as_bytes(),
    )
    .await;
}

/// Answers the API until the device says its rotation is `committed` (bounded).
async fn answer_until_committed(env: &Env, api: &mut Client, backend: &mut Client, name: &str) {
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    loop {
        tokio::select! {
            publish = api.next_publish() => {
                let request: Value = serde_json::from_slice(&publish.payload).unwrap();
                if publish.topic == CSR_TOPIC {
                    answer_csr(env, api, &request).await;
                } else if publish.topic == PROVISION_TOPIC {
                    let body = json!({"thingName": name});
                    let topic = format!("{PROVISION_TOPIC}/accepted");
                    api.publish(&topic, body.to_string().as_bytes()).await;
                }
            }
            publish = backend.next_publish() => {
                let v: Value = serde_json::from_slice(&publish.payload).unwrap();
                if v["rotation"] == "committed" {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => panic!("{name}: no committed rotation"),
        }
    }
}

/// One run: rotate, kill at `at`, start again (and rotate to the end); the fingerprints
/// (before, after the restart).
async fn kill_during_rotation(env: &Env, name: &str, at: KillAt) -> (String, String) {
    let (image, _) = device_image(env.dir.path(), &env.ca, name);
    let before = fingerprint(&image);
    let mut api = Client::start(&env.session(&format!("{name}-api"))).await;
    api.subscribe(CSR_TOPIC).await;
    api.subscribe(PROVISION_TOPIC).await;
    let mut backend = env.backend(&format!("acorn-pups/status/{name}")).await;

    let mut child = device(env, &image, true);
    wait_online(&mut backend).await;
    writeln!(child.0.stdin.as_mut().unwrap(), "rotate").unwrap();
    loop {
        let (topic, request) = next_json(&mut api).await;
        if topic == CSR_TOPIC {
            if at == KillAt::CsrSent {
                break;
            }
            answer_csr(env, &mut api, &request).await;
        } else if topic == PROVISION_TOPIC {
            if at == KillAt::CandidateStaged {
                break;
            }
            let body = json!({"thingName": name});
            api.publish(
                &format!("{PROVISION_TOPIC}/accepted"),
                body.to_string().as_bytes(),
            )
            .await;
            if at == KillAt::Committed {
                loop {
                    let (_, v) = next_json(&mut backend).await;
                    if v["rotation"] == "committed" {
                        break;
                    }
                }
            }
            break;
        }
    }
    child.kill();

    // Start again: it must come online with a whole identity, the candidate slot clean.
    let mut child = device(env, &image, true);
    wait_online(&mut backend).await;
    let mut image_file = acorn_agent::DeviceImage::open_copy(&image, None).unwrap();
    assert!(
        !image_file.slots().has_candidate().unwrap(),
        "{at:?}: the candidate slot is clean after the start"
    );
    drop(image_file);
    let after = fingerprint(&image);
    // And it is not stuck: a new rotation runs to its commit.
    writeln!(child.0.stdin.as_mut().unwrap(), "rotate").unwrap();
    answer_until_committed(env, &mut api, &mut backend, name).await;
    child.kill();
    assert_ne!(
        after,
        fingerprint(&image),
        "{at:?}: the new rotation committed"
    );
    (before, after)
}

/// The fingerprint of the image's identity, read from a copy (loading writes the identity's
/// metadata, and the device may be running on the file).
fn fingerprint(image: &Path) -> String {
    let mut image = acorn_agent::DeviceImage::open_copy(image, None).unwrap();
    image
        .load_identity(acorn_agent::device_image::unix_now())
        .expect("a whole identity")
        .metadata
        .certificate_fingerprint
}

#[tokio::test]
async fn a_kill_between_the_steps_of_a_rotation_never_leaves_the_device_stuck() {
    let env = Env::with(BrokerSetup {
        extra_acl_lines: [CSR_TOPIC, PROVISION_TOPIC]
            .iter()
            .flat_map(|t| {
                [
                    format!("pattern readwrite {t}"),
                    format!("pattern readwrite {t}/+"),
                ]
            })
            .collect(),
        ..BrokerSetup::default()
    });
    // Before a certificate exists, and with a candidate not yet tried: the old one stays.
    for (name, at) in [
        ("acorn-k1", KillAt::CsrSent),
        ("acorn-k2", KillAt::CandidateStaged),
    ] {
        let (before, after) = kill_during_rotation(&env, name, at).await;
        assert_eq!(before, after, "{at:?}: the old identity stays");
    }
    // During the trial: the old one or the new one, whole (the test asserts it loads).
    kill_during_rotation(&env, "acorn-k3", KillAt::Trial).await;
    // After the commit: the new one.
    let (before, after) = kill_during_rotation(&env, "acorn-k4", KillAt::Committed).await;
    assert_ne!(before, after, "the committed identity stays");
}
