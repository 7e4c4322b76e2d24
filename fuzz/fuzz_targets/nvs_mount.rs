//! Mounts arbitrary bytes as an NVS partition (plain, and encrypted with a fixed key), reads
//! everything, then mounts writable and writes: nothing may panic, hang or loop.
#![no_main]

use acorn_nvs::{MemFlash, Mode, Nvs, NvsKeys, ValueType};
use libfuzzer_sys::fuzz_target;

fn exercise(bytes: Vec<u8>, keys: Option<&NvsKeys>) {
    let size = bytes.len() as u32;
    let _ = Nvs::check(MemFlash::from_bytes(bytes.clone()), 0, size, keys);
    if let Ok(mut nvs) = Nvs::open_with(
        MemFlash::from_bytes(bytes.clone()),
        0,
        size,
        keys,
        Mode::ReadOnly,
    ) {
        for entry in nvs.entries() {
            let Some(ns) = nvs.find_namespace(&entry.namespace) else {
                continue;
            };
            let mut buf = vec![0u8; entry.info.len.min(1 << 20)];
            match entry.info.value_type {
                ValueType::Str | ValueType::Blob => {
                    let _ = nvs.get_bytes_into(ns, &entry.key, &mut buf);
                }
                _ => {
                    let _ = nvs.get_int(ns, &entry.key);
                }
            }
        }
        let _ = nvs.stats();
    }
    if let Ok(mut nvs) = Nvs::open_with(MemFlash::from_bytes(bytes), 0, size, keys, Mode::ReadWrite)
    {
        if let Ok(ns) = nvs.namespace("mqtt_certs") {
            let _ = nvs.set_blob(ns, "device_cert", &[0x42; 1300]);
            let _ = nvs.set::<u8>(ns, "cert_valid", 1);
            let _ = nvs.erase(ns, "private_key");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // First byte: page count (1..=4) and whether to use the key; the rest fills the pages,
    // repeated, so short inputs still make whole pages.
    let pages = usize::from(data[0] & 3) + 1;
    let encrypted = data[0] & 4 != 0;
    let body = &data[1..];
    let mut bytes = vec![0xFFu8; pages * 4096];
    if !body.is_empty() {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = body[i % body.len()];
        }
        if data[0] & 8 != 0 {
            // Keep most of a valid-looking layout: only the first len bytes come from the input.
            bytes.iter_mut().skip(body.len()).for_each(|b| *b = 0xFF);
        }
    }
    let keys = NvsKeys::new([0x11; 32], [0x22; 32]);
    exercise(bytes, encrypted.then_some(&keys));
});
