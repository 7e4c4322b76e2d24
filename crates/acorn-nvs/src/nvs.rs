//! The NVS store: mount with recovery, typed reads and writes, blobs, namespaces, garbage
//! collection, iteration and statistics — the behaviour of ESP-IDF's `nvs::Storage`.

use alloc::string::String;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;

use crate::crc::EspCrc32;
use crate::crypto::NvsKeys;
use crate::error::{Error, Result};
use crate::format::{
    span_for, Bitmap, EntryHeader, EntryState, ItemType, PageHeader, PageState, BLOB_VERSION_0,
    BLOB_VERSION_1, CHUNK_ANY, CHUNK_MAX_SIZE, ENTRY_COUNT, ENTRY_SIZE, MAX_BLOB_CHUNKS,
    NAMESPACE_DEFINITIONS, VERSION_2,
};
use crate::key::encode_key;
use crate::partition::Partition;
use crate::scan::{newest_active, scan, unfinished_gc_target, Item, PageInfo, Problem};
use crate::value::{IntValue, Integer, ValueInfo, ValueType};

/// A namespace of the partition, from [`Nvs::namespace`] or [`Nvs::find_namespace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Namespace(u8);

impl Namespace {
    /// The namespace's index on flash (1..=254).
    pub fn index(self) -> u8 {
        self.0
    }
}

/// How a partition is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reads only; nothing is ever written, not even repairs.
    ReadOnly,
    /// Reads and writes; an interrupted operation found at mount is repaired first.
    ReadWrite,
}

/// One stored value, as listed by [`Nvs::entries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// Namespace name.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// Type and length.
    pub info: ValueInfo,
    /// Physical page of the value's (index) entry.
    pub page: usize,
    /// Entry index within the page.
    pub entry: usize,
}

/// Usage figures, like ESP-IDF's `nvs_get_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries holding live data.
    pub used_entries: usize,
    /// Entries marked erased (reclaimed by garbage collection).
    pub erased_entries: usize,
    /// Entries never written, in active and free pages.
    pub free_entries: usize,
    /// Free entries minus the page kept free for garbage collection.
    pub available_entries: usize,
    /// All entries of all pages.
    pub total_entries: usize,
    /// Namespaces defined.
    pub namespaces: usize,
    /// Pages in the partition.
    pub pages: usize,
    /// Pages in use (active, full or being freed).
    pub pages_in_use: usize,
    /// Corrupt pages.
    pub pages_corrupt: usize,
}

/// An ESP-IDF NVS partition on a NOR flash.
pub struct Nvs<F> {
    part: Partition<F>,
    pages: Vec<PageInfo>,
    items: Vec<Item>,
    namespaces: Vec<(u8, String)>,
    current: Option<usize>,
    mode: Mode,
    found: Vec<Problem>,
}

impl<F: NorFlash> Nvs<F> {
    /// Opens a plain partition for reading and writing.
    pub fn open(flash: F, offset: u32, size: u32) -> Result<Self> {
        Self::open_with(flash, offset, size, None, Mode::ReadWrite)
    }

    /// Opens a partition, encrypted when `keys` are given.
    ///
    /// Nothing is written before the partition is known to decode: a wrong key, or an encrypted
    /// image opened without one, is an [`Error::Undecodable`] and the flash is left untouched.
    pub fn open_with(
        flash: F,
        offset: u32,
        size: u32,
        keys: Option<&NvsKeys>,
        mode: Mode,
    ) -> Result<Self> {
        let mut part = Partition::new(flash, offset, size, keys.map(NvsKeys::cipher))?;
        let mut found = scan(&mut part, false)?;
        if mode == Mode::ReadWrite {
            if let Some(target) = unfinished_gc_target(&found.pages) {
                // As ESP-IDF does: the page an interrupted garbage collection was copying into
                // is erased and the collection done again from the start (below). Finishing it
                // in place could fail for room: a copy cut partway wastes its entries there.
                part.erase_page(target)?;
                found = scan(&mut part, false)?;
            }
        }
        let (erase, mark_full) = (found.erase, found.mark_full);
        let mut nvs = Nvs::from_scan(part, found.pages, found.items, mode);
        nvs.found = found.problems;
        if mode == Mode::ReadWrite {
            nvs.repair(&erase, &mark_full)?;
        }
        nvs.current = newest_active(&nvs.pages);
        if mode == Mode::ReadWrite {
            nvs.finish_garbage_collection()?;
        }
        // The scan grew the index by doubling; keep only what the values need.
        nvs.items.shrink_to_fit();
        Ok(nvs)
    }

    /// Reads a partition and reports every problem, checking the CRC of all data. Never writes.
    pub fn check(
        flash: F,
        offset: u32,
        size: u32,
        keys: Option<&NvsKeys>,
    ) -> Result<(Vec<Problem>, Stats)> {
        let mut part = Partition::new(flash, offset, size, keys.map(NvsKeys::cipher))?;
        let found = scan(&mut part, true)?;
        let nvs = Nvs::from_scan(part, found.pages, found.items, Mode::ReadOnly);
        Ok((found.problems, nvs.stats()))
    }

    fn from_scan(part: Partition<F>, pages: Vec<PageInfo>, items: Vec<Item>, mode: Mode) -> Self {
        let mut nvs = Nvs {
            part,
            pages,
            items,
            namespaces: Vec::new(),
            current: None,
            mode,
            found: Vec::new(),
        };
        nvs.load_namespaces();
        nvs
    }

    /// What the mount found damaged or interrupted (and, when writable, repaired).
    pub fn mount_findings(&self) -> &[Problem] {
        &self.found
    }

    /// Gives the flash back.
    pub fn release(self) -> F {
        self.part.flash
    }

    /// Whether entries are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.part.encrypted()
    }

    fn writable(&self) -> Result<()> {
        match self.mode {
            Mode::ReadWrite => Ok(()),
            Mode::ReadOnly => Err(Error::ReadOnly),
        }
    }

    // ----- mount-time recovery -----

    fn repair(&mut self, erase: &[(usize, usize, usize)], mark_full: &[usize]) -> Result<()> {
        for &(page, first, count) in erase {
            // A page being garbage-collected is erased whole; patching it is wasted wear.
            if self.pages[page].state != PageState::Freeing {
                self.write_bitmap_range(page, first, count)?;
            }
        }
        for &page in mark_full {
            self.mark_full(page)?;
        }
        Ok(())
    }

    /// Finishes a garbage collection cut short by power loss: items still only on the page
    /// being freed are copied to the active page, then the page is erased.
    fn finish_garbage_collection(&mut self) -> Result<()> {
        let freeing: Vec<usize> = (0..self.pages.len())
            .filter(|&p| self.pages[p].state == PageState::Freeing)
            .collect();
        for page in freeing {
            let target = match self.current {
                Some(t) => t,
                None => match self.alloc_page(true)? {
                    Some(t) => t,
                    None => return Err(Error::NotEnoughSpace { needed: 1 }),
                },
            };
            self.current = Some(target);
            self.copy_items(page, target)?;
            self.part.erase_page(page)?;
            self.pages[page] = PageInfo::free(true);
        }
        Ok(())
    }

    fn load_namespaces(&mut self) {
        self.namespaces = self
            .items
            .iter()
            .filter(|i| i.header.ns == NAMESPACE_DEFINITIONS)
            .map(|i| (i.header.data[0], String::from(i.header.key_str())))
            .collect();
    }

    // ----- namespaces -----

    /// The namespace called `name`, created if it does not exist yet.
    pub fn namespace(&mut self, name: &str) -> Result<Namespace> {
        let key = encode_key(name)?;
        if let Some(ns) = self.find_namespace(name) {
            return Ok(ns);
        }
        self.writable()?;
        let index = (1..=254u8)
            .find(|i| !self.namespaces.iter().any(|(n, _)| n == i))
            .ok_or(Error::TooManyNamespaces)?;
        let head = EntryHeader {
            ns: NAMESPACE_DEFINITIONS,
            type_byte: ItemType::U8.byte(),
            span: 1,
            chunk: CHUNK_ANY,
            key,
            data: index.to_field(),
        };
        self.write_item(head, &[])?;
        self.namespaces.push((index, String::from(name)));
        Ok(Namespace(index))
    }

    /// The namespace called `name`, if it exists.
    pub fn find_namespace(&self, name: &str) -> Option<Namespace> {
        self.namespaces
            .iter()
            .find(|(_, n)| n == name)
            .map(|(i, _)| Namespace(*i))
    }

    /// Names of all namespaces.
    pub fn namespace_names(&self) -> impl Iterator<Item = &str> {
        self.namespaces.iter().map(|(_, n)| n.as_str())
    }

    fn namespace_name(&self, index: u8) -> &str {
        self.namespaces
            .iter()
            .find(|(i, _)| *i == index)
            .map_or("<undefined namespace>", |(_, n)| n.as_str())
    }

    // ----- lookups -----

    /// The value item for `key` (not blob chunks), preferring one of type `want`.
    fn find(&self, ns: Namespace, key: &[u8; 16], want: Option<ValueType>) -> Option<usize> {
        let mut fallback = None;
        for (i, item) in self.items.iter().enumerate() {
            if item.header.ns != ns.0 || &item.header.key != key {
                continue;
            }
            let Some(value_type) = ValueType::of(item.item_type()) else {
                continue;
            };
            if want.is_none() || want == Some(value_type) {
                return Some(i);
            }
            fallback.get_or_insert(i);
        }
        fallback
    }

    fn find_chunk(&self, ns: u8, key: &[u8; 16], chunk: u8) -> Option<usize> {
        self.items.iter().position(|c| {
            c.header.ns == ns
                && &c.header.key == key
                && c.header.chunk == chunk
                && c.item_type() == ItemType::BlobData
        })
    }

    /// Type and length of a value without reading it: integer width, string length without its
    /// NUL, or blob size. Buffers sized from this are exact.
    pub fn value_info(&self, ns: Namespace, key: &str) -> Result<Option<ValueInfo>> {
        let raw_key = encode_key(key)?;
        Ok(self
            .find(ns, &raw_key, None)
            .map(|i| self.info_of(&self.items[i])))
    }

    fn info_of(&self, item: &Item) -> ValueInfo {
        let kind = item.item_type();
        let value_type = ValueType::of(kind).unwrap_or(ValueType::Blob);
        let len = match kind {
            ItemType::Str => item.header.var_size().saturating_sub(1),
            ItemType::BlobLegacy => item.header.var_size(),
            ItemType::BlobIndex => item.header.blob_size(),
            other => other.int_width().unwrap_or(0),
        };
        ValueInfo { value_type, len }
    }

    fn find_typed(&self, ns: Namespace, key: &str, want: ValueType) -> Result<Option<Item>> {
        let raw_key = encode_key(key)?;
        let Some(i) = self.find(ns, &raw_key, Some(want)) else {
            return Ok(None);
        };
        let item = self.items[i];
        let found = ValueType::of(item.item_type()).unwrap_or(ValueType::Blob);
        if found != want {
            return Err(Error::TypeMismatch {
                key: key.into(),
                found: found.name(),
                wanted: want.name(),
            });
        }
        Ok(Some(item))
    }

    /// Reads an integer.
    pub fn get<T: Integer>(&mut self, ns: Namespace, key: &str) -> Result<Option<T>> {
        let want = ValueType::of(T::TYPE).unwrap_or(ValueType::U8);
        Ok(self
            .find_typed(ns, key, want)?
            .map(|item| T::from_field(&item.header.data)))
    }

    /// Reads an integer of whatever width is stored.
    pub fn get_int(&mut self, ns: Namespace, key: &str) -> Result<Option<IntValue>> {
        let raw_key = encode_key(key)?;
        Ok(self.find(ns, &raw_key, None).and_then(|i| {
            IntValue::from_item(self.items[i].item_type(), &self.items[i].header.data)
        }))
    }

    /// Reads a string into `buf` (without the NUL); returns its length.
    pub fn get_str_into(
        &mut self,
        ns: Namespace,
        key: &str,
        buf: &mut [u8],
    ) -> Result<Option<usize>> {
        let Some(item) = self.find_typed(ns, key, ValueType::Str)? else {
            return Ok(None);
        };
        let len = item.header.var_size().saturating_sub(1);
        let out = exact_prefix(buf, len, key)?;
        self.read_var(&item, out, true)?;
        Ok(Some(len))
    }

    /// Reads a string into a new `String`.
    pub fn get_string(&mut self, ns: Namespace, key: &str) -> Result<Option<String>> {
        let Some(item) = self.find_typed(ns, key, ValueType::Str)? else {
            return Ok(None);
        };
        let mut buf = alloc::vec![0u8; item.header.var_size().saturating_sub(1)];
        self.read_var(&item, &mut buf, true)?;
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| Error::CorruptValue {
                key: key.into(),
                page: item.page(),
                entry: item.entry(),
                reason: "the string is not valid UTF-8",
            })
    }

    /// Reads a blob (multi-page or legacy) into `buf`; returns its length. No heap allocation.
    pub fn get_blob_into(
        &mut self,
        ns: Namespace,
        key: &str,
        buf: &mut [u8],
    ) -> Result<Option<usize>> {
        let Some(item) = self.find_typed(ns, key, ValueType::Blob)? else {
            return Ok(None);
        };
        let len = self.info_of(&item).len;
        let out = exact_prefix(buf, len, key)?;
        if item.item_type() == ItemType::BlobLegacy {
            self.read_var(&item, out, false)?;
            return Ok(Some(len));
        }
        let start = item.header.blob_chunk_start();
        let mut filled = 0;
        for n in 0..item.header.blob_chunk_count() {
            let corrupt = |reason| Error::CorruptValue {
                key: key.into(),
                page: item.page(),
                entry: item.entry(),
                reason,
            };
            let i = self
                .find_chunk(ns.0, &item.header.key, start.wrapping_add(n))
                .ok_or_else(|| corrupt("a blob chunk is missing"))?;
            let chunk = self.items[i];
            let size = chunk.header.var_size();
            let dest = out
                .get_mut(filled..filled + size)
                .ok_or_else(|| corrupt("blob chunks add up to more than the blob's size"))?;
            self.read_var(&chunk, dest, false)?;
            filled += size;
        }
        if filled != len {
            return Err(Error::CorruptValue {
                key: key.into(),
                page: item.page(),
                entry: item.entry(),
                reason: "blob chunks add up to less than the blob's size",
            });
        }
        Ok(Some(len))
    }

    /// Reads a blob into a new `Vec`.
    pub fn get_blob(&mut self, ns: Namespace, key: &str) -> Result<Option<Vec<u8>>> {
        let Some(info) = self.value_info(ns, key)? else {
            return Ok(None);
        };
        let mut buf = alloc::vec![0u8; info.len];
        Ok(self.get_blob_into(ns, key, &mut buf)?.map(|_| buf))
    }

    /// Reads a string or blob value's bytes into `buf` (strings without the NUL).
    pub fn get_bytes_into(
        &mut self,
        ns: Namespace,
        key: &str,
        buf: &mut [u8],
    ) -> Result<Option<usize>> {
        match self.value_info(ns, key)? {
            Some(ValueInfo {
                value_type: ValueType::Str,
                ..
            }) => self.get_str_into(ns, key, buf),
            _ => self.get_blob_into(ns, key, buf),
        }
    }

    /// Reads variable-length data straight into `out` (exactly the value's length), checking its
    /// CRC. Whole entries land in `out` directly; only the last partial entry passes through a
    /// 32-byte stack buffer.
    fn read_var(&mut self, item: &Item, out: &mut [u8], has_nul: bool) -> Result<()> {
        let size = item.header.var_size();
        let corrupt = |reason| Error::CorruptValue {
            key: item.header.key_str().into(),
            page: item.page(),
            entry: item.entry(),
            reason,
        };
        if has_nul && size == 0 {
            return Err(corrupt("a string has no terminating NUL"));
        }
        let whole = out.len() / ENTRY_SIZE;
        let mut crc = EspCrc32::new();
        let (head, tail) = out.split_at_mut(whole * ENTRY_SIZE);
        self.part
            .read_entries_into(item.page(), item.entry() + 1, head)?;
        crc.update(head);
        let rest = size - whole * ENTRY_SIZE;
        if rest > 0 {
            let raw = self
                .part
                .read_entry(item.page(), item.entry() + 1 + whole)?;
            tail.copy_from_slice(&raw[..tail.len()]);
            crc.update(&raw[..rest]);
        }
        if crc.finish() != item.header.var_crc() {
            return Err(corrupt("its data does not match its CRC"));
        }
        Ok(())
    }

    // ----- writes -----

    /// Stores an integer, replacing any value of the key.
    pub fn set<T: Integer>(&mut self, ns: Namespace, key: &str, value: T) -> Result<()> {
        self.set_int_field(ns, key, T::TYPE, value.to_field())
    }

    /// Stores an integer of any width.
    pub fn set_int(&mut self, ns: Namespace, key: &str, value: IntValue) -> Result<()> {
        let (kind, field) = value.item();
        self.set_int_field(ns, key, kind, field)
    }

    fn set_int_field(
        &mut self,
        ns: Namespace,
        key: &str,
        kind: ItemType,
        field: [u8; 8],
    ) -> Result<()> {
        self.writable()?;
        let raw_key = encode_key(key)?;
        if let Some(i) = self.find(ns, &raw_key, ValueType::of(kind)) {
            let old = self.items[i].header;
            if old.type_byte == kind.byte() && old.data == field {
                return Ok(());
            }
        }
        let head = EntryHeader {
            ns: ns.0,
            type_byte: kind.byte(),
            span: 1,
            chunk: CHUNK_ANY,
            key: raw_key,
            data: field,
        };
        let new = self.write_item(head, &[])?;
        self.erase_key_except(ns, &raw_key, Some(new))?;
        Ok(())
    }

    /// Stores a string (at most 3999 bytes; NUL is not allowed inside).
    pub fn set_str(&mut self, ns: Namespace, key: &str, value: &str) -> Result<()> {
        self.writable()?;
        let raw_key = encode_key(key)?;
        if let Some(at) = value.bytes().position(|b| b == 0) {
            return Err(Error::NulInString {
                key: key.into(),
                at,
            });
        }
        if value.len() + 1 > CHUNK_MAX_SIZE {
            return Err(Error::ValueTooLong {
                key: key.into(),
                len: value.len(),
                max: CHUNK_MAX_SIZE - 1,
            });
        }
        let parts: [&[u8]; 2] = [value.as_bytes(), &[0]];
        if let Some(i) = self.find(ns, &raw_key, Some(ValueType::Str)) {
            let old = self.items[i];
            if old.item_type() == ItemType::Str && self.var_equals(&old, &parts)? {
                return Ok(());
            }
        }
        let new = self.write_var(ns.0, ItemType::Str, CHUNK_ANY, raw_key, &parts)?;
        self.erase_key_except(ns, &raw_key, Some(new))?;
        Ok(())
    }

    /// Stores a blob as a multi-page blob (format v2), replacing any value of the key. The old
    /// version stays readable until the new one is complete.
    pub fn set_blob(&mut self, ns: Namespace, key: &str, value: &[u8]) -> Result<()> {
        self.writable()?;
        let raw_key = encode_key(key)?;
        let old = self
            .find(ns, &raw_key, Some(ValueType::Blob))
            .map(|i| self.items[i]);
        let mut start = BLOB_VERSION_0;
        if let Some(old) = old.filter(|o| o.item_type() == ItemType::BlobIndex) {
            if self.blob_equals(&old, value)? {
                return Ok(());
            }
            if old.header.blob_chunk_start() == BLOB_VERSION_0 {
                start = BLOB_VERSION_1;
            }
        }
        let count = match self.write_chunks(ns.0, raw_key, start, value) {
            Ok(count) => count,
            Err(err) => {
                self.erase_chunks(ns.0, &raw_key, start)?;
                return Err(err);
            }
        };
        let head = EntryHeader {
            ns: ns.0,
            type_byte: ItemType::BlobIndex.byte(),
            span: 1,
            chunk: CHUNK_ANY,
            key: raw_key,
            data: EntryHeader::blob_index_field(value.len(), count, start),
        };
        let new = match self.write_item(head, &[]) {
            Ok(new) => new,
            Err(err) => {
                self.erase_chunks(ns.0, &raw_key, start)?;
                return Err(err);
            }
        };
        self.erase_key_except(ns, &raw_key, Some(new))?;
        Ok(())
    }

    /// Writes the chunks of a blob, filling each page's free room as ESP-IDF does.
    fn write_chunks(&mut self, ns: u8, key: [u8; 16], start: u8, value: &[u8]) -> Result<u8> {
        let mut offset = 0;
        let mut count = 0usize;
        let mut attempts = 0;
        loop {
            let page = self.current_page()?;
            let next_free = self.pages[page].next_free;
            let tailroom = if next_free < ENTRY_COUNT - 1 {
                (ENTRY_COUNT - next_free - 1) * ENTRY_SIZE
            } else {
                0
            };
            let remaining = value.len() - offset;
            // Like ESP-IDF: do not start a blob in a nearly full page.
            if count == 0
                && (tailroom < remaining || (tailroom == 0 && remaining == 0))
                && tailroom < CHUNK_MAX_SIZE / 10
            {
                attempts += 1;
                if attempts > self.pages.len() {
                    return Err(Error::NotEnoughSpace {
                        needed: span_for(remaining),
                    });
                }
                self.mark_full(page)?;
                continue;
            }
            if tailroom == 0 {
                return Err(Error::NotEnoughSpace {
                    needed: span_for(remaining),
                });
            }
            if count == MAX_BLOB_CHUNKS {
                return Err(Error::ValueTooLong {
                    key: String::from(
                        core::str::from_utf8(&key)
                            .unwrap_or("")
                            .trim_end_matches('\0'),
                    ),
                    len: value.len(),
                    max: offset,
                });
            }
            let size = remaining.min(tailroom);
            let chunk = start + count as u8;
            self.write_var(
                ns,
                ItemType::BlobData,
                chunk,
                key,
                &[&value[offset..offset + size]],
            )?;
            offset += size;
            count += 1;
            if offset == value.len() {
                return Ok(count as u8);
            }
            let page = self.current_page()?;
            self.mark_full(page)?;
        }
    }

    fn write_var(
        &mut self,
        ns: u8,
        kind: ItemType,
        chunk: u8,
        key: [u8; 16],
        parts: &[&[u8]],
    ) -> Result<Item> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        let mut crc = EspCrc32::new();
        for part in parts {
            crc.update(part);
        }
        let head = EntryHeader {
            ns,
            type_byte: kind.byte(),
            span: span_for(size) as u8,
            chunk,
            key,
            data: EntryHeader::var_data_field(size, crc.finish()),
        };
        self.write_item(head, parts)
    }

    /// Erases a key (any type; a blob's index first, then its chunks). Returns whether it existed.
    pub fn erase(&mut self, ns: Namespace, key: &str) -> Result<bool> {
        self.writable()?;
        let raw_key = encode_key(key)?;
        self.erase_key_except(ns, &raw_key, None)
    }

    /// Erases every value of the key except `keep`.
    fn erase_key_except(
        &mut self,
        ns: Namespace,
        key: &[u8; 16],
        keep: Option<Item>,
    ) -> Result<bool> {
        let is_kept = |item: &Item| {
            keep.is_some_and(|k| k.page() == item.page() && k.entry() == item.entry())
        };
        let mut any = false;
        while let Some(i) = self.items.iter().position(|item| {
            item.header.ns == ns.0
                && &item.header.key == key
                && item.item_type() != ItemType::BlobData
                && !is_kept(item)
        }) {
            let item = self.items[i];
            self.erase_item(i)?;
            if item.item_type() == ItemType::BlobIndex {
                self.erase_chunks(ns.0, key, item.header.blob_chunk_start())?;
            }
            any = true;
        }
        Ok(any)
    }

    /// Erases the chunks of one blob version.
    fn erase_chunks(&mut self, ns: u8, key: &[u8; 16], start: u8) -> Result<()> {
        for n in 0..MAX_BLOB_CHUNKS as u8 {
            if let Some(i) = self.find_chunk(ns, key, start + n) {
                self.erase_item(i)?;
            }
        }
        Ok(())
    }

    fn erase_item(&mut self, index: usize) -> Result<()> {
        let item = self.items.swap_remove(index);
        let span = item.span();
        for e in item.entry()..item.entry() + span {
            self.pages[item.page()].bitmap.set(e, EntryState::Erased);
        }
        self.pages[item.page()].erased += span;
        self.write_bitmap_range(item.page(), item.entry(), span)
    }

    /// Compares stored variable-length data with `parts`, entry by entry (no allocation).
    fn var_equals(&mut self, item: &Item, parts: &[&[u8]]) -> Result<bool> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if item.header.var_size() != size {
            return Ok(false);
        }
        let mut crc = EspCrc32::new();
        for part in parts {
            crc.update(part);
        }
        if crc.finish() != item.header.var_crc() {
            return Ok(false);
        }
        for n in 0..item.span() - 1 {
            let stored = self.part.read_entry(item.page(), item.entry() + 1 + n)?;
            let wanted = block(parts, n);
            let len = (size - n * ENTRY_SIZE).min(ENTRY_SIZE);
            if stored[..len] != wanted[..len] {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn blob_equals(&mut self, index: &Item, value: &[u8]) -> Result<bool> {
        if index.header.blob_size() != value.len() {
            return Ok(false);
        }
        let mut offset = 0;
        for n in 0..index.header.blob_chunk_count() {
            let wanted = index.header.blob_chunk_start().wrapping_add(n);
            let Some(i) = self.find_chunk(index.header.ns, &index.header.key, wanted) else {
                return Ok(false);
            };
            let chunk = self.items[i];
            let size = chunk.header.var_size();
            let Some(part) = value.get(offset..offset + size) else {
                return Ok(false);
            };
            if !self.var_equals(&chunk, &[part])? {
                return Ok(false);
            }
            offset += size;
        }
        Ok(offset == value.len())
    }

    // ----- pages and entries -----

    /// The active page, activating (or garbage-collecting for) one if needed.
    fn current_page(&mut self) -> Result<usize> {
        match self.current {
            Some(p) if self.pages[p].state == PageState::Active => Ok(p),
            _ => self.request_new_page(),
        }
    }

    /// Writes an item (header entry, then data entries) into the active page, moving to a new
    /// page when it does not fit.
    fn write_item(&mut self, head: EntryHeader, parts: &[&[u8]]) -> Result<Item> {
        let span = usize::from(head.span);
        for _ in 0..=self.pages.len() {
            let page = self.current_page()?;
            let first = self.pages[page].next_free;
            if first + span > ENTRY_COUNT {
                self.mark_full(page)?;
                continue;
            }
            // Claim the entries first: after a failed write they are never reused.
            self.pages[page].next_free = first + span;
            self.part.write_entry(page, first, &head.encode())?;
            self.pages[page].bitmap.set(first, EntryState::Written);
            self.write_bitmap_range(page, first, 1)?;
            if span > 1 {
                for n in 0..span - 1 {
                    self.part
                        .write_entry(page, first + 1 + n, &block(parts, n))?;
                }
                for e in first + 1..first + span {
                    self.pages[page].bitmap.set(e, EntryState::Written);
                }
                self.write_bitmap_range(page, first + 1, span - 1)?;
            }
            let item = Item::new(page, first, head).ok_or_else(|| Error::CorruptValue {
                key: head.key_str().into(),
                page,
                entry: first,
                reason: "an item of an unknown type was written (a bug: please report it)",
            })?;
            self.items.push(item);
            return Ok(item);
        }
        Err(Error::NotEnoughSpace { needed: span })
    }

    /// Writes the bitmap words covering entries `first..first + count`, lowest first.
    fn write_bitmap_range(&mut self, page: usize, first: usize, count: usize) -> Result<()> {
        let bitmap = self.pages[page].bitmap;
        let mut last_word = usize::MAX;
        for e in first..first + count {
            let word = Bitmap::word_offset(e);
            if word != last_word {
                self.part.write_bitmap_word(page, &bitmap, e)?;
                last_word = word;
            }
        }
        Ok(())
    }

    fn mark_full(&mut self, page: usize) -> Result<()> {
        self.part.write_state(page, PageState::Full)?;
        self.pages[page].state = PageState::Full;
        if self.current == Some(page) {
            self.current = None;
        }
        Ok(())
    }

    /// Takes a free page (keeping one in reserve unless `use_reserve`) and makes it active.
    fn alloc_page(&mut self, use_reserve: bool) -> Result<Option<usize>> {
        let free: Vec<usize> = (0..self.pages.len())
            .filter(|&p| !self.pages[p].in_use())
            .collect();
        let keep = if use_reserve { 0 } else { 1 };
        if free.len() <= keep {
            return Ok(None);
        }
        let page = free
            .iter()
            .copied()
            .find(|&p| self.pages[p].blank)
            .unwrap_or(free[0]);
        if !self.pages[page].blank {
            self.part.erase_page(page)?;
        }
        let seq = self
            .pages
            .iter()
            .filter(|p| p.in_use())
            .map(|p| p.seq.wrapping_add(1))
            .max()
            .unwrap_or(0);
        self.part
            .write_header(page, &PageHeader::encode_active(seq, VERSION_2))?;
        self.pages[page] = PageInfo {
            state: PageState::Active,
            seq,
            bitmap: Bitmap::EMPTY,
            next_free: 0,
            erased: 0,
            blank: false,
        };
        Ok(Some(page))
    }

    /// Makes a new active page: a free one while more than one is free, else garbage-collects
    /// the full page with the most erased entries into the reserved free page.
    fn request_new_page(&mut self) -> Result<usize> {
        if let Some(page) = self
            .current
            .filter(|&p| self.pages[p].state == PageState::Active)
        {
            self.mark_full(page)?;
        }
        if let Some(page) = self.alloc_page(false)? {
            self.current = Some(page);
            return Ok(page);
        }
        let victim = (0..self.pages.len())
            .filter(|&p| self.pages[p].state == PageState::Full && self.pages[p].erased > 0)
            .max_by(|&a, &b| {
                let (pa, pb) = (&self.pages[a], &self.pages[b]);
                pa.erased.cmp(&pb.erased).then(pb.seq.cmp(&pa.seq))
            })
            .ok_or(Error::NotEnoughSpace { needed: 1 })?;
        // Without the reserved free page there is nowhere to copy to: stop before touching flash.
        if !self.pages.iter().any(|p| !p.in_use()) {
            return Err(Error::NotEnoughSpace { needed: 1 });
        }
        self.part.write_state(victim, PageState::Freeing)?;
        self.pages[victim].state = PageState::Freeing;
        let target = self
            .alloc_page(true)?
            .ok_or(Error::NotEnoughSpace { needed: 1 })?;
        self.copy_items(victim, target)?;
        self.part.erase_page(victim)?;
        self.pages[victim] = PageInfo::free(true);
        self.current = Some(target);
        Ok(target)
    }

    /// Copies every live item of page `from` to the end of page `to` (re-encrypting entries
    /// for their new offsets), skipping items `to` already holds.
    fn copy_items(&mut self, from: usize, to: usize) -> Result<()> {
        let mut moving: Vec<usize> = (0..self.items.len())
            .filter(|&i| self.items[i].page() == from)
            .collect();
        moving.sort_by_key(|&i| self.items[i].entry());
        let mut stale = Vec::new();
        for i in moving {
            let item = self.items[i];
            let already = self
                .items
                .iter()
                .any(|o| o.page() == to && o.identity() == item.identity());
            if already {
                stale.push(i);
                continue;
            }
            let span = item.span();
            let first = self.pages[to].next_free;
            if first + span > ENTRY_COUNT {
                return Err(Error::NotEnoughSpace { needed: span });
            }
            self.pages[to].next_free = first + span;
            for n in 0..span {
                let raw = self.part.read_entry(from, item.entry() + n)?;
                self.part.write_entry(to, first + n, &raw)?;
            }
            for e in first..first + span {
                self.pages[to].bitmap.set(e, EntryState::Written);
            }
            self.write_bitmap_range(to, first, span)?;
            self.items[i].relocate(to, first);
        }
        stale.sort_unstable();
        for i in stale.into_iter().rev() {
            self.items.remove(i);
        }
        Ok(())
    }

    // ----- listing -----

    /// Every stored value (blobs once, namespace definitions left out), in flash order.
    pub fn entries(&self) -> Vec<EntryInfo> {
        let mut order: Vec<&Item> = self
            .items
            .iter()
            .filter(|i| i.header.ns != NAMESPACE_DEFINITIONS && i.item_type() != ItemType::BlobData)
            .collect();
        order.sort_by_key(|i| (self.pages[i.page()].seq, i.entry()));
        order
            .into_iter()
            .map(|i| EntryInfo {
                namespace: String::from(self.namespace_name(i.header.ns)),
                key: String::from(i.header.key_str()),
                info: self.info_of(i),
                page: i.page(),
                entry: i.entry(),
            })
            .collect()
    }

    /// Usage figures.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            pages: self.pages.len(),
            total_entries: self.pages.len() * ENTRY_COUNT,
            namespaces: self.namespaces.len(),
            ..Stats::default()
        };
        stats.used_entries = self.items.iter().map(Item::span).sum();
        for page in &self.pages {
            match page.state {
                PageState::Corrupt => stats.pages_corrupt += 1,
                PageState::Uninitialized => stats.free_entries += ENTRY_COUNT,
                _ => {
                    stats.pages_in_use += 1;
                    stats.erased_entries += page.erased;
                    if page.state == PageState::Active {
                        stats.free_entries += ENTRY_COUNT - page.next_free;
                    }
                }
            }
        }
        stats.available_entries = stats.free_entries.saturating_sub(ENTRY_COUNT);
        stats
    }
}

/// The first `len` bytes of the caller's buffer, or the error that says how big it must be.
fn exact_prefix<'b>(buf: &'b mut [u8], len: usize, key: &str) -> Result<&'b mut [u8]> {
    let have = buf.len();
    buf.get_mut(..len).ok_or_else(|| Error::BufferTooSmall {
        key: key.into(),
        need: len,
        have,
    })
}

/// The `n`th 32-byte block of the concatenation of `parts`, padded with 0xFF.
fn block(parts: &[&[u8]], n: usize) -> [u8; ENTRY_SIZE] {
    let mut out = [0xFFu8; ENTRY_SIZE];
    let start = n * ENTRY_SIZE;
    let mut offset = 0;
    for part in parts {
        let end = offset + part.len();
        if end > start && offset < start + ENTRY_SIZE {
            let from = start.max(offset);
            let to = end.min(start + ENTRY_SIZE);
            out[from - start..to - start].copy_from_slice(&part[from - offset..to - offset]);
        }
        offset = end;
    }
    out
}

impl<F> core::fmt::Debug for Nvs<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Nvs")
            .field("pages", &self.pages.len())
            .field("items", &self.items.len())
            .field("encrypted", &self.part.encrypted())
            .finish_non_exhaustive()
    }
}
