//! A power cut at every flash operation of a full certificate rotation (issue 11), driven by
//! the real device core: the device boots from an NVS image (settings and identity on the same
//! partition, as the Linux agent's `DeviceImage`), the test plays the driver as
//! `acorn-agent`'s `device/rotate.rs` does (key and CSR, `stage_checked` into `Slots::stage`,
//! the trial with `Slots::load_candidate`, `Slots::commit` and the reload) and AWS IoT (the
//! CSR signed by the CA of the current certificate, `RegisterThing` accepted).
//!
//! The partition is aged first (earlier boots' metadata rewrites, another application's
//! values) so that the rotation runs a garbage collection: a page erase and copies are cut too.
//! The clean run counts the flash writes and erases from the boot to the `committed` status.
//! Then, for every one of them, with the cut operation clean or torn, on a plain and on an
//! encrypted partition: the run again with the power cut there, and a reboot on what the flash
//! holds — mount, `Slots::recover` (a candidate whose trial never ended is dropped, as the
//! agent does), and the active identity must load, its key must match its certificate, and it
//! must be the old identity or the new one (never a mix); a fresh device core on that image
//! must then rotate to the end.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Instant;

use acorn_certs::candidate::{stage_checked, ExpectedIssuer};
use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{
    fingerprint, CertStore, DeviceCertificates, ExposeSecret, LoadedIdentity, PrivateKey, Recovery,
    SlotError, Slots,
};
use acorn_device::acorn_mqtt::provisioning::ProvisioningTopics;
use acorn_device::acorn_mqtt::DeviceSettings;
use acorn_device::rotation::{RotationConfig, RotationInput, RotationRequest};
use acorn_device::{Action, CertificateFacts, Notice, SettingsStore, Tag, TransportEvent};
use acorn_nvs::{IntValue, MemFlash, Mode, Nvs, NvsKeys, PowerCut};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use serde_json::{json, Value};

use crate::support::{config, Sim, DEVICE, STATUS, UNIX0};

/// The partition: 6 pages, as the slot sweep of `acorn-certs` (and ESP-IDF's default 24 KB).
const SIZE: u32 = 0x6000;
const TEMPLATE: &str = "AcornPupsRotation";
const ENDPOINT: &str = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com";
/// Bytes of the cut operation that reach the flash in the torn mode: mid-entry (an entry is
/// 32 bytes; 17 ends inside its key), all of a bitmap update, the start of a page erase.
const TORN_BYTES: usize = 17;
/// The aged partition: free entries left outside the page kept for garbage collection.
const AGED_FREE_ENTRIES: usize = 40;
/// Where the aged partition keeps another application's values.
const BOOT_LOG_NAMESPACE: &str = "boot_log";

type Image = Nvs<MemFlash>;

/// A certificate and its key, PEM.
#[derive(PartialEq, Eq)]
struct Identity {
    cert_pem: String,
    key_pem: String,
}

impl Identity {
    fn fingerprint(&self) -> String {
        let der = pem_der(&self.cert_pem);
        fingerprint(&der)
    }
}

fn pem_der(text: &str) -> Vec<u8> {
    let certs = DeviceCertificates {
        device_certificate: text.as_bytes().to_vec(),
        private_key: PrivateKey::new(Vec::new()),
        iot_endpoint: ENDPOINT.into(),
        device_id: DEVICE.into(),
    };
    certs.certificate_der().expect("a PEM certificate")
}

/// What every run shares. Keys, CSRs and certificates are made once: ECDSA signatures are
/// random (their length too), and the sweep needs every run to write the same bytes in the
/// same flash operations as the clean run it counted.
struct Fixture {
    /// The identity the device is provisioned with.
    old: Identity,
    /// The key and CSR the device makes at its first and second rotation.
    csrs: [(String, String); 2],
    /// What "AWS" issues for each of those CSRs, with the key that stays on the device.
    new: [Identity; 2],
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let p256 = || KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 keygen");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Acorn Test Rotation CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        ca_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        ca_params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let ca = CertifiedIssuer::self_signed(ca_params, p256()).expect("CA");
        let device_params = |params: &mut CertificateParams| {
            params.is_ca = IsCa::ExplicitNoCa;
            params.not_before = rcgen::date_time_ymd(2026, 1, 1);
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        };

        let old_key = p256();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "AWS IoT Certificate");
        device_params(&mut params);
        let old = Identity {
            cert_pem: params.signed_by(&old_key, &ca).expect("signed").pem(),
            key_pem: old_key.serialize_pem(),
        };

        let rotation = || {
            // The key and CSR as the agent makes them (subject CN = the device id).
            let key = p256();
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.distinguished_name.push(DnType::CommonName, DEVICE);
            let csr = params
                .serialize_request(&key)
                .and_then(|r| r.pem())
                .expect("CSR");
            // AWS: the CSR parsed (its signature checked) and signed by the CA.
            let mut request = CertificateSigningRequestParams::from_pem(&csr).expect("CSR");
            device_params(&mut request.params);
            let cert_pem = request.signed_by(&ca).expect("signed").pem();
            let identity = Identity {
                cert_pem,
                key_pem: key.serialize_pem(),
            };
            ((key.serialize_pem(), csr), identity)
        };
        let (first, second) = (rotation(), rotation());
        Fixture {
            old,
            csrs: [first.0, second.0],
            new: [first.1, second.1],
        }
    })
}

fn now_s(sim: &Sim<Image>) -> u64 {
    (UNIX0 + sim.mono) / 1000
}

fn mount(flash: MemFlash, keys: Option<&NvsKeys>) -> Image {
    Nvs::open_with(flash, 0, SIZE, keys, Mode::ReadWrite).expect("the partition mounts")
}

/// A provisioned device's image: its settings and the old identity, after enough boots
/// (each rewrites the identity's metadata) that the partition is nearly full: the rotation
/// then runs a garbage collection (a page erased, its live entries copied), and the sweep
/// cuts that too. Returns the image and the boots it took.
fn base_image(keys: Option<&NvsKeys>) -> (Vec<u8>, u32) {
    let fx = fixture();
    let mut nvs = mount(MemFlash::new(SIZE as usize), keys);
    SettingsStore::save(&mut nvs, &DeviceSettings::default()).expect("settings stored");
    let certs = DeviceCertificates {
        device_certificate: fx.old.cert_pem.clone().into_bytes(),
        private_key: PrivateKey::new(fx.old.key_pem.clone().into_bytes()),
        iot_endpoint: ENDPOINT.into(),
        device_id: DEVICE.into(),
    };
    CertStore::new(NvsCertKv::new(&mut nvs))
        .store(&certs, UNIX0 / 1000)
        .expect("provisioned");
    let mut boots = 0u32;
    loop {
        let stats = nvs.stats();
        // All pages but the one kept for garbage collection in use, and little room left.
        if stats.pages_in_use + 1 == stats.pages && stats.available_entries < AGED_FREE_ENTRIES {
            break;
        }
        boots += 1;
        assert!(boots < 1000, "the partition never fills");
        slots(&mut nvs)
            .load_active(UNIX0 / 1000 - 86_400)
            .expect("an earlier boot");
        // Another application's value per boot, never rewritten: every page keeps live
        // entries, so the collection has entries to copy.
        let ns = nvs.namespace(BOOT_LOG_NAMESPACE).expect("namespace");
        nvs.set_int(ns, &format!("boot{boots}"), IntValue::U32(boots))
            .expect("a boot logged");
    }
    (nvs.release().into_bytes(), boots)
}

/// Pages whose content shows an erase between `before` and `after` (a bit back to 1: NOR
/// writes only clear bits).
fn pages_erased(before: &[u8], after: &[u8]) -> usize {
    before
        .chunks(4096)
        .zip(after.chunks(4096))
        .filter(|(b, a)| b.iter().zip(a.iter()).any(|(b, a)| !b & a != 0))
        .count()
}

/// The power went off: the run stops at the first flash operation that fails (named: the
/// step of the boot or of the driver it interrupted).
#[derive(Debug)]
struct PowerOff(&'static str);

/// A slot operation's result: in a run with a cut armed, a failure is the cut (everything
/// before it is the clean run, which has none); in a clean run it is a bug.
fn flash<T>(
    result: Result<T, SlotError<acorn_nvs::Error>>,
    cutting: bool,
    what: &'static str,
) -> Result<T, PowerOff> {
    match result {
        Ok(value) => Ok(value),
        Err(_) if cutting => Err(PowerOff(what)),
        Err(e) => panic!("{what} failed without a power cut: {e}"),
    }
}

fn slots(nvs: &mut Image) -> Slots<&mut Image> {
    Slots::new(nvs).allow_custom_endpoint(true)
}

/// The boot as the agent does it: finish or drop what an interrupted rotation left, then load
/// the active identity (which writes its metadata back).
fn boot(nvs: &mut Image, now: u64, cutting: bool) -> Result<(Recovery, LoadedIdentity), PowerOff> {
    let mut slots = slots(nvs);
    let recovery = flash(slots.recover(), cutting, "boot: recover")?;
    if recovery == Recovery::CandidatePending {
        flash(slots.discard(), cutting, "boot: discard")?;
    }
    let loaded = flash(slots.load_active(now), cutting, "boot: load")?;
    Ok((recovery, loaded))
}

fn facts(loaded: &LoadedIdentity) -> CertificateFacts {
    let info = loaded
        .report
        .certificate
        .as_ref()
        .expect("certificate info");
    let mut facts = CertificateFacts::new(info.not_before, info.not_after);
    facts.fingerprint = Some(loaded.metadata.certificate_fingerprint.clone());
    facts
}

/// The driver's side of the rotation, as `acorn-agent`'s `device/rotate.rs`.
struct Driver {
    /// Which of the fixture's keys and certificates this rotation uses.
    rotation: usize,
    cutting: bool,
    /// The new key, until its certificate is staged with it.
    key: Option<String>,
    /// The active certificate's issuer (the new one must have the same).
    issuer: String,
    /// The trial connection runs with the candidate.
    trial_with_candidate: bool,
}

impl Driver {
    fn step(
        &mut self,
        sim: &mut Sim<Image>,
        request: RotationRequest,
    ) -> Result<Option<RotationInput>, PowerOff> {
        let fx = fixture();
        let now = now_s(sim);
        let cutting = self.cutting;
        Ok(Some(match request {
            RotationRequest::MakeKey => {
                let (key, csr) = fx.csrs[self.rotation].clone();
                self.key = Some(key);
                RotationInput::Csr { pem: csr }
            }
            RotationRequest::StageCandidate {
                certificate_pem, ..
            } => {
                let key = self.key.take().expect("a key was made");
                let certs = DeviceCertificates {
                    device_certificate: certificate_pem.into_bytes(),
                    private_key: PrivateKey::new(key.into_bytes()),
                    iot_endpoint: ENDPOINT.into(),
                    device_id: DEVICE.into(),
                };
                // The agent's one staging check: the key, the dates, the same issuer.
                let mut slots = slots(sim.device.store_mut());
                let expected = ExpectedIssuer::SameAs(&self.issuer);
                match stage_checked(&mut slots, &certs, now, expected) {
                    Ok(_) => RotationInput::Staged,
                    Err(_) if cutting => return Err(PowerOff("stage")),
                    Err(reason) => panic!("stage failed without a power cut: {reason}"),
                }
            }
            RotationRequest::UseCandidate => {
                flash(
                    slots(sim.device.store_mut()).load_candidate(now),
                    cutting,
                    "trial: load the candidate",
                )?;
                self.trial_with_candidate = true;
                return Ok(None);
            }
            RotationRequest::Commit => {
                assert!(
                    self.trial_with_candidate,
                    "the trial ran with the candidate"
                );
                let mut slots = slots(sim.device.store_mut());
                flash(slots.commit(), cutting, "commit")?;
                let loaded = flash(slots.load_active(now), cutting, "reload after the commit")?;
                self.trial_with_candidate = false;
                RotationInput::Committed {
                    certificate: facts(&loaded),
                }
            }
            other => panic!("a rotation without failures never asks {other:?}"),
        }))
    }
}

/// A device core on `nvs` (booted: `loaded` is its identity) goes online, rotates, and the
/// test plays the transport, AWS IoT and the driver until the `committed` status is
/// acknowledged — or until the power goes off.
fn rotate(
    nvs: Image,
    loaded: &LoadedIdentity,
    rotation: usize,
    cutting: bool,
) -> (Result<(), PowerOff>, Image) {
    let mut c = config();
    c.rotation = Some(RotationConfig::new(TEMPLATE).expect("template"));
    c.certificate = facts(loaded);
    let mut sim = Sim::with(c, nvs);
    let issuer = loaded
        .report
        .certificate
        .as_ref()
        .map(|c| c.issuer.clone())
        .unwrap_or_default();
    let mut driver = Driver {
        rotation,
        cutting,
        key: None,
        issuer,
        trial_with_candidate: false,
    };
    let result = drive(&mut sim, &mut driver);
    (result, sim.device.into_store())
}

fn drive(sim: &mut Sim<Image>, driver: &mut Driver) -> Result<(), PowerOff> {
    let fx = fixture();
    let topics = ProvisioningTopics::new("", TEMPLATE).expect("topics");
    let mut queue: VecDeque<Action> = sim.start().into();
    let (mut connected, mut triggered, mut committed) = (false, false, false);
    for _ in 0..200 {
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Connect(_) => {
                    sim.mono += 20;
                    connected = true;
                    queue.extend(sim.event(TransportEvent::ConnAck {
                        session_present: false,
                    }));
                }
                Action::Disconnect => connected = false,
                Action::Subscribe(_) => {
                    sim.mono += 20;
                    queue.extend(sim.event(TransportEvent::SubAck { granted: true }));
                }
                // Without a connection a publish is dropped (the session sends it again).
                Action::Publish(_) if !connected => {}
                Action::Publish(p) => {
                    sim.mono += 5;
                    queue.extend(sim.event(TransportEvent::PubAck(p.tag)));
                    let body: Value = serde_json::from_slice(&p.payload).expect("JSON");
                    if p.topic == STATUS && body["rotation"] == "committed" {
                        assert!(committed, "the committed status follows the commit");
                        return Ok(());
                    }
                    if p.tag != Tag::Rotation {
                        continue;
                    }
                    // AWS IoT's provisioning API.
                    let (topic, answer) = if p.topic == topics.create_from_csr[0] {
                        let csr = body["certificateSigningRequest"].as_str().expect("a CSR");
                        let index = fx
                            .csrs
                            .iter()
                            .position(|(_, c)| c == csr)
                            .expect("the CSR of a key the device made");
                        let issued = &fx.new[index];
                        let answer = json!({
                            "certificateId": issued.fingerprint(),
                            "certificatePem": issued.cert_pem,
                            "certificateOwnershipToken": format!("token-{index}"),
                        });
                        (topics.create_from_csr[1].clone(), answer)
                    } else if p.topic == topics.register[0] {
                        assert!(body["certificateOwnershipToken"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("token-")));
                        assert_eq!(body["parameters"]["DeviceId"], DEVICE);
                        let answer = json!({"deviceConfiguration": {}, "thingName": DEVICE});
                        (topics.register[1].clone(), answer)
                    } else {
                        panic!("an unexpected provisioning request on {}", p.topic);
                    };
                    sim.mono += 50;
                    queue.extend(sim.message(&topic, answer.to_string().as_bytes()));
                }
                Action::Rotation(request) => {
                    if let Some(input) = driver.step(sim, request)? {
                        let now = sim.now();
                        sim.device.rotation(now, input);
                        queue.extend(sim.take());
                    }
                }
                Action::Notice(Notice::RotationCommitted { certificate_id }) => {
                    assert_eq!(certificate_id, fx.new[driver.rotation].fingerprint());
                    committed = true;
                }
                Action::Notice(
                    n @ (Notice::RotationFailed { .. }
                    | Notice::RotationRolledBack { .. }
                    | Notice::RotationIgnored { .. }),
                ) => panic!("the rotation went wrong: {n:?}"),
                _ => {}
            }
        }
        if !triggered && connected {
            // `acorn device rotate`, once online.
            triggered = true;
            let now = sim.now();
            sim.device.rotate(now).expect("a rotation starts");
            queue.extend(sim.take());
            continue;
        }
        let due = sim.device.poll_timeout().expect("a timer runs");
        queue.extend(sim.advance(due.saturating_sub(sim.mono).max(1)));
    }
    panic!("the rotation did not end within 200 turns");
}

/// What a boot after a cut found active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Old,
    New,
}

/// The run of one mode: `None` counts the operations (no cut), `Some(cut)` cuts there. The
/// flash, and the step the cut interrupted.
fn swept_run(
    base: &[u8],
    keys: Option<&NvsKeys>,
    cut: Option<PowerCut>,
) -> (MemFlash, Option<&'static str>) {
    let cutting = cut.is_some();
    let mut flash = MemFlash::from_bytes(base.to_vec());
    flash.cut_power(cut.unwrap_or(PowerCut {
        at_op: usize::MAX,
        torn_bytes: 0,
    }));
    // Mounting a clean image writes nothing: the cut falls in the boot or the rotation.
    let mut nvs = mount(flash, keys);
    let (step, nvs) = match boot(&mut nvs, UNIX0 / 1000, cutting) {
        Ok((recovery, loaded)) => {
            assert_eq!(recovery, Recovery::Clean);
            let (result, nvs) = rotate(nvs, &loaded, 0, cutting);
            (result.err().map(|PowerOff(step)| step), nvs)
        }
        Err(PowerOff(step)) => (Some(step), nvs),
    };
    (nvs.release(), step)
}

/// Power back on after a cut: the identity the device boots with, and a whole rotation from
/// there.
fn reboot_and_rotate(bytes: Vec<u8>, keys: Option<&NvsKeys>, what: &str) -> (Outcome, Recovery) {
    let fx = fixture();
    let mut nvs = Nvs::open_with(MemFlash::from_bytes(bytes), 0, SIZE, keys, Mode::ReadWrite)
        .unwrap_or_else(|e| panic!("{what}: the partition does not mount: {e}"));
    let now = UNIX0 / 1000;
    let mut boot_slots = slots(&mut nvs);
    let recovery = boot_slots
        .recover()
        .unwrap_or_else(|e| panic!("{what}: recover: {e}"));
    if recovery == Recovery::CandidatePending {
        boot_slots
            .discard()
            .unwrap_or_else(|e| panic!("{what}: the pending candidate is not dropped: {e}"));
    }
    let loaded = boot_slots
        .load_active(now)
        .unwrap_or_else(|e| panic!("{what}: no working identity ({recovery:?}): {e}"));
    assert!(
        !slots(&mut nvs).has_candidate().expect("read"),
        "{what}: {recovery:?} left a candidate"
    );
    // The loaded identity validated (the key matches the certificate); it is one of the two
    // whole identities, never one's certificate with the other's key.
    let active = Identity {
        cert_pem: String::from_utf8(loaded.certificates.device_certificate.clone()).expect("PEM"),
        key_pem: String::from_utf8(loaded.certificates.private_key.expose_secret().to_vec())
            .expect("PEM"),
    };
    let outcome = if active == fx.old {
        Outcome::Old
    } else if active == fx.new[0] {
        Outcome::New
    } else {
        panic!("{what}: the active identity is neither the old nor the new one ({recovery:?})");
    };
    assert_eq!(
        loaded.metadata.certificate_fingerprint,
        active.fingerprint(),
        "{what}: the metadata names the certificate"
    );
    assert!(loaded.report.is_valid(), "{what}: a working identity");
    // A fresh device core on it rotates to the end.
    let (result, mut nvs) = rotate(nvs, &loaded, 1, false);
    result.unwrap_or_else(|_| unreachable!());
    let after = slots(&mut nvs)
        .load_active(now)
        .expect("the rotated identity");
    assert_eq!(
        after.certificates.device_certificate,
        fx.new[1].cert_pem.as_bytes(),
        "{what}: the rotation after the reboot committed"
    );
    assert!(!slots(&mut nvs).has_candidate().expect("read"));
    (outcome, recovery)
}

/// The steps a cut can interrupt, in their order, and what a boot after it must find.
const STEPS: [(&str, Option<Outcome>); 6] = [
    ("boot: load", Some(Outcome::Old)),
    ("stage", Some(Outcome::Old)),
    ("trial: load the candidate", Some(Outcome::Old)),
    ("commit", None),
    ("reload after the commit", Some(Outcome::New)),
    // A cut the run did not notice (an operation whose failure nothing reports).
    ("unnoticed", None),
];

/// Every cut of one partition kind, clean and torn.
fn sweep(keys: Option<&NvsKeys>, kind: &str) {
    let (base, boots) = base_image(keys);
    let (clean, step) = swept_run(&base, keys, None);
    assert_eq!(step, None, "{kind}: the clean run");
    let total = clean.ops();
    let erased = pages_erased(&base, clean.bytes());
    assert!(
        total > 20,
        "{kind}: a rotation of only {total} flash operations"
    );
    assert!(erased > 0, "{kind}: the rotation ran no garbage collection");
    for torn_bytes in [0, TORN_BYTES] {
        let mode = if torn_bytes == 0 {
            "clean cuts".to_owned()
        } else {
            format!("torn cuts, {torn_bytes} bytes land")
        };
        let (mut old, mut new) = (0, 0);
        let mut per_step = [0usize; STEPS.len()];
        let mut recoveries = std::collections::BTreeMap::new();
        let mut last = Outcome::Old;
        for at_op in 0..total {
            let what = format!("{kind}, {mode}: cut at operation {at_op} of {total}");
            let (flash, step) = swept_run(&base, keys, Some(PowerCut { at_op, torn_bytes }));
            assert!(flash.is_dead(), "{what}: the cut happened");
            let step = step.unwrap_or("unnoticed");
            let index = STEPS
                .iter()
                .position(|(s, _)| *s == step)
                .unwrap_or_else(|| panic!("{what}: a cut in {step}"));
            per_step[index] += 1;
            let (outcome, recovery) = reboot_and_rotate(flash.into_bytes(), keys, &what);
            *recoveries.entry(format!("{recovery:?}")).or_insert(0) += 1;
            if let Some(expected) = STEPS[index].1 {
                assert_eq!(outcome, expected, "{what}, in {step}");
            }
            // Once the new identity survives a cut, every later cut leaves it too.
            assert!(
                !(last == Outcome::New && outcome == Outcome::Old),
                "{what}: the old identity is back after a later cut left the new one"
            );
            last = outcome;
            match outcome {
                Outcome::Old => old += 1,
                Outcome::New => new += 1,
            }
        }
        assert!(old > 0 && new > 0, "{kind}, {mode}: old {old}, new {new}");
        let steps: Vec<String> = STEPS
            .iter()
            .zip(per_step)
            .filter(|(_, n)| *n > 0)
            .map(|((s, _), n)| format!("{s} {n}"))
            .collect();
        let recoveries: Vec<String> = recoveries.iter().map(|(r, n)| format!("{r} {n}")).collect();
        eprintln!(
            "rotation power cut ({kind} partition aged by {boots} boots, {mode}): {total} flash operations from boot to committed ({erased} page erased by garbage collection), {total} cuts ({}), recovery at boot ({}), each boots with a whole identity: old {old}, new {new}; each then rotates again to the end",
            steps.join(", "),
            recoveries.join(", ")
        );
    }
}

#[test]
fn a_power_cut_at_every_flash_operation_of_a_rotation_boots_with_a_whole_identity_plain() {
    let start = Instant::now();
    sweep(None, "plain");
    eprintln!("plain sweep: {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn a_power_cut_at_every_flash_operation_of_a_rotation_boots_with_a_whole_identity_encrypted() {
    let start = Instant::now();
    let keys = NvsKeys::new([0x3C; 32], [0xC3; 32]);
    sweep(Some(&keys), "encrypted");
    eprintln!("encrypted sweep: {:.1} s", start.elapsed().as_secs_f64());
}
