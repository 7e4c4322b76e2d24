//! [`MemoryKv`]: an in-memory [`CertKv`] for tests, with a simulated power cut.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::CertKv;

/// A stored value, typed as NVS types it. Debug shows lengths only (values may be keys).
#[derive(Clone, PartialEq, Eq)]
pub enum MemoryValue {
    /// A blob.
    Blob(Vec<u8>),
    /// A string, stored with its trailing NUL as NVS does.
    Str(Vec<u8>),
    /// A `u8`.
    U8(u8),
}

impl fmt::Debug for MemoryValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryValue::Blob(v) => write!(f, "Blob({} bytes)", v.len()),
            MemoryValue::Str(v) => write!(f, "Str({} bytes)", v.len()),
            MemoryValue::U8(v) => write!(f, "U8({v})"),
        }
    }
}

/// Errors of [`MemoryKv`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryKvError {
    /// The simulated power was cut: this operation and all later ones fail.
    #[error("power cut (simulated) before operation {0}")]
    PowerCut(usize),
    /// The key holds a value of another type.
    #[error("key `{0}` holds a value of another type")]
    WrongType(String),
    /// The read buffer is smaller than the stored value.
    #[error("buffer of {have} bytes is too small for key `{key}` ({need} bytes)")]
    BufferTooSmall {
        /// The key read.
        key: String,
        /// Bytes given.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// An in-memory key-value store (one namespace). Writes are atomic per key, like NVS.
///
/// [`MemoryKv::cut_power_after`] makes every write (`write`, `write_u8`, `erase`) after the
/// first `n` fail, simulating a power cut; [`MemoryKv::values`] is what survives.
///
/// Values are held in plain memory (not zeroized): use it for tests, not for real keys.
#[derive(Clone, Debug, Default)]
pub struct MemoryKv {
    values: BTreeMap<String, MemoryValue>,
    writes: usize,
    cut_after: Option<usize>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding these values (e.g. what survived a power cut).
    pub fn from_values(values: BTreeMap<String, MemoryValue>) -> Self {
        Self {
            values,
            ..Self::default()
        }
    }

    /// Lets `n` more writes succeed, then fails all later ones.
    pub fn cut_power_after(&mut self, n: usize) {
        self.cut_after = Some(self.writes + n);
    }

    /// Number of write operations performed so far.
    pub fn writes(&self) -> usize {
        self.writes
    }

    /// The stored values.
    pub fn values(&self) -> &BTreeMap<String, MemoryValue> {
        &self.values
    }

    /// Stores a value as an NVS string would be (bytes plus a trailing NUL).
    pub fn insert_string(&mut self, key: &str, value: &str) {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.values.insert(key.to_string(), MemoryValue::Str(bytes));
    }

    /// Stores any value directly (no power-cut accounting).
    pub fn insert(&mut self, key: &str, value: MemoryValue) {
        self.values.insert(key.to_string(), value);
    }

    fn begin_write(&mut self) -> Result<(), MemoryKvError> {
        if self.cut_after.is_some_and(|limit| self.writes >= limit) {
            return Err(MemoryKvError::PowerCut(self.writes));
        }
        self.writes += 1;
        Ok(())
    }
}

impl CertKv for MemoryKv {
    type Error = MemoryKvError;

    fn stored_len(&mut self, key: &str) -> Result<Option<usize>, Self::Error> {
        match self.values.get(key) {
            None => Ok(None),
            Some(MemoryValue::Blob(v) | MemoryValue::Str(v)) => Ok(Some(v.len())),
            Some(MemoryValue::U8(_)) => Err(MemoryKvError::WrongType(key.to_string())),
        }
    }

    fn read(&mut self, key: &str, buf: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        let (bytes, is_str) = match self.values.get(key) {
            None => return Ok(None),
            Some(MemoryValue::Blob(v)) => (v, false),
            Some(MemoryValue::Str(v)) => (v, true),
            Some(MemoryValue::U8(_)) => return Err(MemoryKvError::WrongType(key.to_string())),
        };
        let have = buf.len();
        let dest = buf
            .get_mut(..bytes.len())
            .ok_or_else(|| MemoryKvError::BufferTooSmall {
                key: key.to_string(),
                have,
                need: bytes.len(),
            })?;
        dest.copy_from_slice(bytes);
        let len = if is_str && bytes.last() == Some(&0) {
            bytes.len() - 1
        } else {
            bytes.len()
        };
        Ok(Some(len))
    }

    fn write(&mut self, key: &str, value: &[u8]) -> Result<(), Self::Error> {
        self.begin_write()?;
        self.values
            .insert(key.to_string(), MemoryValue::Blob(value.to_vec()));
        Ok(())
    }

    fn read_u8(&mut self, key: &str) -> Result<Option<u8>, Self::Error> {
        match self.values.get(key) {
            None => Ok(None),
            Some(MemoryValue::U8(v)) => Ok(Some(*v)),
            Some(_) => Err(MemoryKvError::WrongType(key.to_string())),
        }
    }

    fn write_u8(&mut self, key: &str, value: u8) -> Result<(), Self::Error> {
        self.begin_write()?;
        self.values.insert(key.to_string(), MemoryValue::U8(value));
        Ok(())
    }

    fn erase(&mut self, key: &str) -> Result<(), Self::Error> {
        self.begin_write()?;
        self.values.remove(key);
        Ok(())
    }
}
