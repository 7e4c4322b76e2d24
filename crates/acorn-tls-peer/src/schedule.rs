//! The TLS 1.3 key schedule (RFC 8446 §7.1) with SHA-256, without PSK.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// HKDF-Expand-Label(secret, label, context, len).
pub fn hkdf_expand_label(secret: &[u8], label: &str, context: &[u8], len: usize) -> Vec<u8> {
    let hk = Hkdf::<Sha256>::from_prk(secret).expect("a secret of at least 32 bytes");
    let label = [b"tls13 ", label.as_bytes()].concat();
    let mut info = Vec::with_capacity(4 + label.len() + context.len());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    info.push(label.len() as u8);
    info.extend_from_slice(&label);
    info.push(context.len() as u8);
    info.extend_from_slice(context);
    let mut out = vec![0u8; len];
    hk.expand(&info, &mut out).expect("a short output");
    out
}

/// HKDF-Extract(salt, ikm).
pub fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> Vec<u8> {
    Hkdf::<Sha256>::extract(Some(salt), ikm).0.to_vec()
}

/// Derive-Secret(secret, label, transcript hash).
pub fn derive_secret(secret: &[u8], label: &str, transcript_hash: &[u8]) -> Vec<u8> {
    hkdf_expand_label(secret, label, transcript_hash, 32)
}

/// The verify_data of a Finished sent under `base_secret` (a handshake traffic secret) over
/// the transcript hash.
pub fn finished_mac(base_secret: &[u8], transcript_hash: &[u8]) -> Vec<u8> {
    let key = hkdf_expand_label(base_secret, "finished", &[], 32);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    mac.update(transcript_hash);
    mac.finalize().into_bytes().to_vec()
}

/// The handshake secrets of a full handshake without PSK: from the ECDHE shared secret and
/// the transcript hash through the ServerHello.
#[derive(Debug, Clone)]
pub struct HandshakeSecrets {
    /// The Handshake Secret.
    pub handshake: Vec<u8>,
    /// `s hs traffic`: protects the server's flight; its Finished key.
    pub server: Vec<u8>,
    /// `c hs traffic`: protects the client's flight.
    pub client: Vec<u8>,
}

impl HandshakeSecrets {
    /// The secrets for `shared` (the ECDHE result) after the transcript hashing to
    /// `hello_hash` (ClientHello and ServerHello).
    pub fn new(shared: &[u8], hello_hash: &[u8]) -> Self {
        let early = hkdf_extract(&[0; 32], &[0; 32]);
        let derived = derive_secret(&early, "derived", &Sha256::digest([]));
        let handshake = hkdf_extract(&derived, shared);
        HandshakeSecrets {
            server: derive_secret(&handshake, "s hs traffic", hello_hash),
            client: derive_secret(&handshake, "c hs traffic", hello_hash),
            handshake,
        }
    }

    /// The server's and the client's application traffic secrets, after the transcript
    /// hashing to `server_finished_hash` (through the server's Finished).
    pub fn application(&self, server_finished_hash: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let derived = derive_secret(&self.handshake, "derived", &Sha256::digest([]));
        let master = hkdf_extract(&derived, &[0; 32]);
        (
            derive_secret(&master, "s ap traffic", server_finished_hash),
            derive_secret(&master, "c ap traffic", server_finished_hash),
        )
    }
}
