//! ESP-IDF NVS encryption: AES-256-XTS over each 32-byte entry, with the entry's
//! partition-relative byte offset as the tweak, and the `nvs_keys` partition that holds the keys.

use aes::cipher::KeyInit;
use aes::Aes256;
use xts_mode::{get_tweak_default, Xts128};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crc::esp_crc32;
use crate::error::{Error, Result};
use crate::format::ENTRY_SIZE;

/// Size of the `nvs_keys` partition.
pub const KEYS_PARTITION_SIZE: usize = 4096;

/// The two AES-256 keys of NVS encryption. Zeroized on drop; Debug never shows them.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct NvsKeys {
    data_key: [u8; 32],
    tweak_key: [u8; 32],
}

impl core::fmt::Debug for NvsKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NvsKeys(<redacted>)")
    }
}

impl NvsKeys {
    /// Keys from their raw bytes.
    pub fn new(data_key: [u8; 32], tweak_key: [u8; 32]) -> NvsKeys {
        NvsKeys {
            data_key,
            tweak_key,
        }
    }

    /// Fresh keys from a cryptographic random number generator.
    pub fn generate<R: rand_core::CryptoRng + rand_core::RngCore>(rng: &mut R) -> NvsKeys {
        let mut keys = NvsKeys::new([0; 32], [0; 32]);
        rng.fill_bytes(&mut keys.data_key);
        rng.fill_bytes(&mut keys.tweak_key);
        keys
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
        let mut data_key = [0u8; 32];
        let mut tweak_key = [0u8; 32];
        data_key.copy_from_slice(&bytes[..32]);
        tweak_key.copy_from_slice(&bytes[32..64]);
        Ok(NvsKeys::new(data_key, tweak_key))
    }

    /// The 4096-byte `nvs_keys` partition image holding these keys, as ESP-IDF writes it.
    pub fn to_partition(&self) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec![0xFFu8; KEYS_PARTITION_SIZE];
        out[..32].copy_from_slice(&self.data_key);
        out[32..64].copy_from_slice(&self.tweak_key);
        let crc = esp_crc32(&out[..64]);
        out[64..68].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn cipher(&self) -> EntryCipher {
        EntryCipher {
            xts: Xts128::new(
                Aes256::new(&self.data_key.into()),
                Aes256::new(&self.tweak_key.into()),
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
        assert_eq!(back.data_key, [1; 32]);
        part[3] ^= 1;
        assert!(NvsKeys::from_partition(&part).is_err());
        assert_eq!(alloc::format!("{keys:?}"), "NvsKeys(<redacted>)");
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
