//! MQTT 3.1.1 packets with the `mqttrs` codec, behind a guard that makes decoding total.
//!
//! mqttrs 0.4 indexes its input without bounds checks in places (a PUBACK whose remaining
//! length is 0, a PUBLISH whose topic length runs past the packet): fed hostile broker bytes
//! it can panic. So every packet is checked here first: only the packet types a broker may
//! send a client are accepted, each with the exact or minimum length its fields need, and
//! mqttrs only ever sees exactly one whole, length-checked packet. Property tests feed
//! arbitrary bytes through [`packet_len`], [`decode_packet`] and [`PacketReader`].
//!
//! Encoding writes each packet into a buffer of exactly its size.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use embedded_io_async::Read;
use mqttrs::{
    Connect, ConnectReturnCode, LastWill, Packet, Pid, Protocol, Publish, QoS, QosPid, Subscribe,
    SubscribeReturnCodes, SubscribeTopic,
};

/// Bytes of the MQTT receive buffer. An inbound PUBLISH larger than this (AWS allows up to
/// 128 KB) is acknowledged and skipped, and reported as [`InPacket::Oversized`]; every other
/// packet a broker sends is a few bytes.
pub const MQTT_RX_BUFFER: usize = 4_096;

/// Why bytes from the broker are not a valid packet for a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The fixed header is malformed (e.g. a 5-byte remaining length).
    #[error("malformed MQTT fixed header")]
    BadHeader,
    /// A packet type a broker never sends to a client.
    #[error("the broker sent a {0} packet, which a broker never sends to a client")]
    Unexpected(&'static str),
    /// The packet's length does not fit its fields.
    #[error("malformed {packet} packet: {why}")]
    Malformed {
        /// The packet type.
        packet: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// mqttrs refused the packet.
    #[error("undecodable {packet} packet ({detail})")]
    Decode {
        /// The packet type.
        packet: &'static str,
        /// mqttrs's error.
        detail: String,
    },
    /// A packet that cannot be encoded (e.g. a topic over 65535 bytes).
    #[error("cannot encode {packet}: {detail}")]
    Encode {
        /// The packet type.
        packet: &'static str,
        /// mqttrs's error.
        detail: String,
    },
}

/// A packet received from the broker, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InPacket {
    /// CONNACK.
    ConnAck {
        /// The broker kept our session.
        session_present: bool,
        /// Return code (0 = accepted, 1..=5 refused).
        code: u8,
    },
    /// PUBLISH.
    Publish {
        /// Topic name.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// Packet id (QoS 1 and 2).
        pid: Option<u16>,
        /// QoS (0, 1 or 2).
        qos: u8,
    },
    /// A PUBLISH larger than the receive buffer: skipped (its bytes are discarded).
    Oversized {
        /// Its topic, when it could be read.
        topic: Option<String>,
        /// Its packet id (acknowledge it so the broker does not send it again).
        pid: Option<u16>,
        /// Its size, bytes.
        len: usize,
    },
    /// PUBACK.
    PubAck(u16),
    /// SUBACK.
    SubAck {
        /// Packet id.
        pid: u16,
        /// Every filter was granted.
        granted: bool,
    },
    /// UNSUBACK.
    UnsubAck(u16),
    /// PINGRESP.
    PingResp,
}

fn type_name(header: u8) -> &'static str {
    match header >> 4 {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        _ => "reserved",
    }
}

/// The fixed header at the start of `buf`: `(header byte, header length, remaining length)`,
/// or `None` when more bytes are needed to read it.
pub fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((first, 2 + i, len)));
        }
    }
    Err(CodecError::BadHeader)
}

/// The total size of the packet at the start of `buf`, when its header is complete.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    Ok(fixed_header(buf)?.map(|(_, hl, rem)| hl + rem))
}

fn malformed(packet: &'static str, why: &'static str) -> CodecError {
    CodecError::Malformed { packet, why }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Checks that a packet from the broker has the shape its type needs, so that mqttrs can
/// decode it without reading past it.
fn guard(packet: &[u8], header: u8, body: &[u8]) -> Result<(), CodecError> {
    let name = type_name(header);
    let flags = header & 0x0f;
    let rem = body.len();
    match header >> 4 {
        2 | 4 | 11 => {
            if rem != 2 || flags != 0 {
                return Err(malformed(
                    name,
                    "its remaining length must be 2 and its flags 0",
                ));
            }
        }
        13 => {
            if rem != 0 || flags != 0 {
                return Err(malformed(
                    name,
                    "its remaining length must be 0 and its flags 0",
                ));
            }
        }
        9 => {
            if flags != 0 || rem < 3 || rem - 2 > 5 {
                return Err(malformed(
                    name,
                    "it must hold a packet id and 1 to 5 return codes",
                ));
            }
        }
        3 => {
            let qos = (header >> 1) & 3;
            if qos == 3 {
                return Err(malformed(name, "QoS 3 does not exist"));
            }
            let topic_len =
                read_u16(body, 0).ok_or(malformed(name, "too short for a topic length"))?;
            let need = 2 + usize::from(topic_len) + if qos > 0 { 2 } else { 0 };
            if need > rem {
                return Err(malformed(name, "its topic runs past the end of the packet"));
            }
        }
        _ => return Err(CodecError::Unexpected(name)),
    }
    let _ = packet;
    Ok(())
}

/// Decodes one whole packet (`packet` = fixed header + body, exactly). Never panics, never
/// reads outside `packet`.
pub fn decode_packet(packet: &[u8]) -> Result<InPacket, CodecError> {
    let (header, hl, rem) = fixed_header(packet)?.ok_or(CodecError::BadHeader)?;
    if hl.checked_add(rem) != Some(packet.len()) {
        return Err(CodecError::BadHeader);
    }
    let body = packet.get(hl..).ok_or(CodecError::BadHeader)?;
    guard(packet, header, body)?;
    let name = type_name(header);
    let decoded = mqttrs::decode_slice(packet).map_err(|e| CodecError::Decode {
        packet: name,
        detail: alloc::format!("{e:?}"),
    })?;
    let Some(decoded) = decoded else {
        return Err(CodecError::BadHeader);
    };
    Ok(match decoded {
        Packet::Connack(c) => InPacket::ConnAck {
            session_present: c.session_present,
            code: connack_code(c.code),
        },
        Packet::Publish(p) => {
            let (pid, qos) = match p.qospid {
                QosPid::AtMostOnce => (None, 0),
                QosPid::AtLeastOnce(pid) => (Some(pid.get()), 1),
                QosPid::ExactlyOnce(pid) => (Some(pid.get()), 2),
            };
            InPacket::Publish {
                topic: p.topic_name.to_string(),
                payload: p.payload.to_vec(),
                pid,
                qos,
            }
        }
        Packet::Puback(pid) => InPacket::PubAck(pid.get()),
        Packet::Suback(s) => InPacket::SubAck {
            pid: s.pid.get(),
            granted: s
                .return_codes
                .iter()
                .all(|c| !matches!(c, SubscribeReturnCodes::Failure)),
        },
        Packet::Unsuback(pid) => InPacket::UnsubAck(pid.get()),
        Packet::Pingresp => InPacket::PingResp,
        _ => return Err(CodecError::Unexpected(name)),
    })
}

fn connack_code(code: ConnectReturnCode) -> u8 {
    match code {
        ConnectReturnCode::Accepted => 0,
        ConnectReturnCode::RefusedProtocolVersion => 1,
        ConnectReturnCode::RefusedIdentifierRejected => 2,
        ConnectReturnCode::ServerUnavailable => 3,
        ConnectReturnCode::BadUsernamePassword => 4,
        ConnectReturnCode::NotAuthorized => 5,
    }
}

/// The topic and packet id at the start of a PUBLISH body (for an oversized one).
fn publish_head(header: u8, body: &[u8]) -> (Option<String>, Option<u16>) {
    let Some(len) = read_u16(body, 0) else {
        return (None, None);
    };
    let end = 2 + usize::from(len);
    let topic = body
        .get(2..end)
        .and_then(|t| core::str::from_utf8(t).ok())
        .map(ToString::to_string);
    let pid = if (header >> 1) & 3 > 0 {
        read_u16(body, end).filter(|p| *p != 0)
    } else {
        None
    };
    (topic, pid)
}

/// Why reading a packet stopped.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The connection ended (EOF).
    Closed,
    /// The transport failed.
    Io(E),
    /// The broker sent bytes that are not a valid packet.
    Codec(CodecError),
}

/// Reads whole packets from a byte stream into a fixed buffer.
pub struct PacketReader<'b> {
    buf: &'b mut [u8],
    filled: usize,
    discard: usize,
}

impl<'b> PacketReader<'b> {
    /// A reader over `buf` (its size is the largest packet kept; [`MQTT_RX_BUFFER`]).
    pub fn new(buf: &'b mut [u8]) -> Self {
        PacketReader {
            buf,
            filled: 0,
            discard: 0,
        }
    }

    /// Takes `n` bytes from the front of the buffer.
    fn consume(&mut self, n: usize) {
        let n = n.min(self.filled);
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// The next packet, if the buffered bytes hold one (no I/O).
    pub fn try_next(&mut self) -> Result<Option<InPacket>, CodecError> {
        if self.discard > 0 {
            let n = self.discard.min(self.filled);
            self.consume(n);
            self.discard -= n;
            if self.discard > 0 {
                return Ok(None);
            }
        }
        let Some((header, hl, rem)) = fixed_header(&self.buf[..self.filled])? else {
            return Ok(None);
        };
        let total = hl.saturating_add(rem);
        if total <= self.filled {
            let result = decode_packet(&self.buf[..total]);
            self.consume(total);
            return result.map(Some);
        }
        if total > self.buf.len() {
            if header >> 4 != 3 {
                return Err(malformed(
                    type_name(header),
                    "larger than any such packet can be",
                ));
            }
            // Wait until the buffer is full (or the head is there), then skip the rest.
            let head_known = self.filled >= self.buf.len();
            if !head_known {
                return Ok(None);
            }
            let (topic, pid) = publish_head(header, &self.buf[hl.min(self.filled)..self.filled]);
            self.discard = total - self.filled;
            self.filled = 0;
            return Ok(Some(InPacket::Oversized {
                topic,
                pid,
                len: total,
            }));
        }
        Ok(None)
    }

    /// Reads from `io` until a whole packet is there. Not cancel-safe only in that a packet
    /// being read stays buffered: calling again continues where it stopped.
    pub async fn next<R: Read>(&mut self, io: &mut R) -> Result<InPacket, ReadError<R::Error>> {
        loop {
            if let Some(packet) = self.try_next().map_err(ReadError::Codec)? {
                return Ok(packet);
            }
            let free = &mut self.buf[self.filled..];
            if free.is_empty() {
                // Only reachable while discarding (the buffer was emptied above otherwise).
                return Err(ReadError::Codec(CodecError::BadHeader));
            }
            let n = io.read(free).await.map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.filled += n.min(free.len());
        }
    }
}

fn encode(packet: &Packet<'_>, size: usize, name: &'static str) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![0u8; size];
    let n = mqttrs::encode_slice(packet, &mut out).map_err(|e| CodecError::Encode {
        packet: name,
        detail: alloc::format!("{e:?}"),
    })?;
    out.truncate(n);
    Ok(out)
}

/// Bytes of a fixed header for `remaining` bytes.
fn header_len(remaining: usize) -> usize {
    match remaining {
        0..=127 => 2,
        128..=16_383 => 3,
        16_384..=2_097_151 => 4,
        _ => 5,
    }
}

fn pid(id: u16) -> Result<Pid, CodecError> {
    Pid::try_from(id).map_err(|_| CodecError::Encode {
        packet: "packet id",
        detail: "0 is not a packet id".to_string(),
    })
}

/// CONNECT (MQTT 3.1.1) with a QoS 1 last will.
pub fn connect(
    client_id: &str,
    keep_alive_secs: u16,
    clean_session: bool,
    will: Option<(&str, &[u8])>,
) -> Result<Vec<u8>, CodecError> {
    let rem = 10 + 2 + client_id.len() + will.map_or(0, |(t, m)| 2 + t.len() + 2 + m.len());
    let packet = Packet::Connect(Connect {
        protocol: Protocol::MQTT311,
        keep_alive: keep_alive_secs,
        client_id,
        clean_session,
        last_will: will.map(|(topic, message)| LastWill {
            topic,
            message,
            qos: QoS::AtLeastOnce,
            retain: false,
        }),
        username: None,
        password: None,
    });
    encode(&packet, header_len(rem) + rem, "CONNECT")
}

/// PUBLISH at QoS 0 (`packet_id` None) or 1.
pub fn publish(
    topic: &str,
    payload: &[u8],
    packet_id: Option<u16>,
    dup: bool,
) -> Result<Vec<u8>, CodecError> {
    let qospid = match packet_id {
        None => QosPid::AtMostOnce,
        Some(id) => QosPid::AtLeastOnce(pid(id)?),
    };
    let rem = 2 + topic.len() + if packet_id.is_some() { 2 } else { 0 } + payload.len();
    let packet = Packet::Publish(Publish {
        dup,
        qospid,
        retain: false,
        topic_name: topic,
        payload,
    });
    encode(&packet, header_len(rem) + rem, "PUBLISH")
}

/// SUBSCRIBE to up to 5 filters at QoS 1.
pub fn subscribe(packet_id: u16, filters: &[String]) -> Result<Vec<u8>, CodecError> {
    let mut topics: heapless07::Vec<SubscribeTopic, 5> = heapless07::Vec::new();
    let mut rem = 2;
    for filter in filters {
        let mut topic_path: heapless07::String<256> = heapless07::String::new();
        topic_path
            .push_str(filter)
            .map_err(|_| CodecError::Encode {
                packet: "SUBSCRIBE",
                detail: "a topic filter is longer than 256 bytes".to_string(),
            })?;
        topics
            .push(SubscribeTopic {
                topic_path,
                qos: QoS::AtLeastOnce,
            })
            .map_err(|_| CodecError::Encode {
                packet: "SUBSCRIBE",
                detail: "more than 5 topic filters".to_string(),
            })?;
        rem += 2 + filter.len() + 1;
    }
    let packet = Packet::Subscribe(Subscribe::new(pid(packet_id)?, topics));
    encode(&packet, header_len(rem) + rem, "SUBSCRIBE")
}

/// PUBACK.
pub fn puback(packet_id: u16) -> Result<Vec<u8>, CodecError> {
    encode(&Packet::Puback(pid(packet_id)?), 4, "PUBACK")
}

/// PINGREQ.
pub fn pingreq() -> Vec<u8> {
    vec![0xc0, 0x00]
}

/// DISCONNECT.
pub fn disconnect() -> Vec<u8> {
    vec![0xe0, 0x00]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_what_a_broker_sends() {
        assert_eq!(
            decode_packet(&[0x20, 2, 1, 0]).unwrap(),
            InPacket::ConnAck {
                session_present: true,
                code: 0
            }
        );
        assert_eq!(
            decode_packet(&[0x40, 2, 0, 7]).unwrap(),
            InPacket::PubAck(7)
        );
        assert_eq!(decode_packet(&[0xd0, 0]).unwrap(), InPacket::PingResp);
        let p = publish("a/b", b"hi", Some(9), false).unwrap();
        assert_eq!(
            decode_packet(&p).unwrap(),
            InPacket::Publish {
                topic: "a/b".into(),
                payload: b"hi".to_vec(),
                pid: Some(9),
                qos: 1
            }
        );
    }

    #[test]
    fn short_packets_are_errors_not_panics() {
        for bad in [
            &[0x40u8, 0][..],
            &[0x40, 1, 0],
            &[0x30, 2, 0, 9],
            &[0x32, 3, 0, 1, b'a'],
        ] {
            assert!(decode_packet(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn oversized_publish_is_skipped_and_acknowledged() {
        let big = publish("t/x", &[7u8; 100], Some(5), false).unwrap();
        let mut stream = big.clone();
        stream.extend_from_slice(&[0xd0, 0]);
        let mut buf = [0u8; 16];
        let mut reader = PacketReader::new(&mut buf);
        let mut got = Vec::new();
        for chunk in stream.chunks(16) {
            reader.buf[reader.filled..reader.filled + chunk.len()].copy_from_slice(chunk);
            reader.filled += chunk.len();
            while let Some(p) = reader.try_next().unwrap() {
                got.push(p);
            }
        }
        assert_eq!(
            got,
            [
                InPacket::Oversized {
                    topic: Some("t/x".into()),
                    pid: Some(5),
                    len: big.len()
                },
                InPacket::PingResp
            ]
        );
    }
}
