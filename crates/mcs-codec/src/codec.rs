//! Framing of MCS messages over a byte stream.
//!
//! An MCS connection starts with one version byte from each side (the client sends its
//! version before its first frame, the server answers with its own), followed by frames:
//!
//! ```text
//!              one byte, once per direction
//!             +---------+
//!             | version |   41 (a server may also answer 38)
//!             +---------+
//!
//!  +-----+---------------------+--------------------------------------+
//!  | tag |  size (varint32)    |  protobuf message, `size` bytes      |
//!  | u8  |  1 to 5 bytes       |                                      |
//!  +-----+---------------------+--------------------------------------+
//!    |                ^
//!    |                little-endian base-128; a 6th byte, or a value that
//!    |                does not fit in 32 bits, is an error
//!    v
//!  0 HeartbeatPing  1 HeartbeatAck  2 LoginRequest  3 LoginResponse  4 Close
//!  7 IqStanza  8 DataMessageStanza  10 StreamErrorStanza  (others: raw frames)
//! ```
//!
//! [`McsCodec`] implements tokio-util's [`Decoder`] and [`Encoder`], so a socket becomes a
//! stream and sink of [`McsMessage`]s with `tokio_util::codec::Framed`. A frame's size is
//! checked against the configured maximum as soon as its header is read — before any
//! buffer is reserved for it — so a peer cannot make the decoder allocate more than the
//! limit. Any chunking of the input yields the same messages.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{MCS_VERSION, McsError, McsMessage, is_supported_version};

/// The default limit on a frame's protobuf size: 256 KiB. Google's client caps the frames
/// it sends at 4 KiB and push payloads are at most 4 KiB, so this is generous.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 256 * 1024;

/// The longest a varint32 may be.
const MAX_VARINT_LEN: usize = 5;

/// Which end of the connection the codec serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The device: writes its version byte before the first frame it sends and reads the
    /// server's version byte first.
    Client,
    /// The server: reads the client's version byte first and writes its own before the
    /// first frame it sends. The mirror image of [`Role::Client`]; the wire format is the
    /// same in both directions.
    Server,
}

/// Configures an [`McsCodec`].
///
/// ```
/// use mcs_codec::{McsCodec, Role};
///
/// let codec = McsCodec::builder()
///     .role(Role::Server)
///     .max_frame_length(64 * 1024)
///     .new_codec();
/// assert_eq!(codec.max_frame_length(), 64 * 1024);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Builder {
    role: Role,
    max_frame_length: usize,
    version_exchange: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            role: Role::Client,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            version_exchange: true,
        }
    }
}

impl Builder {
    /// A builder with the defaults: client role, [`DEFAULT_MAX_FRAME_LENGTH`], version
    /// bytes exchanged.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets which end of the connection the codec serves.
    #[must_use]
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Sets the largest protobuf body accepted or sent, in bytes.
    #[must_use]
    pub fn max_frame_length(mut self, max: usize) -> Self {
        self.max_frame_length = max;
        self
    }

    /// Whether version bytes are exchanged (default `true`). Turning it off frames bare
    /// messages, e.g. to decode a capture taken after the handshake.
    #[must_use]
    pub fn version_exchange(mut self, enabled: bool) -> Self {
        self.version_exchange = enabled;
        self
    }

    /// Builds the codec.
    #[must_use]
    pub fn new_codec(self) -> McsCodec {
        McsCodec {
            role: self.role,
            max_frame_length: self.max_frame_length,
            awaiting_peer_version: self.version_exchange,
            must_send_version: self.version_exchange,
            peer_version: None,
        }
    }
}

/// The MCS frame codec: bytes to [`McsMessage`]s and back.
///
/// ```
/// use bytes::BytesMut;
/// use mcs_codec::{McsCodec, McsMessage, proto::HeartbeatPing};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// // What a client writes: its version byte, then the frame.
/// let mut client = McsCodec::client();
/// let mut wire = BytesMut::new();
/// client.encode(McsMessage::from(HeartbeatPing::default()), &mut wire)?;
/// assert_eq!(&wire[..], &[41, 0, 0]);
///
/// // A server reads it back.
/// let mut server = McsCodec::server();
/// let message = server.decode(&mut wire)?;
/// assert_eq!(message, Some(McsMessage::HeartbeatPing(HeartbeatPing::default())));
/// assert_eq!(server.peer_version(), Some(41));
/// # Ok::<(), mcs_codec::McsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct McsCodec {
    role: Role,
    max_frame_length: usize,
    awaiting_peer_version: bool,
    must_send_version: bool,
    peer_version: Option<u8>,
}

impl Default for McsCodec {
    fn default() -> Self {
        Self::client()
    }
}

impl McsCodec {
    /// A builder for a codec with non-default settings.
    #[must_use]
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A client codec with the default limits.
    #[must_use]
    pub fn client() -> Self {
        Builder::new().new_codec()
    }

    /// A server codec with the default limits.
    #[must_use]
    pub fn server() -> Self {
        Builder::new().role(Role::Server).new_codec()
    }

    /// The role this codec plays.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The largest protobuf body accepted or sent, in bytes.
    #[must_use]
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// The version byte the peer sent, once it arrived.
    #[must_use]
    pub fn peer_version(&self) -> Option<u8> {
        self.peer_version
    }

    fn check_size(&self, size: u64) -> Result<usize, McsError> {
        match usize::try_from(size) {
            Ok(size) if size <= self.max_frame_length => Ok(size),
            _ => Err(McsError::FrameTooLarge {
                size,
                max: self.max_frame_length,
            }),
        }
    }
}

/// Reads a varint32 from the start of `buf`: `Ok(Some((value, length)))`, `Ok(None)` when
/// more bytes are needed, or an error when it is longer than 5 bytes or overflows.
fn read_varint32(buf: &[u8]) -> Result<Option<(u32, usize)>, McsError> {
    let mut value: u32 = 0;
    for (index, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        let bits = u32::from(byte & 0x7f);
        if index == MAX_VARINT_LEN - 1 && byte > 0x0f {
            // The fifth byte holds bits 28..32: anything beyond (or a continuation) overflows.
            return Err(McsError::SizeOverflow);
        }
        value |= bits << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((value, index + 1)));
        }
    }
    Ok(None)
}

fn put_varint32(dst: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        // Truncation to the low 7 bits is the point of the encoding.
        dst.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

impl Decoder for McsCodec {
    type Item = McsMessage;
    type Error = McsError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<McsMessage>, McsError> {
        if self.awaiting_peer_version {
            let Some(&version) = src.first() else {
                return Ok(None);
            };
            if !is_supported_version(version) {
                return Err(McsError::UnsupportedVersion { version });
            }
            src.advance(1);
            self.peer_version = Some(version);
            self.awaiting_peer_version = false;
        }
        let Some((&tag, rest)) = src.split_first() else {
            return Ok(None);
        };
        let Some((size, varint_len)) = read_varint32(rest)? else {
            return Ok(None);
        };
        let size = self.check_size(u64::from(size))?;
        let header = 1 + varint_len;
        let frame_len = header + size;
        if src.len() < frame_len {
            // The size is within the limit, so this reservation is bounded by it.
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        src.advance(header);
        let body = src.split_to(size).freeze();
        McsMessage::decode(tag, body).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<McsMessage>, McsError> {
        match self.decode(src)? {
            Some(message) => Ok(Some(message)),
            None if src.is_empty() => Ok(None),
            None => Err(McsError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<McsMessage> for McsCodec {
    type Error = McsError;

    fn encode(&mut self, message: McsMessage, dst: &mut BytesMut) -> Result<(), McsError> {
        self.encode(&message, dst)
    }
}

impl Encoder<&McsMessage> for McsCodec {
    type Error = McsError;

    fn encode(&mut self, message: &McsMessage, dst: &mut BytesMut) -> Result<(), McsError> {
        let len = message.encoded_len();
        let size = self.check_size(len as u64)?;
        let size32 = u32::try_from(size).map_err(|_| McsError::FrameTooLarge {
            size: len as u64,
            max: self.max_frame_length,
        })?;
        dst.reserve(1 + 1 + MAX_VARINT_LEN + size);
        if self.must_send_version {
            dst.put_u8(MCS_VERSION);
            self.must_send_version = false;
        }
        dst.put_u8(message.tag());
        put_varint32(dst, size32);
        message.encode_body(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_edges() {
        assert_eq!(read_varint32(&[0]).unwrap(), Some((0, 1)));
        assert_eq!(read_varint32(&[0x7f]).unwrap(), Some((127, 1)));
        assert_eq!(read_varint32(&[0x80, 0x01]).unwrap(), Some((128, 2)));
        assert_eq!(read_varint32(&[0x80]).unwrap(), None);
        assert_eq!(
            read_varint32(&[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap(),
            Some((u32::MAX, 5))
        );
        assert!(matches!(
            read_varint32(&[0xff, 0xff, 0xff, 0xff, 0x10]),
            Err(McsError::SizeOverflow)
        ));
        assert!(matches!(
            read_varint32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(McsError::SizeOverflow)
        ));
        for value in [0u32, 1, 127, 128, 300, 16_383, 16_384, 1 << 21, u32::MAX] {
            let mut buf = BytesMut::new();
            put_varint32(&mut buf, value);
            assert_eq!(read_varint32(&buf).unwrap(), Some((value, buf.len())));
        }
    }
}
