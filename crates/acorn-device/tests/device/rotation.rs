//! Certificate rotation in the core: the whole exchange with AWS IoT's provisioning API and
//! the driver (key, candidate, trial, commit), a refused certificate, a failed trial rolled
//! back, rejected answers retried with backoff, the expiry trigger, "already rotating", a
//! device without rotation, and a connection lost mid-way.

use acorn_device::acorn_mqtt::provisioning::{
    CREATE_FROM_CSR, CREATE_FROM_CSR_ACCEPTED, CREATE_FROM_CSR_REJECTED,
};
use acorn_device::rotation::{RotationConfig, RotationInput, RotationRequest};
use acorn_device::{
    Action, CertificateFacts, DeviceConfig, MemorySettings, Notice, TransportEvent,
};
use serde_json::{json, Value};

use crate::support::{config, json, notices, publishes, Sim, COMMANDS, STATUS, UNIX0};

const TEMPLATE: &str = "AcornPupsRotation";
const REGISTER: &str = "$aws/provisioning-templates/AcornPupsRotation/provision/json";
const NEW_ID: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OLD_ID: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn rotating_config() -> DeviceConfig {
    let mut c = config();
    c.rotation = Some(RotationConfig::new(TEMPLATE).unwrap());
    let mut facts = CertificateFacts::new(UNIX0 / 1000 - 86_400, UNIX0 / 1000 + 365 * 86_400);
    facts.fingerprint = Some(OLD_ID.into());
    c.certificate = facts;
    c
}

fn online(c: DeviceConfig) -> Sim {
    let mut sim = Sim::with(c, MemorySettings::default());
    sim.connect(false);
    sim
}

fn requests(actions: &[Action]) -> Vec<RotationRequest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Rotation(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// The rotation answers (status messages with `command: rotate-certificate`).
fn answers(actions: &[Action]) -> Vec<Value> {
    publishes(actions)
        .into_iter()
        .filter(|p| p.topic == STATUS)
        .map(json)
        .filter(|v| v["command"] == "rotate-certificate")
        .collect()
}

fn input(sim: &mut Sim, input: RotationInput) -> Vec<Action> {
    let now = sim.now();
    sim.device.rotation(now, input);
    sim.take()
}

fn published_on(actions: &[Action], topic: &str) -> Vec<Value> {
    publishes(actions)
        .into_iter()
        .filter(|p| p.topic == topic)
        .map(json)
        .collect()
}

/// Command → key → CSR published on the API (after subscribing to the answers).
fn start_to_csr(sim: &mut Sim) -> Vec<Action> {
    let actions = sim.message(
        COMMANDS,
        br#"{"requestId":"rot-1","command":"rotate-certificate"}"#,
    );
    assert_eq!(requests(&actions), [RotationRequest::MakeKey]);
    let started = answers(&actions);
    assert_eq!(started[0]["rotation"], "started");
    assert_eq!(started[0]["requestId"], "rot-1");
    let actions = input(
        sim,
        RotationInput::Csr {
            pem: "CSR-PEM".into(),
        },
    );
    let filters = actions
        .iter()
        .find_map(|a| match a {
            Action::Subscribe(f) => Some(f.clone()),
            _ => None,
        })
        .expect("the answer topics are subscribed first");
    assert!(filters.contains(&CREATE_FROM_CSR_ACCEPTED.to_string()));
    assert!(
        published_on(&actions, CREATE_FROM_CSR).is_empty(),
        "not before the SUBACK"
    );
    let actions = sim.event(TransportEvent::SubAck { granted: true });
    assert_eq!(
        published_on(&actions, CREATE_FROM_CSR),
        [json!({"certificateSigningRequest": "CSR-PEM"})]
    );
    actions
}

fn accepted_certificate(sim: &mut Sim) -> Vec<Action> {
    let answer = json!({
        "certificateId": NEW_ID, "certificatePem": "NEW-PEM",
        "certificateOwnershipToken": "token-1"
    });
    sim.message(CREATE_FROM_CSR_ACCEPTED, answer.to_string().as_bytes())
}

#[test]
fn a_command_rotates_through_the_api_tries_the_new_certificate_then_commits() {
    let mut sim = online(rotating_config());
    start_to_csr(&mut sim);
    let actions = accepted_certificate(&mut sim);
    assert_eq!(
        requests(&actions),
        [RotationRequest::StageCandidate {
            certificate_pem: "NEW-PEM".into(),
            certificate_id: NEW_ID.into()
        }]
    );
    let actions = input(&mut sim, RotationInput::Staged);
    assert_eq!(
        published_on(&actions, REGISTER),
        [json!({"certificateOwnershipToken": "token-1", "parameters": {"DeviceId": "acorn-0001"}})]
    );
    let registered = json!({"deviceConfiguration": {}, "thingName": "acorn-0001"});
    let actions = sim.message(
        &format!("{REGISTER}/accepted"),
        registered.to_string().as_bytes(),
    );
    assert_eq!(requests(&actions), [RotationRequest::UseCandidate]);
    assert!(actions.iter().any(|a| matches!(a, Action::Disconnect)));
    // The trial: a new connection (with the candidate, the driver's part) reaching `online`.
    let actions = sim.connect_next(true);
    assert_eq!(requests(&actions), [RotationRequest::Commit]);
    let mut facts = CertificateFacts::new(UNIX0 / 1000, UNIX0 / 1000 + 365 * 86_400);
    facts.fingerprint = Some(NEW_ID.into());
    let actions = input(&mut sim, RotationInput::Committed { certificate: facts });
    let done = answers(&actions);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["rotation"], "committed");
    assert_eq!(done[0]["certificateId"], NEW_ID);
    assert_eq!(done[0]["requestId"], "rot-1");
    assert_eq!(done[0]["result"], "ok");
    assert!(!sim.device.is_rotating());
    assert_eq!(
        sim.device.certificate().fingerprint.as_deref(),
        Some(NEW_ID)
    );
}

#[test]
fn a_certificate_for_another_key_is_refused_and_the_old_identity_stays() {
    let mut sim = online(rotating_config());
    start_to_csr(&mut sim);
    accepted_certificate(&mut sim);
    let actions = input(
        &mut sim,
        RotationInput::StageRefused {
            reason: "the certificate is not for the key made on this device".into(),
        },
    );
    // Nothing was stored: nothing to roll back, no reconnect.
    assert!(requests(&actions).is_empty());
    assert!(!actions.iter().any(|a| matches!(a, Action::Disconnect)));
    let failed = answers(&actions);
    assert_eq!(failed[0]["rotation"], "failed");
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains("not for the key"));
    assert_eq!(failed[0]["certificateId"], OLD_ID);
    // Retried later (60 s, the first backoff step), from a new key.
    let actions = sim.advance(59_000);
    assert!(requests(&actions).is_empty());
    let actions = sim.advance(2_000);
    assert_eq!(requests(&actions), [RotationRequest::MakeKey]);
}

#[test]
fn a_failed_trial_is_rolled_back_and_says_why() {
    let mut sim = online(rotating_config());
    start_to_csr(&mut sim);
    accepted_certificate(&mut sim);
    input(&mut sim, RotationInput::Staged);
    let registered = json!({"thingName": "acorn-0001"});
    sim.message(
        &format!("{REGISTER}/accepted"),
        registered.to_string().as_bytes(),
    );
    // The broker refuses the candidate.
    let mut actions = Vec::new();
    for _ in 0..10 {
        let due = sim.device.poll_timeout().unwrap();
        let step = sim.advance(due.saturating_sub(sim.mono));
        let connect = step.iter().any(|a| matches!(a, Action::Connect(_)));
        actions.extend(step);
        if connect {
            break;
        }
    }
    assert!(actions.iter().any(|a| matches!(a, Action::Connect(_))));
    let actions = sim.event(TransportEvent::CredentialsRefused {
        diagnosis: "client certificate rejected by the broker: it has been revoked".into(),
    });
    let discard = requests(&actions);
    assert!(
        matches!(&discard[..], [RotationRequest::Discard { reason }] if reason.contains("revoked"))
    );
    let actions = input(&mut sim, RotationInput::Discarded);
    assert!(notices(&actions)
        .iter()
        .any(|n| matches!(n, Notice::RotationRolledBack { reason } if reason.contains("revoked"))));
    // The device reconnects (with its old identity: the driver's part) and the answer,
    // queued while offline, goes out.
    let actions = sim.connect_next(true);
    assert!(publishes(&actions)
        .iter()
        .any(|p| json(p)["status"] == "online"));
    // (Unacknowledged answers are sent again first: QoS 1.)
    let rolled = answers(&actions)
        .into_iter()
        .find(|v| v["rotation"] == "rolled-back")
        .expect("the rolled-back answer");
    assert_eq!(rolled["status"], "error");
    assert!(rolled["error"]
        .as_str()
        .unwrap()
        .contains("trial connection"));
    assert_eq!(rolled["certificateId"], OLD_ID);
}

#[test]
fn a_rejected_answer_is_reported_and_retried_with_backoff() {
    let mut sim = online(rotating_config());
    start_to_csr(&mut sim);
    let rejected = json!({"statusCode": 400, "errorCode": "InvalidCsr", "errorMessage": "bad CSR"});
    let actions = sim.message(CREATE_FROM_CSR_REJECTED, rejected.to_string().as_bytes());
    let failed = answers(&actions);
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains("CreateCertificateFromCsr rejected: 400 InvalidCsr: bad CSR"));
    // 60 s, then 120 s, then 240 s ...
    let mut retries = Vec::new();
    for _ in 0..3 {
        let before = sim.mono;
        let mut waited = 0;
        loop {
            let actions = sim.advance(1_000);
            sim.event(TransportEvent::PingResponse);
            waited += 1_000;
            if requests(&actions).contains(&RotationRequest::MakeKey) {
                retries.push(sim.mono - before);
                break;
            }
            assert!(waited < 1_000_000, "a retry comes");
        }
        let actions = input(
            &mut sim,
            RotationInput::KeyFailed {
                reason: "no entropy".into(),
            },
        );
        assert!(notices(&actions)
            .iter()
            .any(|n| matches!(n, Notice::RotationFailed { .. })));
    }
    assert_eq!(retries, [60_000, 120_000, 240_000]);
}

#[test]
fn a_second_trigger_is_answered_already_rotating_and_a_device_without_rotation_says_so() {
    let mut sim = online(rotating_config());
    start_to_csr(&mut sim);
    let actions = sim.message(
        COMMANDS,
        br#"{"requestId":"rot-2","command":"rotate-certificate"}"#,
    );
    let answer = &answers(&actions)[0];
    assert_eq!(answer["rotation"], "already-rotating");
    assert_eq!(answer["error"], "already rotating");
    assert_eq!(answer["requestId"], "rot-2");
    let now = sim.now();
    assert!(sim.device.rotate(now).is_err());

    let mut plain = online(config());
    let actions = plain.message(
        COMMANDS,
        br#"{"requestId":"rot-3","command":"rotate-certificate"}"#,
    );
    let answer = &answers(&actions)[0];
    assert_eq!(answer["result"], "error");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("no certificate rotation"));
    assert!(requests(&actions).is_empty());
}

#[test]
fn a_certificate_near_its_end_rotates_by_itself() {
    let mut c = rotating_config();
    let mut facts = CertificateFacts::new(UNIX0 / 1000 - 300 * 86_400, UNIX0 / 1000 + 20 * 86_400);
    facts.fingerprint = Some(OLD_ID.into());
    c.certificate = facts;
    let mut sim = Sim::with(c, MemorySettings::default());
    // Checked as the device comes online (and at every timer after).
    let actions = sim.connect(false);
    assert_eq!(requests(&actions), [RotationRequest::MakeKey]);
    let started = answers(&actions);
    assert_eq!(started[0]["rotation"], "started");
    assert!(started[0].get("requestId").is_none());
}

/// `days_before` above the CA's certificate lifetime: the expiry trigger renews once, then
/// leaves the new certificate alone (it would rotate for ever otherwise).
#[test]
fn an_expiry_rotation_to_a_certificate_that_is_also_short_does_not_loop() {
    let mut c = rotating_config();
    let mut rotation = RotationConfig::new(TEMPLATE).unwrap();
    rotation.days_before = 400;
    c.rotation = Some(rotation);
    let mut sim = Sim::with(c, MemorySettings::default());
    let actions = sim.connect(false);
    assert_eq!(requests(&actions), [RotationRequest::MakeKey]);
    input(
        &mut sim,
        RotationInput::Csr {
            pem: "CSR-PEM".into(),
        },
    );
    sim.event(TransportEvent::SubAck { granted: true });
    accepted_certificate(&mut sim);
    input(&mut sim, RotationInput::Staged);
    let registered = json!({"deviceConfiguration": {}, "thingName": "acorn-0001"});
    sim.message(
        &format!("{REGISTER}/accepted"),
        registered.to_string().as_bytes(),
    );
    sim.connect_next(true);
    let mut facts = CertificateFacts::new(UNIX0 / 1000, UNIX0 / 1000 + 365 * 86_400);
    facts.fingerprint = Some(NEW_ID.into());
    let actions = input(&mut sim, RotationInput::Committed { certificate: facts });
    assert_eq!(answers(&actions)[0]["rotation"], "committed");
    // Hours of timers and a reconnect: no second rotation of the new certificate.
    let mut later = Vec::new();
    for _ in 0..12 {
        later.extend(sim.advance(3_600_000));
    }
    later.extend(sim.connect_next(true));
    assert!(requests(&later).is_empty(), "{:?}", requests(&later));
}

#[test]
fn a_request_lost_with_its_connection_is_sent_again_on_the_next_one() {
    let mut sim = online(rotating_config());
    start_to_csr(&mut sim);
    sim.event(TransportEvent::Disconnected {
        cause: acorn_device::acorn_mqtt::DisconnectCause::Network,
        diagnosis: "TCP reset".into(),
    });
    let actions = sim.connect_next(true);
    // Subscribed again to the answers (the SUBACK answered by the helper), then the CSR again.
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Subscribe(f) if f.len() == 4)));
    assert_eq!(published_on(&actions, CREATE_FROM_CSR).len(), 1);
    // An answer nobody waits for is ignored.
    let actions = sim.message(
        &format!("{REGISTER}/accepted"),
        br#"{"thingName":"acorn-0001"}"#,
    );
    assert!(requests(&actions).is_empty());
}

#[test]
fn against_the_local_stack_every_api_topic_carries_the_device_id() {
    let mut c = rotating_config();
    if let Some(r) = c.rotation.as_mut() {
        r.topic_prefix = acorn_device::acorn_mqtt::provisioning::local_prefix("acorn-0001");
    }
    let mut sim = online(c);
    sim.message(
        COMMANDS,
        br#"{"requestId":"rot-l","command":"rotate-certificate"}"#,
    );
    let actions = input(&mut sim, RotationInput::Csr { pem: "CSR".into() });
    let filters = actions
        .iter()
        .find_map(|a| match a {
            Action::Subscribe(f) => Some(f.clone()),
            _ => None,
        })
        .unwrap();
    assert!(filters
        .iter()
        .all(|f| f.starts_with("acorn-local/acorn-0001/$aws/")));
    let actions = sim.event(TransportEvent::SubAck { granted: true });
    let local = "acorn-local/acorn-0001/$aws/certificates/create-from-csr/json";
    assert_eq!(published_on(&actions, local).len(), 1);
    // AWS's own answer topic is not where this device listens.
    let answer =
        json!({"certificateId": NEW_ID, "certificatePem": "P", "certificateOwnershipToken": "t"});
    let actions = sim.message(CREATE_FROM_CSR_ACCEPTED, answer.to_string().as_bytes());
    assert!(requests(&actions).is_empty());
    let actions = sim.message(&format!("{local}/accepted"), answer.to_string().as_bytes());
    assert!(matches!(
        &requests(&actions)[..],
        [RotationRequest::StageCandidate { .. }]
    ));
}

/// A commit the driver cannot finish (flash) after the trial passed: reported, nothing
/// discarded (the copy may be half done; the next boot finishes it), and no retry until the
/// restart — a retry would mint a certificate that can never be stored.
#[test]
fn a_failed_commit_waits_for_the_restart_instead_of_minting_certificates() {
    let mut sim = online(rotating_config());
    start_to_csr(&mut sim);
    accepted_certificate(&mut sim);
    input(&mut sim, RotationInput::Staged);
    let registered = json!({"deviceConfiguration": {}, "thingName": "acorn-0001"});
    sim.message(
        &format!("{REGISTER}/accepted"),
        registered.to_string().as_bytes(),
    );
    let actions = sim.connect_next(true);
    assert_eq!(requests(&actions), [RotationRequest::Commit]);
    let actions = input(
        &mut sim,
        RotationInput::CommitFailed {
            reason: "flash write failed".into(),
        },
    );
    assert!(requests(&actions).is_empty(), "nothing is discarded");
    let failed = answers(&actions);
    assert_eq!(failed[0]["rotation"], "failed");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("finishes at the next restart"),
        "{failed:?}"
    );
    assert!(!sim.device.is_rotating());
    // An hour on: no retry; a new command is refused with the reason.
    for _ in 0..3_600 {
        let actions = sim.advance(1_000);
        sim.event(TransportEvent::PingResponse);
        assert!(requests(&actions).is_empty(), "no retry before the restart");
    }
    let actions = sim.message(
        COMMANDS,
        br#"{"requestId":"rot-2","command":"rotate-certificate"}"#,
    );
    assert!(requests(&actions).is_empty());
    let refused = answers(&actions);
    assert_eq!(refused[0]["requestId"], "rot-2");
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap()
            .contains("restart the device"),
        "{refused:?}"
    );
}
