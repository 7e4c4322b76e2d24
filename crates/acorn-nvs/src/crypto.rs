//! ESP-IDF NVS encryption: AES-256-XTS over each 32-byte entry, with the entry's
//! partition-relative byte offset as the tweak, and the `nvs_keys` partition that holds the keys.

use aes::cipher::KeyInit;
use aes::Aes256;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use xts_mode::{get_tweak_default, Xts128};

use crate::crc::esp_crc32;
use crate::error::{Error, Result};
use crate::format::ENTRY_SIZE;

/// Size of the `nvs_keys` partition.
pub const KEYS_PARTITION_SIZE: usize = 4096;

/// One AES-256 key of NVS encryption, in the workspace's one secret type.
pub type NvsKey = SecretBox<[u8; 32]>;

/// The two AES-256 keys of NVS encryption.
///
/// Each is a [`NvsKey`] (`secrecy`'s `SecretBox`: zeroized on drop, `[REDACTED]` in Debug, no
/// `PartialEq`), read through [`ExposeSecret::expose_secret`].
///
/// ```compile_fail
/// // Not comparable: keys are checked by what they decrypt, never against each other.
/// let a = acorn_nvs::NvsKeys::new([1; 32], [2; 32]);
/// let _ = a == acorn_nvs::NvsKeys::new([1; 32], [2; 32]);
/// ```
#[derive(Debug)]
pub struct NvsKeys {
    data_key: NvsKey,
    tweak_key: NvsKey,
}

impl Clone for NvsKeys {
    fn clone(&self) -> Self {
        // `SecretBox<[u8; 32]>` is not `Clone` (secrecy marks only integers cloneable):
        // copy each key straight into a new secret box.
        let copy = |key: &NvsKey| NvsKey::init_with_mut(|k| *k = *key.expose_secret());
        NvsKeys {
            data_key: copy(&self.data_key),
            tweak_key: copy(&self.tweak_key),
        }
    }
}

impl NvsKeys {
    /// Keys from their raw bytes.
    pub fn new(data_key: [u8; 32], tweak_key: [u8; 32]) -> NvsKeys {
        NvsKeys {
            data_key: NvsKey::init_with(|| data_key),
            tweak_key: NvsKey::init_with(|| tweak_key),
        }
    }

    /// Fresh keys from a cryptographic random number generator (written straight into the
    /// secret boxes, so no copy is left on the stack).
    pub fn generate<R: rand_core::CryptoRng + rand_core::RngCore>(rng: &mut R) -> NvsKeys {
        let mut keys = NvsKeys::new([0; 32], [0; 32]);
        rng.fill_bytes(keys.data_key.expose_secret_mut());
        rng.fill_bytes(keys.tweak_key.expose_secret_mut());
        keys
    }

    /// The XTS data key.
    pub fn data_key(&self) -> &NvsKey {
        &self.data_key
    }

    /// The XTS tweak key.
    pub fn tweak_key(&self) -> &NvsKey {
        &self.tweak_key
    }

    /// Reads the content of an `nvs_keys` partition: data key, tweak key, CRC32 of both.
    ///
    /// Accepts the 4096-byte partition or just its first 68 bytes.
    pub fn from_partition(bytes: &[u8]) -> Result<NvsKeys> {
        if bytes.len() < 68 {
            return Err(Error::BadKeys(
                "it is shorter than 68 bytes (32-byte data key, 32-byte tweak key, CRC32)",
            ));
        }
        if bytes[..64].iter().all(|&b| b == 0xFF) {
            return Err(Error::BadKeys(
                "it is blank (all 0xFF): no keys were ever written to it",
            ));
        }
        let stored = crate::format::u32_at(bytes, 64);
        if stored != esp_crc32(&bytes[..64]) {
            return Err(Error::BadKeys(
                "its CRC32 does not match the keys: the file is damaged or not an nvs_keys partition",
            ));
        }
        let read = |at: usize| NvsKey::init_with_mut(|k| k.copy_from_slice(&bytes[at..at + 32]));
        Ok(NvsKeys {
            data_key: read(0),
            tweak_key: read(32),
        })
    }

    /// The 4096-byte `nvs_keys` partition image holding these keys, as ESP-IDF writes it.
    pub fn to_partition(&self) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec![0xFFu8; KEYS_PARTITION_SIZE];
        out[..32].copy_from_slice(self.data_key.expose_secret());
        out[32..64].copy_from_slice(self.tweak_key.expose_secret());
        let crc = esp_crc32(&out[..64]);
        out[64..68].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn cipher(&self) -> EntryCipher {
        EntryCipher {
            xts: Xts128::new(
                Aes256::new(self.data_key.expose_secret().into()),
                Aes256::new(self.tweak_key.expose_secret().into()),
            ),
        }
    }
}

/// Encrypts and decrypts single entries in place.
pub(crate) struct EntryCipher {
    xts: Xts128<Aes256>,
}

impl EntryCipher {
    /// Encrypts the entry stored at partition offset `offset`.
    pub fn encrypt(&self, entry: &mut [u8; ENTRY_SIZE], offset: u32) {
        self.xts
            .encrypt_sector(entry, get_tweak_default(u128::from(offset)));
    }

    /// Decrypts the entry stored at partition offset `offset`.
    pub fn decrypt(&self, entry: &mut [u8; ENTRY_SIZE], offset: u32) {
        self.xts
            .decrypt_sector(entry, get_tweak_default(u128::from(offset)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_round_trip_and_crc() {
        let keys = NvsKeys::new([1; 32], [2; 32]);
        let mut part = keys.to_partition();
        let back = NvsKeys::from_partition(&part).unwrap();
        assert_eq!(back.data_key().expose_secret(), &[1; 32]);
        part[3] ^= 1;
        assert!(NvsKeys::from_partition(&part).is_err());
        assert_eq!(
            alloc::format!("{keys:?}"),
            "NvsKeys { data_key: SecretBox<[u8; 32]>([REDACTED]), \
             tweak_key: SecretBox<[u8; 32]>([REDACTED]) }"
        );
    }

    #[test]
    fn entry_round_trip() {
        let cipher = NvsKeys::new([7; 32], [9; 32]).cipher();
        let mut entry = [0x5Au8; 32];
        cipher.encrypt(&mut entry, 4096 + 64);
        assert_ne!(entry, [0x5A; 32]);
        cipher.decrypt(&mut entry, 4096 + 64);
        assert_eq!(entry, [0x5A; 32]);
    }
}
