//! Certificate rotation of the Linux device runtime against a real mosquitto, with a stand-in
//! for AWS IoT's provisioning MQTT API played by this test (a client signing CSRs with the
//! test CA): a `rotate-certificate` command ends with the new certificate in the image and in
//! use; a certificate for another key is refused and the old identity stays.
//!
//! The stand-in reads every device's requests (the broker grants the API's topics to every client
//! in this test only); the dev stack's own responder is to answer on per-client topics instead.

use acorn_agent::device::RotationConfig;
use acorn_agent::{Device, DeviceImage};
use acorn_test_support::mqtt::{device_image, BrokerSetup, Ca, Client, Env, Validity, WAIT};
use rcgen::{CertificateSigningRequestParams, KeyPair};
use serde_json::{json, Value};

const TEMPLATE: &str = "acorn-pups";
const CSR_TOPIC: &str = "$aws/certificates/create-from-csr/json";
const PROVISION_TOPIC: &str = "$aws/provisioning-templates/acorn-pups/provision/json";
const DEVICE: &str = "acorn-r1";

fn env() -> Env {
    Env::with(BrokerSetup {
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
    })
}

/// How the stand-in answers a CSR.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// A certificate for the CSR's key, from the test CA.
    Honest,
    /// A certificate for a key of its own (as moto does).
    OtherKey,
    /// A certificate for the CSR's key from a CA with the test CA's name but another key:
    /// the device (checking the issuer's name only) takes it, the broker refuses it.
    LookAlikeCa,
}

/// Answers one request of the provisioning API as AWS would.
async fn answer(api: &mut Client, ca: &Ca, publish: rumqttc::Publish, how: Answer) {
    let request: Value = serde_json::from_slice(&publish.payload).unwrap();
    if publish.topic == CSR_TOPIC {
        let csr = request["certificateSigningRequest"].as_str().unwrap();
        let pem = match how {
            Answer::Honest => CertificateSigningRequestParams::from_pem(csr)
                .unwrap()
                .signed_by(&ca.issuer)
                .unwrap()
                .pem(),
            Answer::OtherKey => {
                ca.sign(DEVICE, &[], Validity::Valid, &KeyPair::generate().unwrap())
            }
            Answer::LookAlikeCa => CertificateSigningRequestParams::from_pem(csr)
                .unwrap()
                .signed_by(&Ca::new("Acorn Test CA").issuer)
                .unwrap()
                .pem(),
        };
        let der = acorn_test_support::backend::der(&pem);
        let body = json!({
            "certificateId": acorn_certs::fingerprint(&der),
            "certificatePem": pem,
            "certificateOwnershipToken": "token-1"
        });
        api.publish(
            &format!("{CSR_TOPIC}/accepted"),
            body.to_string().as_bytes(),
        )
        .await;
    } else if publish.topic == PROVISION_TOPIC {
        assert_eq!(request["certificateOwnershipToken"], "token-1");
        let thing = request["parameters"]["DeviceId"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = json!({"deviceConfiguration": {}, "thingName": thing});
        api.publish(
            &format!("{PROVISION_TOPIC}/accepted"),
            body.to_string().as_bytes(),
        )
        .await;
    }
}

/// Runs a rotation by command; the rotation answers seen, until one that ends it.
async fn rotate(env: &Env, how: Answer) -> (Vec<Value>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = device_image(dir.path(), &env.ca, DEVICE);
    let old_fingerprint = fingerprint_in(&image);
    let mut api = Client::start(&env.session("aws-api-stand-in")).await;
    api.subscribe(CSR_TOPIC).await;
    api.subscribe(PROVISION_TOPIC).await;
    let mut backend = env.backend(&format!("acorn-pups/status/{DEVICE}")).await;

    let mut options = env.device_options(&image);
    options.rotation = Some(RotationConfig::new(TEMPLATE).unwrap());
    if how != Answer::LookAlikeCa {
        options.rotation_ca = Some(env.ca.pem().into_bytes());
    }
    let device = Device::open(options).expect("the device opens");
    let handle = device.spawn();
    wait_status(&mut backend, |v| v["status"] == "online").await;
    backend
        .publish(
            &format!("acorn-pups/commands/{DEVICE}"),
            br#"{"requestId":"rot-1","command":"rotate-certificate"}"#,
        )
        .await;
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    loop {
        tokio::select! {
            publish = api.next_publish() => answer(&mut api, &env.ca, publish, how).await,
            publish = backend.next_publish() => {
                let v: Value = serde_json::from_slice(&publish.payload).unwrap();
                if v["command"] == "rotate-certificate" {
                    let end = v["rotation"] != "started";
                    answers.push(v);
                    if end {
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => panic!("no end of the rotation: {answers:?}"),
        }
    }
    handle.shutdown().await.unwrap();
    let new_fingerprint = fingerprint_in(&image);
    assert_ne!(old_fingerprint, "");
    (answers, old_fingerprint, new_fingerprint)
}

async fn wait_status(backend: &mut Client, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let publish = tokio::time::timeout_at(deadline, backend.next_publish())
            .await
            .expect("a status in time");
        let v: Value = serde_json::from_slice(&publish.payload).unwrap();
        if pred(&v) {
            return v;
        }
    }
}

/// The fingerprint of the active identity stored in the image.
fn fingerprint_in(image: &std::path::Path) -> String {
    let mut image = DeviceImage::open(image, None).unwrap();
    let loaded = image
        .load_identity(acorn_agent::device_image::unix_now())
        .unwrap();
    loaded.metadata.certificate_fingerprint
}

#[tokio::test]
async fn a_rotate_command_ends_with_the_new_certificate_stored_and_in_use() {
    let env = env();
    let (answers, old, new) = rotate(&env, Answer::Honest).await;
    assert_eq!(answers[0]["rotation"], "started");
    assert_eq!(answers[0]["requestId"], "rot-1");
    let last = answers.last().unwrap();
    assert_eq!(last["rotation"], "committed", "{answers:?}");
    assert_eq!(last["requestId"], "rot-1");
    assert_ne!(old, new, "the image holds a new certificate");
    assert_eq!(last["certificateId"], new.as_str());
}

#[tokio::test]
async fn a_certificate_for_another_key_is_refused_and_the_old_identity_stays() {
    let env = env();
    let (answers, old, new) = rotate(&env, Answer::OtherKey).await;
    let last = answers.last().unwrap();
    assert_eq!(last["rotation"], "failed", "{answers:?}");
    assert_eq!(last["result"], "error");
    assert_eq!(old, new, "the image keeps its identity");
    assert_eq!(last["certificateId"], old.as_str());
}

/// The broker refuses the new certificate: the trial fails, the device rolls back to its old
/// identity, comes online with it, and says why.
#[tokio::test]
async fn a_certificate_the_broker_refuses_is_rolled_back_and_the_device_says_why() {
    let env = env();
    let (answers, old, new) = rotate(&env, Answer::LookAlikeCa).await;
    let last = answers.last().unwrap();
    assert_eq!(last["rotation"], "rolled-back", "{answers:?}");
    assert_eq!(last["result"], "error");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(error.contains("trial connection"), "{error}");
    assert_eq!(old, new, "the image keeps its identity");
    assert_eq!(last["certificateId"], old.as_str());
}
