//! Handshake messages: the client's ClientHello read, the server's built.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;

use crate::schedule::finished_mac;
use crate::wire::{handshake_message, u24, vec16, Cursor};

/// What a server signs in its CertificateVerify, before the transcript hash (RFC 8446 §4.4.3).
pub const SERVER_CV_CONTEXT: &[u8] = b"TLS 1.3, server CertificateVerify\x00";
/// The client's counterpart (a server signing with it is wrong).
pub const CLIENT_CV_CONTEXT: &[u8] = b"TLS 1.3, client CertificateVerify\x00";

/// The ClientHello of a client's first record, as far as a TLS 1.3 server needs it.
#[derive(Debug, Clone)]
pub struct ClientHello {
    /// The whole handshake message (for the transcript).
    pub message: Vec<u8>,
    /// The cipher suites offered (two bytes each).
    pub cipher_suites: Vec<u8>,
    /// The `supported_versions` list.
    pub versions: Option<Vec<u8>>,
    /// The `server_name` host name.
    pub server_name: Option<Vec<u8>>,
    /// The ALPN protocol name list (as on the wire).
    pub alpn: Option<Vec<u8>>,
    /// The secp256r1 key share.
    pub key_share: Option<p256::PublicKey>,
}

impl ClientHello {
    /// Reads the client's first record: one ClientHello filling one handshake record.
    pub fn parse(record: &[u8]) -> Result<Self, String> {
        let short = |what: &str| format!("the ClientHello is cut short in its {what}");
        let mut rec = Cursor(record);
        let header = rec.take(3).ok_or_else(|| short("record header"))?;
        if header[0] != 22 {
            return Err(format!(
                "the first record is of type {}, not a handshake",
                header[0]
            ));
        }
        let message = rec.vec16().ok_or_else(|| short("record"))?;
        let mut msg = Cursor(message);
        if msg.u8() != Some(1) {
            return Err("the first handshake message is not a ClientHello".into());
        }
        if msg.u24() != Some(msg.0.len()) {
            return Err("the ClientHello does not fill its record".into());
        }
        let mut hello = msg;
        hello.u16().ok_or_else(|| short("legacy_version"))?;
        hello.take(32).ok_or_else(|| short("random"))?;
        hello.vec8().ok_or_else(|| short("session id"))?;
        let cipher_suites = hello
            .vec16()
            .ok_or_else(|| short("cipher suites"))?
            .to_vec();
        hello.vec8().ok_or_else(|| short("compression methods"))?;
        let mut extensions = Cursor(hello.vec16().ok_or_else(|| short("extensions"))?);
        let mut out = ClientHello {
            message: message.to_vec(),
            cipher_suites,
            versions: None,
            server_name: None,
            alpn: None,
            key_share: None,
        };
        while !extensions.is_empty() {
            let kind = extensions.u16().ok_or_else(|| short("extension type"))?;
            let mut data = Cursor(extensions.vec16().ok_or_else(|| short("extension"))?);
            match kind {
                0x0000 => {
                    let mut list = Cursor(data.vec16().ok_or_else(|| short("server name"))?);
                    if list.u8() == Some(0) {
                        out.server_name = list.vec16().map(<[u8]>::to_vec);
                    }
                }
                0x0010 => out.alpn = data.vec16().map(<[u8]>::to_vec),
                0x002b => out.versions = data.vec8().map(<[u8]>::to_vec),
                0x0033 => {
                    let mut shares = Cursor(data.vec16().ok_or_else(|| short("key shares"))?);
                    while !shares.is_empty() {
                        let group = shares.u16().ok_or_else(|| short("key share group"))?;
                        let key = shares.vec16().ok_or_else(|| short("key share"))?;
                        if group == 0x0017 {
                            out.key_share = p256::PublicKey::from_sec1_bytes(key).ok();
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// A ServerHello choosing TLS 1.3, `TLS_AES_128_GCM_SHA256` and secp256r1 with `ephemeral`,
/// with `extra` appended to its extensions (to break it on purpose).
pub fn server_hello(random: &[u8; 32], ephemeral: &p256::PublicKey, extra: &[u8]) -> Vec<u8> {
    let point = ephemeral.to_encoded_point(false);
    let share = [&[0, 0x17][..], &vec16(point.as_bytes())].concat();
    let mut extensions = vec![0, 0x2b, 0, 2, 3, 4, 0, 0x33];
    extensions.extend_from_slice(&vec16(&share));
    extensions.extend_from_slice(extra);
    let body = [
        &[3, 3][..],
        random,
        &[0, 0x13, 0x01, 0],
        &vec16(&extensions),
    ]
    .concat();
    handshake_message(2, &body)
}

/// EncryptedExtensions, with the ALPN protocol chosen if any.
pub fn encrypted_extensions(alpn: Option<&[u8]>) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(protocol) = alpn {
        let list = [&[protocol.len() as u8][..], protocol].concat();
        extensions.extend_from_slice(&[0, 0x10]);
        extensions.extend_from_slice(&vec16(&vec16(&list)));
    }
    handshake_message(8, &vec16(&extensions))
}

/// A Certificate message with `chain` (DER, leaf first), no extensions.
pub fn certificate(chain: &[&[u8]]) -> Vec<u8> {
    let mut entries = Vec::new();
    for der in chain {
        entries.extend_from_slice(&u24(der.len()));
        entries.extend_from_slice(der);
        entries.extend_from_slice(&[0, 0]);
    }
    handshake_message(11, &[&[0u8][..], &u24(entries.len()), &entries].concat())
}

/// A CertificateVerify (ecdsa_secp256r1_sha256) by `key` over `context` and the transcript
/// hash through the Certificate.
pub fn certificate_verify(key: &SigningKey, context: &[u8], transcript_hash: &[u8]) -> Vec<u8> {
    let signed = [&[0x20; 64][..], context, transcript_hash].concat();
    let signature: Signature = key.sign(&signed);
    let der = signature.to_der();
    handshake_message(15, &[&[4, 3][..], &vec16(der.as_bytes())].concat())
}

/// A Finished under `base_secret` (the sender's handshake traffic secret) over the transcript
/// hash through the message before it.
pub fn finished(base_secret: &[u8], transcript_hash: &[u8]) -> Vec<u8> {
    handshake_message(20, &finished_mac(base_secret, transcript_hash))
}
