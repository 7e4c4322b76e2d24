//! What the fuzz targets share: the byte layout of their inputs ([`Fields`]), and oracles that
//! decide a property without the code under test (a certificate and a key are a pair when
//! independent crypto libraries say so; host names and device ids by their written rules).
//!
//! Seed inputs are made by `fuzz/make_seeds.py`, which writes the same layout.

pub mod oracle;

/// Reads an input as a sequence of fields, each a 16-bit little-endian length and that many
/// bytes. A short or missing field reads as what is left (possibly empty): every input is some
/// sequence of fields, so the fuzzer never wastes an input on the layout.
pub struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Fields of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte (0 when the input is used up).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next 8 bytes as a little-endian `u64` (missing bytes read as 0).
    pub fn u64(&mut self) -> u64 {
        let mut out = [0u8; 8];
        for b in &mut out {
            *b = self.byte();
        }
        u64::from_le_bytes(out)
    }

    /// The next field.
    pub fn field(&mut self) -> &'a [u8] {
        let len = usize::from(u16::from_le_bytes([self.byte(), self.byte()]));
        let (field, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        field
    }

    /// The next field as text (invalid UTF-8 replaced, as a UI would show it).
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.field()).into_owned()
    }

    /// Whether anything is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
