//! Record protection (RFC 8446 §5.2): AES-128-GCM with the per-record nonce.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce, Tag};

use crate::schedule::hkdf_expand_label;

/// One direction's record protection: key, IV and sequence number.
pub struct RecordKeys {
    cipher: Aes128Gcm,
    iv: [u8; 12],
    seq: u64,
}

impl core::fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecordKeys")
            .field("seq", &self.seq)
            .finish()
    }
}

impl RecordKeys {
    /// The keys of a traffic secret.
    pub fn new(traffic_secret: &[u8]) -> Self {
        let key = hkdf_expand_label(traffic_secret, "key", &[], 16);
        let iv = hkdf_expand_label(traffic_secret, "iv", &[], 12);
        RecordKeys {
            cipher: Aes128Gcm::new_from_slice(&key).expect("16 bytes"),
            iv: iv.try_into().expect("12 bytes"),
            seq: 0,
        }
    }

    fn nonce(&self) -> [u8; 12] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    /// A whole TLSCiphertext record: `content` of inner content type `inner`, then `pad`
    /// zero bytes.
    pub fn seal(&mut self, inner: u8, content: &[u8], pad: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(content.len() + 1 + pad + 16);
        body.extend_from_slice(content);
        body.push(inner);
        body.resize(body.len() + pad, 0);
        let len = body.len() + 16;
        let header = [23, 3, 3, (len >> 8) as u8, len as u8];
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&self.nonce()), &header, &mut body)
            .expect("encrypts");
        body.extend_from_slice(&tag);
        self.seq += 1;
        [&header[..], &body].concat()
    }

    /// Opens a record the peer sent (its 5-byte `header` and `body`): the inner content type
    /// and the content, or `None` when it does not decrypt.
    pub fn open(&mut self, header: &[u8], body: &[u8]) -> Option<(u8, Vec<u8>)> {
        if body.len() < 16 {
            return None;
        }
        let (ciphertext, tag) = body.split_at(body.len() - 16);
        let mut plain = ciphertext.to_vec();
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&self.nonce()),
                header,
                &mut plain,
                Tag::from_slice(tag),
            )
            .ok()?;
        self.seq += 1;
        while plain.last() == Some(&0) {
            plain.pop();
        }
        let inner = plain.pop()?;
        Some((inner, plain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_with_the_same_keys_in_order_only() {
        let secret = [7u8; 32];
        let (mut sender, mut receiver) = (RecordKeys::new(&secret), RecordKeys::new(&secret));
        let first = sender.seal(22, b"hello", 3);
        let second = sender.seal(23, b"world", 0);
        assert_eq!(
            first[..3],
            [23, 3, 3],
            "an application_data record on the wire"
        );
        assert_eq!(
            receiver.open(&first[..5], &first[5..]),
            Some((22, b"hello".to_vec()))
        );
        // Out of order (the nonce counts records) or altered: refused.
        let mut altered = second.clone();
        altered[7] ^= 1;
        assert_eq!(receiver.open(&altered[..5], &altered[5..]), None);
        assert_eq!(
            receiver.open(&second[..5], &second[5..]),
            Some((23, b"world".to_vec()))
        );
    }
}
