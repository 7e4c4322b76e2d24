//! Access to the partition's pages on a NOR flash: headers, bitmaps and (de)crypted entries.
//! Offsets here are partition-relative; the flash offset of the partition is added on access.

use embedded_storage::nor_flash::NorFlash;

use crate::crypto::EntryCipher;
use crate::error::{Error, Result};
use crate::format::{
    Bitmap, PageState, BITMAP_OFFSET, ENTRY_COUNT, ENTRY_SIZE, FIRST_ENTRY_OFFSET, PAGE_SIZE,
};

/// A partition on a flash, with the cipher of an encrypted partition.
pub(crate) struct Partition<F> {
    pub flash: F,
    base: u32,
    pages: usize,
    cipher: Option<EntryCipher>,
}

impl<F> Partition<F> {
    /// Number of pages.
    pub fn page_count(&self) -> usize {
        self.pages
    }

    /// Whether entries are encrypted.
    pub fn encrypted(&self) -> bool {
        self.cipher.is_some()
    }
}

impl<F: NorFlash> Partition<F> {
    /// Checks the geometry and wraps the flash.
    pub fn new(flash: F, base: u32, size: u32, cipher: Option<EntryCipher>) -> Result<Self> {
        let geometry = |reason| Error::Geometry {
            offset: base,
            size,
            reason,
        };
        if size == 0 || size as usize % PAGE_SIZE != 0 {
            return Err(geometry(
                "its size is not a non-zero multiple of 4096 bytes",
            ));
        }
        if size as usize / PAGE_SIZE > usize::from(u16::MAX) + 1 {
            return Err(geometry(
                "it has more than 65,536 pages (256 MiB), more than NVS addresses",
            ));
        }
        if base as usize % PAGE_SIZE != 0 {
            return Err(geometry("its offset is not a multiple of 4096 bytes"));
        }
        if u64::from(base) + u64::from(size) > flash.capacity() as u64 {
            return Err(geometry("it extends past the end of the flash"));
        }
        if F::WRITE_SIZE > 4 || 4 % F::WRITE_SIZE != 0 || F::READ_SIZE > 4 || 4 % F::READ_SIZE != 0
        {
            return Err(geometry(
                "the flash needs reads or writes wider than 4 bytes",
            ));
        }
        if F::ERASE_SIZE > PAGE_SIZE || PAGE_SIZE % F::ERASE_SIZE != 0 {
            return Err(geometry("the flash erase size does not divide 4096"));
        }
        Ok(Partition {
            flash,
            base,
            pages: size as usize / PAGE_SIZE,
            cipher,
        })
    }

    pub fn read_raw(&mut self, offset: u32, buf: &mut [u8]) -> Result<()> {
        self.flash
            .read(self.base + offset, buf)
            .map_err(|e| Error::flash("read", offset, e))
    }

    fn write_raw(&mut self, offset: u32, bytes: &[u8]) -> Result<()> {
        self.flash
            .write(self.base + offset, bytes)
            .map_err(|e| Error::flash("write", offset, e))
    }

    /// Partition offset of entry `entry` of page `page`.
    pub fn entry_offset(page: usize, entry: usize) -> u32 {
        (page * PAGE_SIZE + FIRST_ENTRY_OFFSET + entry * ENTRY_SIZE) as u32
    }

    pub fn read_header(&mut self, page: usize) -> Result<[u8; 32]> {
        let mut raw = [0u8; 32];
        self.read_raw((page * PAGE_SIZE) as u32, &mut raw)?;
        Ok(raw)
    }

    pub fn read_bitmap(&mut self, page: usize) -> Result<Bitmap> {
        let mut raw = [0u8; 32];
        self.read_raw((page * PAGE_SIZE + BITMAP_OFFSET) as u32, &mut raw)?;
        Ok(Bitmap(raw))
    }

    /// Reads an entry as stored (ciphertext on an encrypted partition).
    pub fn read_entry_raw(&mut self, page: usize, entry: usize) -> Result<[u8; ENTRY_SIZE]> {
        let mut raw = [0u8; ENTRY_SIZE];
        self.read_raw(Self::entry_offset(page, entry), &mut raw)?;
        Ok(raw)
    }

    /// Reads and decrypts an entry.
    pub fn read_entry(&mut self, page: usize, entry: usize) -> Result<[u8; ENTRY_SIZE]> {
        let mut raw = self.read_entry_raw(page, entry)?;
        self.decrypt(&mut raw, page, entry);
        Ok(raw)
    }

    /// Decrypts an entry read from `page`/`entry` in place (no-op on plain partitions).
    pub fn decrypt(&self, raw: &mut [u8; ENTRY_SIZE], page: usize, entry: usize) {
        if let Some(cipher) = &self.cipher {
            cipher.decrypt(raw, Self::entry_offset(page, entry));
        }
    }

    /// Reads whole entries straight into `buf` (a multiple of 32 bytes) and decrypts them there.
    pub fn read_entries_into(&mut self, page: usize, first: usize, buf: &mut [u8]) -> Result<()> {
        self.read_raw(Self::entry_offset(page, first), buf)?;
        if self.cipher.is_some() {
            for (i, chunk) in buf.chunks_exact_mut(ENTRY_SIZE).enumerate() {
                let mut entry = [0u8; ENTRY_SIZE];
                entry.copy_from_slice(chunk);
                self.decrypt(&mut entry, page, first + i);
                chunk.copy_from_slice(&entry);
            }
        }
        Ok(())
    }

    /// Encrypts (on encrypted partitions) and writes one entry.
    pub fn write_entry(
        &mut self,
        page: usize,
        entry: usize,
        plain: &[u8; ENTRY_SIZE],
    ) -> Result<()> {
        let mut raw = *plain;
        let offset = Self::entry_offset(page, entry);
        if let Some(cipher) = &self.cipher {
            cipher.encrypt(&mut raw, offset);
        }
        self.write_raw(offset, &raw)
    }

    pub fn write_header(&mut self, page: usize, raw: &[u8; 32]) -> Result<()> {
        self.write_raw((page * PAGE_SIZE) as u32, raw)
    }

    pub fn write_state(&mut self, page: usize, state: PageState) -> Result<()> {
        self.write_raw((page * PAGE_SIZE) as u32, &state.word().to_le_bytes())
    }

    /// Writes the 4-byte bitmap word that holds entry `entry`.
    pub fn write_bitmap_word(&mut self, page: usize, bitmap: &Bitmap, entry: usize) -> Result<()> {
        let at = Bitmap::word_offset(entry);
        let word = [
            bitmap.0[at],
            bitmap.0[at + 1],
            bitmap.0[at + 2],
            bitmap.0[at + 3],
        ];
        self.write_raw((page * PAGE_SIZE + BITMAP_OFFSET + at) as u32, &word)
    }

    pub fn erase_page(&mut self, page: usize) -> Result<()> {
        let from = self.base + (page * PAGE_SIZE) as u32;
        self.flash
            .erase(from, from + PAGE_SIZE as u32)
            .map_err(|e| Error::flash("erase", (page * PAGE_SIZE) as u32, e))
    }

    /// Whether entries `from..ENTRY_COUNT` of a page are blank (all 0xFF as stored).
    pub fn entries_blank(&mut self, page: usize, from: usize) -> Result<Option<usize>> {
        for entry in from..ENTRY_COUNT {
            let raw = self.read_entry_raw(page, entry)?;
            if raw.iter().any(|&b| b != 0xFF) {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Whether a whole page is blank.
    pub fn page_blank(&mut self, page: usize) -> Result<bool> {
        let mut chunk = [0u8; 256];
        for at in (0..PAGE_SIZE).step_by(chunk.len()) {
            self.read_raw((page * PAGE_SIZE + at) as u32, &mut chunk)?;
            if chunk.iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
