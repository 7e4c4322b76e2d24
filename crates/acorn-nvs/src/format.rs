//! The on-flash layout of ESP-IDF NVS format v2: pages, their headers and entry bitmaps, and
//! the 32-byte entries. Pure encoding and decoding; no flash access here.

use crate::crc::esp_crc32;

/// Bytes in one NVS page (one flash sector).
pub const PAGE_SIZE: usize = 4096;
/// Bytes in one entry.
pub const ENTRY_SIZE: usize = 32;
/// Entries in one page.
pub const ENTRY_COUNT: usize = 126;
/// Offset of the first entry within a page (after the 32-byte header and 32-byte bitmap).
pub const FIRST_ENTRY_OFFSET: usize = 64;
/// Offset of the entry-state bitmap within a page.
pub const BITMAP_OFFSET: usize = 32;
/// Largest variable-length value (string with its NUL, legacy blob, one blob chunk).
pub const CHUNK_MAX_SIZE: usize = ENTRY_SIZE * (ENTRY_COUNT - 1);
/// Chunk index of entries that are not blob chunks.
pub const CHUNK_ANY: u8 = 0xFF;
/// First chunk index of blob version 0.
pub const BLOB_VERSION_0: u8 = 0x00;
/// First chunk index of blob version 1.
pub const BLOB_VERSION_1: u8 = 0x80;
/// Most chunks one blob version can have.
pub const MAX_BLOB_CHUNKS: usize = 127;
/// Page format version byte of format v2 (multi-page blobs).
pub const VERSION_2: u8 = 0xFE;
/// Page format version byte of format v1 (legacy blobs only).
pub const VERSION_1: u8 = 0xFF;
/// Longest key or namespace name, in bytes (the 16-byte field keeps a NUL).
pub const MAX_KEY_LEN: usize = 15;
/// Namespace index of the entries that define namespaces.
pub const NAMESPACE_DEFINITIONS: u8 = 0;

/// State of a page, stored in its first word. Transitions only clear bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Erased, never initialised (all 0xFF).
    Uninitialized,
    /// Being written to.
    Active,
    /// No more entries will be added.
    Full,
    /// Being emptied by garbage collection.
    Freeing,
    /// Marked corrupt, or found damaged (bad header CRC, unknown state).
    Corrupt,
}

impl PageState {
    /// The state word as stored on flash.
    pub const fn word(self) -> u32 {
        match self {
            PageState::Uninitialized => 0xFFFF_FFFF,
            PageState::Active => 0xFFFF_FFFE,
            PageState::Full => 0xFFFF_FFFC,
            PageState::Freeing => 0xFFFF_FFF8,
            PageState::Corrupt => 0xFFFF_FFF0,
        }
    }

    /// Decodes a state word; anything unknown is corrupt.
    pub const fn from_word(word: u32) -> PageState {
        match word {
            0xFFFF_FFFF => PageState::Uninitialized,
            0xFFFF_FFFE => PageState::Active,
            0xFFFF_FFFC => PageState::Full,
            0xFFFF_FFF8 => PageState::Freeing,
            _ => PageState::Corrupt,
        }
    }
}

/// A decoded page header (the first 32 bytes of a page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    /// Page state word.
    pub state: PageState,
    /// Sequence number: pages are ordered by it.
    pub seq: u32,
    /// Format version byte (0xFE for v2, 0xFF for v1).
    pub version: u8,
    /// Whether the stored CRC matches bytes 4..28.
    pub crc_ok: bool,
}

impl PageHeader {
    /// Decodes a header.
    pub fn decode(raw: &[u8; 32]) -> PageHeader {
        let state = PageState::from_word(u32_at(raw, 0));
        let seq = u32_at(raw, 4);
        let crc_ok = u32_at(raw, 28) == esp_crc32(&raw[4..28]);
        PageHeader {
            state,
            seq,
            version: raw[8],
            crc_ok,
        }
    }

    /// Encodes an active page header with the given sequence number.
    pub fn encode_active(seq: u32, version: u8) -> [u8; 32] {
        let mut raw = [0xFFu8; 32];
        raw[0..4].copy_from_slice(&PageState::Active.word().to_le_bytes());
        raw[4..8].copy_from_slice(&seq.to_le_bytes());
        raw[8] = version;
        let crc = esp_crc32(&raw[4..28]);
        raw[28..32].copy_from_slice(&crc.to_le_bytes());
        raw
    }
}

/// State of an entry, two bits in the page bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryState {
    /// Never written (0b11).
    Empty,
    /// Holds data (0b10).
    Written,
    /// Deleted (0b00).
    Erased,
    /// The unused pattern 0b01; treated like erased.
    Illegal,
}

impl EntryState {
    /// The two bits of this state.
    pub const fn bits(self) -> u8 {
        match self {
            EntryState::Empty => 0b11,
            EntryState::Written => 0b10,
            EntryState::Erased => 0b00,
            EntryState::Illegal => 0b01,
        }
    }

    /// Decodes two bits.
    pub const fn from_bits(bits: u8) -> EntryState {
        match bits & 0b11 {
            0b11 => EntryState::Empty,
            0b10 => EntryState::Written,
            0b00 => EntryState::Erased,
            _ => EntryState::Illegal,
        }
    }
}

/// The 32-byte entry-state bitmap of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bitmap(pub [u8; 32]);

impl Bitmap {
    /// A bitmap with every entry empty.
    pub const EMPTY: Bitmap = Bitmap([0xFF; 32]);

    /// State of entry `index`.
    pub fn get(&self, index: usize) -> EntryState {
        let bit = index * 2;
        EntryState::from_bits(self.0[bit / 8] >> (bit % 8))
    }

    /// Sets the state of entry `index` (only clearing bits, as flash does).
    pub fn set(&mut self, index: usize, state: EntryState) {
        let bit = index * 2;
        let byte = &mut self.0[bit / 8];
        let mask = 0b11 << (bit % 8);
        *byte = (*byte & !mask) | ((state.bits() << (bit % 8)) & mask);
    }

    /// Byte offset (within the bitmap) of the 4-byte word holding entry `index`.
    pub fn word_offset(index: usize) -> usize {
        (index * 2 / 32) * 4
    }
}

/// Type byte of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemType {
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 64-bit integer.
    I64,
    /// NUL-terminated string, one page at most.
    Str,
    /// Legacy (format v1) single-page blob.
    BlobLegacy,
    /// One chunk of a multi-page blob.
    BlobData,
    /// Index of a multi-page blob.
    BlobIndex,
}

impl ItemType {
    /// Decodes a type byte.
    pub const fn from_byte(byte: u8) -> Option<ItemType> {
        Some(match byte {
            0x01 => ItemType::U8,
            0x11 => ItemType::I8,
            0x02 => ItemType::U16,
            0x12 => ItemType::I16,
            0x04 => ItemType::U32,
            0x14 => ItemType::I32,
            0x08 => ItemType::U64,
            0x18 => ItemType::I64,
            0x21 => ItemType::Str,
            0x41 => ItemType::BlobLegacy,
            0x42 => ItemType::BlobData,
            0x48 => ItemType::BlobIndex,
            _ => return None,
        })
    }

    /// The type byte.
    pub const fn byte(self) -> u8 {
        match self {
            ItemType::U8 => 0x01,
            ItemType::I8 => 0x11,
            ItemType::U16 => 0x02,
            ItemType::I16 => 0x12,
            ItemType::U32 => 0x04,
            ItemType::I32 => 0x14,
            ItemType::U64 => 0x08,
            ItemType::I64 => 0x18,
            ItemType::Str => 0x21,
            ItemType::BlobLegacy => 0x41,
            ItemType::BlobData => 0x42,
            ItemType::BlobIndex => 0x48,
        }
    }

    /// Whether the value follows the header in further entries.
    pub const fn is_variable_length(self) -> bool {
        matches!(
            self,
            ItemType::Str | ItemType::BlobLegacy | ItemType::BlobData
        )
    }

    /// Byte width of an integer type, `None` for others.
    pub const fn int_width(self) -> Option<usize> {
        match self {
            ItemType::U8 | ItemType::I8 => Some(1),
            ItemType::U16 | ItemType::I16 => Some(2),
            ItemType::U32 | ItemType::I32 => Some(4),
            ItemType::U64 | ItemType::I64 => Some(8),
            _ => None,
        }
    }

    /// The name ESP-IDF's CSV format uses for this type.
    pub const fn name(self) -> &'static str {
        match self {
            ItemType::U8 => "u8",
            ItemType::I8 => "i8",
            ItemType::U16 => "u16",
            ItemType::I16 => "i16",
            ItemType::U32 => "u32",
            ItemType::I32 => "i32",
            ItemType::U64 => "u64",
            ItemType::I64 => "i64",
            ItemType::Str => "string",
            ItemType::BlobLegacy => "blob (v1)",
            ItemType::BlobData => "blob chunk",
            ItemType::BlobIndex => "blob",
        }
    }
}

/// A decoded entry header: the first entry of every item.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// Namespace index (0 for namespace definitions).
    pub ns: u8,
    /// Raw type byte.
    pub type_byte: u8,
    /// Entries this item spans, header included.
    pub span: u8,
    /// Chunk index (blob chunks) or 0xFF.
    pub chunk: u8,
    /// Key, NUL-padded.
    pub key: [u8; 16],
    /// Inline data: an integer, or size/CRC of variable-length data, or a blob index.
    pub data: [u8; 8],
}

impl core::fmt::Debug for EntryHeader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Data bytes are left out on purpose: they may hold part of a secret.
        f.debug_struct("EntryHeader")
            .field("ns", &self.ns)
            .field("type", &self.type_byte)
            .field("span", &self.span)
            .field("chunk", &self.chunk)
            .field("key", &self.key_str())
            .finish()
    }
}

impl EntryHeader {
    /// Decodes an entry; returns it with whether its header CRC matches.
    pub fn decode(raw: &[u8; 32]) -> (EntryHeader, bool) {
        let mut key = [0u8; 16];
        key.copy_from_slice(&raw[8..24]);
        let mut data = [0u8; 8];
        data.copy_from_slice(&raw[24..32]);
        let header = EntryHeader {
            ns: raw[0],
            type_byte: raw[1],
            span: raw[2],
            chunk: raw[3],
            key,
            data,
        };
        let crc_ok = u32_at(raw, 4) == header.crc();
        (header, crc_ok)
    }

    /// Encodes the entry with its CRC.
    pub fn encode(&self) -> [u8; 32] {
        let mut raw = [0u8; 32];
        raw[0] = self.ns;
        raw[1] = self.type_byte;
        raw[2] = self.span;
        raw[3] = self.chunk;
        raw[4..8].copy_from_slice(&self.crc().to_le_bytes());
        raw[8..24].copy_from_slice(&self.key);
        raw[24..32].copy_from_slice(&self.data);
        raw
    }

    /// CRC over bytes 0..4 and 8..32, as ESP-IDF computes it.
    pub fn crc(&self) -> u32 {
        let mut hasher = crate::crc::EspCrc32::new();
        hasher.update(&[self.ns, self.type_byte, self.span, self.chunk]);
        hasher.update(&self.key);
        hasher.update(&self.data);
        hasher.finish()
    }

    /// The item type, if the type byte is known.
    pub fn item_type(&self) -> Option<ItemType> {
        ItemType::from_byte(self.type_byte)
    }

    /// The key up to its first NUL, if it is valid UTF-8 (keys are ASCII).
    pub fn key_str(&self) -> &str {
        let end = self.key.iter().position(|&b| b == 0).unwrap_or(16);
        core::str::from_utf8(&self.key[..end]).unwrap_or("<non-ASCII key>")
    }

    /// Size of variable-length data (bytes 24..26).
    pub fn var_size(&self) -> usize {
        u16::from_le_bytes([self.data[0], self.data[1]]) as usize
    }

    /// CRC of variable-length data (bytes 28..32).
    pub fn var_crc(&self) -> u32 {
        u32::from_le_bytes([self.data[4], self.data[5], self.data[6], self.data[7]])
    }

    /// Total size of a blob (blob index entries).
    pub fn blob_size(&self) -> usize {
        u32::from_le_bytes([self.data[0], self.data[1], self.data[2], self.data[3]]) as usize
    }

    /// Number of chunks of a blob (blob index entries).
    pub fn blob_chunk_count(&self) -> u8 {
        self.data[4]
    }

    /// First chunk index of a blob (blob index entries): its version.
    pub fn blob_chunk_start(&self) -> u8 {
        self.data[5]
    }

    /// Data field of a variable-length item: size, reserved 0xFFFF, CRC of the data.
    pub fn var_data_field(size: usize, crc: u32) -> [u8; 8] {
        let mut data = [0xFFu8; 8];
        data[0..2].copy_from_slice(&(size as u16).to_le_bytes());
        data[4..8].copy_from_slice(&crc.to_le_bytes());
        data
    }

    /// Data field of a blob index: total size, chunk count, first chunk index.
    pub fn blob_index_field(size: usize, chunk_count: u8, chunk_start: u8) -> [u8; 8] {
        let mut data = [0xFFu8; 8];
        data[0..4].copy_from_slice(&(size as u32).to_le_bytes());
        data[4] = chunk_count;
        data[5] = chunk_start;
        data
    }
}

/// Number of entries an item with `data_len` bytes of variable-length data takes, header included.
pub const fn span_for(data_len: usize) -> usize {
    1 + data_len.div_ceil(ENTRY_SIZE)
}

/// Little-endian u32 at `at`.
pub fn u32_at(raw: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_round_trip() {
        let mut bitmap = Bitmap::EMPTY;
        bitmap.set(0, EntryState::Written);
        bitmap.set(125, EntryState::Erased);
        assert_eq!(bitmap.get(0), EntryState::Written);
        assert_eq!(bitmap.get(1), EntryState::Empty);
        assert_eq!(bitmap.get(125), EntryState::Erased);
        assert_eq!(bitmap.0[0], 0b1111_1110);
    }

    #[test]
    fn header_crc_round_trip() {
        let raw = PageHeader::encode_active(7, VERSION_2);
        let header = PageHeader::decode(&raw);
        assert!(header.crc_ok);
        assert_eq!(header.seq, 7);
        assert_eq!(header.state, PageState::Active);
    }
}
