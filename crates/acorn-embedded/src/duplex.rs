//! [`Duplex`]: one byte stream made of a read half and a write half, whose shared reference is
//! `Copy`, so that a TLS connection can be split into a reader and a writer that run at the
//! same time (embedded-tls's `split` needs a `Clone` socket).
//!
//! The TLS reader only ever reads and the TLS writer only ever writes, so the two halves are
//! never borrowed twice; if they were, the call fails with [`embedded_io::ErrorKind::Other`]
//! instead of panicking.

use core::cell::RefCell;

use embedded_io::{ErrorKind, ErrorType};
use embedded_io_async::{Read, Write};

/// A byte stream from separate read and write halves (tokio `into_split`, embassy-net
/// `TcpSocket::split`).
pub struct Duplex<R, W> {
    reader: RefCell<R>,
    writer: RefCell<W>,
}

impl<R, W> Duplex<R, W> {
    /// Joins the halves.
    pub fn new(reader: R, writer: W) -> Self {
        Duplex {
            reader: RefCell::new(reader),
            writer: RefCell::new(writer),
        }
    }

    /// Gives the halves back.
    pub fn into_inner(self) -> (R, W) {
        (self.reader.into_inner(), self.writer.into_inner())
    }
}

/// An I/O error of a [`Duplex`]: the kind of the half's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplexError(pub ErrorKind);

impl embedded_io::Error for DuplexError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

impl core::fmt::Display for DuplexError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl core::error::Error for DuplexError {}

impl<R, W> ErrorType for &Duplex<R, W> {
    type Error = DuplexError;
}

// Held across the await by design: only the TLS reader reads and only the TLS writer writes,
// and a second borrow is an error, not a panic (`try_borrow_mut`).
#[allow(clippy::await_holding_refcell_ref)]
impl<R: Read, W> Read for &Duplex<R, W> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut reader = self
            .reader
            .try_borrow_mut()
            .map_err(|_| DuplexError(ErrorKind::Other))?;
        reader
            .read(buf)
            .await
            .map_err(|e| DuplexError(embedded_io::Error::kind(&e)))
    }
}

#[allow(clippy::await_holding_refcell_ref)]
impl<R, W: Write> Write for &Duplex<R, W> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let mut writer = self
            .writer
            .try_borrow_mut()
            .map_err(|_| DuplexError(ErrorKind::Other))?;
        writer
            .write(buf)
            .await
            .map_err(|e| DuplexError(embedded_io::Error::kind(&e)))
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        let mut writer = self
            .writer
            .try_borrow_mut()
            .map_err(|_| DuplexError(ErrorKind::Other))?;
        writer
            .flush()
            .await
            .map_err(|e| DuplexError(embedded_io::Error::kind(&e)))
    }
}
