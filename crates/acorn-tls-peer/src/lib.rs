//! The server side of a TLS 1.3 handshake (RFC 8446) with `TLS_AES_128_GCM_SHA256` and
//! secp256r1, in pieces whose order the caller decides: the key schedule done honestly, the
//! messages built correctly or not at all. With it a test or a fuzz target plays a broker that
//! breaks the protocol (leaves out its certificate, signs with another key, sends a wrong
//! Finished) against the chip's TLS client, which must refuse it; no TLS server library
//! lets its peer do that.
//!
//! Not a TLS server: it parses only the ClientHello, never checks the client's flight, and
//! offers no security of its own. Tests only.
#![forbid(unsafe_code)]

pub mod messages;
pub mod records;
pub mod schedule;
pub mod wire;

/// The P-256 crate these messages are made with (keys for [`messages::certificate_verify`]).
pub use p256;

pub use messages::ClientHello;
pub use records::RecordKeys;
pub use schedule::HandshakeSecrets;
