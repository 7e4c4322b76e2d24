//! Model-based property tests: random set/erase/reopen sequences against a HashMap, including
//! garbage-collection-heavy runs in a three-page partition, plain and encrypted.

use std::collections::HashMap;

use acorn_nvs::{Error, MemFlash, Mode, Nvs, NvsKeys};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    U32(u32),
    I8(i8),
    Str(String),
    Blob(Vec<u8>),
}

#[derive(Clone, Debug)]
enum Op {
    Set { ns: usize, key: usize, value: Value },
    Erase { ns: usize, key: usize },
    Reopen,
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u32>().prop_map(Value::U32),
        any::<i8>().prop_map(Value::I8),
        "[a-z]{0,300}".prop_map(Value::Str),
        prop::collection::vec(any::<u8>(), 0..1500).prop_map(Value::Blob),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..6usize, value()).prop_map(|(ns, key, value)| Op::Set { ns, key, value }),
        2 => (0..2usize, 0..6usize).prop_map(|(ns, key)| Op::Erase { ns, key }),
        1 => Just(Op::Reopen),
    ]
}

const NAMESPACES: [&str; 2] = ["mqtt_certs", "settings"];

fn key(k: usize) -> String {
    format!("key{k}")
}

fn read(nvs: &mut Nvs<MemFlash>, ns: &str, key: &str, like: &Value) -> Option<Value> {
    let ns = nvs.find_namespace(ns)?;
    match like {
        Value::U32(_) => nvs.get::<u32>(ns, key).unwrap().map(Value::U32),
        Value::I8(_) => nvs.get::<i8>(ns, key).unwrap().map(Value::I8),
        Value::Str(_) => nvs.get_string(ns, key).unwrap().map(Value::Str),
        Value::Blob(_) => nvs.get_blob(ns, key).unwrap().map(Value::Blob),
    }
}

fn run(ops: Vec<Op>, pages: u32, keys: Option<NvsKeys>) {
    let size = pages * 4096;
    let mut nvs = Nvs::open_with(
        MemFlash::new(size as usize),
        0,
        size,
        keys.as_ref(),
        Mode::ReadWrite,
    )
    .unwrap();
    let mut model: HashMap<(usize, usize), Value> = HashMap::new();
    for op in ops {
        match op {
            Op::Set { ns, key: k, value } => {
                let handle = nvs.namespace(NAMESPACES[ns]).unwrap();
                let result = match &value {
                    Value::U32(v) => nvs.set::<u32>(handle, &key(k), *v),
                    Value::I8(v) => nvs.set::<i8>(handle, &key(k), *v),
                    Value::Str(v) => nvs.set_str(handle, &key(k), v),
                    Value::Blob(v) => nvs.set_blob(handle, &key(k), v),
                };
                match result {
                    Ok(()) => {
                        model.insert((ns, k), value);
                    }
                    // A full partition is allowed to refuse; the old value must survive.
                    Err(Error::NotEnoughSpace { .. }) => {}
                    Err(e) => panic!("set failed: {e}"),
                }
            }
            Op::Erase { ns, key: k } => {
                if let Some(handle) = nvs.find_namespace(NAMESPACES[ns]) {
                    let existed = nvs.erase(handle, &key(k)).unwrap();
                    assert_eq!(existed, model.remove(&(ns, k)).is_some());
                }
            }
            Op::Reopen => {
                let flash = nvs.release();
                nvs = Nvs::open_with(flash, 0, size, keys.as_ref(), Mode::ReadWrite).unwrap();
                assert!(
                    nvs.mount_findings().is_empty(),
                    "{:?}",
                    nvs.mount_findings()
                );
            }
        }
        for ((ns, k), want) in &model {
            assert_eq!(
                read(&mut nvs, NAMESPACES[*ns], &key(*k), want).as_ref(),
                Some(want)
            );
        }
    }
    let listed = nvs.entries().len();
    assert_eq!(listed, model.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_a_hashmap(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, 8, None);
    }

    #[test]
    fn matches_a_hashmap_under_gc_pressure_in_three_pages(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, 3, None);
    }

    #[test]
    fn matches_a_hashmap_encrypted(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, 4, Some(NvsKeys::new([7; 32], [8; 32])));
    }
}
