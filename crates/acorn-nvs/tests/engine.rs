//! Engine behaviour on an in-memory flash: every type, blobs across pages, reopen, garbage
//! collection, encryption and the wrong-key rule.

use acorn_nvs::{Error, IntValue, MemFlash, Mode, Nvs, NvsKeys, Undecodable, ValueType};

const SIZE: u32 = 0x6000;

fn reopen(nvs: Nvs<MemFlash>, keys: Option<&NvsKeys>) -> Nvs<MemFlash> {
    let flash = nvs.release();
    Nvs::open_with(flash, 0, SIZE, keys, Mode::ReadWrite).expect("reopen")
}

#[test]
fn every_integer_type_at_its_extremes() {
    let mut nvs = Nvs::open(MemFlash::new(SIZE as usize), 0, SIZE).unwrap();
    let ns = nvs.namespace("ints").unwrap();
    nvs.set::<u8>(ns, "u8max", u8::MAX).unwrap();
    nvs.set::<i8>(ns, "i8min", i8::MIN).unwrap();
    nvs.set::<u16>(ns, "u16max", u16::MAX).unwrap();
    nvs.set::<i16>(ns, "i16min", i16::MIN).unwrap();
    nvs.set::<u32>(ns, "u32max", u32::MAX).unwrap();
    nvs.set::<i32>(ns, "i32min", i32::MIN).unwrap();
    nvs.set::<u64>(ns, "u64max", u64::MAX).unwrap();
    nvs.set::<i64>(ns, "i64min", i64::MIN).unwrap();
    let mut nvs = reopen(nvs, None);
    let ns = nvs.find_namespace("ints").unwrap();
    assert_eq!(nvs.get::<u8>(ns, "u8max").unwrap(), Some(u8::MAX));
    assert_eq!(nvs.get::<i8>(ns, "i8min").unwrap(), Some(i8::MIN));
    assert_eq!(nvs.get::<u16>(ns, "u16max").unwrap(), Some(u16::MAX));
    assert_eq!(nvs.get::<i16>(ns, "i16min").unwrap(), Some(i16::MIN));
    assert_eq!(nvs.get::<u32>(ns, "u32max").unwrap(), Some(u32::MAX));
    assert_eq!(nvs.get::<i32>(ns, "i32min").unwrap(), Some(i32::MIN));
    assert_eq!(nvs.get::<u64>(ns, "u64max").unwrap(), Some(u64::MAX));
    assert_eq!(nvs.get::<i64>(ns, "i64min").unwrap(), Some(i64::MIN));
    assert_eq!(
        nvs.get_int(ns, "i64min").unwrap(),
        Some(IntValue::I64(i64::MIN))
    );
    assert!(matches!(
        nvs.get::<u32>(ns, "u8max"),
        Err(Error::TypeMismatch { .. })
    ));
}

#[test]
fn strings_and_blobs_round_trip_with_exact_lengths() {
    let mut nvs = Nvs::open(MemFlash::new(SIZE as usize), 0, SIZE).unwrap();
    let ns = nvs.namespace("mqtt_certs").unwrap();
    let long = "x".repeat(3999);
    nvs.set_str(ns, "long", &long).unwrap();
    let blob: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    nvs.set_blob(ns, "big", &blob).unwrap();
    nvs.set_str(ns, "empty", "").unwrap();
    let mut nvs = reopen(nvs, None);
    let ns = nvs.find_namespace("mqtt_certs").unwrap();
    let info = nvs.value_info(ns, "long").unwrap().unwrap();
    assert_eq!((info.value_type, info.len), (ValueType::Str, 3999));
    assert_eq!(nvs.get_string(ns, "long").unwrap().unwrap(), long);
    assert_eq!(nvs.value_info(ns, "big").unwrap().unwrap().len, 10_000);
    assert_eq!(nvs.get_blob(ns, "big").unwrap().unwrap(), blob);
    assert_eq!(nvs.get_string(ns, "empty").unwrap().unwrap(), "");
    let mut small = [0u8; 10];
    assert!(matches!(
        nvs.get_blob_into(ns, "big", &mut small),
        Err(Error::BufferTooSmall { need: 10_000, .. })
    ));
    assert!(nvs.set_str(ns, "toolong", &"y".repeat(4000)).is_err());
    assert!(nvs.set_str(ns, "nul", "a\0b").is_err());
}

#[test]
fn overwrite_erase_and_type_change() {
    let mut nvs = Nvs::open(MemFlash::new(SIZE as usize), 0, SIZE).unwrap();
    let ns = nvs.namespace("a").unwrap();
    nvs.set_blob(ns, "k", &[1; 100]).unwrap();
    nvs.set_blob(ns, "k", &[2; 5000]).unwrap();
    nvs.set_blob(ns, "k", &[3; 50]).unwrap();
    nvs.set::<u32>(ns, "k", 9).unwrap();
    let mut nvs = reopen(nvs, None);
    let ns = nvs.find_namespace("a").unwrap();
    assert_eq!(nvs.get::<u32>(ns, "k").unwrap(), Some(9));
    assert_eq!(nvs.entries().len(), 1);
    assert!(nvs.erase(ns, "k").unwrap());
    assert!(!nvs.erase(ns, "k").unwrap());
    let nvs = reopen(nvs, None);
    assert!(nvs.entries().is_empty());
}

#[test]
fn garbage_collection_keeps_values_in_a_three_page_partition() {
    let size = 3 * 4096;
    let mut nvs = Nvs::open(MemFlash::new(size as usize), 0, size).unwrap();
    let ns = nvs.namespace("gc").unwrap();
    for round in 0..300u32 {
        nvs.set::<u32>(ns, "counter", round).unwrap();
        nvs.set_str(
            ns,
            "text",
            &format!("round {round} {}", "z".repeat((round % 90) as usize)),
        )
        .unwrap();
        nvs.set_blob(ns, "blob", &vec![round as u8; 200 + (round as usize % 700)])
            .unwrap();
    }
    let flash = nvs.release();
    let mut nvs = Nvs::open(flash, 0, size).unwrap();
    let ns = nvs.find_namespace("gc").unwrap();
    assert_eq!(nvs.get::<u32>(ns, "counter").unwrap(), Some(299));
    assert_eq!(
        nvs.get_blob(ns, "blob").unwrap().unwrap(),
        vec![299u32 as u8; 499]
    );
    let stats = nvs.stats();
    assert_eq!(stats.pages, 3);
    assert!(
        nvs.mount_findings().is_empty(),
        "{:?}",
        nvs.mount_findings()
    );
}

#[test]
fn full_partition_reports_not_enough_space() {
    let size = 3 * 4096;
    let mut nvs = Nvs::open(MemFlash::new(size as usize), 0, size).unwrap();
    let ns = nvs.namespace("fill").unwrap();
    let mut err = None;
    for i in 0..1000 {
        if let Err(e) = nvs.set::<u32>(ns, &format!("k{i}"), i) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(Error::NotEnoughSpace { .. })), "{err:?}");
    // Still readable after the failure.
    assert_eq!(nvs.get::<u32>(ns, "k0").unwrap(), Some(0));
}

#[test]
fn encrypted_partition_round_trip_and_wrong_key_writes_nothing() {
    let keys = NvsKeys::new([0x11; 32], [0x22; 32]);
    let mut nvs = Nvs::open_with(
        MemFlash::new(SIZE as usize),
        0,
        SIZE,
        Some(&keys),
        Mode::ReadWrite,
    )
    .unwrap();
    let ns = nvs.namespace("mqtt_certs").unwrap();
    nvs.set_str(ns, "private_key", "-----BEGIN RSA PRIVATE KEY-----")
        .unwrap();
    nvs.set_blob(ns, "ff", &[0xFF; 64]).unwrap();
    let image = nvs.release().into_bytes();
    assert!(
        !image.windows(11).any(|w| w == b"private_key"),
        "keys must be encrypted"
    );

    let wrong = NvsKeys::new([0x33; 32], [0x22; 32]);
    let err = Nvs::open_with(
        MemFlash::from_bytes(image.clone()),
        0,
        SIZE,
        Some(&wrong),
        Mode::ReadWrite,
    )
    .unwrap_err();
    assert_eq!(err, Error::Undecodable(Undecodable::WrongKey));
    let err = Nvs::open(MemFlash::from_bytes(image.clone()), 0, SIZE).unwrap_err();
    assert_eq!(err, Error::Undecodable(Undecodable::NeedsKey));

    let mut nvs = Nvs::open_with(
        MemFlash::from_bytes(image.clone()),
        0,
        SIZE,
        Some(&keys),
        Mode::ReadWrite,
    )
    .unwrap();
    let ns = nvs.find_namespace("mqtt_certs").unwrap();
    assert_eq!(nvs.get_blob(ns, "ff").unwrap().unwrap(), vec![0xFF; 64]);
    assert_eq!(
        nvs.release().into_bytes(),
        image,
        "a clean mount writes nothing"
    );
}

#[test]
fn bad_geometry_and_keys_are_errors() {
    assert!(matches!(
        Nvs::open(MemFlash::new(5000), 0, 5000),
        Err(Error::Geometry { .. })
    ));
    assert!(matches!(
        Nvs::open(MemFlash::new(4096), 0, 8192),
        Err(Error::Geometry { .. })
    ));
    let mut nvs = Nvs::open(MemFlash::new(SIZE as usize), 0, SIZE).unwrap();
    assert!(matches!(
        nvs.namespace("sixteen_chars_xx"),
        Err(Error::InvalidKey { .. })
    ));
    let ns = nvs.namespace("ok").unwrap();
    assert!(matches!(
        nvs.set::<u8>(ns, "", 1),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn random_bytes_never_panic() {
    let mut seed = 0x1234_5678u32;
    for _ in 0..50 {
        let mut bytes = vec![0u8; SIZE as usize];
        for b in &mut bytes {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
        let _ = Nvs::open(MemFlash::from_bytes(bytes), 0, SIZE);
    }
}

#[test]
fn a_string_that_is_not_utf8_is_reported_where_it_lies() {
    use acorn_nvs::builder::{ImageBuilder, ImageValue};
    let mut image = ImageBuilder::new(SIZE as usize, None).unwrap();
    image.namespace("certs").unwrap();
    for i in 0..5 {
        image
            .add(&format!("pad{i}"), ImageValue::Int(IntValue::U8(i)))
            .unwrap();
    }
    image
        .add("bad", ImageValue::Str(&[0x61, 0xFF, 0xFE]))
        .unwrap();
    let flash = MemFlash::from_bytes(image.finish());
    let mut nvs = Nvs::open_with(flash, 0, SIZE, None, Mode::ReadOnly).unwrap();
    let ns = nvs.find_namespace("certs").unwrap();
    let err = nvs.get_string(ns, "bad").unwrap_err();
    // The namespace entry is entry 0 and the five integers 1..=5: the string is entry 6.
    assert!(
        matches!(&err, Error::CorruptValue { key, page: 0, entry: 6, .. } if key == "bad"),
        "{err:?}"
    );
}
