//! Building a whole partition image the way ESP-IDF's `nvs_partition_gen.py` lays it out, so
//! that factory images made here equal the generator's byte for byte.
//!
//! The runtime engine ([`crate::Nvs`]) follows ESP-IDF's C++ `nvs::Storage` instead; the two
//! differ in small placement choices (the generator always fills pages in order, never leaves
//! room for a later page switch, and starts blobs in any page). Both are valid NVS.

use alloc::string::String;
use alloc::vec::Vec;

use crate::crc::esp_crc32;
use crate::crypto::{EntryCipher, NvsKeys};
use crate::format::{
    EntryHeader, ItemType, PageHeader, PageState, BITMAP_OFFSET, CHUNK_ANY, CHUNK_MAX_SIZE,
    ENTRY_COUNT, ENTRY_SIZE, FIRST_ENTRY_OFFSET, NAMESPACE_DEFINITIONS, PAGE_SIZE, VERSION_1,
    VERSION_2,
};
use crate::key::encode_key;
use crate::value::IntValue;

/// Errors while building an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The partition size is unusable.
    #[error("partition size {0:#x} is not a multiple of 4096 bytes, or smaller than 4096")]
    BadSize(usize),
    /// The data does not fit.
    #[error("the data needs more than the partition's {0:#x} bytes; give a bigger size")]
    TooSmall(usize),
    /// A key or namespace name is invalid.
    #[error("{0}")]
    Key(crate::Error),
    /// A value row came before any namespace row.
    #[error("key {0:?} comes before any namespace row; add a `namespace` row first")]
    NoNamespace(String),
    /// A value is too long for its type.
    #[error("value of key {key:?} is {len} bytes; the limit for this type is {max}")]
    TooLong {
        /// The key.
        key: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than 254 namespaces.
    #[error("more than 254 namespaces")]
    TooManyNamespaces,
}

/// A value to put in an image.
#[derive(Clone, Copy, Debug)]
pub enum ImageValue<'a> {
    /// An integer.
    Int(IntValue),
    /// A string (the NUL is added).
    Str(&'a [u8]),
    /// A blob.
    Blob(&'a [u8]),
}

/// Builds a partition image in memory, entry by entry, as `nvs_partition_gen.py` does.
pub struct ImageBuilder {
    version: u8,
    pages: Vec<Vec<u8>>,
    entry_num: usize,
    budget: usize,
    size: usize,
    read_only: bool,
    namespaces: Vec<(String, u8)>,
    current_ns: Option<u8>,
    cipher: Option<EntryCipher>,
}

enum Full {
    Page,
    Image(ImageError),
}

impl From<ImageError> for Full {
    fn from(err: ImageError) -> Full {
        Full::Image(err)
    }
}

impl ImageBuilder {
    /// A builder for a partition of `size` bytes (format v2), encrypted when `keys` are given.
    pub fn new(size: usize, keys: Option<&NvsKeys>) -> Result<Self, ImageError> {
        Self::with_version(size, keys, VERSION_2)
    }

    /// Like [`ImageBuilder::new`] with an explicit page format version (0xFE v2, 0xFF v1).
    pub fn with_version(
        size: usize,
        keys: Option<&NvsKeys>,
        version: u8,
    ) -> Result<Self, ImageError> {
        if size % PAGE_SIZE != 0 || size < PAGE_SIZE {
            return Err(ImageError::BadSize(size));
        }
        // The generator reserves one page; below three pages it makes a read-only image.
        let (budget, read_only) = match size - PAGE_SIZE {
            b if b < 2 * PAGE_SIZE => (size, true),
            b => (b, false),
        };
        let mut builder = ImageBuilder {
            version,
            pages: Vec::new(),
            entry_num: 0,
            budget,
            size,
            read_only,
            namespaces: Vec::new(),
            current_ns: None,
            cipher: keys.map(NvsKeys::cipher),
        };
        builder.new_page()?;
        Ok(builder)
    }

    fn new_page(&mut self) -> Result<(), ImageError> {
        if let Some(last) = self.pages.last_mut() {
            if last[0..4] == PageState::Active.word().to_le_bytes() {
                last[0..4].copy_from_slice(&PageState::Full.word().to_le_bytes());
            }
        }
        if self.budget == 0 {
            return Err(ImageError::TooSmall(self.size));
        }
        self.budget -= PAGE_SIZE;
        let mut page = alloc::vec![0xFFu8; PAGE_SIZE];
        let seq = self.pages.len() as u32;
        page[..32].copy_from_slice(&PageHeader::encode_active(seq, self.version));
        self.pages.push(page);
        self.entry_num = 0;
        Ok(())
    }

    /// Starts (or returns to) a namespace; later values go into it.
    pub fn namespace(&mut self, name: &str) -> Result<(), ImageError> {
        if let Some((_, index)) = self.namespaces.iter().find(|(n, _)| n == name) {
            self.current_ns = Some(*index);
            return Ok(());
        }
        let key = encode_key(name).map_err(ImageError::Key)?;
        let index = u8::try_from(self.namespaces.len() + 1)
            .ok()
            .filter(|&i| i < 255)
            .ok_or(ImageError::TooManyNamespaces)?;
        let (kind, field) = IntValue::U8(index).item();
        let head = header(NAMESPACE_DEFINITIONS, kind, 1, key, field);
        self.retry_on_new_page(|b| b.write_primitive(&head))?;
        self.namespaces.push((String::from(name), index));
        self.current_ns = Some(index);
        Ok(())
    }

    /// Adds a value to the current namespace.
    pub fn add(&mut self, key: &str, value: ImageValue<'_>) -> Result<(), ImageError> {
        let ns = self
            .current_ns
            .ok_or_else(|| ImageError::NoNamespace(String::from(key)))?;
        let raw_key = encode_key(key).map_err(ImageError::Key)?;
        match value {
            ImageValue::Int(v) => {
                let (kind, field) = v.item();
                let head = header(ns, kind, 1, raw_key, field);
                self.retry_on_new_page(|b| b.write_primitive(&head))
            }
            ImageValue::Str(s) => {
                let mut data = Vec::with_capacity(s.len() + 1);
                data.extend_from_slice(s);
                data.push(0);
                if data.len() > CHUNK_MAX_SIZE {
                    return Err(too_long(key, data.len(), CHUNK_MAX_SIZE));
                }
                self.retry_on_new_page(|b| b.write_single(ns, ItemType::Str, raw_key, &data))
            }
            ImageValue::Blob(data) if self.version == VERSION_1 => {
                let max = 1984;
                if data.len() > max {
                    return Err(too_long(key, data.len(), max));
                }
                self.retry_on_new_page(|b| b.write_single(ns, ItemType::BlobLegacy, raw_key, data))
            }
            ImageValue::Blob(data) => self.retry_on_new_page(|b| b.write_blob(ns, raw_key, data)),
        }
    }

    fn retry_on_new_page(
        &mut self,
        mut write: impl FnMut(&mut Self) -> Result<(), Full>,
    ) -> Result<(), ImageError> {
        match write(self) {
            Ok(()) => Ok(()),
            Err(Full::Image(e)) => Err(e),
            Err(Full::Page) => {
                self.new_page()?;
                match write(self) {
                    Ok(()) => Ok(()),
                    Err(Full::Image(e)) => Err(e),
                    Err(Full::Page) => Err(ImageError::TooSmall(self.size)),
                }
            }
        }
    }

    fn write_primitive(&mut self, head: &EntryHeader) -> Result<(), Full> {
        if self.entry_num >= ENTRY_COUNT {
            return Err(Full::Page);
        }
        self.put(&head.encode(), 1);
        Ok(())
    }

    fn write_single(
        &mut self,
        ns: u8,
        kind: ItemType,
        key: [u8; 16],
        data: &[u8],
    ) -> Result<(), Full> {
        let count = data.len().div_ceil(ENTRY_SIZE);
        // The generator wants one entry to spare after a string, so it fails on values that
        // need a whole page; those still go on an empty page here, as ESP-IDF stores them.
        let fits_generator = self.entry_num + count + 1 < ENTRY_COUNT;
        let fits_empty_page = self.entry_num == 0 && count < ENTRY_COUNT;
        if !(fits_generator || fits_empty_page) {
            return Err(Full::Page);
        }
        let field = EntryHeader::var_data_field(data.len(), esp_crc32(data));
        let head = header(ns, kind, (count + 1) as u8, key, field);
        self.put(&head.encode(), 1);
        self.put(data, count);
        Ok(())
    }

    fn write_blob(&mut self, ns: u8, key: [u8; 16], data: &[u8]) -> Result<(), Full> {
        if self.entry_num >= ENTRY_COUNT {
            return Err(Full::Page);
        }
        let mut offset = 0;
        let mut chunk_count = 0u8;
        loop {
            let tailroom = (ENTRY_COUNT - self.entry_num - 1) * ENTRY_SIZE;
            let chunk_size = tailroom.min(data.len() - offset);
            let chunk = &data[offset..offset + chunk_size];
            let count = chunk_size.div_ceil(ENTRY_SIZE);
            let field = EntryHeader::var_data_field(chunk_size, esp_crc32(chunk));
            let mut head = header(ns, ItemType::BlobData, (count + 1) as u8, key, field);
            head.chunk = chunk_count;
            self.put(&head.encode(), 1);
            self.put(chunk, count);
            chunk_count += 1;
            offset += chunk_size;
            if offset < data.len() || tailroom - chunk_size < ENTRY_SIZE {
                self.new_page()?;
            }
            if offset == data.len() {
                let field = EntryHeader::blob_index_field(data.len(), chunk_count, 0);
                let head = header(ns, ItemType::BlobIndex, 1, key, field);
                self.put(&head.encode(), 1);
                return Ok(());
            }
        }
    }

    /// Writes `count` entries of `data` (padded with 0xFF) at the next free entry and marks them.
    fn put(&mut self, data: &[u8], count: usize) {
        let page_index = self.pages.len() - 1;
        for n in 0..count {
            let mut entry = [0xFFu8; ENTRY_SIZE];
            let from = n * ENTRY_SIZE;
            let to = (from + ENTRY_SIZE).min(data.len());
            entry[..to - from].copy_from_slice(&data[from..to]);
            let index = self.entry_num;
            let offset = (page_index * PAGE_SIZE + FIRST_ENTRY_OFFSET + index * ENTRY_SIZE) as u32;
            if let Some(cipher) = &self.cipher {
                cipher.encrypt(&mut entry, offset);
            }
            let page = &mut self.pages[page_index];
            let at = FIRST_ENTRY_OFFSET + index * ENTRY_SIZE;
            page[at..at + ENTRY_SIZE].copy_from_slice(&entry);
            let bit = index * 2;
            page[BITMAP_OFFSET + bit / 8] &= !(1 << (bit % 8));
            self.entry_num += 1;
        }
    }

    /// The finished image: unused pages blank, the last one reserved for garbage collection.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size);
        for page in &self.pages {
            out.extend_from_slice(page);
        }
        if !self.read_only {
            out.resize(self.size, 0xFF);
        }
        out
    }
}

fn header(ns: u8, kind: ItemType, span: u8, key: [u8; 16], data: [u8; 8]) -> EntryHeader {
    EntryHeader {
        ns,
        type_byte: kind.byte(),
        span,
        chunk: CHUNK_ANY,
        key,
        data,
    }
}

fn too_long(key: &str, len: usize, max: usize) -> ImageError {
    ImageError::TooLong {
        key: String::from(key),
        len,
        max,
    }
}
