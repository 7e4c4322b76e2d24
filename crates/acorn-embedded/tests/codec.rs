//! Broker bytes never panic the MQTT decoder or make it read past its buffers.

use acorn_embedded::codec::{self, decode_packet, packet_len, InPacket, PacketReader, ReadError};
use proptest::prelude::*;

/// A reader that hands out `data` in chunks of the given sizes.
struct Chunks<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    at: usize,
}

impl embedded_io::ErrorType for Chunks<'_> {
    type Error = core::convert::Infallible;
}

impl embedded_io_async::Read for Chunks<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let size = self
            .sizes
            .get(self.at % self.sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        self.at += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads every packet from `data` with a `cap`-byte buffer; returns them and how it ended.
fn read_all(data: &[u8], sizes: Vec<usize>, cap: usize) -> (Vec<InPacket>, bool) {
    let mut buf = vec![0u8; cap];
    let mut reader = PacketReader::new(&mut buf);
    let mut io = Chunks { data, sizes, at: 0 };
    let mut out = Vec::new();
    let clean = embassy_futures::block_on(async {
        loop {
            match reader.next(&mut io).await {
                Ok(p) => out.push(p),
                Err(ReadError::Closed) => return true,
                Err(_) => return false,
            }
        }
    });
    (out, clean)
}

fn broker_packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<bool>(), 0u8..6).prop_map(|(sp, code)| vec![0x20, 2, u8::from(sp), code]),
        (1u16..).prop_map(|p| {
            let b = p.to_be_bytes();
            vec![0x40, 2, b[0], b[1]]
        }),
        Just(vec![0xd0, 0]),
        (
            "[a-z/]{1,40}",
            proptest::collection::vec(any::<u8>(), 0..300),
            0u16..3
        )
            .prop_map(|(t, p, qos)| codec::publish(
                &t,
                &p,
                (qos > 0).then_some(qos),
                false
            )
            .unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = packet_len(&bytes);
        let _ = decode_packet(&bytes);
        let _ = read_all(&bytes, vec![1, 7, 64], 64);
        let _ = read_all(&bytes, vec![600], 4096);
    }

    #[test]
    fn mutated_packets_never_panic(p in broker_packet(), at in any::<usize>(), byte in any::<u8>()) {
        let mut p = p;
        if !p.is_empty() {
            let i = at % p.len();
            p[i] = byte;
        }
        let _ = decode_packet(&p);
        let _ = read_all(&p, vec![3], 32);
    }

    #[test]
    fn valid_streams_decode_whole_in_any_chunking(
        packets in proptest::collection::vec(broker_packet(), 1..8),
        sizes in proptest::collection::vec(1usize..50, 1..5),
    ) {
        let stream: Vec<u8> = packets.concat();
        let (got, clean) = read_all(&stream, sizes, codec::MQTT_RX_BUFFER);
        prop_assert!(clean);
        prop_assert_eq!(got.len(), packets.len());
        for (g, p) in got.iter().zip(&packets) {
            prop_assert_eq!(g, &decode_packet(p).unwrap());
        }
    }
}
