//! embedded-svc `RawStorage` with esp-idf-svc's on-flash encoding: short values in a u64 entry
//! (low byte = length), longer ones as blobs — checked on the raw entries, and read back from
//! entries written the way `EspNvs::set_raw` writes them.

use core::cell::RefCell;

use acorn_nvs::{pack_small, MemFlash, Nvs, NvsRawStorage, ValueType};
use embedded_svc::storage::{RawStorage, StorageBase};

#[test]
fn set_raw_uses_esp_idf_svc_encoding() {
    let nvs = RefCell::new(Nvs::open(MemFlash::new(0x6000), 0, 0x6000).unwrap());
    let mut storage = NvsRawStorage::new(&nvs, "settings").unwrap();
    storage.set_raw("short", b"abc").unwrap();
    storage.set_raw("seven", b"1234567").unwrap();
    storage.set_raw("long", b"12345678").unwrap();
    storage.set_raw("empty", b"").unwrap();

    let mut inner = nvs.borrow_mut();
    let ns = inner.find_namespace("settings").unwrap();
    // On flash: u64 entries with the length in the low byte, and a blob.
    assert_eq!(
        inner.value_info(ns, "short").unwrap().unwrap().value_type,
        ValueType::U64
    );
    assert_eq!(inner.get::<u64>(ns, "short").unwrap(), Some(0x63_62_61_03));
    assert_eq!(
        inner.get::<u64>(ns, "seven").unwrap(),
        pack_small(b"1234567")
    );
    assert_eq!(
        inner.value_info(ns, "long").unwrap().unwrap().value_type,
        ValueType::Blob
    );
    assert_eq!(inner.get::<u64>(ns, "empty").unwrap(), Some(0));
    drop(inner);

    let mut buf = [0u8; 16];
    assert_eq!(storage.len("short").unwrap(), Some(3));
    assert_eq!(
        storage.get_raw("short", &mut buf).unwrap(),
        Some(&b"abc"[..])
    );
    assert_eq!(
        storage.get_raw("long", &mut buf).unwrap(),
        Some(&b"12345678"[..])
    );
    assert_eq!(storage.get_raw("empty", &mut buf).unwrap(), Some(&b""[..]));
    assert_eq!(storage.get_raw("missing", &mut buf).unwrap(), None);
    assert!(storage.contains("seven").unwrap());
    assert!(storage.remove("seven").unwrap());
    assert!(!storage.contains("seven").unwrap());
    // A value changing size class replaces the old entry instead of leaving two.
    storage.set_raw("short", b"now longer than 8").unwrap();
    assert_eq!(storage.len("short").unwrap(), Some(17));
    storage.set_raw("short", b"x").unwrap();
    assert_eq!(storage.get_raw("short", &mut buf).unwrap(), Some(&b"x"[..]));
    assert_eq!(nvs.borrow().entries().len(), 3);
}

#[test]
fn values_written_like_esp_idf_svc_read_back() {
    // What EspNvs::set_raw writes on a device: nvs_set_u64 / nvs_set_blob.
    let mut nvs = Nvs::open(MemFlash::new(0x6000), 0, 0x6000).unwrap();
    let ns = nvs.namespace("app").unwrap();
    nvs.set::<u64>(ns, "flag", pack_small(&[1, 2]).unwrap())
        .unwrap();
    nvs.set_blob(ns, "cfg", b"a longer configuration value")
        .unwrap();
    let flash = nvs.release();
    let nvs = RefCell::new(Nvs::open(flash, 0, 0x6000).unwrap());
    let storage = NvsRawStorage::new(&nvs, "app").unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        storage.get_raw("flag", &mut buf).unwrap(),
        Some(&[1u8, 2][..])
    );
    assert_eq!(
        storage.get_raw("cfg", &mut buf).unwrap(),
        Some(&b"a longer configuration value"[..])
    );
    let mut small = [0u8; 1];
    assert!(
        storage.get_raw("flag", &mut small).is_err(),
        "too small a buffer is an error"
    );
}
