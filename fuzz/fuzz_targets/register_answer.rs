//! The chip's reader of the registration backend's HTTP/1.1 answer
//! (`acorn_embedded::register::parse_response`): plain HTTP, so whoever is on the path writes
//! these bytes.
//!
//! Input: the bytes of the answer, as the server sends them.
//!
//! Properties:
//! - never a panic (a chunk size near `usize::MAX` once overflowed: seed `huge-chunk`);
//! - what the reader decides does not change with more bytes: for every prefix (as the chip
//!   reads the answer in pieces), a complete answer or a refusal stays that answer or a
//!   refusal with the whole input, and an answer read to the connection's close is the
//!   whole body;
//! - httparse (another HTTP parser) reads the same status code from every complete head both
//!   accept, and a body read by Content-Length has that length.
#![no_main]

use acorn_embedded::register::parse_response;
use libfuzzer_sys::fuzz_target;

/// The prefixes looked at: every cut for short inputs, a stride for long ones.
fn cuts(len: usize) -> impl Iterator<Item = usize> {
    let step = (len / 64).max(1);
    (0..=len).step_by(step).chain(core::iter::once(len))
}

fn content_length(headers: &[httparse::Header<'_>]) -> Option<usize> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| core::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse().ok())
}

fn chunked(headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
}

fuzz_target!(|data: &[u8]| {
    let whole = parse_response(data, false).map_err(|e| e.to_string());
    let at_close = parse_response(data, true).map_err(|e| e.to_string());
    for cut in cuts(data.len()) {
        match parse_response(&data[..cut], false) {
            Ok(Some(answer)) => assert_eq!(
                whole.as_ref().ok(),
                Some(&Some(answer.clone())),
                "an answer complete after {cut} bytes changed with more"
            ),
            Err(_) => assert!(whole.is_err(), "refused after {cut} bytes, not with more"),
            Ok(None) => {}
        }
    }
    match (&whole, &at_close) {
        (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b, "the close changed a complete answer"),
        (Err(_), Ok(_)) => panic!("a refused answer was accepted at the close"),
        _ => {}
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut oracle = httparse::Response::new(&mut headers);
    if let (Ok(httparse::Status::Complete(head_len)), Ok(Some((status, body)))) =
        (oracle.parse(data), &at_close)
    {
        assert_eq!(oracle.code, Some(*status), "status code");
        if !chunked(oracle.headers) {
            if let Some(length) = content_length(oracle.headers) {
                assert_eq!(body.len(), length, "body length");
                assert_eq!(body.as_slice(), &data[head_len..head_len + length]);
            }
        }
    }
});
