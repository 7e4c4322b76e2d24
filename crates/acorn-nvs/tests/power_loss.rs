//! Power loss at every flash operation: a workload writes the five certificate keys and then
//! rewrites the certificate 50 times. Power is cut at each write/erase in turn (cleanly, and
//! with the operation torn partway); after each cut the partition mounts, every key holds its
//! complete old or complete new value, and a further write succeeds.

use acorn_nvs::{MemFlash, Mode, Nvs, NvsKeys, PowerCut};

const SIZE: u32 = 0x6000;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    Blob(Vec<u8>),
    U8(u8),
}

fn steps() -> Vec<(&'static str, Value)> {
    let cert = |n: usize| {
        let mut pem = format!("-----BEGIN CERTIFICATE-----\n{n:04}\n").into_bytes();
        pem.resize(1220, b'A' + (n % 26) as u8);
        Value::Blob(pem)
    };
    let mut steps = vec![
        ("cert_valid", Value::U8(0)),
        ("device_cert", cert(0)),
        (
            "private_key",
            Value::Str("-----BEGIN RSA PRIVATE KEY-----\n".to_string() + &"k".repeat(1640)),
        ),
        (
            "iot_endpoint",
            Value::Str("abc123-ats.iot.us-west-2.amazonaws.com".into()),
        ),
        (
            "cert_meta",
            Value::Str(r#"{"stored_at":1,"device_id":"acorn-1","is_valid":true}"#.into()),
        ),
        ("cert_valid", Value::U8(1)),
    ];
    for n in 1..=50 {
        steps.push(("device_cert", cert(n)));
    }
    steps
}

fn apply(nvs: &mut Nvs<MemFlash>, key: &str, value: &Value) -> acorn_nvs::Result<()> {
    let ns = nvs.namespace("mqtt_certs")?;
    match value {
        Value::Str(s) => nvs.set_str(ns, key, s),
        Value::Blob(b) => nvs.set_blob(ns, key, b),
        Value::U8(v) => nvs.set::<u8>(ns, key, *v),
    }
}

fn read(nvs: &mut Nvs<MemFlash>, key: &str) -> Option<Value> {
    let ns = nvs.find_namespace("mqtt_certs")?;
    let info = nvs.value_info(ns, key).expect("len")?;
    Some(match info.value_type {
        acorn_nvs::ValueType::Str => {
            Value::Str(nvs.get_string(ns, key).expect("string").expect("present"))
        }
        acorn_nvs::ValueType::Blob => {
            Value::Blob(nvs.get_blob(ns, key).expect("blob").expect("present"))
        }
        _ => Value::U8(nvs.get::<u8>(ns, key).expect("u8").expect("present")),
    })
}

/// Runs the workload from a blank flash with power cut as given; returns the flash and whether
/// the cut interrupted the workload.
fn run(keys: Option<&NvsKeys>, cut: PowerCut) -> (MemFlash, bool) {
    let mut flash = MemFlash::new(SIZE as usize);
    flash.cut_power(cut);
    let mut nvs =
        Nvs::open_with(flash, 0, SIZE, keys, Mode::ReadWrite).expect("blank flash mounts");
    let cut_hit = steps()
        .iter()
        .any(|(key, value)| apply(&mut nvs, key, value).is_err());
    (nvs.release(), cut_hit)
}

fn boundaries(keys: Option<&NvsKeys>) -> Vec<usize> {
    // Op count at the end of each step, measured step by step.
    let mut flash = MemFlash::new(SIZE as usize);
    flash.cut_power(PowerCut {
        at_op: usize::MAX,
        torn_bytes: 0,
    });
    let mut nvs = Nvs::open_with(flash, 0, SIZE, keys, Mode::ReadWrite).unwrap();
    let mut ends = Vec::new();
    for (key, value) in steps() {
        apply(&mut nvs, key, &value).unwrap();
        let flash = nvs.release();
        ends.push(flash.ops());
        nvs = Nvs::open_with(flash, 0, SIZE, keys, Mode::ReadWrite).unwrap();
    }
    ends
}

fn check_every_cut(keys: Option<&NvsKeys>, torn_bytes: usize) -> usize {
    let steps = steps();
    let ends = boundaries(keys);
    let total = *ends.last().unwrap();
    let mut checked = 0;
    for at_op in 0..total {
        let (flash, cut_hit) = run(keys, PowerCut { at_op, torn_bytes });
        assert!(cut_hit, "cut at op {at_op} must interrupt the workload");
        let step = ends.iter().position(|&end| at_op < end).unwrap();
        // Reboot: a fresh flash with the bytes that reached it.
        let mut nvs = Nvs::open_with(
            MemFlash::from_bytes(flash.into_bytes()),
            0,
            SIZE,
            keys,
            Mode::ReadWrite,
        )
        .unwrap_or_else(|e| panic!("mount after cut at op {at_op} (step {step}) failed: {e}"));
        let mut expected_before = std::collections::HashMap::new();
        for (key, value) in &steps[..step] {
            expected_before.insert(*key, value.clone());
        }
        for key in [
            "device_cert",
            "private_key",
            "iot_endpoint",
            "cert_meta",
            "cert_valid",
        ] {
            let got = read(&mut nvs, key);
            let old = expected_before.get(key).cloned();
            let new = if steps[step].0 == key {
                Some(steps[step].1.clone())
            } else {
                old.clone()
            };
            assert!(
                got == old || got == new,
                "cut at op {at_op} (torn {torn_bytes}) step {step}: key {key} holds neither old nor new value"
            );
        }
        let ns = nvs.namespace("mqtt_certs").unwrap();
        nvs.set_str(ns, "after_cut", "still writable").unwrap();
        checked += 1;
    }
    eprintln!(
        "power cut at each of {checked} flash operations (torn bytes: {torn_bytes}): all recovered"
    );
    checked
}

/// Every variant must really cut power that often: a workload that shrank to nothing would
/// otherwise pass without checking anything.
fn assert_big_enough(checked: usize, what: &str) {
    assert!(
        checked > 1000,
        "{what}: only {checked} operations: the workload is too small"
    );
}

#[test]
fn every_cut_leaves_old_or_new_values_plain() {
    assert_big_enough(check_every_cut(None, 0), "plain, clean cuts");
}

#[test]
fn every_torn_operation_leaves_old_or_new_values_plain() {
    assert_big_enough(check_every_cut(None, 13), "plain, torn cuts");
}

#[test]
fn every_cut_leaves_old_or_new_values_encrypted() {
    let keys = NvsKeys::new([0xA5; 32], [0x5A; 32]);
    assert_big_enough(check_every_cut(Some(&keys), 0), "encrypted, clean cuts");
    assert_big_enough(check_every_cut(Some(&keys), 2), "encrypted, torn cuts");
}

/// Sets `key` to `old`, then to `new` (another type) with power cut at each flash operation
/// in turn; after each cut the key must be listed once and hold `old` or `new`.
fn check_type_change(keys: Option<&NvsKeys>, old: &Value, new: &Value, torn_bytes: usize) -> usize {
    let mut checked = 0;
    for at_op in 0.. {
        let mut nvs = Nvs::open_with(MemFlash::new(SIZE as usize), 0, SIZE, keys, Mode::ReadWrite)
            .expect("blank flash mounts");
        apply(&mut nvs, "k3", old).expect("first value");
        let mut flash = nvs.release();
        flash.cut_power(PowerCut { at_op, torn_bytes });
        let mut nvs = Nvs::open_with(flash, 0, SIZE, keys, Mode::ReadWrite).expect("mount");
        if apply(&mut nvs, "k3", new).is_ok() {
            break;
        }
        let bytes = nvs.release().into_bytes();
        let mut nvs = Nvs::open_with(MemFlash::from_bytes(bytes), 0, SIZE, keys, Mode::ReadWrite)
            .unwrap_or_else(|e| panic!("mount after a cut at op {at_op}: {e}"));
        let listed = nvs.entries().iter().filter(|e| e.key == "k3").count();
        assert_eq!(
            listed, 1,
            "cut at op {at_op} (torn {torn_bytes}): k3 listed {listed} times"
        );
        let got = read(&mut nvs, "k3");
        assert!(
            got.as_ref() == Some(old) || got.as_ref() == Some(new),
            "cut at op {at_op} (torn {torn_bytes}): k3 holds neither old nor new value"
        );
        checked += 1;
    }
    checked
}

/// Found by the fuzz target `nvs_ops`: a key overwritten with a value of another type keeps
/// its old value until the new one is written; a power cut in between left both after the
/// mount (duplicates were only found within one type), so the key was listed twice and read
/// as two different values depending on the type asked for. The newest must win.
#[test]
fn a_cut_while_a_key_changes_type_leaves_one_value() {
    let keys = NvsKeys::new([0xA5; 32], [0x5A; 32]);
    let blob = Value::Blob(vec![0x5c; 1937]);
    let text = Value::Str("after".repeat(40));
    for keys in [None, Some(&keys)] {
        for torn in [0, 4] {
            assert!(check_type_change(keys, &blob, &Value::U8(45), torn) > 0);
            assert!(check_type_change(keys, &Value::U8(45), &text, torn) > 0);
            assert!(check_type_change(keys, &text, &blob, torn) > 0);
        }
    }
}

/// Found by the fuzz target `nvs_ops`: in a small partition where big blobs are rewritten,
/// garbage collection copies multi-entry chunks to the reserved page; a power cut that tears
/// one of those copies wastes its room, and the next mount could no longer finish the
/// collection ("partition is full"), so the partition did not mount at all. Power is cut at
/// every flash operation of such a workload, torn and clean: the partition always mounts,
/// every key holds its old or new value, and writing goes on.
#[test]
fn a_cut_during_garbage_collection_of_big_chunks_still_mounts() {
    const PAGES4: u32 = 4 * 4096;
    let blob = |len: usize, seed: u8| Value::Blob((0..len).map(|i| seed ^ i as u8).collect());
    let steps: Vec<(&str, Value)> = vec![
        ("k0", blob(4931, 1)),
        ("k1", Value::U8(181)),
        ("k0", blob(5535, 2)),
        ("k3", blob(5535, 3)),
        ("k0", blob(2000, 4)),
        ("k3", blob(5000, 5)),
        ("k0", blob(5535, 6)),
    ];
    let keys = NvsKeys::new([0xA5; 32], [0x5A; 32]);
    for keys in [None, Some(&keys)] {
        for torn_bytes in [0, 15, 2000] {
            let mut checked = 0;
            for at_op in 0.. {
                let mut flash = MemFlash::new(PAGES4 as usize);
                flash.cut_power(PowerCut { at_op, torn_bytes });
                let mut nvs = Nvs::open_with(flash, 0, PAGES4, keys, Mode::ReadWrite)
                    .expect("blank flash mounts");
                let mut before = std::collections::HashMap::new();
                let mut cut = None;
                for (key, value) in &steps {
                    match apply(&mut nvs, key, value) {
                        Ok(()) => {
                            before.insert(*key, value.clone());
                        }
                        Err(acorn_nvs::Error::NotEnoughSpace { .. }) => {}
                        Err(_) => {
                            cut = Some((*key, value.clone()));
                            break;
                        }
                    }
                }
                let Some((cut_key, new)) = cut else { break };
                let bytes = nvs.release().into_bytes();
                let mut nvs = Nvs::open_with(
                    MemFlash::from_bytes(bytes),
                    0,
                    PAGES4,
                    keys,
                    Mode::ReadWrite,
                )
                .unwrap_or_else(|e| {
                    panic!("mount after a cut at op {at_op} (torn {torn_bytes}): {e}")
                });
                for key in ["k0", "k1", "k3"] {
                    let got = read(&mut nvs, key);
                    let old = before.get(key).cloned();
                    let ok = got == old || (key == cut_key && got.as_ref() == Some(&new));
                    assert!(ok, "cut at op {at_op} (torn {torn_bytes}): {key} holds neither old nor new value");
                }
                apply(&mut nvs, "k1", &Value::U8(7)).expect("writable after the cut");
                checked += 1;
            }
            assert!(checked > 100, "only {checked} cuts");
        }
    }
}
