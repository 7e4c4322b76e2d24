//! Framing: big-endian lengths, handshake messages, plaintext records, and a reader.

/// `n` as a 24-bit big-endian length.
pub fn u24(n: usize) -> [u8; 3] {
    [(n >> 16) as u8, (n >> 8) as u8, n as u8]
}

/// A handshake message: its type, a 24-bit length, `body`.
pub fn handshake_message(kind: u8, body: &[u8]) -> Vec<u8> {
    [&[kind][..], &u24(body.len()), body].concat()
}

/// A plaintext record (TLSPlaintext) of content type `kind` (at most 65535 bytes of `body`).
pub fn plain_record(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len().min(usize::from(u16::MAX));
    [&[kind, 3, 3, (len >> 8) as u8, len as u8][..], &body[..len]].concat()
}

/// `data` behind a 16-bit big-endian length (at most 65535 bytes).
pub fn vec16(data: &[u8]) -> Vec<u8> {
    let len = data.len().min(usize::from(u16::MAX));
    [&(len as u16).to_be_bytes()[..], &data[..len]].concat()
}

/// A reader of big-endian fields; `None` on a short input.
#[derive(Debug, Clone)]
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    /// A 16-bit big-endian number.
    pub fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A 24-bit big-endian number.
    pub fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    /// Bytes behind an 8-bit length.
    pub fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    /// Bytes behind a 16-bit length.
    pub fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
