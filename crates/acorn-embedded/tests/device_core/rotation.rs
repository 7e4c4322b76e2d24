//! Certificate rotation as the chip runs it (feature `rotation`): the device core driving the
//! embedded transport through `DeviceDriver` with `acorn_embedded::rotation::Rotation` over
//! the identity's NVS slots (a real acorn-nvs partition in memory), against a real mosquitto
//! whose per-device rules allow the provisioning API under `acorn-local/<id>/` (as in
//! `acorn dev up`), with this test answering it as AWS would: a `rotate-certificate` command
//! ends with the new identity committed and the trial connection made with it; a certificate
//! for another key is refused; one the broker does not trust is rolled back, and the device
//! comes back online with its old identity and says why.

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{CertStore, Slots};
use acorn_device::rotation::RotationConfig;
use acorn_device::{CertificateFacts, Device, DeviceConfig};
use acorn_embedded::device::{DeviceDriver, Input};
use acorn_embedded::host::{OsRng, TokioConnector};
use acorn_embedded::rotation::Rotation;
use acorn_embedded::{Buffers, TlsIdentity, Transport, TransportConfig};
use acorn_mqtt::provisioning::local_prefix;
use acorn_nvs::{MemFlash, Nvs};
use rand::SeedableRng;
use rcgen::CertificateSigningRequestParams;
use rumqttc::QoS;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{TestIo, PARTITION};
use crate::common::{self, Backend, Ca, Env, Setup, WAIT};

const DEVICE: &str = "acorn-0201";

/// How the test answers the CSR.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// A certificate for the CSR's key, from the CA the broker trusts.
    Honest,
    /// A certificate for another key.
    OtherKey,
    /// A certificate for the CSR's key from a CA with the trusted CA's name and another key:
    /// the device (which checks the issuer's name) takes it, the broker refuses it.
    LookAlikeCa,
}

/// Answers one request of the provisioning API as AWS would.
async fn answer(api: &mut Backend, ca: &Ca, topic: &str, payload: &[u8], how: Answer) {
    let prefix = local_prefix(DEVICE);
    let request: Value = serde_json::from_slice(payload).unwrap();
    if topic == format!("{prefix}$aws/certificates/create-from-csr/json") {
        let csr = request["certificateSigningRequest"].as_str().unwrap();
        let pem = match how {
            Answer::Honest => CertificateSigningRequestParams::from_pem(csr)
                .unwrap()
                .signed_by(&ca.issuer)
                .unwrap()
                .pem(),
            Answer::OtherKey => ca.leaf(DEVICE, &[], false).0,
            Answer::LookAlikeCa => CertificateSigningRequestParams::from_pem(csr)
                .unwrap()
                .signed_by(&Ca::new("Acorn Test Root CA").issuer)
                .unwrap()
                .pem(),
        };
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let body = json!({
            "certificateId": acorn_certs::fingerprint(&der),
            "certificatePem": pem,
            "certificateOwnershipToken": "token-1"
        });
        api.publish(&format!("{topic}/accepted"), body.to_string().as_bytes())
            .await;
    } else if topic == format!("{prefix}$aws/provisioning-templates/acorn-pups/provision/json") {
        assert_eq!(request["certificateOwnershipToken"], "token-1");
        assert_eq!(request["parameters"]["DeviceId"], DEVICE);
        let body = json!({"deviceConfiguration": {}, "thingName": DEVICE});
        api.publish(&format!("{topic}/accepted"), body.to_string().as_bytes())
            .await;
    }
}

/// What a rotation by command left: the rotation answers until the last, the active
/// fingerprint before and after, and the device's reports.
struct Outcome {
    answers: Vec<Value>,
    old: String,
    new: String,
    reports: String,
}

async fn rotate(how: Answer) -> Outcome {
    let env = Env::with(Setup {
        local_provisioning: true,
        ..Setup::default()
    });
    let now = common::unix_ms() / 1000;
    // The identity in its own NVS partition, as on the chip.
    let certs = env.ca.device(DEVICE);
    let mut identity_nvs = Nvs::open(MemFlash::new(PARTITION as usize), 0, PARTITION).unwrap();
    let report = CertStore::new(NvsCertKv::new(&mut identity_nvs))
        .allow_custom_endpoint(true)
        .store(&certs, now)
        .unwrap();
    let info = report.certificate.expect("certificate info");
    let identity = TlsIdentity::from_certificates(&certs).unwrap();

    let mut config = DeviceConfig::new(DEVICE, "1.0.0-test").unwrap();
    config.certificate = CertificateFacts::new(info.not_before, info.not_after);
    config.certificate.fingerprint = Some(info.fingerprint.clone());
    let mut rotation = RotationConfig::new("acorn-pups").unwrap();
    rotation.topic_prefix = local_prefix(DEVICE);
    config.rotation = Some(rotation);
    let settings = Nvs::open(MemFlash::new(PARTITION as usize), 0, PARTITION).unwrap();
    let device = Device::new(config, settings, rand::rngs::StdRng::seed_from_u64(7)).unwrap();
    let mut rotator = Rotation::new(identity_nvs, OsRng, "localhost", &info.issuer);
    if how != Answer::LookAlikeCa {
        rotator = rotator.with_ca(env.ca.pem().into_bytes());
    }
    let (tx, inputs) = mpsc::unbounded_channel();
    let io = TestIo::new(inputs);
    let mut driver = DeviceDriver::with_rotation(device, io, rotator);

    let mut backend = env.backend(&format!("acorn-pups/status/{DEVICE}")).await;
    backend
        .client
        .subscribe("acorn-local/+/$aws/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let anchors = env.anchors();
    let mut buffers = Buffers::new();
    let mut transport = Transport::new(
        TokioConnector,
        common::clock(),
        OsRng,
        &identity,
        &anchors,
        TransportConfig::new(env.target()),
        &mut buffers,
    );
    let ca = &env.ca;
    let check = async move {
        let mut answers = Vec::new();
        let mut online = false;
        loop {
            let (topic, payload) = backend.next_publish().await;
            if topic.starts_with("acorn-local/") {
                answer(&mut backend, ca, &topic, &payload, how).await;
                continue;
            }
            let status: Value = serde_json::from_slice(&payload).unwrap();
            if status["status"] == "online" && !online {
                online = true;
                backend
                    .publish(
                        &format!("acorn-pups/commands/{DEVICE}"),
                        br#"{"requestId":"rot-1","command":"rotate-certificate"}"#,
                    )
                    .await;
            }
            if status["command"] == "rotate-certificate" {
                let end = status["rotation"] != "started";
                answers.push(status);
                if end {
                    break;
                }
            }
        }
        tx.send(Input::Shutdown).unwrap();
        answers
    };
    let run = async {
        tokio::time::timeout(WAIT * 6, transport.drive(&mut driver))
            .await
            .expect("the transport returns after the shutdown");
    };
    let ((), answers) = tokio::join!(run, check);

    let slots = driver.rotation_mut().slots_mut();
    let active = Slots::new(slots)
        .allow_custom_endpoint(true)
        .load_active(now)
        .expect("the active identity loads after the rotation");
    let (_, io) = driver.into_parts();
    Outcome {
        answers,
        old: info.fingerprint,
        new: active.metadata.certificate_fingerprint,
        reports: io.reports.join("\n"),
    }
}

#[tokio::test]
async fn a_rotate_command_commits_a_new_identity_tried_on_the_broker_first() {
    let outcome = rotate(Answer::Honest).await;
    let answers = &outcome.answers;
    assert_eq!(answers[0]["rotation"], "started", "{answers:?}");
    assert_eq!(answers[0]["requestId"], "rot-1");
    let last = answers.last().unwrap();
    assert_eq!(
        last["rotation"], "committed",
        "{answers:?}\n{}",
        outcome.reports
    );
    assert_ne!(outcome.old, outcome.new, "the slots hold a new identity");
    // The committed answer went out on the trial connection, made with the new identity.
    assert_eq!(last["certificateId"], outcome.new.as_str());
}

#[tokio::test]
async fn a_certificate_for_another_key_is_refused_and_the_identity_stays() {
    let outcome = rotate(Answer::OtherKey).await;
    let last = outcome.answers.last().unwrap();
    assert_eq!(last["rotation"], "failed", "{:?}", outcome.answers);
    assert_eq!(last["result"], "error");
    assert_eq!(outcome.old, outcome.new, "the identity is kept");
    assert_eq!(last["certificateId"], outcome.old.as_str());
}

#[tokio::test]
async fn a_certificate_the_broker_refuses_is_rolled_back_and_the_device_says_why() {
    let outcome = rotate(Answer::LookAlikeCa).await;
    let last = outcome.answers.last().unwrap();
    assert_eq!(last["rotation"], "rolled-back", "{:?}", outcome.answers);
    let error = last["error"].as_str().unwrap_or_default();
    assert!(error.contains("trial connection"), "{error}");
    assert_eq!(outcome.old, outcome.new, "the identity is kept");
    // Said on the connection made again with the old identity.
    assert_eq!(last["certificateId"], outcome.old.as_str());
}
