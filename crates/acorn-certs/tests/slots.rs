//! Two identity slots: stage, trial load, commit, discard, recovery at boot; and a power cut
//! at every flash operation of two rotations (clean and torn writes, plain and encrypted
//! partitions): every boot loads a complete identity, the old or the new one.

mod common;

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{CertStore, DeviceCertificates, Recovery, SlotError, Slots};
use acorn_nvs::{MemFlash, Mode, Nvs, NvsKeys, PowerCut};
use common::*;

const SIZE: u32 = 0x6000;

fn mount(flash: MemFlash, keys: Option<&NvsKeys>) -> Nvs<MemFlash> {
    Nvs::open_with(flash, 0, SIZE, keys, Mode::ReadWrite).expect("the partition mounts")
}

fn cert_of(set: &DeviceCertificates) -> Vec<u8> {
    set.device_certificate.clone()
}

fn provisioned(set: &DeviceCertificates, keys: Option<&NvsKeys>) -> Nvs<MemFlash> {
    let mut nvs = mount(MemFlash::new(SIZE as usize), keys);
    CertStore::new(NvsCertKv::new(&mut nvs))
        .allow_custom_endpoint(true)
        .store(set, NOW)
        .expect("provisioned");
    nvs
}

#[test]
fn a_rotation_stages_trials_and_commits_without_touching_the_active_identity_before() {
    let (old, new) = (ec_set(), ec_set());
    let mut slots = Slots::new(provisioned(&old, None));
    assert_eq!(slots.recover().unwrap(), Recovery::Clean);
    assert!(matches!(
        slots.load_candidate(NOW),
        Err(SlotError::NoCandidate)
    ));
    assert!(matches!(slots.commit(), Err(SlotError::NoCandidate)));

    slots.stage(&new, NOW).expect("a valid candidate is stored");
    // The active identity is still the old one; the candidate loads for the trial.
    assert_eq!(
        cert_of(&slots.load_active(NOW).unwrap().certificates),
        cert_of(&old)
    );
    assert_eq!(
        cert_of(&slots.load_candidate(NOW).unwrap().certificates),
        cert_of(&new)
    );
    // A reboot now: the candidate waits for its trial.
    assert_eq!(slots.recover().unwrap(), Recovery::CandidatePending);

    slots.commit().expect("commit");
    assert_eq!(
        cert_of(&slots.load_active(NOW).unwrap().certificates),
        cert_of(&new)
    );
    assert!(!slots.has_candidate().unwrap());
    assert_eq!(slots.recover().unwrap(), Recovery::Clean);

    // A second rotation, rolled back: the active identity stays.
    let refused = ec_set();
    slots.stage(&refused, NOW).unwrap();
    slots.discard().unwrap();
    assert!(!slots.has_candidate().unwrap());
    assert_eq!(
        cert_of(&slots.load_active(NOW).unwrap().certificates),
        cert_of(&new)
    );
    // The active identity is where ESP-IDF readers and `acorn nvs get` look: `mqtt_certs`.
    let mut nvs = slots.into_inner();
    let loaded = CertStore::new(NvsCertKv::new(&mut nvs)).load(NOW).unwrap();
    assert_eq!(cert_of(&loaded.certificates), cert_of(&new));
}

#[test]
fn an_invalid_candidate_is_refused_before_anything_is_written() {
    let old = ec_set();
    let mut slots = Slots::new(provisioned(&old, None));
    let mut mismatched = ec_set();
    mismatched.private_key = ec_set().private_key;
    let err = slots.stage(&mismatched, NOW).unwrap_err();
    assert!(
        err.to_string().contains("rejected") || err.to_string().contains("key"),
        "{err}"
    );
    assert!(!slots.has_candidate().unwrap());
    assert_eq!(slots.recover().unwrap(), Recovery::Clean);
}

/// The workload: rotation to `b` (committed), rotation to `c` (discarded), rotation to `d`
/// (committed). Returns the flash and whether a flash operation failed (the cut).
fn workload(
    slots: &mut Slots<Nvs<MemFlash>>,
    [b, c, d]: [&DeviceCertificates; 3],
) -> Result<(), String> {
    let e = |e: SlotError<acorn_nvs::Error>| e.to_string();
    slots.stage(b, NOW).map_err(e)?;
    slots.commit().map_err(e)?;
    slots.stage(c, NOW).map_err(e)?;
    slots.discard().map_err(e)?;
    slots.stage(d, NOW).map_err(e)?;
    slots.commit().map_err(e)?;
    Ok(())
}

fn check_every_cut(keys: Option<&NvsKeys>, torn_bytes: usize) -> usize {
    let sets = [ec_set(), ec_set(), ec_set(), ec_set()];
    let [a, b, c, d] = &sets;
    let base = provisioned(a, keys).release().into_bytes();
    // The clean run, for the number of operations.
    let mut flash = MemFlash::from_bytes(base.clone());
    flash.cut_power(PowerCut {
        at_op: usize::MAX,
        torn_bytes: 0,
    });
    let mut slots = Slots::new(mount(flash, keys));
    workload(&mut slots, [b, c, d]).expect("the clean run");
    let total = slots.into_inner().release().ops();
    let allowed = [cert_of(a), cert_of(b), cert_of(d)];
    for at_op in 0..total {
        let mut flash = MemFlash::from_bytes(base.clone());
        flash.cut_power(PowerCut { at_op, torn_bytes });
        let mut slots = Slots::new(mount(flash, keys));
        assert!(
            workload(&mut slots, [b, c, d]).is_err(),
            "a cut at op {at_op} must interrupt the workload"
        );
        // Power back on: recover, then load.
        let flash = MemFlash::from_bytes(slots.into_inner().release().into_bytes());
        let mut slots = Slots::new(mount(flash, keys));
        let recovery = slots
            .recover()
            .unwrap_or_else(|e| panic!("cut at op {at_op} (torn {torn_bytes}): recover: {e}"));
        let active = slots
            .load_active(NOW)
            .unwrap_or_else(|e| panic!("cut at op {at_op} (torn {torn_bytes}): no identity: {e}"));
        let cert = cert_of(&active.certificates);
        assert!(
            allowed.contains(&cert),
            "cut at op {at_op}: the active certificate is none of the committed ones"
        );
        // A candidate, if any, is complete and loads (its trial can run again).
        if recovery == Recovery::CandidatePending {
            slots
                .load_candidate(NOW)
                .expect("a pending candidate loads");
        } else {
            assert!(
                !slots.has_candidate().unwrap(),
                "cut at op {at_op}: {recovery:?}"
            );
        }
        // And the device can rotate again.
        slots.discard().unwrap();
        slots.stage(&sets[3], NOW).unwrap();
        slots.commit().unwrap();
        assert_eq!(
            cert_of(&slots.load_active(NOW).unwrap().certificates),
            cert_of(d)
        );
    }
    eprintln!(
        "identity slots: power cut at each of {total} flash operations (torn bytes {torn_bytes}): every boot loads a whole identity"
    );
    total
}

#[test]
fn every_cut_of_a_rotation_boots_with_a_whole_identity_plain() {
    let total = check_every_cut(None, 0);
    assert!(total > 100, "the workload is too small: {total} operations");
    check_every_cut(None, 17);
}

#[test]
fn every_cut_of_a_rotation_boots_with_a_whole_identity_encrypted() {
    let keys = NvsKeys::new([0x3C; 32], [0xC3; 32]);
    check_every_cut(Some(&keys), 0);
    check_every_cut(Some(&keys), 5);
}
