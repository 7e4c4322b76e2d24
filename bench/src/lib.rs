//! Shared pieces of the benchmark programs: a counting global allocator and timing helpers.
//!
//! The allocator needs `unsafe` (implementing `GlobalAlloc` is an unsafe trait); it only
//! forwards to the system allocator and counts, which is what makes "heap bytes" measurable.
#![deny(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts bytes allocated (total), live, and the live peak since the last reset.
pub struct CountingAllocator;

static TOTAL: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to `System`; only counters are added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            TOTAL.fetch_add(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Heap figures of one measured closure.
#[derive(Debug, Clone, Copy)]
pub struct Heap {
    /// Bytes allocated in total (every allocation counted).
    pub allocated: usize,
    /// Highest live heap above the starting level.
    pub peak: usize,
    /// Live heap left over after the closure (what a result holds on to).
    pub retained: isize,
}

/// Runs `f` and reports its heap use (with the counting allocator installed).
pub fn measure_heap<T>(f: impl FnOnce() -> T) -> (T, Heap) {
    let live0 = LIVE.load(Ordering::Relaxed);
    let total0 = TOTAL.load(Ordering::Relaxed);
    PEAK.store(live0, Ordering::Relaxed);
    let out = f();
    let heap = Heap {
        allocated: TOTAL.load(Ordering::Relaxed) - total0,
        peak: PEAK.load(Ordering::Relaxed) - live0,
        retained: LIVE.load(Ordering::Relaxed) as isize - live0 as isize,
    };
    (out, heap)
}

/// Median duration of `runs` calls of `f`.
pub fn median_time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}
