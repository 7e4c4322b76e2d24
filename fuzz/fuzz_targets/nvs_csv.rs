//! `acorn nvs generate`'s CSV (ESP-IDF `nvs_partition_gen.py` format): parsing, and building a
//! partition image from the rows.
//!
//! The parser lives in the CLI binary (`crates/acorn/src/nvs/csv.rs`, which has no library
//! target); it is compiled into this target as it is, with `#[path]`, so the fuzzed code is the
//! shipped code without exporting it from the CLI.
//!
//! Input: a flags byte (bits 0-2: partition of 1 to 8 pages; bit 3: encrypted; bit 4: format
//! version 1), then the CSV text (UTF-8, as the CLI reads it).
//!
//! Properties:
//! - never a panic; `file` rows are not built (they read files of the machine);
//! - an image that builds has the size asked for (a read-only one under three pages: its
//!   written pages, as ESP-IDF's generator makes it), `Nvs::check` finds no problem in it, and it
//!   mounts; every `data` value whose key is unique in its namespace reads back from it with
//!   the type and value the row gives (strings, binary and hex2bin bytes, integers). A key
//!   given twice is written twice, as ESP-IDF's generator does: then `Nvs::check` may report
//!   duplicates and an older blob's left-over chunks, and nothing else.
#![no_main]

#[allow(dead_code, clippy::all)]
#[path = "../../crates/acorn/src/nvs/csv.rs"]
mod csv;

use std::collections::BTreeMap;

use acorn_nvs::builder::ImageBuilder;
use acorn_nvs::{format, IntValue, MemFlash, Mode, Nvs, NvsKeys, ProblemKind, ValueType};
use libfuzzer_sys::fuzz_target;

/// What a row must read back as.
#[derive(Debug, PartialEq)]
enum Want {
    Str(String),
    Blob(Option<Vec<u8>>),
    Int(IntValue),
}

fn want(row: &csv::Row) -> Option<Want> {
    Some(match row.encoding.as_str() {
        "string" => Want::Str(row.value.clone()),
        "binary" => Want::Blob(Some(row.value.clone().into_bytes())),
        "hex2bin" => Want::Blob(Some(hex::decode(row.value.trim()).ok()?)),
        "base64" => Want::Blob(None),
        enc => {
            let t = ValueType::from_name(enc)?;
            Want::Int(IntValue::parse(t, &row.value)?)
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(rows) = csv::parse(text, "fuzz.csv") else {
        return;
    };
    if rows.iter().any(|r| r.kind == "file") {
        return;
    }
    let size = (1 + usize::from(flags & 7)) * 4096;
    let keys = (flags & 8 != 0).then(|| NvsKeys::new([0x11; 32], [0x22; 32]));
    let version = if flags & 16 != 0 {
        format::VERSION_1
    } else {
        format::VERSION_2
    };
    let Ok(mut builder) = ImageBuilder::with_version(size, keys.as_ref(), version) else {
        return;
    };
    if csv::build(&rows, "fuzz.csv", &mut builder).is_err() {
        return;
    }
    let image = builder.finish();
    // Like ESP-IDF's generator, a partition under three pages is read-only and its image only
    // as long as its written pages.
    if size >= 3 * 4096 {
        assert_eq!(image.len(), size, "image size");
    } else {
        assert!(image.len() <= size && image.len() % 4096 == 0 && !image.is_empty());
    }
    let size = image.len();

    // The value rows, by namespace and key, with how often each key occurs.
    let mut values: BTreeMap<(String, String), (usize, &csv::Row)> = BTreeMap::new();
    let mut ns = None;
    for row in &rows {
        if row.kind == "namespace" {
            ns = Some(row.key.clone());
            continue;
        }
        let ns = ns
            .clone()
            .expect("build refuses a value before a namespace");
        values.entry((ns, row.key.clone())).or_insert((0, row)).0 += 1;
    }
    // ESP-IDF's generator writes a key given twice twice (the newest wins, and an older blob's
    // chunks are left over): the only problems a generated image may have.
    let duplicates = values.values().any(|(count, _)| *count > 1);
    let mut nvs = Nvs::open_with(
        MemFlash::from_bytes(image.clone()),
        0,
        size as u32,
        keys.as_ref(),
        Mode::ReadOnly,
    )
    .expect("a generated image mounts");
    let (problems, _) = Nvs::check(
        MemFlash::from_bytes(image.clone()),
        0,
        size as u32,
        keys.as_ref(),
    )
    .expect("a generated image reads");
    assert!(
        problems.iter().all(|p| duplicates
            && matches!(
                p.kind,
                ProblemKind::Duplicate | ProblemKind::OrphanBlobChunk
            )),
        "a generated image has problems: {problems:?}"
    );
    for ((ns, key), (count, row)) in values {
        if count > 1 {
            continue;
        }
        let Some(want) = want(row) else { continue };
        let handle = nvs
            .find_namespace(&ns)
            .expect("the namespace is in the image");
        let got = match &want {
            Want::Str(_) => Want::Str(
                nvs.get_string(handle, &key)
                    .expect("a generated string reads")
                    .expect("present"),
            ),
            Want::Blob(None) => {
                let info = nvs
                    .value_info(handle, &key)
                    .expect("reads")
                    .expect("present");
                assert_eq!(info.value_type, ValueType::Blob, "row {}", row.line);
                Want::Blob(None)
            }
            Want::Blob(Some(_)) => Want::Blob(Some(
                nvs.get_blob(handle, &key)
                    .expect("a generated blob reads")
                    .expect("present"),
            )),
            Want::Int(_) => Want::Int(
                nvs.get_int(handle, &key)
                    .expect("a generated integer reads")
                    .expect("present"),
            ),
        };
        assert_eq!(
            got, want,
            "row {} (`{ns}`/`{key}`) reads back wrong",
            row.line
        );
    }
});
