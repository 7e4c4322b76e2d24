//! SNTP (RFC 4330) for the chip's clock: the request, with a random transmit timestamp, and
//! the checks a client makes of the answer (§5) before it sets its clock from it. The clock
//! decides which certificates are within their dates, and the answer is an unauthenticated
//! UDP datagram: it is taken only from a synchronised server (not a kiss-o'-death) that
//! echoes our random timestamp, so an off-path sender must guess 64 random bits.

use core::fmt;

/// The NTP server port.
pub const NTP_PORT: u16 = 123;
/// Bytes of an SNTP message without extensions.
pub const PACKET_LEN: usize = 48;
/// Seconds from 1900 (NTP's era 0) to 1970 (Unix).
const NTP_TO_UNIX: u64 = 2_208_988_800;

/// The request: leap indicator 0, version 4, mode 3 (client), and `nonce` as the transmit
/// timestamp, which the server echoes as the originate timestamp.
pub fn request(nonce: [u8; 8]) -> [u8; PACKET_LEN] {
    let mut packet = [0u8; PACKET_LEN];
    packet[0] = 0x23;
    packet[40..48].copy_from_slice(&nonce);
    packet
}

/// Why an answer does not set the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SntpError {
    /// Fewer than [`PACKET_LEN`] bytes.
    Short {
        /// Bytes received.
        len: usize,
    },
    /// Not an answer from a server (mode 4) in NTP version 1 to 4.
    NotAServer {
        /// The mode field.
        mode: u8,
        /// The version field.
        version: u8,
    },
    /// The originate timestamp is not the one we sent: an answer to another request, or
    /// forged.
    NotOurs,
    /// A kiss-o'-death (stratum 0): the server says to go away; its code, e.g. `RATE`.
    KissOfDeath {
        /// The four-letter code.
        code: [u8; 4],
    },
    /// The server is not synchronised (leap indicator 3, or stratum above 15).
    Unsynchronized,
    /// The transmit timestamp is zero or before 1970.
    NoTime,
}

impl fmt::Display for SntpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { len } => write!(f, "the SNTP answer is {len} bytes, not {PACKET_LEN}"),
            Self::NotAServer { mode, version } => write!(
                f,
                "the SNTP answer is not from a server (mode {mode}, version {version})"
            ),
            Self::NotOurs => f.write_str(
                "the SNTP answer does not echo our request's timestamp (another request's, or forged)",
            ),
            Self::KissOfDeath { code } => write!(
                f,
                "the SNTP server refused (kiss-o'-death {})",
                core::str::from_utf8(code).unwrap_or("????")
            ),
            Self::Unsynchronized => f.write_str("the SNTP server's clock is not synchronised"),
            Self::NoTime => f.write_str("the SNTP answer holds no time"),
        }
    }
}

/// The Unix time in milliseconds an answer to [`request`]`(nonce)` gives, after RFC 4330's
/// checks.
pub fn read_answer(answer: &[u8], nonce: [u8; 8]) -> Result<u64, SntpError> {
    let Some(packet) = answer.get(..PACKET_LEN) else {
        return Err(SntpError::Short { len: answer.len() });
    };
    let leap = packet[0] >> 6;
    let version = (packet[0] >> 3) & 0x07;
    let mode = packet[0] & 0x07;
    let stratum = packet[1];
    if mode != 4 || !(1..=4).contains(&version) {
        return Err(SntpError::NotAServer { mode, version });
    }
    if packet[24..32] != nonce {
        return Err(SntpError::NotOurs);
    }
    if stratum == 0 {
        let mut code = [0u8; 4];
        code.copy_from_slice(&packet[12..16]);
        return Err(SntpError::KissOfDeath { code });
    }
    if leap == 3 || stratum > 15 {
        return Err(SntpError::Unsynchronized);
    }
    let secs = u64::from(u32::from_be_bytes([
        packet[40], packet[41], packet[42], packet[43],
    ]));
    let frac = u64::from(u32::from_be_bytes([
        packet[44], packet[45], packet[46], packet[47],
    ]));
    if secs < NTP_TO_UNIX {
        return Err(SntpError::NoTime);
    }
    Ok((secs - NTP_TO_UNIX) * 1000 + ((frac * 1000) >> 32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    const NONCE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    /// A good answer to `request(NONCE)`: 2026-12-02T00:00:00.500Z from a stratum 2 server.
    fn answer() -> [u8; PACKET_LEN] {
        let mut a = [0u8; PACKET_LEN];
        a[0] = 0x24; // LI 0, version 4, mode 4
        a[1] = 2;
        a[24..32].copy_from_slice(&NONCE);
        let secs = (1_796_169_600u64 + NTP_TO_UNIX) as u32;
        a[40..44].copy_from_slice(&secs.to_be_bytes());
        a[44..48].copy_from_slice(&0x8000_0000u32.to_be_bytes());
        a
    }

    #[test]
    fn the_request_carries_the_nonce_and_a_good_answer_sets_the_time() {
        let r = request(NONCE);
        assert_eq!(r[0], 0x23);
        assert_eq!(r[40..48], NONCE);
        assert_eq!(read_answer(&answer(), NONCE), Ok(1_796_169_600_500));
    }

    #[test]
    fn answers_that_must_not_set_the_clock_are_refused() {
        let change = |f: fn(&mut [u8; PACKET_LEN])| {
            let mut a = answer();
            f(&mut a);
            read_answer(&a, NONCE)
        };
        assert_eq!(
            read_answer(&answer()[..47], NONCE),
            Err(SntpError::Short { len: 47 })
        );
        assert!(matches!(
            change(|a| a[0] = 0x23),
            Err(SntpError::NotAServer { mode: 3, .. })
        ));
        assert_eq!(change(|a| a[31] ^= 1), Err(SntpError::NotOurs));
        assert_eq!(
            change(|a| {
                a[1] = 0;
                a[12..16].copy_from_slice(b"RATE");
            }),
            Err(SntpError::KissOfDeath { code: *b"RATE" })
        );
        assert_eq!(change(|a| a[0] |= 0xc0), Err(SntpError::Unsynchronized));
        assert_eq!(change(|a| a[1] = 16), Err(SntpError::Unsynchronized));
        assert_eq!(change(|a| a[40..48].fill(0)), Err(SntpError::NoTime));
        assert!(SntpError::KissOfDeath { code: *b"RATE" }
            .to_string()
            .contains("RATE"));
    }
}
