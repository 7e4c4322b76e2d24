//! Press cooldown: presses of one button closer together than `cooldownMs` are reported once.
//!
//! The table is bounded: when it holds `capacity` buttons, those whose cooldown has passed are
//! forgotten; if every one is still recent, the table is cleared (bounded memory over a
//! perfect cooldown: at worst a press is reported twice).

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};

/// Last reported press time (monotonic ms) per button.
#[derive(Debug, Clone)]
pub(crate) struct Cooldown {
    last: BTreeMap<String, u64>,
    capacity: usize,
}

impl Cooldown {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            last: BTreeMap::new(),
            capacity,
        }
    }

    /// Whether a press of `button` at `now` falls within `cooldown_ms` of its last reported
    /// press.
    pub(crate) fn is_cooling(&self, button: &str, now: u64, cooldown_ms: u64) -> bool {
        self.last
            .get(button)
            .is_some_and(|&last| now.saturating_sub(last) < cooldown_ms)
    }

    /// Records a reported press of `button` at `now`.
    pub(crate) fn record(&mut self, button: &str, now: u64, cooldown_ms: u64) {
        if !self.last.contains_key(button) && self.last.len() >= self.capacity {
            self.last
                .retain(|_, t| now.saturating_sub(*t) < cooldown_ms);
            if self.last.len() >= self.capacity {
                self.last.clear();
            }
        }
        self.last.insert(button.to_string(), now);
    }

    /// Buttons remembered.
    pub(crate) fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_pruned() {
        let mut table = Cooldown::new(2);
        table.record("a", 0, 1000);
        table.record("b", 1500, 1000);
        // "a" has cooled down: pruned to make room.
        table.record("c", 1600, 1000);
        assert_eq!(table.len(), 2);
        assert!(!table.is_cooling("a", 1600, 1000));
        assert!(table.is_cooling("b", 1600, 1000));
        // All recent: cleared.
        table.record("d", 1700, 1000);
        assert_eq!(table.len(), 1);
        assert!(table.is_cooling("d", 1700, 1000));
        // Re-recording a known button never prunes.
        table.record("e", 1800, 1000);
        table.record("e", 2900, 1000);
        assert_eq!(table.len(), 2);
    }
}
