//! `crc32fast`'s API (without `Hasher::combine`; acorn-nvs uses [`Hasher`]) over the ESP32-C3 mask
//! ROM's `esp_rom_crc32_le`, which ESP-IDF's NVS uses too. The ROM function takes and returns
//! the CRC one's-complemented, exactly as crc32fast keeps its state, so
//! `Hasher::new_with_initial(0xFFFF_FFFF)` is ESP-IDF's `esp_rom_crc32_le(0xffffffff, ..)`.
//!
//! On any other target (the host, for the tests below) a bitwise software CRC-32 computes the
//! same values.
#![no_std]

/// A CRC-32 (IEEE, reflected) in progress.
#[derive(Clone, Debug)]
pub struct Hasher {
    state: u32,
    amount: u64,
}

impl Hasher {
    /// A hasher for the standard CRC-32 (`hash`).
    pub fn new() -> Self {
        Self::new_with_initial(0)
    }

    /// A hasher starting from `init` (a previous result, or ESP-IDF's `0xFFFF_FFFF`).
    pub fn new_with_initial(init: u32) -> Self {
        Self::new_with_initial_len(init, 0)
    }

    /// As [`Hasher::new_with_initial`], with `amount` bytes already hashed.
    pub fn new_with_initial_len(init: u32, amount: u64) -> Self {
        Hasher {
            state: init,
            amount,
        }
    }

    /// Adds `buf`.
    pub fn update(&mut self, buf: &[u8]) {
        self.amount += buf.len() as u64;
        self.state = crc32_le(self.state, buf);
    }

    /// The CRC of everything added.
    pub fn finalize(self) -> u32 {
        self.state
    }

    /// Starts over from 0.
    pub fn reset(&mut self) {
        self.state = 0;
        self.amount = 0;
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl core::hash::Hasher for Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }

    fn finish(&self) -> u64 {
        u64::from(self.state)
    }
}

/// The standard CRC-32 of `buf`.
pub fn hash(buf: &[u8]) -> u32 {
    let mut hasher = Hasher::new();
    hasher.update(buf);
    hasher.finalize()
}

#[cfg(target_arch = "riscv32")]
fn crc32_le(crc: u32, buf: &[u8]) -> u32 {
    unsafe extern "C" {
        // Provided by esp-rom-sys's linker script for the chip (a fixed mask-ROM address).
        fn esp_rom_crc32_le(crc: u32, buf: *const u8, len: u32) -> u32;
    }
    // SAFETY: the ROM reads exactly `len` bytes from `buf`, which is a live slice.
    unsafe { esp_rom_crc32_le(crc, buf.as_ptr(), buf.len() as u32) }
}

#[cfg(not(target_arch = "riscv32"))]
fn crc32_le(crc: u32, buf: &[u8]) -> u32 {
    let mut crc = !crc;
    for &byte in buf {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        // The standard CRC-32 check value, and ESP-IDF's (initial 0xFFFF_FFFF).
        assert_eq!(hash(b"123456789"), 0xCBF4_3926);
        let mut esp = Hasher::new_with_initial(0xFFFF_FFFF);
        esp.update(b"1234");
        esp.update(b"56789");
        assert_eq!(esp.finalize(), 0xD202_D277);
    }
}
