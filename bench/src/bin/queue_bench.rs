//! Durable press queue benchmark: flash bytes written and sectors erased per press (enqueue +
//! dequeue) by the device core's queue on an identity-sized (24 KB) NVS partition, and the
//! flash lifetime this implies at 100 and 10,000 presses a day (100,000 erase cycles per
//! sector), beside the naive design measured in the same run on the same NVS engine: the whole
//! queue kept as one blob and rewritten on every enqueue and every dequeue.
//!
//! Run with `bash bench/run.sh` (release build).

use std::cell::Cell;
use std::rc::Rc;

use acorn_device::{Action, Device, DeviceConfig, MemorySettings, Now, TransportEvent};
use acorn_nvs::{MemFlash, Mode, Nvs};
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use rand::rngs::StdRng;
use rand::SeedableRng;

const SIZE: u32 = 0x6000;
const SECTOR: u32 = 4096;
const ERASE_CYCLES: f64 = 100_000.0;

/// What reached the flash.
#[derive(Default)]
struct Wear {
    bytes_written: Cell<u64>,
    sector_erases: Cell<u64>,
}

/// A flash that counts the bytes written and the sectors erased.
struct CountingFlash {
    inner: MemFlash,
    wear: Rc<Wear>,
}

impl ErrorType for CountingFlash {
    type Error = <MemFlash as ErrorType>::Error;
}

impl ReadNorFlash for CountingFlash {
    const READ_SIZE: usize = MemFlash::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl NorFlash for CountingFlash {
    const WRITE_SIZE: usize = MemFlash::WRITE_SIZE;
    const ERASE_SIZE: usize = MemFlash::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let sectors = u64::from((to - from) / SECTOR);
        self.wear
            .sector_erases
            .set(self.wear.sector_erases.get() + sectors);
        self.inner.erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.wear
            .bytes_written
            .set(self.wear.bytes_written.get() + bytes.len() as u64);
        self.inner.write(offset, bytes)
    }
}

fn partition(wear: &Rc<Wear>) -> Nvs<CountingFlash> {
    let flash = CountingFlash {
        inner: MemFlash::new(SIZE as usize),
        wear: Rc::clone(wear),
    };
    Nvs::open_with(flash, 0, SIZE, None, Mode::ReadWrite).expect("a blank partition mounts")
}

/// Per press: (bytes written, sector erases), over `presses` presses after a warm-up that
/// fills the partition once (so page reclaim is in the steady state).
type PerPress = (f64, f64);

/// The device core's queue: each press made while connected, then its PUBACK.
fn device_queue(presses: u64, backlog: Option<u64>) -> PerPress {
    let wear = Rc::new(Wear::default());
    let mut config = DeviceConfig::new("acorn-0001", "1.0.0").unwrap();
    config.cooldown_entries = 4;
    let mut device = Device::with_press_store(
        config,
        MemorySettings::default(),
        partition(&wear),
        StdRng::seed_from_u64(1),
    )
    .unwrap();
    let mut mono = 0u64;
    let now = |mono: u64| Now::new(mono, 1_795_884_120_000 + mono);
    device.start(now(mono));
    let _ = device.drain_actions().count();
    device.transport(
        now(mono),
        TransportEvent::ConnAck {
            session_present: true,
        },
    );
    let _ = device.drain_actions().count();
    let mut pending = Vec::new();
    let mut measured = (0, 0);
    for i in 0..(presses + 2_000) {
        if i == 2_000 {
            measured = (wear.bytes_written.get(), wear.sector_erases.get());
        }
        mono += 1_500;
        device
            .press(now(mono), "rf-5a3c", Some(87))
            .expect("a press is taken");
        for action in device.drain_actions() {
            if let Action::Publish(p) = action {
                pending.push(p.tag);
            }
        }
        // A backlog of unacknowledged presses stays queued (as while a slow broker answers);
        // `None` = no PUBACK at all: the queue fills and every press drops the oldest.
        while backlog.is_some_and(|b| device.queued_presses().count() as u64 > b) {
            let tag = pending.remove(0);
            device.transport(now(mono), TransportEvent::PubAck(tag));
            for action in device.drain_actions() {
                if let Action::Publish(p) = action {
                    pending.push(p.tag);
                }
            }
        }
    }
    let bytes = wear.bytes_written.get() - measured.0;
    let erases = wear.sector_erases.get() - measured.1;
    (
        bytes as f64 / presses as f64,
        erases as f64 / presses as f64,
    )
}

/// The naive queue: the whole queue as one blob, rewritten on every enqueue and dequeue.
fn naive_queue(presses: u64, backlog: Option<u64>) -> PerPress {
    let wear = Rc::new(Wear::default());
    let mut nvs = partition(&wear);
    let ns = nvs.namespace("press_queue").unwrap();
    // The same 32-byte record as the device's (time, battery, button), one per press.
    let record = |i: u64| {
        let mut r = format!("{:011x}57rf-5a3c", 1_795_884_120_000 + i * 1_500).into_bytes();
        r.resize(32, 0);
        r
    };
    let len = record(0).len();
    let mut queue: Vec<u8> = Vec::new();
    let mut measured = (0, 0);
    for i in 0..(presses + 2_000) {
        if i == 2_000 {
            measured = (wear.bytes_written.get(), wear.sector_erases.get());
        }
        queue.extend_from_slice(&record(i));
        if backlog.is_none() && queue.len() / len > 256 {
            queue.drain(..len);
        }
        nvs.set_blob(ns, "queue", &queue).unwrap();
        while backlog.is_some_and(|b| (queue.len() / len) as u64 > b) {
            queue.drain(..len);
            nvs.set_blob(ns, "queue", &queue).unwrap();
        }
    }
    let bytes = wear.bytes_written.get() - measured.0;
    let erases = wear.sector_erases.get() - measured.1;
    (
        bytes as f64 / presses as f64,
        erases as f64 / presses as f64,
    )
}

fn lifetime(erases_per_press: f64, per_day: f64) -> String {
    let sectors = f64::from(SIZE / SECTOR);
    let presses = sectors * ERASE_CYCLES / erases_per_press;
    let days = presses / per_day;
    let years = days / 365.0;
    if years >= 100.0 {
        format!("{years:.0} years")
    } else if years >= 1.0 {
        format!("{years:.1} years")
    } else {
        format!("{days:.0} days")
    }
}

fn main() {
    let presses = 20_000;
    println!("## Durable press queue: flash wear per press (24 KB NVS partition, same run)\n");
    println!("| queue | presses waiting | bytes written / press | sector erases / press | lifetime at 100 presses/day | at 10,000 presses/day |");
    println!("|---|---|---|---|---|---|");
    for backlog in [Some(0u64), Some(8), Some(64), None] {
        let waiting = backlog.map_or("256 (full: each press drops the oldest)".to_owned(), |b| {
            b.to_string()
        });
        for (name, (bytes, erases)) in [
            (
                "acorn-device (one record per press)",
                device_queue(presses, backlog),
            ),
            (
                "naive (whole queue as one blob)",
                naive_queue(presses, backlog),
            ),
        ] {
            println!(
                "| {name} | {waiting} | {bytes:.0} | {erases:.4} | {} | {} |",
                lifetime(erases, 100.0),
                lifetime(erases, 10_000.0)
            );
        }
    }
    println!("\n({presses} presses measured after 2,000 warm-up presses; each press enqueued, then dequeued on its PUBACK; `presses waiting` = unacknowledged presses kept in the queue meanwhile.)");
}
