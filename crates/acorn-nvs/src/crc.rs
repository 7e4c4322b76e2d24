//! The CRC-32 ESP-IDF uses (`esp_rom_crc32_le` with an initial value of 0xFFFFFFFF).
//!
//! It is the usual CRC-32 polynomial, but ESP-IDF passes 0xFFFFFFFF as the *initial* value to a
//! function that inverts it again, so the check value of "123456789" is 0xD202D277 rather than
//! 0xCBF43926. `crc32fast` with that initial state computes exactly this.

/// Incremental ESP-IDF CRC-32.
pub struct EspCrc32(crc32fast::Hasher);

impl EspCrc32 {
    /// A new hasher.
    pub fn new() -> Self {
        EspCrc32(crc32fast::Hasher::new_with_initial(0xFFFF_FFFF))
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The CRC of everything fed.
    pub fn finish(self) -> u32 {
        self.0.finalize()
    }
}

impl Default for EspCrc32 {
    fn default() -> Self {
        Self::new()
    }
}

/// ESP-IDF CRC-32 of `bytes`.
pub fn esp_crc32(bytes: &[u8]) -> u32 {
    let mut hasher = EspCrc32::new();
    hasher.update(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        assert_eq!(super::esp_crc32(b"123456789"), 0xD202_D277);
    }
}
