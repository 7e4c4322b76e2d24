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
#[non_exhaustive]
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
    ///
    /// The image will hold a device's private key: on Unix it is created readable by its owner
    /// only (mode 0600), and exclusively without following a symbolic link (`O_EXCL`,
    /// `O_NOFOLLOW`), so a link planted at `path` is never written through.
    pub fn create(path: &Path, size: usize) -> std::io::Result<FileFlash> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options.open(path)?;
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_new_image_is_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.bin");
        FileFlash::create(&path, 0x3000).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_symlink_at_the_image_path_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().join("device.bin");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(FileFlash::create(&path, 0x3000).is_err());
        // A dangling link would otherwise make its target.
        let dangling = dir.path().join("dangling.bin");
        std::os::unix::fs::symlink(dir.path().join("made"), &dangling).unwrap();
        assert!(FileFlash::create(&dangling, 0x3000).is_err());
        assert!(!dir.path().join("made").exists());
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o644);
    }
}
