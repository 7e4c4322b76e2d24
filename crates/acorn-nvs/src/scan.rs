//! Reading a partition's state from flash: pages, items, and everything that is damaged or left
//! over from an interrupted operation. The scan never writes; `mount` turns its findings into
//! repairs, `check` into a report.

use alloc::string::String;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;

use crate::error::{Error, Result, Undecodable};
use crate::format::{
    span_for, Bitmap, EntryHeader, EntryState, ItemType, PageHeader, PageState, BLOB_VERSION_0,
    BLOB_VERSION_1, CHUNK_ANY, CHUNK_MAX_SIZE, ENTRY_COUNT, MAX_BLOB_CHUNKS, NAMESPACE_DEFINITIONS,
    VERSION_1, VERSION_2,
};
use crate::partition::Partition;

/// What the engine knows of one page.
#[derive(Clone, Debug)]
pub(crate) struct PageInfo {
    pub state: PageState,
    pub seq: u32,
    pub bitmap: Bitmap,
    /// First entry after the last one in use.
    pub next_free: usize,
    /// Entries marked erased (garbage collection frees them).
    pub erased: usize,
    /// Whether the whole page is 0xFF (a free page that needs no erase).
    pub blank: bool,
}

impl PageInfo {
    pub fn free(blank: bool) -> PageInfo {
        PageInfo {
            state: PageState::Uninitialized,
            seq: 0,
            bitmap: Bitmap::EMPTY,
            next_free: 0,
            erased: 0,
            blank,
        }
    }

    /// Whether the page holds live data.
    pub fn in_use(&self) -> bool {
        matches!(
            self.state,
            PageState::Active | PageState::Full | PageState::Freeing
        )
    }
}

/// One live item: where its first entry is and what it says. Kept small (32 bytes): the
/// index holds one per stored value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item {
    page: u16,
    entry: u8,
    kind: ItemType,
    pub header: EntryHeader,
}

impl Item {
    /// An item at `page`/`entry` (a partition has at most 65,536 pages of 126 entries);
    /// `None` when the header's type byte is not a known item type, so that no item of an
    /// unknown type can enter the index (and none is ever taken for another type).
    pub fn new(page: usize, entry: usize, header: EntryHeader) -> Option<Item> {
        Some(Item {
            page: page as u16,
            entry: entry as u8,
            kind: header.item_type()?,
            header,
        })
    }

    /// Physical page index.
    pub fn page(&self) -> usize {
        usize::from(self.page)
    }

    /// Entry index within the page.
    pub fn entry(&self) -> usize {
        usize::from(self.entry)
    }

    /// Moves the item (garbage collection copied it).
    pub fn relocate(&mut self, page: usize, entry: usize) {
        self.page = page as u16;
        self.entry = entry as u8;
    }

    pub fn span(&self) -> usize {
        usize::from(self.header.span.max(1))
    }

    pub fn item_type(&self) -> ItemType {
        self.kind
    }

    /// Identity of one stored copy: namespace, type, key, chunk.
    pub fn identity(&self) -> (u8, u8, [u8; 16], u8) {
        (
            self.header.ns,
            self.header.type_byte,
            self.header.key,
            self.header.chunk,
        )
    }

    /// Identity for duplicate detection: a key holds one value whatever its type (every write
    /// erases the key's values of other types), so only a blob's data chunks keep their type
    /// and chunk index apart.
    pub fn value_identity(&self) -> (u8, u8, [u8; 16], u8) {
        if self.kind == ItemType::BlobData {
            self.identity()
        } else {
            (self.header.ns, 0, self.header.key, 0)
        }
    }
}

/// A finding of the scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Physical page index within the partition.
    pub page: usize,
    /// Entry index within the page, when the problem is about an entry.
    pub entry: Option<usize>,
    /// The key involved, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// Kinds of damage and leftovers a scan can find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The page header's CRC does not match.
    BadPageHeader,
    /// The page state word is not one of the known states.
    UnknownPageState,
    /// A page that says it is unused holds data.
    UninitializedNotBlank,
    /// A page was being garbage-collected when power was lost.
    InterruptedGarbageCollection,
    /// More than one page is active.
    ExtraActivePage,
    /// An entry marked written fails its header CRC.
    BadEntryCrc,
    /// An entry header is inconsistent (unknown type, bad span, bad size).
    BadEntryHeader,
    /// A value's data entries were not all written.
    IncompleteValue,
    /// A value's data fails its CRC.
    BadDataCrc,
    /// An entry outside the written range holds bytes (an interrupted write).
    UnmarkedData,
    /// An older copy of a value left by an interrupted overwrite.
    Duplicate,
    /// A blob chunk that no blob index refers to.
    OrphanBlobChunk,
    /// A blob index whose chunks are missing or do not add up.
    BlobIndexWithoutData,
    /// An item refers to a namespace index that is not defined.
    UnknownNamespace,
}

impl ProblemKind {
    /// A plain explanation.
    pub fn describe(self) -> &'static str {
        match self {
            ProblemKind::BadPageHeader => "page header CRC mismatch: the page is corrupt",
            ProblemKind::UnknownPageState => "page state word is not a known state: page is corrupt",
            ProblemKind::UninitializedNotBlank => {
                "page is marked unused but is not blank (an interrupted erase or foreign data)"
            }
            ProblemKind::InterruptedGarbageCollection => {
                "garbage collection of this page was interrupted (finished on the next writable open)"
            }
            ProblemKind::ExtraActivePage => "more than one active page (an interrupted page switch)",
            ProblemKind::BadEntryCrc => "entry header CRC mismatch",
            ProblemKind::BadEntryHeader => "entry header is inconsistent (type, span or size)",
            ProblemKind::IncompleteValue => "value's data entries were not all written",
            ProblemKind::BadDataCrc => "value's data does not match its CRC",
            ProblemKind::UnmarkedData => "bytes written past the last entry (an interrupted write)",
            ProblemKind::Duplicate => "older copy of a value left by an interrupted overwrite",
            ProblemKind::OrphanBlobChunk => "blob chunk that no blob index refers to",
            ProblemKind::BlobIndexWithoutData => "blob index whose chunks are missing or incomplete",
            ProblemKind::UnknownNamespace => "item in a namespace that is not defined",
        }
    }
}

impl core::fmt::Display for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "page {}", self.page)?;
        if let Some(entry) = self.entry {
            write!(f, " entry {entry}")?;
        }
        if let Some(key) = &self.key {
            write!(f, " key {key:?}")?;
        }
        write!(f, ": {}", self.kind.describe())
    }
}

/// Entries to mark erased: (page, first entry, count).
pub(crate) type EraseRange = (usize, usize, usize);

/// The result of a scan.
pub(crate) struct Scan {
    pub pages: Vec<PageInfo>,
    pub items: Vec<Item>,
    pub problems: Vec<Problem>,
    /// Entry ranges a writable mount marks erased.
    pub erase: Vec<EraseRange>,
    /// Pages a writable mount marks full (extra active pages).
    pub mark_full: Vec<usize>,
}

/// Reads every page and item of the partition without writing.
///
/// `verify_data` also checks the CRC of every variable-length value (for integrity reports).
pub(crate) fn scan<F: NorFlash>(part: &mut Partition<F>, verify_data: bool) -> Result<Scan> {
    let mut scan = Scan {
        pages: Vec::with_capacity(part.page_count()),
        items: Vec::new(),
        problems: Vec::new(),
        erase: Vec::new(),
        mark_full: Vec::new(),
    };
    let mut written = 0usize;
    let mut undecodable_sample: Option<(usize, usize)> = None;
    for page in 0..part.page_count() {
        let info = scan_page(part, page, &mut scan, &mut written, &mut undecodable_sample)?;
        scan.pages.push(info);
    }
    if written > 0 && scan.items.is_empty() {
        return Err(Error::Undecodable(classify_undecodable(
            part,
            undecodable_sample,
        )?));
    }
    find_extra_active_pages(&mut scan);
    find_duplicates(&mut scan);
    check_blobs(&mut scan);
    check_namespaces(&mut scan);
    if verify_data {
        verify_values(part, &mut scan)?;
    }
    Ok(scan)
}

fn problem(page: usize, entry: Option<usize>, key: Option<&str>, kind: ProblemKind) -> Problem {
    Problem {
        page,
        entry,
        key: key.map(String::from),
        kind,
    }
}

fn scan_page<F: NorFlash>(
    part: &mut Partition<F>,
    page: usize,
    scan: &mut Scan,
    written: &mut usize,
    sample: &mut Option<(usize, usize)>,
) -> Result<PageInfo> {
    let header = PageHeader::decode(&part.read_header(page)?);
    match header.state {
        PageState::Uninitialized => {
            let blank = part.page_blank(page)?;
            if !blank {
                scan.problems.push(problem(
                    page,
                    None,
                    None,
                    ProblemKind::UninitializedNotBlank,
                ));
            }
            let mut info = PageInfo::free(blank);
            if !blank {
                info.state = PageState::Corrupt;
            }
            return Ok(info);
        }
        PageState::Corrupt => {
            let kind = if header.state.word() == PageState::Corrupt.word() {
                ProblemKind::BadPageHeader
            } else {
                ProblemKind::UnknownPageState
            };
            scan.problems.push(problem(page, None, None, kind));
            return Ok(corrupt_page());
        }
        _ => {}
    }
    if !header.crc_ok {
        scan.problems
            .push(problem(page, None, None, ProblemKind::BadPageHeader));
        return Ok(corrupt_page());
    }
    if header.version != VERSION_2 && header.version != VERSION_1 {
        return Err(Error::UnsupportedVersion {
            page,
            version: header.version,
        });
    }
    if header.state == PageState::Freeing {
        scan.problems.push(problem(
            page,
            None,
            None,
            ProblemKind::InterruptedGarbageCollection,
        ));
    }
    let bitmap = part.read_bitmap(page)?;
    let mut info = PageInfo {
        state: header.state,
        seq: header.seq,
        bitmap,
        next_free: (0..ENTRY_COUNT)
            .rev()
            .find(|&i| bitmap.get(i) != EntryState::Empty)
            .map_or(0, |i| i + 1),
        erased: 0,
        blank: false,
    };
    // An interrupted write leaves bytes in entries the bitmap still calls empty.
    if header.state == PageState::Active {
        while let Some(entry) = part.entries_blank(page, info.next_free)? {
            scan.problems
                .push(problem(page, Some(entry), None, ProblemKind::UnmarkedData));
            scan.erase
                .push((page, info.next_free, entry + 1 - info.next_free));
            for i in info.next_free..=entry {
                info.bitmap.set(i, EntryState::Erased);
            }
            info.next_free = entry + 1;
        }
    }
    let mut entry = 0;
    while entry < info.next_free {
        match info.bitmap.get(entry) {
            EntryState::Written => {}
            EntryState::Empty => {
                entry += 1;
                continue;
            }
            EntryState::Erased | EntryState::Illegal => {
                info.erased += 1;
                entry += 1;
                continue;
            }
        }
        *written += 1;
        let raw = part.read_entry(page, entry)?;
        let (head, crc_ok) = EntryHeader::decode(&raw);
        if !crc_ok {
            sample.get_or_insert((page, entry));
            scan.problems
                .push(problem(page, Some(entry), None, ProblemKind::BadEntryCrc));
            erase_now(scan, &mut info, page, entry, 1);
            entry += 1;
            continue;
        }
        let span = usize::from(head.span);
        if !header_consistent(&head, entry) {
            scan.problems.push(problem(
                page,
                Some(entry),
                Some(head.key_str()),
                ProblemKind::BadEntryHeader,
            ));
            erase_now(scan, &mut info, page, entry, 1);
            entry += 1;
            continue;
        }
        if (entry + 1..entry + span).any(|i| info.bitmap.get(i) != EntryState::Written) {
            scan.problems.push(problem(
                page,
                Some(entry),
                Some(head.key_str()),
                ProblemKind::IncompleteValue,
            ));
            // Only the entries still marked written are ours to erase.
            let end = (entry + 1..entry + span)
                .find(|&i| info.bitmap.get(i) != EntryState::Written)
                .unwrap_or(entry + span);
            erase_now(scan, &mut info, page, entry, end - entry);
            entry = end;
            continue;
        }
        match Item::new(page, entry, head) {
            Some(item) => scan.items.push(item),
            // `header_consistent` refuses unknown types already; never index one.
            None => {
                scan.problems.push(problem(
                    page,
                    Some(entry),
                    Some(head.key_str()),
                    ProblemKind::BadEntryHeader,
                ));
                erase_now(scan, &mut info, page, entry, span);
            }
        }
        entry += span;
    }
    Ok(info)
}

fn corrupt_page() -> PageInfo {
    let mut info = PageInfo::free(false);
    info.state = PageState::Corrupt;
    info
}

/// Records entries to erase and updates the in-memory bitmap as the repair will.
fn erase_now(scan: &mut Scan, info: &mut PageInfo, page: usize, first: usize, count: usize) {
    for i in first..first + count {
        info.bitmap.set(i, EntryState::Erased);
    }
    info.erased += count;
    scan.erase.push((page, first, count));
}

/// Checks what ESP-IDF's `Item::checkHeaderConsistency` checks, and a little more.
fn header_consistent(head: &EntryHeader, entry: usize) -> bool {
    let Some(kind) = head.item_type() else {
        return false;
    };
    let span = usize::from(head.span);
    if span == 0 || entry + span > ENTRY_COUNT || head.ns == 0xFF {
        return false;
    }
    if head.key[15] != 0 || head.key[0] == 0 {
        return false;
    }
    if head.ns == NAMESPACE_DEFINITIONS && kind != ItemType::U8 {
        return false;
    }
    match kind {
        ItemType::Str | ItemType::BlobLegacy | ItemType::BlobData => {
            let size = head.var_size();
            size <= CHUNK_MAX_SIZE && span == span_for(size)
        }
        ItemType::BlobIndex => {
            let start = head.blob_chunk_start();
            span == 1
                && head.chunk == CHUNK_ANY
                && (start == BLOB_VERSION_0 || start == BLOB_VERSION_1)
                && usize::from(head.blob_chunk_count()) <= MAX_BLOB_CHUNKS
        }
        _ => span == 1,
    }
}

fn classify_undecodable<F: NorFlash>(
    part: &mut Partition<F>,
    sample: Option<(usize, usize)>,
) -> Result<Undecodable> {
    if !part.encrypted() {
        return Ok(Undecodable::NeedsKey);
    }
    if let Some((page, entry)) = sample {
        let raw = part.read_entry_raw(page, entry)?;
        if EntryHeader::decode(&raw).1 {
            return Ok(Undecodable::ImageNotEncrypted);
        }
    }
    Ok(Undecodable::WrongKey)
}

/// The active page with the highest sequence number: where writes go.
pub(crate) fn newest_active(pages: &[PageInfo]) -> Option<usize> {
    pages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.state == PageState::Active)
        .max_by_key(|(_, p)| p.seq)
        .map(|(i, _)| i)
}

/// The page an interrupted garbage collection was copying into: the active page newer than
/// the page being freed (nothing else is written there before the collection ends).
pub(crate) fn unfinished_gc_target(pages: &[PageInfo]) -> Option<usize> {
    let freeing = pages
        .iter()
        .filter(|p| p.state == PageState::Freeing)
        .map(|p| p.seq)
        .max()?;
    newest_active(pages).filter(|&t| pages[t].seq > freeing)
}

fn find_extra_active_pages(scan: &mut Scan) {
    let newest = newest_active(&scan.pages);
    for (i, page) in scan.pages.iter().enumerate() {
        if page.state == PageState::Active && Some(i) != newest {
            scan.mark_full.push(i);
            scan.problems
                .push(problem(i, None, None, ProblemKind::ExtraActivePage));
        }
    }
}

/// Order of writing: pages by sequence number, entries by index.
fn age(scan: &Scan, item: &Item) -> (u32, usize) {
    (scan.pages[item.page()].seq, item.entry())
}

fn remove_items(scan: &mut Scan, mut doomed: Vec<usize>, kind: ProblemKind) {
    doomed.sort_unstable();
    doomed.dedup();
    for &index in doomed.iter().rev() {
        let item = scan.items.remove(index);
        // A page being garbage-collected is finished, not patched.
        if scan.pages[item.page()].state != PageState::Freeing || kind != ProblemKind::Duplicate {
            scan.problems.push(problem(
                item.page(),
                Some(item.entry()),
                Some(item.header.key_str()),
                kind,
            ));
        }
        let page = &mut scan.pages[item.page()];
        for i in item.entry()..item.entry() + item.span() {
            page.bitmap.set(i, EntryState::Erased);
        }
        page.erased += item.span();
        scan.erase.push((item.page(), item.entry(), item.span()));
    }
}

/// An interrupted overwrite leaves the old copy beside the new one, of the same type or not:
/// the newest wins.
fn find_duplicates(scan: &mut Scan) {
    let mut order: Vec<usize> = (0..scan.items.len()).collect();
    order.sort_by(|&a, &b| {
        let (ia, ib) = (&scan.items[a], &scan.items[b]);
        ia.value_identity()
            .cmp(&ib.value_identity())
            .then(age(scan, ib).cmp(&age(scan, ia)))
    });
    let mut doomed = Vec::new();
    for pair in order.windows(2) {
        if scan.items[pair[0]].value_identity() == scan.items[pair[1]].value_identity() {
            doomed.push(pair[1]);
        }
    }
    remove_items(scan, doomed, ProblemKind::Duplicate);
}

/// Blob indexes need all their chunks; chunks need an index.
fn check_blobs(scan: &mut Scan) {
    let mut bad_indexes = Vec::new();
    for (i, index) in scan.items.iter().enumerate() {
        if index.item_type() != ItemType::BlobIndex {
            continue;
        }
        let head = index.header;
        let start = head.blob_chunk_start();
        let mut total = 0usize;
        let mut complete = true;
        for chunk in 0..head.blob_chunk_count() {
            let wanted = start.wrapping_add(chunk);
            match scan.items.iter().find(|c| {
                c.item_type() == ItemType::BlobData
                    && c.header.ns == head.ns
                    && c.header.key == head.key
                    && c.header.chunk == wanted
            }) {
                Some(c) => total += c.header.var_size(),
                None => complete = false,
            }
        }
        if !complete || total != head.blob_size() {
            bad_indexes.push(i);
        }
    }
    remove_items(scan, bad_indexes, ProblemKind::BlobIndexWithoutData);
    let orphans: Vec<usize> = scan
        .items
        .iter()
        .enumerate()
        .filter(|(_, c)| c.item_type() == ItemType::BlobData)
        .filter(|(_, c)| {
            !scan.items.iter().any(|index| {
                index.item_type() == ItemType::BlobIndex
                    && index.header.ns == c.header.ns
                    && index.header.key == c.header.key
                    && c.header.chunk >= index.header.blob_chunk_start()
                    && usize::from(c.header.chunk)
                        < usize::from(index.header.blob_chunk_start())
                            + usize::from(index.header.blob_chunk_count())
            })
        })
        .map(|(i, _)| i)
        .collect();
    remove_items(scan, orphans, ProblemKind::OrphanBlobChunk);
}

/// Items in an undefined namespace are reported, not erased: ESP-IDF keeps them too.
fn check_namespaces(scan: &mut Scan) {
    for item in &scan.items {
        let ns = item.header.ns;
        if ns == NAMESPACE_DEFINITIONS {
            continue;
        }
        let defined = scan
            .items
            .iter()
            .any(|d| d.header.ns == NAMESPACE_DEFINITIONS && d.header.data[0] == ns);
        if !defined {
            scan.problems.push(problem(
                item.page(),
                Some(item.entry()),
                Some(item.header.key_str()),
                ProblemKind::UnknownNamespace,
            ));
        }
    }
}

/// Checks the data CRC of every variable-length value (reporting only).
fn verify_values<F: NorFlash>(part: &mut Partition<F>, scan: &mut Scan) -> Result<()> {
    for item in &scan.items {
        if !item.item_type().is_variable_length() {
            continue;
        }
        let size = item.header.var_size();
        let mut crc = crate::crc::EspCrc32::new();
        for n in 0..item.span() - 1 {
            let raw = part.read_entry(item.page(), item.entry() + 1 + n)?;
            let take = (size - n * 32).min(32);
            crc.update(&raw[..take]);
        }
        if crc.finish() != item.header.var_crc() {
            scan.problems.push(problem(
                item.page(),
                Some(item.entry()),
                Some(item.header.key_str()),
                ProblemKind::BadDataCrc,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod item_tests {
    use super::*;

    #[test]
    fn an_unknown_item_type_never_becomes_an_item() {
        let mut header = EntryHeader::decode(&[0xFF; 32]).0;
        header.type_byte = 0x77;
        assert!(Item::new(0, 0, header).is_none());
        header.type_byte = 0x21;
        let item = Item::new(3, 4, header).expect("a string item");
        assert_eq!(item.item_type(), ItemType::Str);
        assert_eq!((item.page(), item.entry()), (3, 4));
        // The type is kept in the index record without making it larger.
        assert_eq!(core::mem::size_of::<Item>(), 32);
    }
}
