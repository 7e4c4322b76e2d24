//! The durable press queue: presses kept in flash from the moment they are acknowledged to the
//! caller until their PUBACK, so that a reboot, a brown-out or a crash loses none.
//!
//! ## Layout in NVS (namespace `press_queue`, its own partition)
//!
//! | key | type | value |
//! |---|---|---|
//! | `boot` | u32 | the boot number of the last start (27 random bits at the first start) |
//! | `dropped` | u32 | presses dropped because the queue was full, over the device's life |
//! | 15 hex digits: the press id | string | `{unix_ms:011x}{battery:02x}{buttonRfId}` |
//!
//! A press id is the boot number (7 hex digits) followed by the press's number within that
//! boot (8 hex digits): unique on the device, stable across re-deliveries, and in press order
//! when read as a number, so the queue needs no index and no rewrite: one NVS write per press
//! (enqueue), one entry erase per PUBACK (dequeue). A record whose button id has at most
//! [`COMPACT_BUTTON_BYTES`] bytes is 31 characters and a NUL: one 32-byte data entry plus its
//! header, two NVS entries in all. Every write is an NVS write of one key, which a power cut
//! leaves whole or absent.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::convert::Infallible;
use core::fmt;

use acorn_mqtt::messages::{MAX_BATTERY_LEVEL, MAX_ID_BYTES};

/// NVS namespace of the press queue.
pub const PRESS_NAMESPACE: &str = "press_queue";
/// NVS key of the boot number.
pub const BOOT_KEY: &str = "boot";
/// NVS key of the dropped-press counter.
pub const DROPPED_KEY: &str = "dropped";
/// Presses kept at most, by default: when full, the oldest is dropped and counted.
pub const PRESS_QUEUE_CAPACITY: usize = 256;
/// The longest button id whose record fits one NVS data entry (two entries per press).
pub const COMPACT_BUTTON_BYTES: usize = 18;

/// Boot numbers have 28 bits (7 hex digits); a fresh queue starts below 2^27, leaving 2^27
/// boots of headroom before the order could wrap.
const BOOT_BITS: u32 = 28;
const BOOT_MASK: u32 = (1 << BOOT_BITS) - 1;
const FIRST_BOOT_MASK: u32 = (1 << (BOOT_BITS - 1)) - 1;
/// 11 hex digits of Unix milliseconds reach the year 2527.
const MAX_RECORD_UNIX_MS: u64 = 0xFFF_FFFF_FFFF;
const NO_BATTERY: u8 = 0xFF;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The unique, stable id of a press: its boot number and its number within that boot.
/// Shown (and sent as `pressId`) as 15 lowercase hex digits; ids compare in press order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PressId(u64);

impl PressId {
    /// The id of press number `seq` of boot `boot` (`boot` keeps its low 28 bits).
    pub fn new(boot: u32, seq: u32) -> Self {
        Self((u64::from(boot & BOOT_MASK) << 32) | u64::from(seq))
    }

    /// The boot number.
    pub fn boot(self) -> u32 {
        // 28 bits: the cast keeps every bit.
        (self.0 >> 32) as u32
    }

    /// The press's number within its boot.
    pub fn seq(self) -> u32 {
        // The low 32 bits, by construction.
        (self.0 & 0xFFFF_FFFF) as u32
    }

    /// Reads the 15-hex-digit form; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 15
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Self)
    }
}

impl fmt::Display for PressId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 15];
        for (i, d) in digits.iter_mut().enumerate() {
            *d = HEX[((self.0 >> ((14 - i) * 4)) & 0xF) as usize];
        }
        f.write_str(core::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
    }
}

/// The first boot number of a fresh queue, from a random draw: below 2^27, so that boot
/// numbers keep increasing for 2^27 starts.
pub fn first_boot(random: u32) -> u32 {
    random & FIRST_BOOT_MASK
}

/// The boot number after `boot`.
pub fn next_boot(boot: u32) -> u32 {
    boot.wrapping_add(1) & BOOT_MASK
}

/// One press waiting for its PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPress {
    /// Its id (`pressId`).
    pub id: PressId,
    /// When it happened, Unix milliseconds (its `timestamp`).
    pub unix_ms: u64,
    /// The button's RF id.
    pub button: String,
    /// The button's battery level, when known.
    pub battery: Option<u8>,
}

impl QueuedPress {
    /// The stored form: `{unix_ms:011x}{battery:02x}{button}` (`ff` = battery unknown).
    pub fn encode_value(&self) -> String {
        let mut value = String::with_capacity(13 + self.button.len());
        push_hex(&mut value, self.unix_ms.min(MAX_RECORD_UNIX_MS), 11);
        push_hex(&mut value, u64::from(self.battery.unwrap_or(NO_BATTERY)), 2);
        value.push_str(&self.button);
        value
    }

    /// Reads a record back from its key and stored value.
    pub fn decode(key: &str, value: &str) -> Result<Self, BadRecord> {
        let bad = |why: &'static str| BadRecord {
            key: key.to_string(),
            why,
        };
        let id = PressId::parse(key).ok_or(bad("the key is not a 15-hex-digit press id"))?;
        let (Some(time), Some(battery), Some(button)) =
            (value.get(..11), value.get(11..13), value.get(13..))
        else {
            return Err(bad("the value is shorter than 14 characters"));
        };
        let unix_ms = u64::from_str_radix(time, 16).map_err(|_| bad("the time is not hex"))?;
        let battery = u8::from_str_radix(battery, 16).map_err(|_| bad("the battery is not hex"))?;
        let battery = match battery {
            NO_BATTERY => None,
            level if level <= MAX_BATTERY_LEVEL => Some(level),
            _ => return Err(bad("the battery level is over 100")),
        };
        if button.is_empty() || button.len() > MAX_ID_BYTES {
            return Err(bad("the button id is empty or over 128 bytes"));
        }
        Ok(Self {
            id,
            unix_ms,
            button: button.to_string(),
            battery,
        })
    }
}

/// Appends the low `digits` hex digits of `n`, zero-padded, lowercase.
fn push_hex(out: &mut String, n: u64, digits: u32) {
    for i in (0..digits).rev() {
        let nibble = (n >> (i * 4)) & 0xF;
        out.push(char::from(HEX[nibble as usize]));
    }
}

/// A stored record that does not decode (it is erased when the queue is loaded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("press queue record {key:?} is unreadable: {why}")]
pub struct BadRecord {
    /// The record's key.
    pub key: String,
    /// What is wrong.
    pub why: &'static str,
}

/// What a press store holds at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredQueue {
    /// The presses, oldest first.
    pub presses: Vec<QueuedPress>,
    /// The dropped-press counter.
    pub dropped: u32,
    /// The boot number of the last start, if any.
    pub boot: Option<u32>,
    /// Records that did not decode and were erased.
    pub discarded: Vec<BadRecord>,
}

/// Keeps presses across reboots: the device's durable press queue.
///
/// [`crate::Device`] loads it once, writes a press before it answers the press
/// ([`crate::PressOutcome::Queued`]) and removes it once the broker's PUBACK arrives. Calls
/// are synchronous: one small flash write each.
pub trait PressStore {
    /// Why an operation failed; its text goes into logs.
    type Error: fmt::Display;

    /// Everything stored (records that do not decode are erased and listed).
    fn load(&mut self) -> Result<StoredQueue, Self::Error>;

    /// Stores the boot number of this start.
    fn save_boot(&mut self, boot: u32) -> Result<(), Self::Error>;

    /// Stores a press.
    fn append(&mut self, press: &QueuedPress) -> Result<(), Self::Error>;

    /// Removes a press (absent: nothing to do).
    fn remove(&mut self, id: PressId) -> Result<(), Self::Error>;

    /// Stores the dropped-press counter.
    fn save_dropped(&mut self, dropped: u32) -> Result<(), Self::Error>;

    /// Whether `error` means the store is full (the device then drops the oldest press and
    /// tries again).
    fn is_full(error: &Self::Error) -> bool {
        let _ = error;
        false
    }
}

impl<T: PressStore + ?Sized> PressStore for &mut T {
    type Error = T::Error;

    fn load(&mut self) -> Result<StoredQueue, Self::Error> {
        (**self).load()
    }

    fn save_boot(&mut self, boot: u32) -> Result<(), Self::Error> {
        (**self).save_boot(boot)
    }

    fn append(&mut self, press: &QueuedPress) -> Result<(), Self::Error> {
        (**self).append(press)
    }

    fn remove(&mut self, id: PressId) -> Result<(), Self::Error> {
        (**self).remove(id)
    }

    fn save_dropped(&mut self, dropped: u32) -> Result<(), Self::Error> {
        (**self).save_dropped(dropped)
    }

    fn is_full(error: &Self::Error) -> bool {
        T::is_full(error)
    }
}

/// Inserts `press` in id order (a sorted `Vec` rather than a map or a sort: the smallest code
/// on a chip, and the queue is at most a few hundred presses).
pub fn insert_in_order(presses: &mut Vec<QueuedPress>, press: QueuedPress) {
    match presses.binary_search_by_key(&press.id, |p| p.id) {
        Ok(at) => presses[at] = press,
        Err(at) => presses.insert(at, press),
    }
}

/// Presses kept in RAM only (simulations, tests, a board without a queue partition): they
/// survive a new [`crate::Device`] built on the same store, not a reboot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryPresses {
    /// The presses, oldest first.
    pub presses: Vec<QueuedPress>,
    /// The dropped-press counter.
    pub dropped: u32,
    /// The last boot number.
    pub boot: Option<u32>,
}

impl PressStore for MemoryPresses {
    type Error = Infallible;

    fn load(&mut self) -> Result<StoredQueue, Infallible> {
        Ok(StoredQueue {
            presses: self.presses.clone(),
            dropped: self.dropped,
            boot: self.boot,
            discarded: Vec::new(),
        })
    }

    fn save_boot(&mut self, boot: u32) -> Result<(), Infallible> {
        self.boot = Some(boot);
        Ok(())
    }

    fn append(&mut self, press: &QueuedPress) -> Result<(), Infallible> {
        insert_in_order(&mut self.presses, press.clone());
        Ok(())
    }

    fn remove(&mut self, id: PressId) -> Result<(), Infallible> {
        if let Ok(at) = self.presses.binary_search_by_key(&id, |p| p.id) {
            self.presses.remove(at);
        }
        Ok(())
    }

    fn save_dropped(&mut self, dropped: u32) -> Result<(), Infallible> {
        self.dropped = dropped;
        Ok(())
    }
}

#[cfg(feature = "nvs")]
mod nvs {
    use alloc::string::ToString;
    use alloc::vec::Vec;

    use acorn_nvs::{Nvs, ValueType};
    use embedded_storage::nor_flash::NorFlash;

    use super::{
        insert_in_order, BadRecord, PressId, PressStore, QueuedPress, StoredQueue, BOOT_KEY,
        DROPPED_KEY, PRESS_NAMESPACE,
    };

    /// Why the press queue could not be read from or written to NVS.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum NvsPressError {
        /// The NVS engine could not read the queue.
        #[error("the press queue cannot be read (NVS namespace `press_queue`): {0}; check the partition with `acorn nvs check`")]
        Read(acorn_nvs::Error),
        /// The NVS engine could not write (partition full, flash fault, opened read-only).
        #[error("cannot write the press queue (NVS namespace `press_queue`): {0}")]
        Write(acorn_nvs::Error),
    }

    impl<F: NorFlash> PressStore for Nvs<F> {
        type Error = NvsPressError;

        fn load(&mut self) -> Result<StoredQueue, NvsPressError> {
            let mut queue = StoredQueue::default();
            let Some(ns) = self.find_namespace(PRESS_NAMESPACE) else {
                return Ok(queue);
            };
            let keys: Vec<_> = self
                .entries()
                .into_iter()
                .filter(|e| e.namespace == PRESS_NAMESPACE)
                .map(|e| (e.key, e.info.value_type))
                .collect();
            let mut unreadable = Vec::new();
            for (key, value_type) in keys {
                match (key.as_str(), value_type) {
                    (BOOT_KEY, ValueType::U32) => {
                        queue.boot = self.get::<u32>(ns, BOOT_KEY).map_err(NvsPressError::Read)?;
                    }
                    (DROPPED_KEY, ValueType::U32) => {
                        queue.dropped = self
                            .get::<u32>(ns, DROPPED_KEY)
                            .map_err(NvsPressError::Read)?
                            .unwrap_or(0);
                    }
                    (_, ValueType::Str) if PressId::parse(&key).is_some() => {
                        // A value that fails its CRC is unreadable, not a reason to stop.
                        match self.get_string(ns, &key) {
                            Ok(Some(value)) => match QueuedPress::decode(&key, &value) {
                                Ok(press) => insert_in_order(&mut queue.presses, press),
                                Err(bad) => unreadable.push(bad),
                            },
                            Ok(None) => {}
                            Err(_) => unreadable.push(BadRecord {
                                key,
                                why: "the stored value fails its check",
                            }),
                        }
                    }
                    _ => unreadable.push(BadRecord {
                        key,
                        why: "not a press queue key of this type",
                    }),
                }
            }
            for bad in &unreadable {
                self.erase(ns, &bad.key).map_err(NvsPressError::Write)?;
            }
            queue.discarded = unreadable;
            Ok(queue)
        }

        fn save_boot(&mut self, boot: u32) -> Result<(), NvsPressError> {
            let ns = self
                .namespace(PRESS_NAMESPACE)
                .map_err(NvsPressError::Write)?;
            self.set::<u32>(ns, BOOT_KEY, boot)
                .map_err(NvsPressError::Write)
        }

        fn append(&mut self, press: &QueuedPress) -> Result<(), NvsPressError> {
            let ns = self
                .namespace(PRESS_NAMESPACE)
                .map_err(NvsPressError::Write)?;
            self.set_str(ns, &press.id.to_string(), &press.encode_value())
                .map_err(NvsPressError::Write)
        }

        fn remove(&mut self, id: PressId) -> Result<(), NvsPressError> {
            let Some(ns) = self.find_namespace(PRESS_NAMESPACE) else {
                return Ok(());
            };
            self.erase(ns, &id.to_string())
                .map(|_| ())
                .map_err(NvsPressError::Write)
        }

        fn save_dropped(&mut self, dropped: u32) -> Result<(), NvsPressError> {
            let ns = self
                .namespace(PRESS_NAMESPACE)
                .map_err(NvsPressError::Write)?;
            self.set::<u32>(ns, DROPPED_KEY, dropped)
                .map_err(NvsPressError::Write)
        }

        fn is_full(error: &NvsPressError) -> bool {
            matches!(
                error,
                NvsPressError::Write(acorn_nvs::Error::NotEnoughSpace { .. })
            )
        }
    }
}

#[cfg(feature = "nvs")]
pub use nvs::NvsPressError;

#[cfg(test)]
mod tests {
    use super::*;

    fn press(boot: u32, seq: u32, button: &str, battery: Option<u8>) -> QueuedPress {
        QueuedPress {
            id: PressId::new(boot, seq),
            unix_ms: 1_795_884_127_123,
            button: button.into(),
            battery,
        }
    }

    #[test]
    fn ids_are_15_hex_digits_in_press_order() {
        let a = PressId::new(0x0ab_cdef, 7);
        assert_eq!(a.to_string(), "0abcdef00000007");
        assert_eq!(PressId::parse("0abcdef00000007"), Some(a));
        assert_eq!((a.boot(), a.seq()), (0x0ab_cdef, 7));
        assert!(PressId::new(5, u32::MAX) < PressId::new(6, 0));
        for bad in [
            "",
            "0abcdef0000000",
            "0ABCDEF00000007",
            "0abcdef0000000g",
            "boot",
        ] {
            assert_eq!(PressId::parse(bad), None, "{bad}");
        }
        assert!(first_boot(u32::MAX) < 1 << 27);
        assert_eq!(next_boot(BOOT_MASK), 0);
    }

    #[test]
    fn records_round_trip_and_fit_one_entry() {
        for p in [
            press(1, 2, "rf-5a3c", Some(87)),
            press(1, 3, "b", None),
            press(1, 4, "rf-0123456789abcde", Some(0)),
        ] {
            let value = p.encode_value();
            assert_eq!(
                QueuedPress::decode(&p.id.to_string(), &value),
                Ok(p.clone())
            );
            if p.button.len() <= COMPACT_BUTTON_BYTES {
                assert!(
                    value.len() < 32,
                    "{value:?} needs one 32-byte entry with its NUL"
                );
            }
        }
        assert_eq!(
            press(1, 2, "rf-5a3c", Some(87)).encode_value(),
            "1a22309139357rf-5a3c"
        );
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        let key = "000000100000002";
        for (value, why) in [
            ("1a2243fa2d3", "shorter"),
            ("1a2243fa2dz57rf", "time"),
            ("1a2243fa2d365rf", "over 100"),
            ("1a2243fa2d357", "empty"),
        ] {
            let err = QueuedPress::decode(key, value).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        assert!(QueuedPress::decode("boot", "1a2243fa2d357rf").is_err());
    }
}
