//! The NVS engine with writes: structure-aware sequences (the `arbitrary` crate) of set, erase,
//! remount and power cuts, plain and encrypted, compared with a model (a map), in the manner of
//! sequential-storage's fuzz targets.
//!
//! A power cut is armed on the flash (`MemFlash::cut_power`): the chosen write or erase from
//! then on stops partway (its first `torn_bytes` reach the flash) and every later operation
//! fails, until the device "reboots": a new flash with the bytes that reached it, mounted again.
//!
//! Properties:
//! - never a panic; a blank partition mounts; every error is the power cut or a full partition;
//! - without a cut, every key reads exactly as the model says after each operation, a remount
//!   finds nothing to repair (after a cut: at most an unused page left to erase when needed),
//!   and the partition lists exactly the model's keys;
//! - after a cut, the partition mounts, the key being written or erased holds its complete old
//!   or its complete new value (or absence), every other key exactly the model's, and nothing
//!   else is listed; writing goes on from there.
#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use acorn_nvs::{
    Error, IntValue, MemFlash, MemFlashError, Mode, Nvs, NvsKeys, PowerCut, Problem, ProblemKind,
    ValueType,
};
use arbitrary::Arbitrary;
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use libfuzzer_sys::fuzz_target;

const NAMESPACES: [&str; 2] = ["mqtt_certs", "settings"];
const KEYS: [&str; 6] = ["device_cert", "private_key", "cert_valid", "k3", "k4", "k5"];

#[derive(Arbitrary, Debug, Clone)]
enum Val {
    U8(u8),
    I32(i32),
    U64(u64),
    /// A string of `len % 4000` characters made from `seed`.
    Str {
        len: u16,
        seed: u8,
    },
    /// A blob of `len % 6000` bytes made from `seed` (multi-page when long).
    Blob {
        len: u16,
        seed: u8,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Set {
        ns: u8,
        key: u8,
        value: Val,
    },
    Erase {
        ns: u8,
        key: u8,
    },
    Remount,
    /// Cut the power at the `at_op`-th flash write or erase from now, letting `torn` bytes of it
    /// reach the flash.
    Cut {
        at_op: u8,
        torn: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    pages: u8,
    encrypted: bool,
    ops: Vec<Op>,
}

/// A value as stored and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(IntValue),
    Str(String),
    Blob(Vec<u8>),
}

fn value(v: &Val) -> Value {
    let bytes = |len: u16, seed: u8, modulo: usize| -> Vec<u8> {
        (0..usize::from(len) % modulo)
            .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)))
            .collect()
    };
    match *v {
        Val::U8(x) => Value::Int(IntValue::U8(x)),
        Val::I32(x) => Value::Int(IntValue::I32(x)),
        Val::U64(x) => Value::Int(IntValue::U64(x)),
        Val::Str { len, seed } => Value::Str(
            bytes(len, seed, 4000)
                .into_iter()
                .map(|b| char::from(b'a' + b % 26))
                .collect(),
        ),
        Val::Blob { len, seed } => Value::Blob(bytes(len, seed, 6000)),
    }
}

/// A flash the test keeps a handle on while the engine owns it: to arm a cut, to see whether
/// power is gone, and to take the bytes after a failed mount.
#[derive(Clone)]
struct Shared(Rc<RefCell<MemFlash>>);

impl ErrorType for Shared {
    type Error = MemFlashError;
}

impl ReadNorFlash for Shared {
    const READ_SIZE: usize = MemFlash::READ_SIZE;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), MemFlashError> {
        self.0.borrow_mut().read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.0.borrow().capacity()
    }
}

impl NorFlash for Shared {
    const WRITE_SIZE: usize = MemFlash::WRITE_SIZE;
    const ERASE_SIZE: usize = MemFlash::ERASE_SIZE;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), MemFlashError> {
        self.0.borrow_mut().erase(from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), MemFlashError> {
        self.0.borrow_mut().write(offset, bytes)
    }
}

type Key = (usize, usize);
type Model = BTreeMap<Key, Value>;

struct Harness {
    size: u32,
    keys: Option<NvsKeys>,
    flash: Shared,
    nvs: Nvs<Shared>,
    model: Model,
    /// A power cut happened in this run.
    had_cut: bool,
}

fn read(nvs: &mut Nvs<Shared>, (ns, key): Key) -> Result<Option<Value>, Error> {
    let Some(handle) = nvs.find_namespace(NAMESPACES[ns]) else {
        return Ok(None);
    };
    let Some(info) = nvs.value_info(handle, KEYS[key])? else {
        return Ok(None);
    };
    Ok(match info.value_type {
        ValueType::Str => nvs.get_string(handle, KEYS[key])?.map(Value::Str),
        ValueType::Blob => nvs.get_blob(handle, KEYS[key])?.map(Value::Blob),
        _ => nvs.get_int(handle, KEYS[key])?.map(Value::Int),
    })
}

fn all_keys() -> impl Iterator<Item = Key> {
    (0..NAMESPACES.len()).flat_map(|ns| (0..KEYS.len()).map(move |k| (ns, k)))
}

impl Harness {
    fn mount(flash: Shared, size: u32, keys: Option<&NvsKeys>) -> Result<Nvs<Shared>, Error> {
        Nvs::open_with(flash, 0, size, keys, Mode::ReadWrite)
    }

    fn dead(&self) -> bool {
        self.flash.0.borrow().is_dead()
    }

    /// Power comes back: a new flash with the bytes that reached the old one, mounted. `pending`
    /// is the key whose write or erase the cut interrupted, with its old and new value.
    fn reboot(&mut self, pending: Option<(Key, Option<Value>, Option<Value>)>) {
        self.had_cut = true;
        let bytes = self.flash.0.borrow().bytes().to_vec();
        self.flash = Shared(Rc::new(RefCell::new(MemFlash::from_bytes(bytes))));
        self.nvs = Self::mount(self.flash.clone(), self.size, self.keys.as_ref())
            .unwrap_or_else(|e| panic!("mount after a power cut failed: {e}"));
        for key in all_keys() {
            let got = read(&mut self.nvs, key)
                .unwrap_or_else(|e| panic!("reading {key:?} after a power cut: {e}"));
            match &pending {
                Some((k, old, new)) if *k == key => {
                    assert!(
                        got == *old || got == *new,
                        "after a cut, {key:?} is {got:?}: neither old {old:?} nor new {new:?}"
                    );
                    match got {
                        Some(v) => self.model.insert(key, v),
                        None => self.model.remove(&key),
                    };
                }
                _ => assert_eq!(
                    got.as_ref(),
                    self.model.get(&key),
                    "after a cut, {key:?} changed"
                ),
            }
        }
        self.check_listing();
    }

    fn check_listing(&self) {
        let listed = self.nvs.entries();
        assert_eq!(
            listed.len(),
            self.model.len(),
            "listed {:?}, model {:?}",
            listed
                .iter()
                .map(|e| (&e.namespace, &e.key))
                .collect::<Vec<_>>(),
            self.model.keys().collect::<Vec<_>>()
        );
    }

    fn check_all(&mut self) {
        for key in all_keys() {
            let got = read(&mut self.nvs, key).unwrap_or_else(|e| panic!("reading {key:?}: {e}"));
            assert_eq!(
                got.as_ref(),
                self.model.get(&key),
                "{key:?} differs from the model"
            );
        }
        self.check_listing();
    }

    fn set(&mut self, key: Key, value: &Value) -> Result<(), Error> {
        let ns = self.nvs.namespace(NAMESPACES[key.0])?;
        let name = KEYS[key.1];
        match value {
            Value::Int(v) => self.nvs.set_int(ns, name, *v),
            Value::Str(s) => self.nvs.set_str(ns, name, s),
            Value::Blob(b) => self.nvs.set_blob(ns, name, b),
        }
    }

    fn erase(&mut self, key: Key) -> Result<bool, Error> {
        match self.nvs.find_namespace(NAMESPACES[key.0]) {
            Some(ns) => self.nvs.erase(ns, KEYS[key.1]),
            None => Ok(false),
        }
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Set { ns, key, value: v } => {
                let key = (usize::from(*ns) % 2, usize::from(*key) % KEYS.len());
                let new = value(v);
                let old = self.model.get(&key).cloned();
                match self.set(key, &new) {
                    Ok(()) if !self.dead() => {
                        self.model.insert(key, new);
                    }
                    // Reported done: it must survive the cut that came after.
                    Ok(()) => {
                        self.model.insert(key, new);
                        self.reboot(None);
                    }
                    Err(_) if self.dead() => self.reboot(Some((key, old, Some(new)))),
                    // A full partition may refuse; the old value stays.
                    Err(Error::NotEnoughSpace { .. } | Error::ValueTooLong { .. }) => {}
                    Err(e) => panic!("set {key:?} failed: {e}"),
                }
                self.check_key(key);
            }
            Op::Erase { ns, key } => {
                let key = (usize::from(*ns) % 2, usize::from(*key) % KEYS.len());
                let old = self.model.get(&key).cloned();
                match self.erase(key) {
                    Ok(existed) if !self.dead() => {
                        assert_eq!(existed, old.is_some(), "erase of {key:?}");
                        self.model.remove(&key);
                    }
                    Ok(_) => {
                        self.model.remove(&key);
                        self.reboot(None);
                    }
                    Err(_) if self.dead() => self.reboot(Some((key, old, None))),
                    Err(e) => panic!("erase {key:?} failed: {e}"),
                }
                self.check_key(key);
            }
            Op::Remount => {
                let dead = self.dead();
                if dead {
                    self.reboot(None);
                    return;
                }
                match Self::mount(self.flash.clone(), self.size, self.keys.as_ref()) {
                    Ok(nvs) if !self.dead() => {
                        self.nvs = nvs;
                        // The mount after a cut repaired what it found, but leaves an unused
                        // page it could not read to be erased when it is next needed.
                        let leftover = |p: &Problem| {
                            self.had_cut
                                && matches!(
                                    p.kind,
                                    ProblemKind::BadPageHeader
                                        | ProblemKind::UnknownPageState
                                        | ProblemKind::UninitializedNotBlank
                                )
                        };
                        assert!(
                            self.nvs.mount_findings().iter().all(leftover),
                            "a remount with no cut since the last one found {:?}",
                            self.nvs.mount_findings()
                        );
                        self.check_all();
                    }
                    _ if self.dead() => self.reboot(None),
                    Ok(_) => unreachable!(),
                    Err(e) => panic!("remount failed: {e}"),
                }
            }
            Op::Cut { at_op, torn } => self.flash.0.borrow_mut().cut_power(PowerCut {
                at_op: usize::from(*at_op),
                torn_bytes: usize::from(*torn) % 40,
            }),
        }
    }

    /// The key just written reads as the model says (or the power is gone and a reboot follows
    /// at the next operation).
    fn check_key(&mut self, key: Key) {
        match read(&mut self.nvs, key) {
            Ok(got) => assert_eq!(
                got.as_ref(),
                self.model.get(&key),
                "{key:?} reads back wrong"
            ),
            Err(_) if self.dead() => self.reboot(None),
            Err(e) => panic!("reading {key:?}: {e}"),
        }
    }
}

fuzz_target!(|input: Input| {
    let size = (3 + u32::from(input.pages % 4)) * 4096;
    let keys = input
        .encrypted
        .then(|| NvsKeys::new([0x11; 32], [0x22; 32]));
    let flash = Shared(Rc::new(RefCell::new(MemFlash::new(size as usize))));
    let nvs = Harness::mount(flash.clone(), size, keys.as_ref()).expect("a blank partition mounts");
    let mut h = Harness {
        size,
        keys,
        flash,
        nvs,
        model: Model::new(),
        had_cut: false,
    };
    for op in input.ops.iter().take(48) {
        h.step(op);
    }
    if h.dead() {
        h.reboot(None);
    }
    h.check_all();
});
