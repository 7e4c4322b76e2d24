//! The embedded transport's MQTT codec (`acorn_embedded::codec`) on arbitrary broker bytes.
//!
//! Input: a byte choosing the receive buffer's size (16 to 4096 bytes), a byte choosing how the
//! stream is cut into reads, then the bytes the broker sends.
//!
//! Properties (the codec is built with AddressSanitizer, so a read past a buffer is a crash):
//! - `decode_packet` never panics on any slice; what it decodes has the fixed header's length,
//!   and a PUBLISH it decodes is re-encoded by the codec into a packet that decodes the same;
//! - `PacketReader` returns the same packets and ends the same way however the stream is cut
//!   into reads (one byte at a time, or in the chosen sizes);
//! - and these are the packets a plain model frames from the stream with `packet_len` and
//!   `decode_packet`: whole packets up to the buffer size decoded, longer PUBLISHes reported
//!   as oversized with their length and skipped, anything else the same error.
#![no_main]

use acorn_embedded::codec::{self, decode_packet, packet_len, InPacket, PacketReader, ReadError};
use libfuzzer_sys::fuzz_target;

/// A reader that hands out the stream in reads of the given sizes, in turn.
struct Chunks<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    at: usize,
}

impl embedded_io::ErrorType for Chunks<'_> {
    type Error = core::convert::Infallible;
}

impl embedded_io_async::Read for Chunks<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let size = self.sizes[self.at % self.sizes.len()];
        self.at += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// How reading a stream ended.
#[derive(Debug, PartialEq)]
enum End {
    /// End of the stream.
    Closed,
    /// The codec refused bytes.
    Invalid,
}

/// What the reader gives, comparable: a PUBLISH too large for the buffer by its length only.
#[derive(Debug, PartialEq)]
enum Got {
    Packet(InPacket),
    Oversized(usize),
}

fn got(p: InPacket) -> Got {
    match p {
        InPacket::Oversized { len, .. } => Got::Oversized(len),
        p => Got::Packet(p),
    }
}

fn read_all(data: &[u8], cap: usize, sizes: &[usize]) -> (Vec<Got>, End) {
    let mut buf = vec![0u8; cap];
    let mut reader = PacketReader::new(&mut buf);
    let mut io = Chunks { data, sizes, at: 0 };
    let mut out = Vec::new();
    let end = embassy_futures::block_on(async {
        loop {
            match reader.next(&mut io).await {
                Ok(p) => out.push(got(p)),
                Err(ReadError::Closed) => return End::Closed,
                Err(ReadError::Codec(_)) => return End::Invalid,
                Err(ReadError::Io(e)) => match e {},
            }
            if out.len() > data.len() + 1 {
                panic!("more packets than bytes");
            }
        }
    });
    (out, end)
}

/// The model: frame the stream with `packet_len` and decode each whole packet.
fn model(data: &[u8], cap: usize) -> (Vec<Got>, End) {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        let total = match packet_len(rest) {
            Err(_) => return (out, End::Invalid),
            Ok(None) => return (out, End::Closed),
            Ok(Some(total)) => total,
        };
        if total > cap {
            // Only a PUBLISH may be larger than the buffer; it is reported once the buffer
            // has filled, then skipped.
            if rest[0] >> 4 != 3 {
                return (out, End::Invalid);
            }
            if rest.len() < cap {
                return (out, End::Closed);
            }
            out.push(Got::Oversized(total));
            if rest.len() < total {
                return (out, End::Closed);
            }
            rest = &rest[total..];
            continue;
        }
        if rest.len() < total {
            return (out, End::Closed);
        }
        match decode_packet(&rest[..total]) {
            Ok(p) => out.push(Got::Packet(p)),
            Err(_) => return (out, End::Invalid),
        }
        rest = &rest[total..];
    }
}

fn check_decoded(packet: &[u8]) {
    let Ok(decoded) = decode_packet(packet) else {
        return;
    };
    assert_eq!(packet_len(packet), Ok(Some(packet.len())));
    if let InPacket::Publish {
        topic,
        payload,
        pid,
        qos,
    } = &decoded
    {
        assert!(topic.len() + payload.len() < packet.len());
        if *qos <= 1 {
            let again = codec::publish(topic, payload, *pid, false).expect("re-encodes");
            assert_eq!(
                decode_packet(&again).as_ref(),
                Ok(&decoded),
                "PUBLISH round trip"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cap = 16 + usize::from(data[0]) * 16;
    let sizes: Vec<usize> = (0..4)
        .map(|i| 1 + usize::from(data[1].rotate_left(i * 2) & 0x3f))
        .collect();
    let stream = &data[2..];

    // Every prefix of the stream as one packet.
    for end in [stream.len(), stream.len() / 2, stream.len().min(5)] {
        check_decoded(&stream[..end]);
    }

    let whole = read_all(stream, cap, &[usize::MAX]);
    assert_eq!(
        read_all(stream, cap, &[1]),
        whole,
        "reads of one byte differ"
    );
    assert_eq!(
        read_all(stream, cap, &sizes),
        whole,
        "reads of {sizes:?} differ"
    );
    assert_eq!(
        model(stream, cap),
        whole,
        "the reader differs from the model"
    );
});
