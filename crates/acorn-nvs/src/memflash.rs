//! An in-memory NOR flash for tests: real NOR rules, and power cuts after N operations, with
//! the cut operation torn partway.

use alloc::vec::Vec;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Errors of [`MemFlash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemFlashError {
    /// The access is outside the flash.
    OutOfBounds,
    /// The access is not aligned.
    NotAligned,
    /// A write tried to set a 0 bit back to 1 (only erase can do that).
    BitSet {
        /// Flash offset of the first offending byte.
        offset: u32,
    },
    /// Power was cut: this and every later operation fails.
    PowerCut,
}

impl NorFlashError for MemFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            MemFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            MemFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// Where to cut power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerCut {
    /// Index of the write or erase operation (0-based) that the cut interrupts.
    pub at_op: usize,
    /// Bytes of that operation that reach the flash before the cut (0 = none).
    pub torn_bytes: usize,
}

/// A NOR flash in memory.
#[derive(Clone, Debug)]
pub struct MemFlash {
    data: Vec<u8>,
    ops: usize,
    cut: Option<PowerCut>,
    dead: bool,
}

impl MemFlash {
    /// An erased flash of `size` bytes.
    pub fn new(size: usize) -> MemFlash {
        Self::from_bytes(alloc::vec![0xFF; size])
    }

    /// A flash holding `data`.
    pub fn from_bytes(data: Vec<u8>) -> MemFlash {
        MemFlash {
            data,
            ops: 0,
            cut: None,
            dead: false,
        }
    }

    /// The content.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Takes the content.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// Write and erase operations done so far.
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// Arms a power cut (the operation count restarts at 0).
    pub fn cut_power(&mut self, cut: PowerCut) {
        self.ops = 0;
        self.cut = Some(cut);
        self.dead = false;
    }

    /// Whether power has been cut.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Counts an operation; returns how many bytes it may write (`None` = all).
    fn begin(&mut self) -> Result<Option<usize>, MemFlashError> {
        if self.dead {
            return Err(MemFlashError::PowerCut);
        }
        let op = self.ops;
        self.ops += 1;
        match self.cut {
            Some(cut) if cut.at_op == op => {
                self.dead = true;
                Ok(Some(cut.torn_bytes))
            }
            _ => Ok(None),
        }
    }

    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, MemFlashError> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(MemFlashError::OutOfBounds)?;
        if end > self.data.len() {
            return Err(MemFlashError::OutOfBounds);
        }
        Ok(start..end)
    }
}

impl ErrorType for MemFlash {
    type Error = MemFlashError;
}

impl ReadNorFlash for MemFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if self.dead {
            return Err(MemFlashError::PowerCut);
        }
        let range = self.range(offset, bytes.len())?;
        bytes.copy_from_slice(&self.data[range]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl NorFlash for MemFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if from % 4096 != 0 || to % 4096 != 0 || to < from {
            return Err(MemFlashError::NotAligned);
        }
        let range = self.range(from, (to - from) as usize)?;
        let limit = self.begin()?;
        let len = limit.map_or(range.len(), |n| n.min(range.len()));
        self.data[range.start..range.start + len].fill(0xFF);
        if limit.is_some() {
            return Err(MemFlashError::PowerCut);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let range = self.range(offset, bytes.len())?;
        if let Some(i) = (0..bytes.len()).find(|&i| bytes[i] & !self.data[range.start + i] != 0) {
            return Err(MemFlashError::BitSet {
                offset: offset + i as u32,
            });
        }
        let limit = self.begin()?;
        let len = limit.map_or(bytes.len(), |n| n.min(bytes.len()));
        for (cell, byte) in self.data[range.start..range.start + len]
            .iter_mut()
            .zip(bytes)
        {
            *cell &= byte;
        }
        if limit.is_some() {
            return Err(MemFlashError::PowerCut);
        }
        Ok(())
    }
}

impl embedded_storage::nor_flash::MultiwriteNorFlash for MemFlash {}

/// ESP-IDF's CRC for the `esp-nvs` crate, so it can read a `MemFlash` as an independent reader.
#[cfg(feature = "esp-nvs")]
impl esp_nvs::platform::Crc for MemFlash {
    fn crc32(init: u32, data: &[u8]) -> u32 {
        esp_nvs::platform::software_crc32(init, data)
    }
}
