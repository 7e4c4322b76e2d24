//! When devices press: a press interval per device and a profile over the run.

use std::time::{Duration, Instant};

use rand::RngCore;

/// How presses are spread over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Every device presses every `--press-every`, at its own phase: a flat rate.
    Steady,
    /// Every device presses at the same instants (multiples of `--press-every` from the
    /// start, within 20 ms): the broker sees N presses at once.
    Burst,
    /// The rate rises from a quarter to twice the steady rate mid-run and falls back (a
    /// half sine over the run), like a fleet waking up.
    MorningRush,
}

/// The workload of a run.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The steady interval between two presses of one device.
    pub press_every: Duration,
    /// The profile.
    pub profile: Profile,
    /// The run's duration (for the morning rush's curve).
    pub duration: Duration,
}

fn uniform(rng: &mut impl RngCore, bound: Duration) -> Duration {
    let ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rng.next_u64() % ms)
}

impl Workload {
    /// The first press of a device started at `now`: a random phase within one interval.
    pub fn first_press(&self, now: Instant, rng: &mut impl RngCore) -> Instant {
        now + uniform(rng, self.press_every)
    }

    /// The press after one made at `now`, in a run started at `start`.
    pub fn next_press(&self, now: Instant, start: Instant, rng: &mut impl RngCore) -> Instant {
        match self.profile {
            Profile::Steady => now + self.press_every,
            Profile::Burst => {
                let every = self.press_every.as_millis().max(1);
                let since = now.saturating_duration_since(start).as_millis();
                let next = (since / every + 1) * every;
                start
                    + Duration::from_millis(u64::try_from(next).unwrap_or(u64::MAX))
                    + uniform(rng, Duration::from_millis(20))
            }
            Profile::MorningRush => {
                let t = now.saturating_duration_since(start).as_secs_f64();
                let d = self.duration.as_secs_f64().max(1.0);
                let rate = 0.25 + 1.75 * (std::f64::consts::PI * (t / d).clamp(0.0, 1.0)).sin();
                now + self.press_every.div_f64(rate.max(0.25))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::device::SplitMix;

    #[test]
    fn profiles_space_presses_as_documented() {
        let start = Instant::now();
        let mut rng = SplitMix::new(1);
        let every = Duration::from_secs(1);
        let mut w = Workload {
            press_every: every,
            profile: Profile::Steady,
            duration: Duration::from_secs(100),
        };
        assert_eq!(w.next_press(start, start, &mut rng), start + every);
        assert!(w.first_press(start, &mut rng) < start + every);
        w.profile = Profile::Burst;
        let next = w.next_press(start + Duration::from_millis(1500), start, &mut rng);
        assert!(next >= start + Duration::from_secs(2));
        assert!(next < start + Duration::from_millis(2020));
        w.profile = Profile::MorningRush;
        let early = w.next_press(start, start, &mut rng) - start;
        let mid = w.next_press(start + Duration::from_secs(50), start, &mut rng)
            - (start + Duration::from_secs(50));
        assert_eq!(early, Duration::from_secs(4));
        assert!(mid < Duration::from_millis(600), "{mid:?}");
    }
}
