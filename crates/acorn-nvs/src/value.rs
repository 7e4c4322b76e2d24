//! Value types as callers see them, and the integer types the format stores.

use crate::format::ItemType;

/// The type of a stored value as callers see it (blob chunks and indexes are one blob).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// u8
    U8,
    /// i8
    I8,
    /// u16
    U16,
    /// i16
    I16,
    /// u32
    U32,
    /// i32
    I32,
    /// u64
    U64,
    /// i64
    I64,
    /// UTF-8 string (stored with a trailing NUL).
    Str,
    /// Binary blob (multi-page, or legacy single-page).
    Blob,
}

impl ValueType {
    pub(crate) fn of(kind: ItemType) -> Option<ValueType> {
        Some(match kind {
            ItemType::U8 => ValueType::U8,
            ItemType::I8 => ValueType::I8,
            ItemType::U16 => ValueType::U16,
            ItemType::I16 => ValueType::I16,
            ItemType::U32 => ValueType::U32,
            ItemType::I32 => ValueType::I32,
            ItemType::U64 => ValueType::U64,
            ItemType::I64 => ValueType::I64,
            ItemType::Str => ValueType::Str,
            ItemType::BlobLegacy | ItemType::BlobIndex => ValueType::Blob,
            ItemType::BlobData => return None,
        })
    }

    /// The name ESP-IDF's CSV format uses.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::Str => "string",
            ValueType::Blob => "blob",
        }
    }

    /// Parses a CSV type name (`u8` … `i64`, `string`, `blob`/`binary`).
    pub fn from_name(name: &str) -> Option<ValueType> {
        Some(match name {
            "u8" => ValueType::U8,
            "i8" => ValueType::I8,
            "u16" => ValueType::U16,
            "i16" => ValueType::I16,
            "u32" => ValueType::U32,
            "i32" => ValueType::I32,
            "u64" => ValueType::U64,
            "i64" => ValueType::I64,
            "string" => ValueType::Str,
            "blob" | "binary" => ValueType::Blob,
            _ => return None,
        })
    }

    /// Whether this is an integer type.
    pub fn is_integer(self) -> bool {
        !matches!(self, ValueType::Str | ValueType::Blob)
    }
}

/// What `len` tells about a stored value without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueInfo {
    /// Its type.
    pub value_type: ValueType,
    /// Its length in bytes: integer width, string length without the NUL, or blob size.
    pub len: usize,
}

/// Integer types NVS stores in a single entry.
pub trait Integer: Copy + sealed::Sealed {
    /// The entry type.
    const TYPE: ItemType;
    /// The 8-byte data field (little-endian, unused bytes 0xFF as ESP-IDF writes them).
    fn to_field(self) -> [u8; 8];
    /// Decodes the data field.
    fn from_field(field: &[u8; 8]) -> Self;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! integer {
    ($($t:ty => $kind:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Integer for $t {
            const TYPE: ItemType = ItemType::$kind;
            fn to_field(self) -> [u8; 8] {
                let mut field = [0xFFu8; 8];
                let bytes = self.to_le_bytes();
                field[..bytes.len()].copy_from_slice(&bytes);
                field
            }
            fn from_field(field: &[u8; 8]) -> Self {
                let mut bytes = [0u8; core::mem::size_of::<$t>()];
                bytes.copy_from_slice(&field[..core::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(bytes)
            }
        }
    )*};
}

integer!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, u64 => U64, i64 => I64);

/// An integer of any width, for tools that handle values generically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntValue {
    /// u8
    U8(u8),
    /// i8
    I8(i8),
    /// u16
    U16(u16),
    /// i16
    I16(i16),
    /// u32
    U32(u32),
    /// i32
    I32(i32),
    /// u64
    U64(u64),
    /// i64
    I64(i64),
}

impl IntValue {
    pub(crate) fn from_item(kind: ItemType, field: &[u8; 8]) -> Option<IntValue> {
        Some(match kind {
            ItemType::U8 => IntValue::U8(u8::from_field(field)),
            ItemType::I8 => IntValue::I8(i8::from_field(field)),
            ItemType::U16 => IntValue::U16(u16::from_field(field)),
            ItemType::I16 => IntValue::I16(i16::from_field(field)),
            ItemType::U32 => IntValue::U32(u32::from_field(field)),
            ItemType::I32 => IntValue::I32(i32::from_field(field)),
            ItemType::U64 => IntValue::U64(u64::from_field(field)),
            ItemType::I64 => IntValue::I64(i64::from_field(field)),
            _ => return None,
        })
    }

    pub(crate) fn item(self) -> (ItemType, [u8; 8]) {
        match self {
            IntValue::U8(v) => (u8::TYPE, v.to_field()),
            IntValue::I8(v) => (i8::TYPE, v.to_field()),
            IntValue::U16(v) => (u16::TYPE, v.to_field()),
            IntValue::I16(v) => (i16::TYPE, v.to_field()),
            IntValue::U32(v) => (u32::TYPE, v.to_field()),
            IntValue::I32(v) => (i32::TYPE, v.to_field()),
            IntValue::U64(v) => (u64::TYPE, v.to_field()),
            IntValue::I64(v) => (i64::TYPE, v.to_field()),
        }
    }

    /// Parses a decimal (or 0x-prefixed hexadecimal) integer of the given type, range-checked.
    pub fn parse(value_type: ValueType, text: &str) -> Option<IntValue> {
        let text = text.trim();
        let wide: i128 =
            if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                i128::from_str_radix(hex, 16).ok()?
            } else {
                text.parse().ok()?
            };
        Some(match value_type {
            ValueType::U8 => IntValue::U8(wide.try_into().ok()?),
            ValueType::I8 => IntValue::I8(wide.try_into().ok()?),
            ValueType::U16 => IntValue::U16(wide.try_into().ok()?),
            ValueType::I16 => IntValue::I16(wide.try_into().ok()?),
            ValueType::U32 => IntValue::U32(wide.try_into().ok()?),
            ValueType::I32 => IntValue::I32(wide.try_into().ok()?),
            ValueType::U64 => IntValue::U64(wide.try_into().ok()?),
            ValueType::I64 => IntValue::I64(wide.try_into().ok()?),
            ValueType::Str | ValueType::Blob => return None,
        })
    }
}

impl core::fmt::Display for IntValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IntValue::U8(v) => write!(f, "{v}"),
            IntValue::I8(v) => write!(f, "{v}"),
            IntValue::U16(v) => write!(f, "{v}"),
            IntValue::I16(v) => write!(f, "{v}"),
            IntValue::U32(v) => write!(f, "{v}"),
            IntValue::I32(v) => write!(f, "{v}"),
            IntValue::U64(v) => write!(f, "{v}"),
            IntValue::I64(v) => write!(f, "{v}"),
        }
    }
}
