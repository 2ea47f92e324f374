//! The frame header and the codec between [`Message`]s and bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{CodecError, Message, WireVersion};

/// Length of a frame header, bytes.
pub const HEADER_LEN: usize = 8;

/// What a frame's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum FrameKind {
    /// [`Message::Register`].
    Register = 1,
    /// [`Message::Registered`].
    Registered = 2,
    /// [`Message::Refused`].
    Refused = 3,
    /// [`Message::Stats`].
    Stats = 4,
    /// [`Message::Call`].
    Call = 5,
    /// [`Message::Dispatch`].
    Dispatch = 6,
    /// [`Message::Queued`].
    Queued = 7,
    /// [`Message::Result`].
    Result = 8,
    /// [`Message::Reply`].
    Reply = 9,
    /// [`Message::Data`]: raw payload bytes.
    Data = 10,
    /// [`Message::Error`].
    Error = 11,
    /// [`Message::ListNodes`].
    ListNodes = 12,
    /// [`Message::Nodes`].
    Nodes = 13,
    /// [`Message::ListPolicies`].
    ListPolicies = 14,
    /// [`Message::Policies`].
    Policies = 15,
    /// [`Message::SetPolicy`].
    SetPolicy = 16,
    /// [`Message::Ack`].
    Ack = 17,
    /// [`Message::Swap`].
    Swap = 18,
    /// [`Message::Swapped`].
    Swapped = 19,
    /// [`Message::Reserved`].
    Reserved = 20,
    /// [`Message::ListQueues`].
    ListQueues = 21,
    /// [`Message::Queues`].
    Queues = 22,
    /// [`Message::CacheStats`].
    CacheStats = 23,
    /// [`Message::CacheStatsView`].
    CacheStatsView = 24,
    /// [`Message::PurgeCache`].
    PurgeCache = 25,
    /// [`Message::End`].
    End = 26,
    /// [`Message::Drain`].
    Drain = 27,
    /// [`Message::Job`] (v2).
    Job = 28,
    /// [`Message::JobReply`] (v2).
    JobReply = 29,
    /// [`Message::Log`] (v2).
    Log = 30,
    /// [`Message::Members`] (v2).
    Members = 31,
    /// [`Message::ListMembers`] (v2).
    ListMembers = 32,
    /// [`Message::Load`] (v2).
    Load = 33,
    /// [`Message::Lease`] (v2).
    Lease = 34,
    /// [`Message::Leased`] (v2).
    Leased = 35,
    /// [`Message::Hold`] (v2).
    Hold = 36,
    /// [`Message::LeaseEnded`] (v2).
    LeaseEnded = 37,
    /// [`Message::ReleaseLease`] (v2).
    ReleaseLease = 38,
    /// [`Message::LeaseKeys`] (v2).
    LeaseKeys = 39,
    /// [`Message::Held`] (v2).
    Held = 40,
    /// [`Message::DropLease`] (v2).
    DropLease = 41,
    /// [`Message::Respec`] (v2).
    Respec = 42,
    /// [`Message::Ancestry`] (v2).
    Ancestry = 43,
    /// [`Message::Probe`] (v2).
    Probe = 44,
    /// [`Message::Subtree`] (v2).
    Subtree = 45,
    /// [`Message::HandUp`] (v2).
    HandUp = 46,
}

impl FrameKind {
    /// The kind for a header byte.
    ///
    /// # Errors
    /// [`CodecError::UnknownKind`] for a byte that names no kind.
    pub fn from_byte(byte: u8) -> Result<Self, CodecError> {
        use FrameKind::*;
        Ok(match byte {
            1 => Register,
            2 => Registered,
            3 => Refused,
            4 => Stats,
            5 => Call,
            6 => Dispatch,
            7 => Queued,
            8 => Result,
            9 => Reply,
            10 => Data,
            11 => Error,
            12 => ListNodes,
            13 => Nodes,
            14 => ListPolicies,
            15 => Policies,
            16 => SetPolicy,
            17 => Ack,
            18 => Swap,
            19 => Swapped,
            20 => Reserved,
            21 => ListQueues,
            22 => Queues,
            23 => CacheStats,
            24 => CacheStatsView,
            25 => PurgeCache,
            26 => End,
            27 => Drain,
            28 => Job,
            29 => JobReply,
            30 => Log,
            31 => Members,
            32 => ListMembers,
            33 => Load,
            34 => Lease,
            35 => Leased,
            36 => Hold,
            37 => LeaseEnded,
            38 => ReleaseLease,
            39 => LeaseKeys,
            40 => Held,
            41 => DropLease,
            42 => Respec,
            43 => Ancestry,
            44 => Probe,
            45 => Subtree,
            46 => HandUp,
            other => return Err(CodecError::UnknownKind(other)),
        })
    }
}

/// A parsed, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The wire version the body is encoded in (the header's first byte).
    pub version: WireVersion,
    /// What the body holds.
    pub kind: FrameKind,
    /// Body length, bytes (at most the codec's maximum).
    pub len: u32,
}

impl FrameHeader {
    /// Parses and checks a header: a version this crate speaks, kind,
    /// reserved flags, and `len` against `max_len`, so a caller can allocate
    /// `len` bytes safely. [`Codec::parse_header`] also checks the version
    /// against the connection's.
    ///
    /// # Errors
    /// Any [`CodecError`] but `Malformed` and `Unexpected`.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_len: u32) -> Result<Self, CodecError> {
        let version =
            WireVersion::from_byte(bytes[0]).ok_or(CodecError::UnsupportedVersion(bytes[0]))?;
        let kind = FrameKind::from_byte(bytes[1])?;
        let flags = u16::from_be_bytes([bytes[2], bytes[3]]);
        if flags != 0 {
            return Err(CodecError::ReservedFlags(flags));
        }
        let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if len > max_len {
            return Err(CodecError::FrameTooLarge {
                len: u64::from(len),
                max: max_len,
            });
        }
        Ok(Self { version, kind, len })
    }

    /// The header's 8 bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let len = self.len.to_be_bytes();
        [
            self.version.number(),
            self.kind as u8,
            0,
            0,
            len[0],
            len[1],
            len[2],
            len[3],
        ]
    }
}

/// The result of decoding from a buffer that may hold a partial frame.
// Short-lived (returned and matched at once): boxing the frame would cost
// an allocation per frame for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A whole frame was decoded; `consumed` bytes of the buffer were used.
    Frame {
        /// The decoded message.
        message: Message,
        /// Bytes of the input this frame took (header + body).
        consumed: usize,
    },
    /// The buffer holds part of a frame: at least `needed` more bytes are
    /// required. Not an error: read more and call again.
    Incomplete {
        /// Bytes still missing for the frame (or its header).
        needed: usize,
    },
}

/// Encodes and decodes frames of one wire version (the connection's),
/// enforcing a largest body length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_frame_len: u32,
    version: WireVersion,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new(crate::DEFAULT_MAX_FRAME_LEN)
    }
}

impl Codec {
    /// A codec of the newest wire version that refuses bodies over
    /// `max_frame_len` bytes (default [`crate::DEFAULT_MAX_FRAME_LEN`],
    /// 16 MiB).
    pub fn new(max_frame_len: u32) -> Self {
        Self {
            max_frame_len,
            version: WireVersion::LATEST,
        }
    }

    /// The same codec speaking `version` (the one its connection
    /// negotiated).
    pub fn with_version(self, version: WireVersion) -> Self {
        Self { version, ..self }
    }

    /// The wire version this codec writes and accepts.
    pub fn version(&self) -> WireVersion {
        self.version
    }

    /// Parses a header as [`FrameHeader::parse`] does, and checks that it is
    /// of this codec's version.
    ///
    /// # Errors
    /// As [`FrameHeader::parse`]; [`CodecError::UnsupportedVersion`] for a
    /// frame of another version than the connection's.
    pub fn parse_header(&self, bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, CodecError> {
        let header = FrameHeader::parse(bytes, self.max_frame_len)?;
        if header.version != self.version {
            return Err(CodecError::UnsupportedVersion(bytes[0]));
        }
        Ok(header)
    }

    /// The header of a `kind` frame with a `len`-byte body, in this codec's
    /// version.
    pub fn header(&self, kind: FrameKind, len: u32) -> FrameHeader {
        FrameHeader {
            version: self.version,
            kind,
            len,
        }
    }

    /// The largest accepted body, bytes.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Appends `message` as one frame to `out`.
    ///
    /// # Errors
    /// [`CodecError::FrameTooLarge`] when the body would exceed the maximum
    /// (nothing is appended then).
    pub fn encode(&self, message: &Message, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        message.encode_body(self.version, out);
        let body_len = out.len() - start - HEADER_LEN;
        if body_len > self.max_frame_len as usize {
            out.truncate(start);
            return Err(CodecError::FrameTooLarge {
                len: body_len as u64,
                max: self.max_frame_len,
            });
        }
        // Cannot truncate: body_len <= max_frame_len, a u32.
        let header = self.header(message.kind(), body_len as u32);
        out[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
        Ok(())
    }

    /// Encodes `message` as one frame in a new buffer.
    ///
    /// # Errors
    /// As [`Codec::encode`].
    pub fn encode_to_vec(&self, message: &Message) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        self.encode(message, &mut out)?;
        Ok(out)
    }

    /// Decodes the first frame of `buf`, or says how many bytes are missing.
    ///
    /// # Errors
    /// A [`CodecError`] for a bad header or body; the stream cannot go on.
    pub fn decode(&self, buf: &[u8]) -> Result<Decoded, CodecError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(Decoded::Incomplete {
                needed: HEADER_LEN - buf.len(),
            });
        };
        let header = self.parse_header(head)?;
        let total = HEADER_LEN + header.len as usize;
        if buf.len() < total {
            return Ok(Decoded::Incomplete {
                needed: total - buf.len(),
            });
        }
        let message = Message::decode_body(self.version, header.kind, &buf[HEADER_LEN..total])?;
        Ok(Decoded::Frame {
            message,
            consumed: total,
        })
    }

    /// Decodes a body whose header was already parsed (the IO path reads the
    /// header, then exactly `len` bytes).
    ///
    /// # Errors
    /// [`CodecError::Malformed`] when the body is not the kind's message;
    /// [`CodecError::UnsupportedVersion`] for a header of another version.
    pub fn decode_body(&self, header: FrameHeader, body: Bytes) -> Result<Message, CodecError> {
        if header.version != self.version {
            return Err(CodecError::UnsupportedVersion(header.version.number()));
        }
        if header.kind == FrameKind::Data {
            return Ok(Message::Data(body));
        }
        Message::decode_body(self.version, header.kind, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallHead, ErrorKind};

    fn call() -> Message {
        Message::Call(CallHead {
            service: "sha256".into(),
            payload_len: 5,
            timeout_ms: 1000,
            hints: vec![("policy".into(), "round-robin".into())],
            ..CallHead::new("", 0, 0)
        })
    }

    #[test]
    fn round_trips_a_call_and_data() {
        let codec = Codec::default();
        let mut buf = codec.encode_to_vec(&call()).expect("encode");
        codec
            .encode(&Message::Data(Bytes::from_static(b"hello")), &mut buf)
            .expect("encode data");
        let Decoded::Frame { message, consumed } = codec.decode(&buf).expect("decode") else {
            panic!("expected a frame");
        };
        assert_eq!(message, call());
        let Decoded::Frame { message, .. } = codec.decode(&buf[consumed..]).expect("decode") else {
            panic!("expected a frame");
        };
        assert_eq!(message, Message::Data(Bytes::from_static(b"hello")));
    }

    #[test]
    fn partial_input_is_incomplete_not_an_error() {
        let codec = Codec::default();
        let buf = codec.encode_to_vec(&call()).expect("encode");
        assert_eq!(
            codec.decode(&buf[..3]),
            Ok(Decoded::Incomplete { needed: 5 })
        );
        assert_eq!(
            codec.decode(&buf[..buf.len() - 2]),
            Ok(Decoded::Incomplete { needed: 2 })
        );
    }

    #[test]
    fn bogus_length_is_refused_before_allocating() {
        let codec = Codec::new(1024);
        let header = [
            crate::VERSION,
            FrameKind::Data as u8,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
        ];
        assert_eq!(
            codec.decode(&header),
            Err(CodecError::FrameTooLarge {
                len: u64::from(u32::MAX),
                max: 1024
            })
        );
    }

    #[test]
    fn oversized_message_is_not_encoded() {
        let codec = Codec::new(4);
        let mut out = vec![1, 2];
        let err = codec
            .encode(&Message::Data(Bytes::from_static(b"too long")), &mut out)
            .expect_err("too large");
        assert!(matches!(err, CodecError::FrameTooLarge { len: 8, max: 4 }));
        assert_eq!(out, vec![1, 2], "nothing appended");
    }

    #[test]
    fn bad_version_kind_and_flags_are_errors() {
        let codec = Codec::default();
        assert_eq!(
            codec.decode(&[9, 1, 0, 0, 0, 0, 0, 0]),
            Err(CodecError::UnsupportedVersion(9))
        );
        assert_eq!(
            codec.decode(&[1, 200, 0, 0, 0, 0, 0, 0]),
            Err(CodecError::UnknownKind(200))
        );
        assert_eq!(
            codec.decode(&[1, 1, 0, 1, 0, 0, 0, 0]),
            Err(CodecError::ReservedFlags(1))
        );
    }

    #[test]
    fn cache_frame_kinds_keep_their_numbers() {
        for (byte, kind) in [
            (23, FrameKind::CacheStats),
            (24, FrameKind::CacheStatsView),
            (25, FrameKind::PurgeCache),
        ] {
            assert_eq!(FrameKind::from_byte(byte), Ok(kind));
            assert_eq!(kind as u8, byte);
        }
        assert_eq!(FrameKind::from_byte(26), Ok(FrameKind::End));
        assert_eq!(FrameKind::from_byte(27), Ok(FrameKind::Drain));
        assert_eq!(FrameKind::from_byte(28), Ok(FrameKind::Job));
        assert_eq!(FrameKind::from_byte(29), Ok(FrameKind::JobReply));
        assert_eq!(FrameKind::from_byte(30), Ok(FrameKind::Log));
        assert_eq!(FrameKind::from_byte(31), Ok(FrameKind::Members));
        assert_eq!(FrameKind::from_byte(32), Ok(FrameKind::ListMembers));
        assert_eq!(FrameKind::from_byte(33), Ok(FrameKind::Load));
        assert_eq!(FrameKind::from_byte(39), Ok(FrameKind::LeaseKeys));
        assert_eq!(FrameKind::from_byte(41), Ok(FrameKind::DropLease));
        assert_eq!(FrameKind::from_byte(34), Ok(FrameKind::Lease));
        assert_eq!(FrameKind::from_byte(40), Ok(FrameKind::Held));
        assert_eq!(FrameKind::from_byte(42), Ok(FrameKind::Respec));
        assert_eq!(FrameKind::from_byte(43), Ok(FrameKind::Ancestry));
        assert_eq!(FrameKind::from_byte(44), Ok(FrameKind::Probe));
        assert_eq!(FrameKind::from_byte(45), Ok(FrameKind::Subtree));
        assert_eq!(FrameKind::from_byte(46), Ok(FrameKind::HandUp));
        assert_eq!(FrameKind::from_byte(47), Err(CodecError::UnknownKind(47)));
        // v1 (frozen) refuses any body on a request without fields; v2
        // skips one CBOR item there (a later version may send fields).
        let codec = Codec::default().with_version(WireVersion::V1);
        let buf = codec.encode_to_vec(&Message::CacheStats).expect("encode");
        assert_eq!(buf.len(), HEADER_LEN, "an empty body");
        let mut bad = buf.clone();
        bad[7] = 1;
        bad.push(0);
        assert!(matches!(
            codec.decode(&bad),
            Err(CodecError::Malformed { .. })
        ));
        let v2 = Codec::default();
        let mut body = v2.encode_to_vec(&Message::CacheStats).expect("encode");
        body[7] = 1;
        body.push(0);
        assert!(matches!(
            v2.decode(&body),
            Ok(Decoded::Frame {
                message: Message::CacheStats,
                ..
            })
        ));
        body[7] = 2;
        body.push(0);
        assert!(matches!(
            v2.decode(&body),
            Err(CodecError::Malformed { .. })
        ));
    }

    #[test]
    fn a_frame_of_another_version_than_the_connection_is_refused() {
        let v1 = Codec::default().with_version(WireVersion::V1);
        let v2 = Codec::default();
        let frame = v1.encode_to_vec(&Message::Queued(3)).expect("encode");
        assert_eq!(frame[0], 1);
        assert_eq!(v2.decode(&frame), Err(CodecError::UnsupportedVersion(1)));
        let frame = v2.encode_to_vec(&Message::Queued(3)).expect("encode");
        assert_eq!(frame[0], 2);
        assert_eq!(v1.decode(&frame), Err(CodecError::UnsupportedVersion(2)));
    }

    #[test]
    fn garbage_body_is_malformed() {
        let codec = Codec::default();
        let buf = [
            crate::VERSION,
            FrameKind::Error as u8,
            0,
            0,
            0,
            0,
            0,
            2,
            0xff,
            0xff,
        ];
        assert!(matches!(
            codec.decode(&buf),
            Err(CodecError::Malformed {
                kind: FrameKind::Error,
                ..
            })
        ));
    }

    #[test]
    fn trailing_bytes_in_a_body_are_malformed() {
        let codec = Codec::default();
        let mut buf = codec
            .encode_to_vec(&Message::Error(crate::CallError::new(
                ErrorKind::Timeout,
                "late",
            )))
            .expect("encode");
        buf.push(0);
        let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) + 1;
        buf[4..8].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            codec.decode(&buf),
            Err(CodecError::Malformed { .. })
        ));
    }
}
