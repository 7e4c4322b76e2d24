//! The chip's check of an SNTP answer (`acorn_embedded::sntp::read_answer`): an
//! unauthenticated UDP datagram that sets the clock certificates are judged by.
//!
//! Input: the 8-byte nonce the request carried, then the datagram.
//!
//! Properties: never a panic; a time only from a whole answer in mode 4 (server), version 1
//! to 4, that echoes the nonce as its originate timestamp, from a synchronised server (leap
//! indicator not 3, stratum 1 to 15), and then exactly the transmit timestamp's Unix time in
//! milliseconds; our own request is never taken for an answer.
#![no_main]

use acorn_embedded::sntp::{read_answer, request, PACKET_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (nonce, answer) = data.split_at(data.len().min(8));
    let mut n = [0u8; 8];
    n[..nonce.len()].copy_from_slice(nonce);
    assert!(
        read_answer(&request(n), n).is_err(),
        "our request read as an answer"
    );
    let Ok(unix_ms) = read_answer(answer, n) else {
        return;
    };
    assert!(answer.len() >= PACKET_LEN);
    let (leap, version, mode) = (answer[0] >> 6, (answer[0] >> 3) & 7, answer[0] & 7);
    assert_eq!(mode, 4);
    assert!((1..=4).contains(&version));
    assert_ne!(leap, 3);
    assert!((1..=15).contains(&answer[1]));
    assert_eq!(
        answer[24..32],
        n,
        "the originate timestamp echoes the nonce"
    );
    let secs = u64::from(u32::from_be_bytes(answer[40..44].try_into().unwrap()));
    let frac = u64::from(u32::from_be_bytes(answer[44..48].try_into().unwrap()));
    let expected = (secs - 2_208_988_800) * 1000 + frac * 1000 / (1 << 32);
    assert_eq!(unix_ms, expected);
});
