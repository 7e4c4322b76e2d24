//! Reconnect backoff: exponential with full jitter, a fast-retry budget, then a slow cadence
//! that never gives up.
//!
//! After the `n`-th consecutive failure (n = 1, 2, ...):
//! - while `n < slow_after_failures`: sleep `random(0, min(cap, initial · 2^(n-1)))`
//!   (AWS "full jitter": 1 s, 2 s, 4 s, ... 60 s bounds);
//! - from then on: sleep `random(slow_min, slow_max)` (5 to 10 minutes by default): slow, but
//!   jittered so a fleet does not come back in lockstep, and never a give-up.
//!
//! The one-CONNECT-per-second floor is not applied here but by the session, measured from the
//! previous CONNECT: see [`crate::Session`].

use rand_core::RngCore;

use crate::Error;

/// Backoff and reconnect timing parameters. [`Default`] gives the documented policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Bound of the first sleep, in ms (seed: 1 s).
    pub initial_ms: u64,
    /// Largest bound of a fast-retry sleep, in ms (seed: 60 s).
    pub cap_ms: u64,
    /// Smallest time between two CONNECTs, in ms (AWS: one per second per client id).
    pub min_connect_interval_ms: u64,
    /// A connection that stays up this long (ms) resets the failure count (30 s).
    pub stable_after_ms: u64,
    /// After this many consecutive failures, retry at the slow cadence (seed gave up at 10).
    pub slow_after_failures: u32,
    /// Shortest slow-cadence sleep, in ms (5 min).
    pub slow_min_ms: u64,
    /// Longest slow-cadence sleep, in ms (10 min).
    pub slow_max_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial_ms: 1000,
            cap_ms: 60_000,
            min_connect_interval_ms: crate::limits::MIN_CONNECT_INTERVAL_MS,
            stable_after_ms: 30_000,
            slow_after_failures: 10,
            slow_min_ms: 300_000,
            slow_max_ms: 600_000,
        }
    }
}

/// One chosen sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// The sleep, in ms.
    pub ms: u64,
    /// Lowest value it could have had.
    pub lower_ms: u64,
    /// Highest value it could have had.
    pub upper_ms: u64,
    /// Whether this is a slow-cadence sleep.
    pub slow: bool,
}

impl BackoffConfig {
    /// Checks the parameters are consistent.
    pub fn validate(&self) -> Result<(), Error> {
        let what = if self.initial_ms == 0 {
            "backoff initial_ms must be > 0"
        } else if self.cap_ms < self.initial_ms {
            "backoff cap_ms must be >= initial_ms"
        } else if self.min_connect_interval_ms < crate::limits::MIN_CONNECT_INTERVAL_MS {
            "min_connect_interval_ms must be >= 1000: AWS IoT Core allows one CONNECT per second per client id"
        } else if self.slow_after_failures == 0 {
            "slow_after_failures must be >= 1"
        } else if self.slow_min_ms > self.slow_max_ms || self.slow_min_ms < self.cap_ms {
            "slow cadence must satisfy cap_ms <= slow_min_ms <= slow_max_ms"
        } else if self.stable_after_ms == 0 {
            "stable_after_ms must be > 0"
        } else {
            return Ok(());
        };
        Err(Error::Config { what })
    }

    /// The full-jitter bound after the `failures`-th consecutive failure (1-based):
    /// `min(cap, initial · 2^(failures-1))`.
    pub fn bound_ms(&self, failures: u32) -> u64 {
        let shift = failures.saturating_sub(1).min(63);
        self.initial_ms
            .checked_mul(1u64 << shift)
            .map_or(self.cap_ms, |b| b.min(self.cap_ms))
    }

    /// Chooses the sleep after the `failures`-th consecutive failure (1-based).
    pub fn delay<R: RngCore>(&self, failures: u32, rng: &mut R) -> Delay {
        let (lower_ms, upper_ms, slow) = if failures >= self.slow_after_failures {
            (self.slow_min_ms, self.slow_max_ms, true)
        } else {
            (0, self.bound_ms(failures), false)
        };
        Delay {
            ms: uniform(rng, lower_ms, upper_ms),
            lower_ms,
            upper_ms,
            slow,
        }
    }
}

/// A uniform integer in `lo..=hi` (modulo bias below 2^-40 for the spans used here).
pub(crate) fn uniform<R: RngCore>(rng: &mut R, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    let span = hi - lo;
    match span.checked_add(1) {
        Some(n) => lo + rng.next_u64() % n,
        None => rng.next_u64(),
    }
}
