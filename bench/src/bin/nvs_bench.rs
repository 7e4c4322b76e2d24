//! NVS benchmark: mount time and RAM for a 24 KB and a 512 KB partition, heap allocated while
//! reading a 1,700-byte blob into a caller's buffer, each beside the `esp-nvs` crate measured
//! in the same run; and `acorn nvs generate` beside ESP-IDF's Python generator on one CSV.
//!
//! Run with `bash bench/run.sh` (release build).

use std::path::Path;
use std::process::Command;

use acorn_bench::{measure_heap, median_time, CountingAllocator};
use acorn_nvs::{MemFlash, Mode, Nvs};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// An image with the certificate set, plus `extra` u32 keys and strings spread over namespaces.
fn image(size: usize, extra: usize) -> Vec<u8> {
    let mut nvs = Nvs::open(MemFlash::new(size), 0, size as u32).unwrap();
    let ns = nvs.namespace("mqtt_certs").unwrap();
    nvs.set_blob(ns, "device_cert", &vec![b'C'; 1220]).unwrap();
    nvs.set_blob(ns, "private_key", &vec![b'K'; 1700]).unwrap();
    nvs.set_str(ns, "iot_endpoint", "abc123-ats.iot.us-west-2.amazonaws.com")
        .unwrap();
    nvs.set_str(ns, "cert_meta", &"m".repeat(300)).unwrap();
    nvs.set::<u8>(ns, "cert_valid", 1).unwrap();
    for i in 0..extra {
        let ns = nvs.namespace(&format!("ns{}", i % 8)).unwrap();
        if i % 2 == 0 {
            nvs.set::<u32>(ns, &format!("k{i}"), i as u32).unwrap();
        } else {
            nvs.set_str(ns, &format!("s{i}"), &format!("value number {i}"))
                .unwrap();
        }
    }
    nvs.release().into_bytes()
}

fn fmt_us(d: std::time::Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    println!("## NVS engine (acorn-nvs) beside esp-nvs 0.6, same images, same run\n");
    println!("| partition | values | acorn-nvs mount | esp-nvs mount | acorn-nvs heap after mount (peak) | esp-nvs heap after mount (peak) |");
    println!("|---|---|---|---|---|---|");
    for (label, size, extra) in [("24 KB", 0x6000usize, 40usize), ("512 KB", 0x80000, 3000)] {
        let img = image(size, extra);
        let acorn_t = median_time(31, || {
            let nvs = Nvs::open_with(
                MemFlash::from_bytes(img.clone()),
                0,
                size as u32,
                None,
                Mode::ReadOnly,
            )
            .unwrap();
            std::hint::black_box(nvs.stats());
        });
        let peer_t = median_time(31, || {
            let nvs = esp_nvs::Nvs::new(0, size, MemFlash::from_bytes(img.clone())).unwrap();
            std::hint::black_box(&nvs);
        });
        // The image copy is made outside the measured heap.
        let flash = MemFlash::from_bytes(img.clone());
        let (acorn_nvs, acorn_heap) =
            measure_heap(|| Nvs::open_with(flash, 0, size as u32, None, Mode::ReadOnly).unwrap());
        let flash = MemFlash::from_bytes(img.clone());
        let (peer_nvs, peer_heap) = measure_heap(|| esp_nvs::Nvs::new(0, size, flash).unwrap());
        println!(
            "| {label} | {} | {} | {} | {} B ({} B) | {} B ({} B) |",
            5 + extra,
            fmt_us(acorn_t),
            fmt_us(peer_t),
            acorn_heap.retained,
            acorn_heap.peak,
            peer_heap.retained,
            peer_heap.peak
        );
        drop((acorn_nvs, peer_nvs));
    }

    println!("\n## Reading the 1,700-byte private key blob\n");
    let img = image(0x6000, 0);
    let mut nvs = Nvs::open(MemFlash::from_bytes(img.clone()), 0, 0x6000).unwrap();
    let ns = nvs.find_namespace("mqtt_certs").unwrap();
    let mut buf = vec![0u8; nvs.value_info(ns, "private_key").unwrap().unwrap().len];
    let (_, heap) = measure_heap(|| nvs.get_blob_into(ns, "private_key", &mut buf).unwrap());
    let acorn_t = median_time(101, || {
        nvs.get_blob_into(ns, "private_key", &mut buf).unwrap();
    });
    let mut peer = esp_nvs::Nvs::new(0, 0x6000, MemFlash::from_bytes(img)).unwrap();
    let nsk = esp_nvs::Key::from_str("mqtt_certs");
    let key = esp_nvs::Key::from_str("private_key");
    let (_, peer_heap) = measure_heap(|| {
        let v: Vec<u8> = esp_nvs::Get::get(&mut peer, &nsk, &key).unwrap();
        v.len()
    });
    let peer_t = median_time(101, || {
        let v: Vec<u8> = esp_nvs::Get::get(&mut peer, &nsk, &key).unwrap();
        std::hint::black_box(v);
    });
    println!("| reader | heap allocated during the read | time |");
    println!("|---|---|---|");
    println!(
        "| acorn-nvs `get_blob_into` (caller's buffer) | {} B | {} |",
        heap.allocated,
        fmt_us(acorn_t)
    );
    println!(
        "| esp-nvs `get::<Vec<u8>>` | {} B | {} |",
        peer_heap.allocated,
        fmt_us(peer_t)
    );

    generate_vs_python();
}

fn generate_vs_python() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let acorn = root.join("target/release/acorn");
    let python = root.join(".venv/bin/python");
    if !acorn.exists() || !python.exists() {
        println!("\n(generate comparison skipped: build `acorn` in release and create .venv first — bench/run.sh does both)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("acorn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("key,type,encoding,value\n");
    for n in 0..4 {
        csv.push_str(&format!("ns{n},namespace,,\n"));
        for k in 0..100 {
            csv.push_str(&format!(
                "u{k},data,u32,{k}\ns{k},data,string,value {k} {}\n",
                "x".repeat(k % 50)
            ));
        }
    }
    std::fs::write(dir.join("big.bin"), vec![0x5Au8; 20_000]).unwrap();
    csv.push_str("blobs,namespace,,\nbig,file,binary,big.bin\n");
    std::fs::write(dir.join("bench.csv"), csv).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let acorn_t = median_time(11, || {
        run(Command::new(&acorn).args(["nvs", "generate", "bench.csv", "a.bin", "0x80000"]))
    });
    let py_t = median_time(11, || {
        run(Command::new(&python).args([
            "-m",
            "esp_idf_nvs_partition_gen",
            "generate",
            "bench.csv",
            "p.bin",
            "0x80000",
        ]))
    });
    let same =
        std::fs::read(dir.join("a.bin")).unwrap() == std::fs::read(dir.join("p.bin")).unwrap();
    println!("\n## Image generation: 801 rows + a 20,000-byte blob into 512 KB, median of 11 runs (process start included)\n");
    println!("| tool | wall time | output |");
    println!("|---|---|---|");
    println!(
        "| `acorn nvs generate` | {:.1} ms | {} |",
        acorn_t.as_secs_f64() * 1e3,
        if same { "identical" } else { "DIFFERENT" }
    );
    println!(
        "| ESP-IDF `nvs_partition_gen.py generate` | {:.1} ms | reference |",
        py_t.as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
