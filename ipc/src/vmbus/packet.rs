//! The packet format inside a ring: a fixed 16-byte little-endian header
//! ([`PacketHeader`], zerocopy) followed by the payload (a postcard
//! message), the whole packet padded to 8 bytes.
//!
//! # Invariants
//! [`PacketHeader::total_bytes`] is the only place that computes how much
//! ring space a packet takes; it never overflows (payload lengths above
//! [`MAX_PAYLOAD`] are refused before it is used).

use serde::Serialize;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of the packet header.
pub const HEADER_BYTES: usize = 16;
/// Packets start and end on this alignment.
pub const PACKET_ALIGN: usize = 8;
/// Largest payload of one packet (a packet is at most 4 KiB).
pub const MAX_PAYLOAD: usize = 4096 - HEADER_BYTES;

/// `PacketHeader::kind` of a packet whose payload is one postcard message
/// of the channel's protocol.
pub const KIND_MESSAGE: u16 = 1;
/// `PacketHeader::flags` bit: the sender asks for a reply with the same
/// transaction id.
pub const FLAG_REPLY_REQUESTED: u16 = 1;
/// Every flag bit defined; a packet with any other bit set is malformed.
pub const KNOWN_FLAGS: u16 = FLAG_REPLY_REQUESTED;

/// The fixed header in front of every packet (little-endian on the wire).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct PacketHeader {
    /// What the payload is ([`KIND_MESSAGE`]).
    pub kind: U16,
    /// Flag bits ([`KNOWN_FLAGS`]).
    pub flags: U16,
    /// Bytes of payload after the header (padding not included).
    pub payload_len: U32,
    /// Chosen by the sender, echoed in a reply.
    pub transaction_id: U64,
}

impl PacketHeader {
    /// A header for `payload_len` bytes of payload.
    pub fn new(kind: u16, flags: u16, payload_len: u32, transaction_id: u64) -> Self {
        PacketHeader {
            kind: U16::new(kind),
            flags: U16::new(flags),
            payload_len: U32::new(payload_len),
            transaction_id: U64::new(transaction_id),
        }
    }

    /// Ring bytes a packet with this header takes: header + payload, padded
    /// to [`PACKET_ALIGN`]; `None` above [`MAX_PAYLOAD`].
    pub fn total_bytes(&self) -> Option<usize> {
        let len = self.payload_len.get() as usize;
        (len <= MAX_PAYLOAD).then(|| HEADER_BYTES + len.next_multiple_of(PACKET_ALIGN))
    }

    /// Decodes a header from its 16 bytes.
    #[inline]
    pub fn from_wire(bytes: &[u8; HEADER_BYTES]) -> Self {
        // A 16-byte array always holds exactly one header (all bit patterns valid).
        PacketHeader::read_from_bytes(bytes).unwrap_or(PacketHeader::new(0, 0, 0, 0))
    }

    /// The header's 16 bytes.
    #[inline]
    pub fn to_wire(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out.copy_from_slice(self.as_bytes());
        out
    }
}

/// Borrowed bytes that serialize as one byte string (postcard: a length
/// and the bytes, copied whole), not as a sequence of separate `u8`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(deserializer).map(Bytes)
    }
}

/// A packet received from a ring: its header and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The header as the peer wrote it (length already checked).
    pub header: PacketHeader,
    /// The payload bytes.
    pub payload: &'a [u8],
}

/// Why a payload could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The packet kind or flags are not ones this protocol uses.
    BadHeader,
    /// The payload is not a valid message (postcard refused it).
    Malformed,
    /// Bytes left over after the message.
    TrailingBytes,
    /// The message does not fit the buffer.
    TooLarge,
}

/// Encodes `message` with postcard into `scratch`; the encoded bytes.
pub fn encode<'s, T: Serialize>(
    message: &T,
    scratch: &'s mut [u8],
) -> Result<&'s [u8], CodecError> {
    let cap = scratch.len().min(MAX_PAYLOAD);
    postcard::to_slice(message, &mut scratch[..cap])
        .map(|b| &*b)
        .map_err(|_| CodecError::TooLarge)
}

/// Decodes one whole message of a [`KIND_MESSAGE`] packet: the header must
/// carry known kind and flags, and the payload must be exactly one message.
pub fn decode<'a, T: serde::Deserialize<'a>>(packet: &Packet<'a>) -> Result<T, CodecError> {
    if packet.header.kind.get() != KIND_MESSAGE || packet.header.flags.get() & !KNOWN_FLAGS != 0 {
        return Err(CodecError::BadHeader);
    }
    let (message, rest) =
        postcard::take_from_bytes(packet.payload).map_err(|_| CodecError::Malformed)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_16_little_endian_bytes() {
        let h = PacketHeader::new(0x0102, 0x0304, 0x0506_0708, 0x1122_3344_5566_7788);
        assert_eq!(
            h.to_wire(),
            [
                2, 1, 4, 3, 8, 7, 6, 5, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11
            ]
        );
        assert_eq!(PacketHeader::from_wire(&h.to_wire()), h);
        assert_eq!(core::mem::size_of::<PacketHeader>(), HEADER_BYTES);
    }

    #[test]
    fn total_bytes_pads_and_refuses_huge_payloads() {
        assert_eq!(PacketHeader::new(1, 0, 0, 0).total_bytes(), Some(16));
        assert_eq!(PacketHeader::new(1, 0, 1, 0).total_bytes(), Some(24));
        assert_eq!(PacketHeader::new(1, 0, 8, 0).total_bytes(), Some(24));
        assert_eq!(
            PacketHeader::new(1, 0, MAX_PAYLOAD as u32, 0).total_bytes(),
            Some(4096)
        );
        assert_eq!(
            PacketHeader::new(1, 0, MAX_PAYLOAD as u32 + 1, 0).total_bytes(),
            None
        );
        assert_eq!(PacketHeader::new(1, 0, u32::MAX, 0).total_bytes(), None);
    }

    #[test]
    fn bytes_are_one_length_and_the_bytes() {
        let mut scratch = [0u8; 16];
        let encoded = encode(&Bytes(b"abc"), &mut scratch).unwrap();
        assert_eq!(encoded, [3, b'a', b'b', b'c']);
        let back: Bytes<'_> = postcard::from_bytes(encoded).unwrap();
        assert_eq!(back, Bytes(b"abc"));
    }

    #[test]
    fn decode_refuses_bad_headers_and_trailing_bytes() {
        let mut scratch = [0u8; 64];
        let bytes = encode(&(7u32, 9u8), &mut scratch).unwrap();
        let good = Packet {
            header: PacketHeader::new(KIND_MESSAGE, 0, bytes.len() as u32, 1),
            payload: bytes,
        };
        assert_eq!(decode::<(u32, u8)>(&good), Ok((7, 9)));
        let mut bad = good;
        bad.header.kind = U16::new(9);
        assert_eq!(decode::<(u32, u8)>(&bad), Err(CodecError::BadHeader));
        let mut bad = good;
        bad.header.flags = U16::new(0x8000);
        assert_eq!(decode::<(u32, u8)>(&bad), Err(CodecError::BadHeader));
        assert_eq!(decode::<u32>(&good), Err(CodecError::TrailingBytes));
        let short = Packet {
            payload: &bytes[..0],
            ..good
        };
        assert_eq!(decode::<(u32, u8)>(&short), Err(CodecError::Malformed));
    }
}
