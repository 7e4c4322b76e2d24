//! A NOR flash backed by a partition image file, with real NOR rules: erase sets a 4096-byte
//! sector to 0xFF; a write may only clear bits.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::vec;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Errors of [`FileFlash`].
#[derive(Debug)]
pub enum FileFlashError {
    /// The access is outside the image.
    OutOfBounds,
    /// The access is not aligned.
    NotAligned,
    /// A write tried to set a 0 bit back to 1.
    BitSet {
        /// Offset of the first offending byte.
        offset: u32,
    },
    /// The file could not be read or written.
    Io(std::io::Error),
}

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FileFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FileFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// A partition image file used as flash. Every write goes to the file at once.
#[derive(Debug)]
pub struct FileFlash {
    file: File,
    size: usize,
}

impl FileFlash {
    /// Opens an existing image for reading and writing.
    pub fn open(path: &Path) -> std::io::Result<FileFlash> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let size = file.metadata()?.len() as usize;
        Ok(FileFlash { file, size })
    }

    /// Creates a blank (all 0xFF) image of `size` bytes; fails if the file exists.
    pub fn create(path: &Path, size: usize) -> std::io::Result<FileFlash> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all(&vec![0xFF; size])?;
        Ok(FileFlash { file, size })
    }

    fn check(&self, offset: u32, len: usize) -> Result<(), FileFlashError> {
        match (offset as usize).checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(FileFlashError::OutOfBounds),
        }
    }

    fn read_at(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), FileFlashError> {
        self.file
            .seek(SeekFrom::Start(u64::from(offset)))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(FileFlashError::Io)
    }

    fn write_at(&mut self, offset: u32, buf: &[u8]) -> Result<(), FileFlashError> {
        self.file
            .seek(SeekFrom::Start(u64::from(offset)))
            .and_then(|_| self.file.write_all(buf))
            .map_err(FileFlashError::Io)
    }
}

impl ErrorType for FileFlash {
    type Error = FileFlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len())?;
        self.read_at(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.size
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if from % 4096 != 0 || to % 4096 != 0 || to < from {
            return Err(FileFlashError::NotAligned);
        }
        self.check(from, (to - from) as usize)?;
        self.write_at(from, &vec![0xFF; (to - from) as usize])
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.check(offset, bytes.len())?;
        let mut old = vec![0u8; bytes.len()];
        self.read_at(offset, &mut old)?;
        if let Some(i) = (0..bytes.len()).find(|&i| bytes[i] & !old[i] != 0) {
            return Err(FileFlashError::BitSet {
                offset: offset + i as u32,
            });
        }
        self.write_at(offset, bytes)
    }
}
