//! The typed MCS message and its tags.

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::McsError;
use crate::proto::{
    Close, DataMessageStanza, HeartbeatAck, HeartbeatPing, IqStanza, LoginRequest, LoginResponse,
    StreamErrorStanza,
};

/// The tag byte that precedes every MCS frame and names its message type.
///
/// Only the tags with a schema here are decoded into typed messages; every other tag is
/// carried as [`McsMessage::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Tag {
    /// 0: `HeartbeatPing`.
    HeartbeatPing = 0,
    /// 1: `HeartbeatAck`.
    HeartbeatAck = 1,
    /// 2: `LoginRequest`.
    LoginRequest = 2,
    /// 3: `LoginResponse`.
    LoginResponse = 3,
    /// 4: `Close`.
    Close = 4,
    /// 5: `MessageStanza` (no schema here).
    MessageStanza = 5,
    /// 6: `PresenceStanza` (no schema here).
    PresenceStanza = 6,
    /// 7: `IqStanza`.
    IqStanza = 7,
    /// 8: `DataMessageStanza`.
    DataMessageStanza = 8,
    /// 9: `BatchPresenceStanza` (no schema here).
    BatchPresenceStanza = 9,
    /// 10: `StreamErrorStanza`.
    StreamErrorStanza = 10,
    /// 11: `HttpRequest` (no schema here).
    HttpRequest = 11,
    /// 12: `HttpResponse` (no schema here).
    HttpResponse = 12,
    /// 13: `BindAccountRequest` (no schema here).
    BindAccountRequest = 13,
    /// 14: `BindAccountResponse` (no schema here).
    BindAccountResponse = 14,
    /// 15: `TalkMetadata` (no schema here).
    TalkMetadata = 15,
}

impl Tag {
    /// The tag for a byte, if the protocol defines one.
    #[must_use]
    pub fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::HeartbeatPing,
            1 => Self::HeartbeatAck,
            2 => Self::LoginRequest,
            3 => Self::LoginResponse,
            4 => Self::Close,
            5 => Self::MessageStanza,
            6 => Self::PresenceStanza,
            7 => Self::IqStanza,
            8 => Self::DataMessageStanza,
            9 => Self::BatchPresenceStanza,
            10 => Self::StreamErrorStanza,
            11 => Self::HttpRequest,
            12 => Self::HttpResponse,
            13 => Self::BindAccountRequest,
            14 => Self::BindAccountResponse,
            15 => Self::TalkMetadata,
            _ => return None,
        })
    }
}

impl From<Tag> for u8 {
    fn from(tag: Tag) -> Self {
        tag as u8
    }
}

/// One MCS frame, decoded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum McsMessage {
    /// Tag 0: a keep-alive ping; answered with a [`McsMessage::HeartbeatAck`].
    HeartbeatPing(HeartbeatPing),
    /// Tag 1: the answer to a ping.
    HeartbeatAck(HeartbeatAck),
    /// Tag 2: the client's login.
    LoginRequest(LoginRequest),
    /// Tag 3: the server's answer to the login.
    LoginResponse(LoginResponse),
    /// Tag 4: the peer closes the connection.
    Close(Close),
    /// Tag 7: an info/query stanza (acknowledgements travel in these).
    IqStanza(IqStanza),
    /// Tag 8: a push message.
    DataMessageStanza(DataMessageStanza),
    /// Tag 10: a stream error; the connection is to be reset.
    StreamErrorStanza(StreamErrorStanza),
    /// A frame whose tag has no schema here, kept as raw protobuf bytes.
    Unknown {
        /// The frame's tag byte.
        tag: u8,
        /// The frame's body, undecoded.
        bytes: Bytes,
    },
}

impl McsMessage {
    /// The tag byte this message is framed with.
    #[must_use]
    pub fn tag(&self) -> u8 {
        match self {
            Self::HeartbeatPing(_) => Tag::HeartbeatPing as u8,
            Self::HeartbeatAck(_) => Tag::HeartbeatAck as u8,
            Self::LoginRequest(_) => Tag::LoginRequest as u8,
            Self::LoginResponse(_) => Tag::LoginResponse as u8,
            Self::Close(_) => Tag::Close as u8,
            Self::IqStanza(_) => Tag::IqStanza as u8,
            Self::DataMessageStanza(_) => Tag::DataMessageStanza as u8,
            Self::StreamErrorStanza(_) => Tag::StreamErrorStanza as u8,
            Self::Unknown { tag, .. } => *tag,
        }
    }

    /// Decodes a frame body of the given tag. Tags without a schema here (and tags the
    /// protocol does not define) become [`McsMessage::Unknown`]; they are never an error.
    pub fn decode(tag: u8, body: Bytes) -> Result<Self, McsError> {
        fn typed<M: Message + Default>(tag: u8, body: Bytes) -> Result<M, McsError> {
            M::decode(body).map_err(|source| McsError::Decode { tag, source })
        }
        Ok(match Tag::from_u8(tag) {
            Some(Tag::HeartbeatPing) => Self::HeartbeatPing(typed(tag, body)?),
            Some(Tag::HeartbeatAck) => Self::HeartbeatAck(typed(tag, body)?),
            Some(Tag::LoginRequest) => Self::LoginRequest(typed(tag, body)?),
            Some(Tag::LoginResponse) => Self::LoginResponse(typed(tag, body)?),
            Some(Tag::Close) => Self::Close(typed(tag, body)?),
            Some(Tag::IqStanza) => Self::IqStanza(typed(tag, body)?),
            Some(Tag::DataMessageStanza) => Self::DataMessageStanza(typed(tag, body)?),
            Some(Tag::StreamErrorStanza) => Self::StreamErrorStanza(typed(tag, body)?),
            _ => Self::Unknown { tag, bytes: body },
        })
    }

    /// The size of the protobuf body in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::HeartbeatPing(m) => m.encoded_len(),
            Self::HeartbeatAck(m) => m.encoded_len(),
            Self::LoginRequest(m) => m.encoded_len(),
            Self::LoginResponse(m) => m.encoded_len(),
            Self::Close(m) => m.encoded_len(),
            Self::IqStanza(m) => m.encoded_len(),
            Self::DataMessageStanza(m) => m.encoded_len(),
            Self::StreamErrorStanza(m) => m.encoded_len(),
            Self::Unknown { bytes, .. } => bytes.len(),
        }
    }

    /// Appends the protobuf body (without tag and size) to `dst`.
    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        match self {
            Self::HeartbeatPing(m) => m.encode_raw(dst),
            Self::HeartbeatAck(m) => m.encode_raw(dst),
            Self::LoginRequest(m) => m.encode_raw(dst),
            Self::LoginResponse(m) => m.encode_raw(dst),
            Self::Close(m) => m.encode_raw(dst),
            Self::IqStanza(m) => m.encode_raw(dst),
            Self::DataMessageStanza(m) => m.encode_raw(dst),
            Self::StreamErrorStanza(m) => m.encode_raw(dst),
            Self::Unknown { bytes, .. } => dst.extend_from_slice(bytes),
        }
    }

    /// The `last_stream_id_received` field, for the messages that carry one.
    #[must_use]
    pub fn last_stream_id_received(&self) -> Option<i32> {
        match self {
            Self::HeartbeatPing(m) => m.last_stream_id_received,
            Self::HeartbeatAck(m) => m.last_stream_id_received,
            Self::LoginResponse(m) => m.last_stream_id_received,
            Self::IqStanza(m) => m.last_stream_id_received,
            Self::DataMessageStanza(m) => m.last_stream_id_received,
            _ => None,
        }
    }

    /// Sets `last_stream_id_received` on the messages that carry one; returns whether the
    /// message has the field.
    pub fn set_last_stream_id_received(&mut self, id: i32) -> bool {
        let field = match self {
            Self::HeartbeatPing(m) => &mut m.last_stream_id_received,
            Self::HeartbeatAck(m) => &mut m.last_stream_id_received,
            Self::LoginResponse(m) => &mut m.last_stream_id_received,
            Self::IqStanza(m) => &mut m.last_stream_id_received,
            Self::DataMessageStanza(m) => &mut m.last_stream_id_received,
            _ => return false,
        };
        *field = Some(id);
        true
    }
}

macro_rules! impl_from {
    ($($variant:ident),* $(,)?) => {$(
        impl From<$variant> for McsMessage {
            fn from(message: $variant) -> Self {
                Self::$variant(message)
            }
        }
    )*};
}

impl_from!(
    HeartbeatPing,
    HeartbeatAck,
    LoginRequest,
    LoginResponse,
    Close,
    IqStanza,
    DataMessageStanza,
    StreamErrorStanza,
);
